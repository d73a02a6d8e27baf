"""Keywords of a set of comments: content lemmas and two-word phrases, ranked by TF-IDF.

Terms are lemmas of content words (`MORPHOLOGY_CONTENT_POS`, by default nouns, adjectives and
verbs) that are not stop words, and phrases of two such lemmas that stood next to each other
("горячей воды" → "горячий вода"). Phrases are keyed by their lemmas; `Keyword.phrase` shows them
with the adjective agreeing with the noun ("горячая вода") when an analyzer is at hand.

Scoring, with a background (`CorpusStats` of the community's other comments):
    score = tf × idf, tf = Σ over target comments of (1 + ln n), n = the term's occurrences in
    that comment (one comment repeating a word cannot dominate),
    idf = ln((1 + N) / (1 + df)) + 1, N = background comments, df = those containing the term.
Without a background the score is the plain count. Ties break by count, then alphabetically.

Stop words: the `stop-words` package's Russian list plus `MORPHOLOGY_EXTRA_STOP_WORDS`, compared
with "ё" read as "е". The list holds word forms ("была", "говорил"), so a word is dropped when
its form or its lemma is listed. It is not lemmatised itself: "лучше" and "больше" are listed,
but "хороший" and "большой" must stay keywords. The list includes "не": negation is never a
keyword, but it stays in `TextAnalysis.tokens` for whoever needs it (sentiment).

Documents are consumed once, as they come: memory holds counters, never the documents. A
`TermTally` gathers the counts of documents fed to it one at a time (a community's comments,
chunk by chunk) and `rank` scores them; `extract` does both for documents at hand. A tally keeps
at most `MORPHOLOGY_KEYWORD_MAX_TERMS` distinct terms: past that, the terms seen the fewest times
so far are forgotten (`TermTally.prune`), so a million comments cost no more memory than the cap.
A forgotten term that comes back counts from zero again: the counts of rare terms (and, with
them, their rank) are then lower bounds, while the frequent terms that make the top keywords are
counted exactly unless the cap is tiny. Below the cap every count is exact.
"""

# Russian text is this module's subject: Cyrillic letters that look like Latin ones are meant.

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from src.morphology.analyzer import MorphAnalyzer, TextAnalysis
from src.morphology.config import MorphologySettings
from src.morphology.tokenizer import fold_yo

# A document: an analysed comment, or a sequence of lemmas chosen by the caller (every one is
# taken as a content word; neighbours in the sequence may form a phrase).
Document = TextAnalysis | Sequence[str]


def russian_stop_words() -> frozenset[str]:
    """The `stop-words` package's Russian list ("ё" read as "е")."""
    from stop_words import get_stop_words  # type: ignore[import-untyped]

    words: list[str] = get_stop_words("russian")
    return frozenset(fold_yo(word.lower()) for word in words)


def build_stop_words(settings: MorphologySettings) -> frozenset[str]:
    """The Russian list plus `MORPHOLOGY_EXTRA_STOP_WORDS` ("ё" read as "е")."""
    return russian_stop_words() | {fold_yo(word) for word in settings.extra_stop_words}


@dataclass(frozen=True, slots=True)
class Keyword:
    term: str  # a lemma, or two lemmas separated by a space
    score: float
    count: int  # occurrences in the target documents
    documents: int  # target documents containing it
    phrase: str  # how to show it: "горячая вода" for the term "горячий вода"

    @property
    def is_phrase(self) -> bool:
        return " " in self.term


