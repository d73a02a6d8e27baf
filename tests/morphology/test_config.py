"""MORPHOLOGY_* settings: defaults, comma-separated lists, POS validation naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from src.config import ConfigError, load
from src.morphology.config import KNOWN_POS, MorphologySettings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # No `.env` from the working directory, no MORPHOLOGY_* from the shell.
    monkeypatch.chdir(tmp_path)
    for name in [
        "MORPHOLOGY_CACHE_SIZE",
        "MORPHOLOGY_CONTENT_POS",
        "MORPHOLOGY_EXTRA_STOP_WORDS",
        "MORPHOLOGY_MIN_WORD_LENGTH",
        "MORPHOLOGY_BIGRAM_MIN_COUNT",
        "MORPHOLOGY_MAX_TEXT_CHARS",
        "MORPHOLOGY_KEYWORD_MAX_TERMS",
    ]:
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    settings = load(MorphologySettings)
    assert settings.cache_size == 200_000
    assert settings.content_pos == ["NOUN", "ADJF", "VERB", "INFN"]
    assert settings.extra_stop_words == []
    assert settings.min_word_length == 2
    assert settings.bigram_min_count == 3
    assert settings.max_text_chars == 100_000
    assert settings.keyword_max_terms == 100_000


def test_lists_from_comma_separated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MORPHOLOGY_CONTENT_POS", "noun, ADJF ,latn,NOUN")
    monkeypatch.setenv("MORPHOLOGY_EXTRA_STOP_WORDS", "Блин, короче,, ну-ка")
    monkeypatch.setenv("MORPHOLOGY_CACHE_SIZE", "1000")
    settings = load(MorphologySettings)
    assert settings.content_pos == ["NOUN", "ADJF", "LATN"]
    assert settings.extra_stop_words == ["блин", "короче", "ну-ка"]
    assert settings.cache_size == 1000


def test_lists_from_json_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MORPHOLOGY_CONTENT_POS", '["NOUN", "VERB"]')
    assert load(MorphologySettings).content_pos == ["NOUN", "VERB"]


def test_unknown_pos_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MORPHOLOGY_CONTENT_POS", "NOUN,NOUNS")
    with pytest.raises(ConfigError, match=r"MORPHOLOGY_CONTENT_POS: .*NOUNS"):
        load(MorphologySettings)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MORPHOLOGY_CACHE_SIZE", "-1"),
        ("MORPHOLOGY_MAX_TEXT_CHARS", "0"),
        ("MORPHOLOGY_BIGRAM_MIN_COUNT", "0"),
        ("MORPHOLOGY_MIN_WORD_LENGTH", "zero"),
        ("MORPHOLOGY_CONTENT_POS", ""),
        ("MORPHOLOGY_KEYWORD_MAX_TERMS", "999"),
    ],
)
def test_invalid_values_fail_fast(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load(MorphologySettings)


def test_known_pos_are_pymorphy3s_plus_latn() -> None:
    from pymorphy3.tagset import OpencorporaTag  # type: ignore[import-untyped]

    assert frozenset(OpencorporaTag.PARTS_OF_SPEECH) | {"LATN"} == KNOWN_POS
