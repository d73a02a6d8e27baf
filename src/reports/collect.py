"""The data of a comment report: one community (or all) over a period, counted by SQL
aggregates.

A report holds comment counts by day, the top authors, the top posts by comments and the top
keywords of the analysed comments; it is stored whole in `reports` (see `Report`), keyed by the
id of the job that made it, so that any API process can serve it for download.

Counting rules:
- The community's comments are the rows of `comments` with `owner_id = -group_id`, thread
  replies included; without a `group_id`, every community's (`owner_id < 0`), posts told apart
  by their wall. `since` is inclusive, `until` exclusive; days are UTC calendar days.
- Deleted comments count (VK still shows them, as deleted) and are also counted apart
  (`deleted`). Authors are the distinct non-null `from_id`s (a community answering in its
  own name has a negative id).
- Keywords come from the stored analyses (`comment_analyses.lemma_counts`) of the comments
  that are not deleted, filtered by the project's keyword rules (content parts of speech, stop
  words, shortest word: `src.morphology.keywords`) and ranked by occurrences. Comments never
  analysed add nothing; an analysis is used as stored even if the text changed since.
- The day series: with both `since` and `until`, every day of [since, until) (at most
  `MAX_PERIOD_DAYS`); otherwise from the first to the last comment found. Days without
  comments are there with 0.
- A community without stored comments (or not stored at all) gives a report of zeros, with a
  note saying so; it is not an error.

Large communities do not fill memory: counts are SQL aggregates, the lemma counts too (summed
per lemma by the database, from each analysis' JSON object), and the lemmas are streamed, best
first, only until enough have passed the keyword filter. The SQL is the comments package's
(`src.comments.queries`); `collect_report` takes its session.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from src.arq.context import ProgressReporter
from src.comments import queries
from src.comments.queries import CommunityPeriod
from src.morphology.analyzer import MorphAnalyzer
from src.morphology.keywords import KeywordExtractor
from src.reports.data import (
    DayCount,
    KeywordCount,
    ReportData,
    Totals,
)

STREAM_CHUNK = 1000  # analyses fetched per round trip
EXCERPT_CHARS = 200  # of a post's text


def _series(
    counts: dict[date, tuple[int, int]], since: datetime | None, until: datetime | None
) -> list[DayCount]:
    if since is not None and until is not None:
        first: date | None = since.astimezone(UTC).date()
        last: date | None = (until.astimezone(UTC) - timedelta(microseconds=1)).date()
    else:
        first, last = (min(counts), max(counts)) if counts else (None, None)
    if first is None or last is None:
        return []
    days = []
    day = first
    while day <= last:
        comments, deleted = counts.get(day, (0, 0))
        days.append(DayCount(day, comments, deleted))
        day += timedelta(days=1)
    return days


def keyword_filter(
    extractor: KeywordExtractor, analyzer: MorphAnalyzer | None
) -> Callable[[str], bool]:
    """Whether a stored lemma may be a keyword: the extractor's rules for a lemma (shortest word,
    stop words) and, with an analyzer, a content part of speech (the lemma's own parse)."""
    content_pos = frozenset(extractor.settings.content_pos)

    def keep(lemma: str) -> bool:
        kept, _ = extractor.terms([lemma])
        if not kept:
            return False
        return analyzer is None or analyzer.parse_word(lemma).pos in content_pos

    return keep


async def _keywords(
    session: AsyncSession,
    period: CommunityPeriod,
    *,
    keep: Callable[[str], bool],
    top_n: int,
) -> tuple[list[KeywordCount], int]:
    """The top lemmas of the analysed comments, and how many comments were analysed (the
    lemmas are streamed `STREAM_CHUNK` rows at a time, only until `top_n` have passed)."""
    analysed = await queries.analysed_count(session, period)
    if not analysed:
        return [], 0
    lemmas = await queries.top_lemmas(
        session, period, keep=keep, limit=top_n, chunk_size=STREAM_CHUNK
    )
    return [KeywordCount(k.term, k.occurrences, k.comments) for k in lemmas], analysed


async def collect_report(
    session: AsyncSession,
    *,
    group_id: int | None,
    since: datetime | None = None,
    until: datetime | None = None,
    top_n: int = 20,
    analyzer: MorphAnalyzer | None = None,
    progress: ProgressReporter | None = None,
) -> ReportData:
    """Count a community's (`group_id` None: every community's) comments in the period (see
    the module docstring for the rules)."""

    async def stage(percent: float, message: str) -> None:
        if progress is not None:
            await progress(percent, message)

    since = since.astimezone(UTC) if since is not None else None  # every time shown in UTC
    until = until.astimezone(UTC) if until is not None else None
    period = CommunityPeriod(group_id, since, until)
    generated_at = datetime.now(UTC)

    await stage(5, "counting comments")
    community = await queries.community_name(session, group_id) if group_id is not None else None
    communities = await queries.community_count(session) if group_id is None else None
    totals = await queries.period_totals(session, period)

    await stage(20, "counting comments by day")
    days = _series(await queries.counts_by_day(session, period), since, until)

    await stage(35, "ranking authors")
    top_authors = await queries.top_authors(session, period, limit=top_n)

    await stage(45, "ranking posts")
    top_posts = await queries.top_posts(session, period, limit=top_n, excerpt_chars=EXCERPT_CHARS)

    await stage(55, "counting keywords of the analysed comments")
    extractor = KeywordExtractor(
        analyzer.settings if analyzer is not None else None, analyzer=analyzer
    )
    keywords, analysed = await _keywords(
        session, period, keep=keyword_filter(extractor, analyzer), top_n=top_n
    )

    notes = []
    if group_id is None:
        if not communities:
            notes.append(
                "no community is stored: parse one first (POST /api/v1/comments/parse/vk/async)"
            )
    elif community is None:
        notes.append(
            f"community {group_id} is not stored: parse it first "
            "(POST /api/v1/comments/parse/vk/async)"
        )
    if not totals.comments:
        notes.append("no stored comments in this period")
    elif not analysed:
        notes.append(
            "no analysed comments, so no keywords: analyse them first "
            "(process_batch_comments with operations ['morphology'])"
        )
    return ReportData(
        group_id=group_id,
        community=community,
        since=since,
        until=until,
        generated_at=generated_at,
        first_comment_at=totals.first_at,
        last_comment_at=totals.last_at,
        totals=Totals(
            comments=totals.comments,
            deleted=totals.deleted,
            authors=totals.authors,
            posts=totals.posts,
            days=len(days),
            active_days=sum(1 for d in days if d.comments),
            analysed=analysed,
        ),
        days=days,
        top_authors=top_authors,
        top_posts=top_posts,
        keywords=keywords,
        notes=notes,
        communities=communities,
    )
