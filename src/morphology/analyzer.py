"""Lemmas, parts of speech and grammemes of comment text, through one cached pymorphy3 analyzer.

pymorphy3's `MorphAnalyzer` (about 20-25 MB of dictionaries) is built once per process and
shared; each `MorphAnalyzer` wrapper adds a bounded LRU cache keyed by the lower-case word that
holds plain data (`WordParse`), never pymorphy3 `Parse` objects (they do not pickle). Build one
wrapper per worker process at start-up (`create_analyzer`) and pass it to whatever needs it.

Each word gets pymorphy3's most probable parse, out of context. `pos` is the OpenCorpora part of
speech, "LATN" for Latin-script words (pymorphy3 tags them LATN, or ROMN for words such as
"mix" or "xiv", with no part of speech) and None for words it cannot classify (UNKN).
pymorphy3 treats "е" and "ё" alike: "елка" and "ёлка" both give the lemma "ёлка".
"""

# Russian examples in docstrings and comments: Cyrillic letters that look like Latin are meant.

from __future__ import annotations

import sys
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache, partial
from operator import attrgetter
from typing import Any, NamedTuple, Protocol

from src.config import load
from src.morphology.config import MorphologySettings
from src.morphology.exceptions import EmptyText, NoCyrillicText, TextTooLong
from src.morphology.metrics import PARSE_CACHE
from src.morphology.tokenizer import (
    TOKEN_PATTERN,
    Mention,
    TokenSource,
    has_cyrillic,
    is_joiner,
    segment,
)

UNKNOWN_POS = "UNKN"  # the `pos_counts` key of words with no part of speech
# Longer "words" (no Russian word comes close; "а-а-а-а…" spam does) are not analysed: pymorphy3
# recurses once per hyphenated prefix (a 30,000-part word overflows the stack), and the cache
# holds a bounded number of words, not of characters.
MAX_WORD_CHARS = 64
_LEMMA = attrgetter("parse.lemma")
_POS = attrgetter("parse.pos")


class _Tag(Protocol):
    @property
    def POS(self) -> str | None: ...

    def __contains__(self, grammeme: object) -> bool: ...


class _Parse(Protocol):
    @property
    def word(self) -> str: ...

    @property
    def normal_form(self) -> str: ...

    @property
    def tag(self) -> _Tag: ...

    def inflect(self, required_grammemes: set[str] | frozenset[str]) -> _Parse | None: ...


class Pymorphy(Protocol):
    """The part of `pymorphy3.MorphAnalyzer` this package uses (pymorphy3 ships no types)."""

    def parse(self, word: str) -> list[_Parse]: ...


_shared: Pymorphy | None = None
_shared_lock = threading.Lock()


def shared_pymorphy() -> Pymorphy:
    """The process's one pymorphy3 analyzer, loaded on first use (about 0.1 s)."""
    global _shared
    if _shared is None:
        with _shared_lock:
            if _shared is None:
                import pymorphy3  # type: ignore[import-untyped]

                _shared = pymorphy3.MorphAnalyzer()
    return _shared


@dataclass(frozen=True, slots=True)
class WordParse:
    """One word's most probable analysis, as plain data."""

    lemma: str
    pos: str | None
    grammemes: tuple[str, ...]  # the whole tag in pymorphy3's order: ("NOUN", "inan", "masc", …)


class AnalyzedToken(NamedTuple):
    """A word of the text with its analysis; `text` is lower-case."""

    text: str
    parse: WordParse
    source: TokenSource
    start: int  # offsets into `TextAnalysis.text`
    end: int
    # Only spaces separate it from the previous word: no newline, punctuation, emoji, number,
    # link or mention in between. Two such content words make a keyword phrase.
    joined: bool

    @property
    def lemma(self) -> str:
        return self.parse.lemma

    @property
    def pos(self) -> str | None:
        return self.parse.pos

    @property
    def grammemes(self) -> tuple[str, ...]:
        return self.parse.grammemes