@dataclass(slots=True)
class TermTally:
    """The counts `KeywordExtractor.rank` needs, of documents added one at a time.

    `max_terms` (None: no limit) bounds the distinct terms held; see the module docstring.
    """

    max_terms: int | None = None
    documents: int = 0
    counts: Counter[str] = field(default_factory=Counter)  # occurrences
    document_counts: Counter[str] = field(default_factory=Counter)  # documents containing it
    # tf = Σ (1 + ln n) = document count + Σ ln n over the documents where n > 1.
    repeats: dict[str, float] = field(default_factory=dict)
    forgotten: int = 0  # terms dropped by `prune` so far (0: every count is exact)

    def add(self, terms: list[str]) -> None:
        """One document's terms (lemmas and phrases, repeated as often as they occur)."""
        self.documents += 1
        distinct = set(terms)
        self.counts.update(terms)
        self.document_counts.update(distinct)
        if len(distinct) < len(terms):
            repeats = self.repeats
            for term, n in Counter(terms).items():
                if n > 1:
                    repeats[term] = repeats.get(term, 0.0) + math.log(n)
        if self.max_terms is not None and len(self.counts) > self.max_terms:
            # Down to half the cap, so that pruning (linear in the terms) stays rare.
            self.prune(self.max_terms // 2)

    def prune(self, keep: int) -> None:
        """Forget every term seen at most t times, t the least that leaves at most `keep`.

        Terms tied on a count go or stay together: which survive never depends on their
        spelling or on the order they came in.
        """
        if len(self.counts) <= keep:
            return
        by_count = sorted(Counter(self.counts.values()).items(), reverse=True)
        kept, threshold = 0, 0
        for count, terms in by_count:
            if kept + terms > keep:
                threshold = count
                break
            kept += terms
        before = len(self.counts)
        self.counts = Counter({t: n for t, n in self.counts.items() if n > threshold})
        self.document_counts = Counter(
            {t: n for t, n in self.document_counts.items() if t in self.counts}
        )
        self.repeats = {t: r for t, r in self.repeats.items() if t in self.counts}
        self.forgotten += before - len(self.counts)


@dataclass(slots=True)
class CorpusStats:
    """How many documents a corpus has and how many of them contain each term (lemma or phrase).

    Build it with `KeywordExtractor.corpus_stats`; `to_dict`/`from_dict` store it, `merge`
    adds a later batch, `prune` drops rare terms to keep it small.
    """

    documents: int = 0
    document_frequencies: Counter[str] = field(default_factory=Counter)

    def add_document(self, terms: Iterable[str]) -> None:
        self.documents += 1
        self.document_frequencies.update(set(terms))

    def merge(self, other: CorpusStats) -> None:
        self.documents += other.documents
        self.document_frequencies.update(other.document_frequencies)

    def prune(self, min_documents: int) -> None:
        """Forget terms found in fewer than `min_documents` documents (they then count as new)."""
        self.document_frequencies = Counter(
            {term: df for term, df in self.document_frequencies.items() if df >= min_documents}
        )

    def idf(self, term: str) -> float:
        return math.log((1 + self.documents) / (1 + self.document_frequencies.get(term, 0))) + 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "documents": self.documents,
            "document_frequencies": dict(self.document_frequencies),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CorpusStats:
        return cls(int(data["documents"]), Counter(data["document_frequencies"]))


class KeywordExtractor:
    """Turns documents into terms and ranks them; build once, use for many extractions."""

    def __init__(
        self,
        settings: MorphologySettings | None = None,
        *,
        analyzer: MorphAnalyzer | None = None,
        stop_words: frozenset[str] | None = None,
    ) -> None:
        self.settings = settings if settings is not None else MorphologySettings.model_construct()
        self.analyzer = analyzer
        self.stop_words = stop_words if stop_words is not None else build_stop_words(self.settings)
        self._content_pos = frozenset(self.settings.content_pos)

    def _is_stop(self, word: str) -> bool:
        return (word.replace("ё", "е") if "ё" in word else word) in self.stop_words

    def terms(self, document: Document) -> tuple[list[str], list[str]]:
        """A document's content lemmas and its phrases (adjacent content lemmas), in order."""
        min_length = self.settings.min_word_length
        stop = self.stop_words
        lemmas: list[str] = []
        phrases: list[str] = []
        previous: str | None = None
        if isinstance(document, TextAnalysis):
            content_pos = self._content_pos
            for token in document.tokens:
                parse = token.parse
                if parse.pos in content_pos:
                    lemma, word = parse.lemma, token.text
                    if (
                        len(word) >= min_length
                        and (lemma.replace("ё", "е") if "ё" in lemma else lemma) not in stop
                        and (word.replace("ё", "е") if "ё" in word else word) not in stop
                    ):
                        lemmas.append(lemma)
                        if previous is not None and token.joined and previous != lemma:
                            phrases.append(f"{previous} {lemma}")
                        previous = lemma
                        continue
                previous = None
        elif isinstance(document, str):
            raise TypeError("a document is a TextAnalysis or a sequence of lemmas, not a str")
        else:
            for raw in document:
                lemma = raw.lower()
                if len(lemma) >= min_length and not self._is_stop(lemma):
                    lemmas.append(lemma)
                    if previous is not None and previous != lemma:
                        phrases.append(f"{previous} {lemma}")
                    previous = lemma
                else:
                    previous = None
        return lemmas, phrases

    def corpus_stats(
        self, documents: Iterable[Document], *, into: CorpusStats | None = None
    ) -> CorpusStats:
        """Document frequencies of every term over `documents` (a background), added `into`."""
        stats = into if into is not None else CorpusStats()
        for document in documents:
            lemmas, phrases = self.terms(document)
            stats.add_document(lemmas + phrases)
        return stats

    def new_tally(self) -> TermTally:
        """An empty tally, bounded by `keyword_max_terms`."""
        return TermTally(max_terms=self.settings.keyword_max_terms)

    def tally(self, documents: Iterable[Document], *, into: TermTally | None = None) -> TermTally:
        """The term counts of `documents`, added `into` a tally (a new one by default)."""
        tally = into if into is not None else self.new_tally()
        for document in documents:
            lemmas, phrases = self.terms(document)
            tally.add(lemmas + phrases)
        return tally

    def extract(
        self,
        documents: Iterable[Document],
        *,
        top_n: int = 20,
        background: CorpusStats | None = None,
    ) -> list[Keyword]:
        """The `top_n` keywords of `documents`, best first (see the module docstring)."""
        return self.rank(self.tally(documents), top_n=top_n, background=background)

    def rank(
        self, tally: TermTally, *, top_n: int = 20, background: CorpusStats | None = None
    ) -> list[Keyword]:
        """The `top_n` keywords of the tallied documents, best first."""
        if top_n <= 0:
            return []
        counts, document_counts, repeats = tally.counts, tally.document_counts, tally.repeats
        min_phrase = self.settings.bigram_min_count

        def candidates() -> Iterator[tuple[float, int, str]]:
            for term, count in counts.items():
                if count < min_phrase and " " in term:
                    continue
                if background is None:
                    score = float(count)
                else:
                    tf = document_counts[term] + repeats.get(term, 0.0)
                    score = tf * background.idf(term)
                yield score, count, term

        best = heapq.nsmallest(top_n, candidates(), key=lambda c: (-c[0], -c[1], c[2]))
        return [
            Keyword(
                term=term,
                score=round(score, 6),
                count=count,
                documents=document_counts[term],
                phrase=self._phrase(term),
            )
            for score, count, term in best
        ]

    def _phrase(self, term: str) -> str:
        if " " not in term or self.analyzer is None:
            return term
        return self.analyzer.phrase(term.split(" "))


def extract_keywords(
    documents: Iterable[Document],
    *,
    top_n: int = 20,
    background: CorpusStats | None = None,
    settings: MorphologySettings | None = None,
    analyzer: MorphAnalyzer | None = None,
) -> list[Keyword]:
    """The `top_n` keywords of `documents` (one-off; reuse a `KeywordExtractor` for many)."""
    extractor = KeywordExtractor(settings, analyzer=analyzer)
    return extractor.extract(documents, top_n=top_n, background=background)
