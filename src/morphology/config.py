"""Morphology settings (`MORPHOLOGY_` prefix)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from src.config import split_list

# OpenCorpora parts of speech (pymorphy3's `OpencorporaTag.PARTS_OF_SPEECH`) plus LATN, which
# this package reports as the part of speech of Latin words (pymorphy3 gives them no POS).
KNOWN_POS: frozenset[str] = frozenset(
    {
        "NOUN",
        "ADJF",
        "ADJS",
        "COMP",
        "VERB",
        "INFN",
        "PRTF",
        "PRTS",
        "GRND",
        "NUMR",
        "ADVB",
        "NPRO",
        "PRED",
        "PREP",
        "CONJ",
        "PRCL",
        "INTJ",
        "LATN",
    }
)


class MorphologySettings(BaseSettings):
    """How texts are lemmatised and which words can become keywords."""

    model_config = SettingsConfigDict(env_prefix="MORPHOLOGY_", env_file=".env", extra="ignore")

    cache_size: int = Field(
        200_000, ge=0, le=10_000_000, description="parse cache entries per process (0 = no cache)"
    )
    content_pos: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["NOUN", "ADJF", "VERB", "INFN"],
        min_length=1,
        description="parts of speech a keyword may have (comma-separated OpenCorpora tags)",
    )
    extra_stop_words: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="words never reported as keywords (comma-separated)"
    )
    min_word_length: int = Field(
        2, ge=1, le=100, description="shortest word a keyword may come from"
    )
    bigram_min_count: int = Field(3, ge=1, description="occurrences a two-word phrase needs")
    max_text_chars: int = Field(
        100_000, ge=1, le=10_000_000, description="longest text accepted for analysis"
    )
    keyword_max_terms: int = Field(
        100_000,
        ge=1_000,
        le=10_000_000,
        description="distinct terms a keyword count over many comments keeps in memory (the "
        "rarest are forgotten beyond it)",
    )

    @field_validator("content_pos", mode="before")
    @classmethod
    def _split_content_pos(cls, value: Any) -> Any:
        return split_list(value)

    @field_validator("content_pos")
    @classmethod
    def _check_content_pos(cls, value: list[str]) -> list[str]:
        tags = list(dict.fromkeys(tag.strip().upper() for tag in value))
        unknown = [tag for tag in tags if tag not in KNOWN_POS]
        if unknown:
            raise ValueError(
                f"unknown part(s) of speech {', '.join(unknown)}; "
                f"known: {', '.join(sorted(KNOWN_POS))}"
            )
        return tags

    @field_validator("extra_stop_words", mode="before")
    @classmethod
    def _split_stop_words(cls, value: Any) -> Any:
        return split_list(value)

    @field_validator("extra_stop_words")
    @classmethod
    def _normalise_stop_words(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(word.strip().lower() for word in value if word.strip()))