@dataclass(frozen=True)
class TextAnalysis:
    """Everything `analyze_text` learns about one text; the same text always gives the same.

    `lemma_counts` and `pos_counts` are counted on first access (a quarter of the analysis
    time, which keyword extraction does not need), then kept.
    """

    text: str  # normalised (NFC, HTML entities decoded); token offsets refer to it
    tokens: tuple[AnalyzedToken, ...]  # the words, in order (numbers are not words)
    numbers: tuple[str, ...]
    mentions: tuple[Mention, ...]
    links: tuple[str, ...]
    hashtags: tuple[str, ...]
    has_cyrillic: bool  # False: probably not Russian (or no text at all)

    @property
    def word_count(self) -> int:
        return len(self.tokens)

    @property
    def lemma_counts(self) -> Counter[str]:
        """How often each lemma occurs, in order of first appearance."""
        counts: Counter[str] | None = self.__dict__.get("_lemma_counts")
        if counts is None:
            counts = Counter(map(_LEMMA, self.tokens))
            # Kept beside the fields (frozen: set through object); `cached_property` would do
            # the same behind a lock that costs more than the counting.
            object.__setattr__(self, "_lemma_counts", counts)
        return counts

    @property
    def pos_counts(self) -> Counter[str]:
        """How many words of each part of speech; words with none count under "UNKN"."""
        counts: Counter[str] | None = self.__dict__.get("_pos_counts")
        if counts is None:
            by_pos: Counter[Any] = Counter(map(_POS, self.tokens))
            if None in by_pos:
                by_pos[UNKNOWN_POS] += by_pos.pop(None)
            counts = by_pos
            object.__setattr__(self, "_pos_counts", counts)
        return counts

    @property
    def lemmas(self) -> list[str]:
        """The words' lemmas, in order."""
        return [token.parse.lemma for token in self.tokens]

    def to_dict(self, *, tokens: bool = True) -> dict[str, Any]:
        """JSON-able form (what a task returns); `tokens=False` leaves the token list out."""
        data: dict[str, Any] = {
            "word_count": self.word_count,
            "has_cyrillic": self.has_cyrillic,
            "lemma_counts": dict(self.lemma_counts),
            "pos_counts": dict(self.pos_counts),
            "numbers": list(self.numbers),
            "mentions": [
                {**asdict(mention), "kind": str(mention.kind), "owner_id": mention.owner_id}
                for mention in self.mentions
            ],
            "links": list(self.links),
            "hashtags": list(self.hashtags),
        }
        if tokens:
            data["tokens"] = [
                {
                    "text": token.text,
                    "lemma": token.parse.lemma,
                    "pos": token.parse.pos,
                    "grammemes": list(token.parse.grammemes),
                    "source": str(token.source),
                    "start": token.start,
                    "end": token.end,
                    "joined": token.joined,
                }
                for token in self.tokens
            ]
        return data


