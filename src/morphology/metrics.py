"""Prometheus metrics of the morphology package: lookups in the analyzers' parse caches.

`vkp_morphology_cache_hits_total` and `vkp_morphology_cache_misses_total` count every word an
analyzer of this process looked up (the hit ratio is hits / (hits + misses)). functools' LRU
cache counts its own hits and misses at no extra cost, so the counters are read from it when
Prometheus scrapes: the analyzer's hot loop does no counting of its own. The counts outlive a
`clear_cache` and a discarded analyzer, so the counters only ever go up.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector


class _CacheCounts(Protocol):
    @property
    def hits(self) -> int: ...

    @property
    def misses(self) -> int: ...


class ParseCache(Protocol):
    """What is read of a cache: functools' `lru_cache` wrapper has both."""

    def cache_info(self) -> _CacheCounts: ...

    def cache_clear(self) -> None: ...


class ParseCacheCollector(Collector):
    """Hits and misses of every tracked cache, with those of caches emptied or gone before."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._caches: dict[int, ParseCache] = {}
        self._keys = itertools.count()
        self._done_hits = 0
        self._done_misses = 0

    def track(self, owner: object, cache: ParseCache) -> None:
        """Count `cache` while `owner` lives (`cache` must not refer to `owner`, or it never
        goes), then keep what it had counted."""
        key = next(self._keys)
        with self._lock:
            self._caches[key] = cache
        weakref.finalize(owner, self._untrack, key).atexit = False

    def clear(self, cache: ParseCache) -> None:
        """Empty `cache` (which resets its own counts), keeping the counts it had."""
        with self._lock:
            self._keep(cache)
            cache.cache_clear()

    def totals(self) -> tuple[int, int]:
        """(hits, misses) so far."""
        with self._lock:
            hits, misses = self._done_hits, self._done_misses
            for cache in self._caches.values():
                info = cache.cache_info()
                hits += info.hits
                misses += info.misses
        return hits, misses

    def collect(self) -> Iterator[CounterMetricFamily]:
        hits, misses = self.totals()
        yield CounterMetricFamily(
            "vkp_morphology_cache_hits",
            "Words found in an analyzer's parse cache",
            value=float(hits),
        )
        yield CounterMetricFamily(
            "vkp_morphology_cache_misses",
            "Words not in an analyzer's parse cache, parsed by pymorphy3",
            value=float(misses),
        )

    def _untrack(self, key: int) -> None:
        with self._lock:
            cache = self._caches.pop(key, None)
            if cache is not None:
                self._keep(cache)

    def _keep(self, cache: ParseCache) -> None:
        info = cache.cache_info()
        self._done_hits += info.hits
        self._done_misses += info.misses


PARSE_CACHE = ParseCacheCollector()
REGISTRY.register(PARSE_CACHE)
