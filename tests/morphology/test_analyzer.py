"""Lemmas, POS and grammemes of real Russian text; the bounded cache; input errors."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from src.config import ConfigError
from src.exceptions import AppError
from src.morphology.analyzer import (
    MorphAnalyzer,
    TextAnalysis,
    WordParse,
    create_analyzer,
    shared_pymorphy,
)
from src.morphology.exceptions import EmptyText, MorphologyError, NoCyrillicText, TextTooLong
from src.morphology.tokenizer import MentionKind, TokenSource
from tests.morphology.conftest import make_settings


def by_word(analysis: TextAnalysis) -> dict[str, WordParse]:
    return {token.text: token.parse for token in analysis.tokens}


def test_nouns_verbs_adjectives(analyzer: MorphAnalyzer) -> None:
    analysis = analyzer.analyze_text(
        "Спасибо за комментарии! Мы прочитали все комментарии и ответили горячими словами."
    )
    words = by_word(analysis)
    assert words["комментарии"].lemma == "комментарий"
    assert words["комментарии"].pos == "NOUN"
    assert words["прочитали"] == WordParse(
        "прочитать", "VERB", ("VERB", "perf", "tran", "plur", "past", "indc")
    )
    assert words["ответили"].lemma == "ответить"
    assert words["горячими"].lemma == "горячий"
    assert words["горячими"].pos == "ADJF"
    assert words["словами"].lemma == "слово"
    assert analysis.word_count == 11


def test_known_parses(analyzer: MorphAnalyzer) -> None:
    parse = analyzer.parse_word("Комментариями")
    assert parse.lemma == "комментарий"
    assert parse.pos == "NOUN"
    assert {"plur", "ablt", "masc", "inan"} <= set(parse.grammemes)
    assert parse.grammemes[0] == "NOUN"
    # A verb's lemma is its infinitive, which is itself INFN.
    verb = analyzer.parse_word("писали")
    assert (verb.lemma, verb.pos) == ("писать", "VERB")
    assert analyzer.parse_word(verb.lemma).pos == "INFN"
    adjective = analyzer.parse_word("горячую")
    assert (adjective.lemma, adjective.pos) == ("горячий", "ADJF")
    assert "accs" in adjective.grammemes


def test_plain_data_only(analyzer: MorphAnalyzer) -> None:
    parse = analyzer.parse_word("воды")
    assert type(parse.lemma) is str
    assert type(parse.pos) is str
    assert all(type(grammeme) is str for grammeme in parse.grammemes)
    analysis = analyzer.analyze_text("[id1|Аня], горячей воды нет #ЖКХ https://vk.com 12")
    assert pickle.loads(pickle.dumps(analysis)) == analysis
    json.dumps(analysis.to_dict())
    counted = pickle.loads(pickle.dumps(analysis))  # counts were computed by to_dict
    assert counted.lemma_counts == analysis.lemma_counts
    assert counted.lemma_counts is not analysis.lemma_counts


def test_yo_and_ye_give_the_same_lemma(analyzer: MorphAnalyzer) -> None:
    analysis = analyzer.analyze_text("Ёлка, елка; шёл и шел. Ещё еще")
    assert [t.text for t in analysis.tokens] == ["ёлка", "елка", "шёл", "и", "шел", "ещё", "еще"]
    assert [t.lemma for t in analysis.tokens] == [
        "ёлка",
        "ёлка",
        "идти",
        "и",
        "идти",
        "ещё",
        "ещё",
    ]
    assert analysis.lemma_counts["ёлка"] == 2
    assert analysis.lemma_counts["идти"] == 2


def test_latin_unknown_and_counts(analyzer: MorphAnalyzer) -> None:
    analysis = analyzer.analyze_text("Python и xiv, тг 😂 кот кота котом в 2024")
    words = by_word(analysis)
    assert (words["python"].pos, words["python"].grammemes) == ("LATN", ("LATN",))
    assert words["xiv"].pos == "LATN"  # pymorphy3 tags it ROMN
    assert (words["тг"].pos, words["тг"].grammemes) == (None, ("UNKN",))
    assert analysis.lemma_counts == {"python": 1, "и": 1, "xiv": 1, "тг": 1, "кот": 3, "в": 1}
    assert list(analysis.lemma_counts) == ["python", "и", "xiv", "тг", "кот", "в"]
    assert analysis.pos_counts == {"LATN": 2, "CONJ": 1, "UNKN": 1, "NOUN": 3, "PREP": 1}
    assert analysis.numbers == ("2024",)
    assert analysis.word_count == 8
    assert analysis.lemmas == ["python", "и", "xiv", "тг", "кот", "кот", "кот", "в"]


def test_vk_markup_passes_through(analyzer: MorphAnalyzer) -> None:
    analysis = analyzer.analyze_text(
        "[club45|Клуб Воды], когда дадут воду? vk.com/wall-45_1 #горячая_вода @durov"
    )
    assert [m.kind for m in analysis.mentions] == [MentionKind.COMMUNITY, MentionKind.SCREEN_NAME]
    assert analysis.links == ("vk.com/wall-45_1",)
    assert analysis.hashtags == ("горячая_вода",)
    sources = {token.text: token.source for token in analysis.tokens}
    assert sources["клуб"] is TokenSource.MENTION
    assert sources["горячая"] is TokenSource.HASHTAG
    assert "45" not in analysis.numbers
    assert "durov" not in sources


def test_joined_words_skip_numbers_and_punctuation(analyzer: MorphAnalyzer) -> None:
    analysis = analyzer.analyze_text("горячая вода, горячая 5 вода горячая  вода")
    assert [t.joined for t in analysis.tokens] == [False, True, False, False, True, True]


def test_cyrillic_flag_and_requirement(analyzer: MorphAnalyzer) -> None:
    assert analyzer.analyze_text("Привет, world").has_cyrillic
    latin = analyzer.analyze_text("hello world 😂")
    assert not latin.has_cyrillic
    assert latin.word_count == 2
    with pytest.raises(NoCyrillicText) as caught:
        analyzer.analyze_text("hello world", require_cyrillic=True)
    assert caught.value.status_code == 422
    assert "Cyrillic" in caught.value.detail


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_empty_text_rejected(analyzer: MorphAnalyzer, text: str) -> None:
    with pytest.raises(EmptyText) as caught:
        analyzer.analyze_text(text)
    assert caught.value.status_code == 422
    analysis = analyzer.analyze_text(text, allow_empty=True)
    assert analysis.word_count == 0
    assert not analysis.has_cyrillic
    assert analysis.lemma_counts == {}


def test_symbol_only_text_is_not_empty(analyzer: MorphAnalyzer) -> None:
    assert analyzer.analyze_text("😂😂😂 !!!").word_count == 0


def test_too_long_text_rejected_with_the_limit() -> None:
    analyzer = MorphAnalyzer(make_settings(max_text_chars=50))
    assert analyzer.analyze_text("а" * 50).word_count == 1
    with pytest.raises(TextTooLong) as caught:
        analyzer.analyze_text("слово " * 20)
    error = caught.value
    assert error.status_code == 422
    assert "120 characters" in error.detail
    assert "limit is 50" in error.detail
    assert "MORPHOLOGY_MAX_TEXT_CHARS" in error.detail
    assert error.extra == {"length": 120, "limit": 50}


def test_errors_are_app_errors() -> None:
    for error in (EmptyText(), TextTooLong(2, 1), NoCyrillicText()):
        assert isinstance(error, MorphologyError)
        assert isinstance(error, AppError)
        assert error.status_code == 422


def test_deterministic(analyzer: MorphAnalyzer) -> None:
    text = "Мама мыла раму, а рама мыла маму. [id7|Мама] #рама"
    first = analyzer.analyze_text(text)
    fresh = MorphAnalyzer(make_settings(cache_size=3)).analyze_text(text)
    assert first == fresh
    assert first.to_dict() == fresh.to_dict()
    assert first.lemma_counts == fresh.lemma_counts


def test_analyze_many(analyzer: MorphAnalyzer) -> None:
    analyses = analyzer.analyze_many(["Кот спит.", "", "Коты спят."])
    assert [a.lemmas for a in analyses] == [["кот", "спать"], [], ["кот", "спать"]]
    with pytest.raises(EmptyText):
        analyzer.analyze_many(["Кот", " "], allow_empty=False)


def test_cache_stays_bounded_and_counts_hits() -> None:
    analyzer = MorphAnalyzer(make_settings(cache_size=50))
    words = [f"слово{n}" for n in range(200)]  # 200 distinct unknown words
    analyzer.analyze_text(" ".join(words))
    stats = analyzer.cache_stats()
    assert (stats.size, stats.max_size, stats.misses, stats.hits) == (50, 50, 200, 0)
    analyzer.analyze_text(" ".join(words[-50:]))  # the most recent 50 are cached
    stats = analyzer.cache_stats()
    assert (stats.hits, stats.misses, stats.size) == (50, 200, 50)
    analyzer.analyze_text("Слово0 СЛОВО199")  # case does not matter; the first word was evicted
    stats = analyzer.cache_stats()
    assert (stats.hits, stats.misses, stats.size) == (51, 201, 50)
    assert stats.hit_rate == pytest.approx(51 / 252)
    analyzer.clear_cache()
    assert analyzer.cache_stats().size == 0


def test_cache_can_be_off() -> None:
    analyzer = MorphAnalyzer(make_settings(cache_size=0))
    analysis = analyzer.analyze_text("вода вода")
    assert analysis.lemmas == ["вода", "вода"]
    stats = analyzer.cache_stats()
    assert (stats.size, stats.hits, stats.misses) == (0, 0, 2)


def test_one_pymorphy_per_process(analyzer: MorphAnalyzer) -> None:
    other = MorphAnalyzer(make_settings(cache_size=10))
    assert other.morph is analyzer.morph is shared_pymorphy()


def test_threads_share_an_analyzer() -> None:
    analyzer = MorphAnalyzer(make_settings(cache_size=100))
    texts = [f"Горячей воды нет уже {n} дней, пишите в компанию номер{n}" for n in range(200)]
    expected = [MorphAnalyzer(make_settings(cache_size=0)).analyze_text(t) for t in texts]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(analyzer.analyze_text, texts))
    assert results == expected
    assert analyzer.cache_stats().size <= 100


def test_phrase_agreement(analyzer: MorphAnalyzer) -> None:
    assert analyzer.phrase(["горячий", "вода"]) == "горячая вода"
    assert analyzer.phrase(["новый", "окно"]) == "новое окно"
    assert analyzer.phrase(["старый", "дом"]) == "старый дом"
    assert analyzer.phrase(["острый", "ножницы"]) == "острые ножницы"
    # Not adjective + noun: the lemmas as they are.
    assert analyzer.phrase(["цена", "вода"]) == "цена вода"
    assert analyzer.phrase(["отключить", "вода"]) == "отключить вода"
    assert analyzer.phrase(["вода"]) == "вода"


def test_imports_raise_no_warnings() -> None:
    # The suite runs with filterwarnings=error: pymorphy3, its dictionaries and stop-words must
    # load silently in a fresh interpreter.
    code = (
        "import pymorphy3, stop_words; pymorphy3.MorphAnalyzer(); "
        "stop_words.get_stop_words('russian')"
    )
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True, timeout=60)


def test_overlong_words_are_not_analysed_or_cached() -> None:
    analyzer = MorphAnalyzer(make_settings(cache_size=10))
    # pymorphy3 recurses once per "по-" prefix: this one word would overflow the stack.
    long_word = "по-" * 30_000 + "кот"
    analysis = analyzer.analyze_text(f"{long_word} кот {'я' * 65}")
    assert [t.parse.pos for t in analysis.tokens] == [None, "NOUN", None]
    assert analysis.tokens[0].parse == WordParse(long_word, None, ("UNKN",))
    assert analyzer.cache_stats().size == 1
    assert analyzer.parse_word("Я" * 65).pos is None
    assert analyzer.parse_word("по-" * 20 + "кот").pos == "NOUN"  # 63 characters: analysed


def test_create_analyzer_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.setenv("MORPHOLOGY_CACHE_SIZE", "7")
    assert create_analyzer().cache_stats().max_size == 7
    monkeypatch.setenv("MORPHOLOGY_CACHE_SIZE", "-7")
    with pytest.raises(ConfigError, match="MORPHOLOGY_CACHE_SIZE"):
        create_analyzer()
