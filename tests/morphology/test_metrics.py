"""The analyzers' parse-cache metrics, read from the process' registry as Prometheus would.

The registry is the process' own (`prometheus_client.REGISTRY`), shared by every test of the run
(and every analyzer in it): each test compares the counters before and after what it does.
"""

from __future__ import annotations

import gc
import weakref
from concurrent.futures import ThreadPoolExecutor

from prometheus_client import REGISTRY

from src.morphology.analyzer import MAX_WORD_CHARS, MorphAnalyzer
from src.morphology.metrics import PARSE_CACHE
from tests.morphology.conftest import make_settings


def counts() -> tuple[float, float]:
    """(hits, misses) as a scrape reads them."""
    hits = REGISTRY.get_sample_value("vkp_morphology_cache_hits_total")
    misses = REGISTRY.get_sample_value("vkp_morphology_cache_misses_total")
    assert hits is not None and misses is not None
    return hits, misses


def since(before: tuple[float, float]) -> tuple[float, float]:
    hits, misses = counts()
    return hits - before[0], misses - before[1]


def test_every_lookup_is_a_hit_or_a_miss() -> None:
    analyzer = MorphAnalyzer(make_settings(cache_size=100))
    before = counts()
    analyzer.analyze_text("Кошка видит кошку, кошка видит собаку")
    # Six words, four of them distinct: the second "кошка" and the second "видит" are hits.
    assert since(before) == (2, 4)
    analyzer.parse_word("КОШКА")
    analyzer.analyze_text("и " + "а" * (MAX_WORD_CHARS + 1))  # too long a word: not looked up
    assert since(before) == (3, 5)
    stats = analyzer.cache_stats()
    assert (stats.hits, stats.misses) == (3, 5)


def test_counts_outlive_clearing_the_cache() -> None:
    analyzer = MorphAnalyzer(make_settings(cache_size=100))
    before = counts()
    analyzer.analyze_text("вода вода")
    analyzer.clear_cache()  # resets the cache's own statistics, not the counters
    assert analyzer.cache_stats().misses == 0
    assert since(before) == (1, 1)
    analyzer.analyze_text("вода")
    assert since(before) == (1, 2)


def test_counts_outlive_the_analyzer() -> None:
    before = counts()
    analyzer = MorphAnalyzer(make_settings(cache_size=100))
    analyzer.analyze_text("дом дом дом")
    gone = weakref.ref(analyzer)
    del analyzer
    gc.collect()
    assert gone() is None, "the metrics must not keep an analyzer alive"
    assert since(before) == (2, 1)


def test_a_cache_that_is_off_counts_misses() -> None:
    analyzer = MorphAnalyzer(make_settings(cache_size=0))
    before = counts()
    analyzer.analyze_text("вода вода")
    assert since(before) == (0, 2)


def test_threads_sharing_an_analyzer_count_every_lookup_once() -> None:
    analyzer = MorphAnalyzer(make_settings(cache_size=1000))
    texts = [f"Горячей воды нет уже {n} дней, пишите в компанию номер{n}" for n in range(200)]
    before = counts()
    with ThreadPoolExecutor(4) as pool:
        analyses = list(pool.map(analyzer.analyze_text, texts))
    hits, misses = since(before)
    assert hits + misses == sum(a.word_count for a in analyses)
    # Eight words every text has (a miss each, or up to one per thread if the threads look one
    # up at once) and one of its own ("номер<n>").
    assert 200 + 8 <= misses <= 200 + 8 * 4


def test_the_collector_is_registered_once() -> None:
    names = [
        family.name
        for family in PARSE_CACHE.collect()
        if family.name.startswith("vkp_morphology_cache_")
    ]
    assert names == ["vkp_morphology_cache_hits", "vkp_morphology_cache_misses"]
    assert REGISTRY.get_sample_value("vkp_morphology_cache_hits_total") is not None