@dataclass(frozen=True, slots=True)
class CacheStats:
    hits: int
    misses: int
    size: int
    max_size: int

    @property
    def hit_rate(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


_PHRASE_HEADS = frozenset({"ADJF", "PRTF"})


class MorphAnalyzer:
    """Analyse texts with the shared pymorphy3 analyzer and this wrapper's bounded parse cache.

    `settings` default to the built-in defaults (not the environment: see `create_analyzer`).
    """

    def __init__(
        self, settings: MorphologySettings | None = None, *, morph: Pymorphy | None = None
    ) -> None:
        self.settings = settings if settings is not None else MorphologySettings.model_construct()
        self._morph = morph if morph is not None else shared_pymorphy()
        # Distinct tags number in the low thousands: one shared tuple per tag.
        self._tags: dict[str, tuple[str, ...]] = {}
        # functools' C LRU: thread-safe, never holds more than `maxsize` entries. It counts its
        # hits and misses, which the metrics read at scrape time (nothing is counted per word);
        # it must not refer to `self`, so that the metrics' hold on it does not keep `self`.
        self._lookup = lru_cache(maxsize=self.settings.cache_size)(
            partial(_parse_uncached, self._morph, self._tags)
        )
        PARSE_CACHE.track(self, self._lookup)

    @property
    def morph(self) -> Pymorphy:
        """The pymorphy3 analyzer underneath (the process's shared one unless one was given)."""
        return self._morph

    def parse_word(self, word: str) -> WordParse:
        """The analysis of one word (any case), through the cache."""
        word = word.lower()
        return self._lookup(word) if len(word) <= MAX_WORD_CHARS else _unknown(word)

    def cache_stats(self) -> CacheStats:
        info = self._lookup.cache_info()
        return CacheStats(
            hits=info.hits, misses=info.misses, size=info.currsize, max_size=info.maxsize or 0
        )

    def clear_cache(self) -> None:
        PARSE_CACHE.clear(self._lookup)  # empties it, keeping its hits and misses counted

    def analyze_text(
        self, text: str, *, require_cyrillic: bool = False, allow_empty: bool = False
    ) -> TextAnalysis:
        """Tokens with lemma/POS/grammemes, lemma and POS counts, mentions, links, hashtags.

        Raises `TextTooLong` beyond `max_text_chars`, `EmptyText` for an empty or blank text
        (unless `allow_empty`), `NoCyrillicText` when `require_cyrillic` and there is none.
        """
        if len(text) > self.settings.max_text_chars:
            raise TextTooLong(len(text), self.settings.max_text_chars)
        if not allow_empty and (not text or text.isspace()):
            raise EmptyText()
        seg = segment(text)
        cyrillic = has_cyrillic(seg.text)
        if require_cyrillic and not cyrillic:
            raise NoCyrillicText()

        # The hot loop (see `tokenizer.tokenize` for the same walk, commented).
        lookup = self._lookup
        new = tuple.__new__
        tokens: list[AnalyzedToken] = []
        append = tokens.append
        numbers: list[str] = []
        scan_text, lowered = seg.scan_text, seg.lowered
        for start, end, source in seg.stretches:
            pos = start
            after_word = False
            for separator, number, word in TOKEN_PATTERN.findall(scan_text, start, end):
                begin = pos + len(separator)
                if word:
                    length = len(word)
                    pos = begin + length
                    if not lowered:
                        word = word.lower()
                    parse = lookup(word) if length <= MAX_WORD_CHARS else _unknown(word)
                    joined = after_word and (separator == " " or is_joiner(separator, source))
                    append(new(AnalyzedToken, (word, parse, source, begin, pos, joined)))
                    after_word = True
                elif number:
                    pos = begin + len(number)
                    numbers.append(number)
                    after_word = False
                else:  # the separator at the end
                    break

        return TextAnalysis(
            text=seg.text,
            tokens=tuple(tokens),
            numbers=tuple(numbers),
            mentions=tuple(seg.mentions),
            links=tuple(seg.links),
            hashtags=tuple(seg.hashtags),
            has_cyrillic=cyrillic,
        )

    def analyze_many(
        self, texts: Iterable[str], *, require_cyrillic: bool = False, allow_empty: bool = True
    ) -> list[TextAnalysis]:
        """`analyze_text` for each text, in order; empty texts (photo-only comments) allowed."""
        return [
            self.analyze_text(text, require_cyrillic=require_cyrillic, allow_empty=allow_empty)
            for text in texts
        ]

    def phrase(self, lemmas: Sequence[str]) -> str:
        """Lemmas as a readable phrase: an adjective agrees with the noun after it.

        ("горячий", "вода") → "горячая вода"; anything else comes back joined unchanged (the
        case a noun had in the text is lost with lemmatisation, so "цена вода" stays).
        """
        if len(lemmas) != 2:
            return " ".join(lemmas)
        head, noun = lemmas
        head_parse = next(
            (
                p
                for p in self._morph.parse(head)
                if p.tag.POS in _PHRASE_HEADS and p.normal_form == head
            ),
            None,
        )
        noun_parse = next(
            (p for p in self._morph.parse(noun) if p.tag.POS == "NOUN" and p.normal_form == noun),
            None,
        )
        if head_parse is None or noun_parse is None:
            return f"{head} {noun}"
        noun_tag = noun_parse.tag
        if "Pltm" in noun_tag or "plur" in noun_tag:
            required = {"plur", "nomn"}
        else:
            gender = next((g for g in ("masc", "femn", "neut") if g in noun_tag), "masc")
            required = {gender, "sing", "nomn"}
        inflected = head_parse.inflect(required)
        return f"{inflected.word if inflected is not None else head} {noun}"


def _parse_uncached(morph: Pymorphy, tags: dict[str, tuple[str, ...]], word: str) -> WordParse:
    parses = morph.parse(word)
    if not parses:
        return _unknown(word)
    best = parses[0]
    tag_text = str(best.tag)
    grammemes = tags.get(tag_text)
    if grammemes is None:
        grammemes = tuple(sys.intern(g) for g in tag_text.replace(" ", ",").split(","))
        tags[tag_text] = grammemes
    pos = best.tag.POS
    if pos is not None:
        pos = sys.intern(str(pos))  # pymorphy3's grammeme str subclass does not pickle
    elif "LATN" in grammemes or "ROMN" in grammemes:
        pos = "LATN"
    return WordParse(sys.intern(str(best.normal_form)), pos, grammemes)


def _unknown(word: str) -> WordParse:
    return WordParse(word, None, (UNKNOWN_POS,))


def create_analyzer(settings: MorphologySettings | None = None) -> MorphAnalyzer:
    """The worker's analyzer, built at start-up: dictionaries load now, not on the first job.

    Without `settings` they are read from the environment (`MORPHOLOGY_*`, `.env`), failing
    with a `ConfigError` that names the variable.
    """
    if settings is None:
        settings = load(MorphologySettings)
    return MorphAnalyzer(settings)
