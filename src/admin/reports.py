"""Comment reports of one community over a period, rendered as JSON, CSV or an HTML page.

A report holds comment counts by day, the top authors, the top posts by comments and the top
keywords of the analysed comments; it is stored whole in `reports` (see `Report`), keyed by the
id of the job that made it, so that any API process can serve it for download.

Counting rules:
- The community's comments are the rows of `comments` with `owner_id = -group_id`, thread
  replies included. `since` is inclusive, `until` exclusive; days are UTC calendar days.
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
first, only until enough have passed the keyword filter. The functions take their session (or
sessionmaker) and flush at most.
"""

from __future__ import annotations

import asyncio
import csv
import html
import io
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import (
    ColumnElement,
    Integer,
    and_,
    case,
    cast,
    distinct,
    func,
    literal_column,
    select,
    true,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.admin.cleanup import Progress
from src.admin.exceptions import ReportNotFound, ReportNotReady
from src.admin.models import Report
from src.arq import history
from src.arq.models import JobRecord
from src.arq.schemas import FINISHED_STATUSES, JobStatus
from src.auth.schemas import Principal
from src.comments.models import Comment, CommentAnalysis, Community, Post
from src.morphology.analyzer import MorphAnalyzer
from src.morphology.keywords import KeywordExtractor

MAX_PERIOD_DAYS = 3660  # a since..until series is at most ten years of days
MAX_CHART_BARS = 366  # longer series are drawn with several days per bar
STREAM_CHUNK = 1000  # analyses fetched per round trip
EXCERPT_CHARS = 200  # of a post's text
# The owner of a job with no history row (not enqueued through the API): what the job module
# calls its own jobs (`src.arq.service.SYSTEM`); only admins see such reports.
SYSTEM_OWNER = "system"
REPORT_TASK = "generate_report"
JOB_STATUS_URL = "/api/v1/arq/status"
FINISHED = frozenset(status.value for status in FINISHED_STATUSES)


class ReportFormat(StrEnum):
    JSON = "json"
    CSV = "csv"
    HTML = "html"


CONTENT_TYPES = {
    ReportFormat.JSON: "application/json",
    ReportFormat.CSV: "text/csv; charset=utf-8",
    ReportFormat.HTML: "text/html; charset=utf-8",
}


# -- the data ---------------------------------------------------------------------------------


def author_url(from_id: int) -> str:
    return f"https://vk.com/id{from_id}" if from_id > 0 else f"https://vk.com/club{-from_id}"


@dataclass(frozen=True, slots=True)
class CommunityInfo:
    id: int
    screen_name: str
    name: str


@dataclass(frozen=True, slots=True)
class DayCount:
    day: date
    comments: int
    deleted: int


@dataclass(frozen=True, slots=True)
class AuthorCount:
    from_id: int
    comments: int
    deleted: int


@dataclass(frozen=True, slots=True)
class PostCount:
    post_id: int
    comments: int
    date: datetime | None  # None: the post itself is not stored, only its comments
    text: str | None  # the first `EXCERPT_CHARS` characters


@dataclass(frozen=True, slots=True)
class KeywordCount:
    term: str
    count: int  # occurrences in the analysed comments
    comments: int  # analysed comments containing it


@dataclass(frozen=True, slots=True)
class Totals:
    comments: int  # deleted ones included
    deleted: int
    authors: int
    posts: int  # posts with at least one comment in the period
    days: int  # days in the series
    active_days: int  # days with at least one comment
    analysed: int  # comments (not deleted) with a stored analysis


@dataclass(frozen=True)
class ReportData:
    group_id: int
    community: CommunityInfo | None
    since: datetime | None
    until: datetime | None
    generated_at: datetime
    first_comment_at: datetime | None
    last_comment_at: datetime | None
    totals: Totals
    days: list[DayCount]
    top_authors: list[AuthorCount]
    top_posts: list[PostCount]
    keywords: list[KeywordCount]
    notes: list[str]

    def post_url(self, post_id: int) -> str:
        return f"https://vk.com/wall-{self.group_id}_{post_id}"

    @property
    def title(self) -> str:
        if self.community is not None and self.community.name:
            return self.community.name
        return f"community {self.group_id}"

    def to_document(self) -> dict[str, Any]:
        """The JSON report."""
        return {
            "report": "vk-comments",
            "group_id": self.group_id,
            "community": asdict(self.community) if self.community is not None else None,
            "community_found": self.community is not None,
            "period": {
                "since": _iso(self.since),
                "until": _iso(self.until),
                "first_comment_at": _iso(self.first_comment_at),
                "last_comment_at": _iso(self.last_comment_at),
            },
            "generated_at": self.generated_at.isoformat(),
            "totals": asdict(self.totals),
            "days": [
                {"date": d.day.isoformat(), "comments": d.comments, "deleted": d.deleted}
                for d in self.days
            ],
            "top_authors": [
                {
                    "rank": rank,
                    "from_id": a.from_id,
                    "comments": a.comments,
                    "deleted": a.deleted,
                    "url": author_url(a.from_id),
                }
                for rank, a in enumerate(self.top_authors, 1)
            ],
            "top_posts": [
                {
                    "rank": rank,
                    "post_id": p.post_id,
                    "comments": p.comments,
                    "date": _iso(p.date),
                    "text": p.text,
                    "url": self.post_url(p.post_id),
                }
                for rank, p in enumerate(self.top_posts, 1)
            ],
            "keywords": [
                {"rank": rank, "term": k.term, "count": k.count, "comments": k.comments}
                for rank, k in enumerate(self.keywords, 1)
            ],
            "notes": self.notes,
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# -- collecting -------------------------------------------------------------------------------


def _day(dialect: str) -> ColumnElement[str]:
    """A comment's UTC day as 'YYYY-MM-DD' (constants inlined: GROUP BY repeats the expression,
    and PostgreSQL would not match two copies with separate bound parameters)."""
    if dialect == "postgresql":
        utc = func.timezone(literal_column("'UTC'"), Comment.date)
        return func.to_char(utc, literal_column("'YYYY-MM-DD'"))
    # SQLite stores UTC text 'YYYY-MM-DD HH:MM:SS.ffffff'.
    return func.substr(Comment.date, 1, 10)


def _deleted() -> ColumnElement[int]:
    return func.coalesce(func.sum(case((Comment.is_deleted, 1), else_=0), type_=Integer), 0)


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
    conditions: Sequence[ColumnElement[bool]],
    *,
    group_id: int,
    keep: Callable[[str], bool],
    top_n: int,
) -> tuple[list[KeywordCount], int]:
    """The top lemmas of the analysed comments, and how many comments were analysed.

    The lemma counts are summed by the database (one row per distinct lemma, best first), and
    the rows are streamed only until `top_n` have passed the filter: memory is bounded by the
    chunk, not by the community or its vocabulary.
    """
    analysed_join = (
        select(func.count())
        .select_from(CommentAnalysis)
        .join(
            Comment,
            and_(
                Comment.owner_id == CommentAnalysis.owner_id,
                Comment.comment_id == CommentAnalysis.comment_id,
            ),
        )
        .where(CommentAnalysis.owner_id == -group_id, Comment.is_deleted.is_(False), *conditions)
    )
    analysed = int(await session.scalar(analysed_join) or 0)
    if not analysed:
        return [], 0
    dialect = session.get_bind().dialect.name
    # A table of (key, value) per lemma of each row's JSON object; a function in FROM may read
    # the tables before it (implicitly LATERAL on PostgreSQL, as on SQLite).
    each_name = "jsonb_each_text" if dialect == "postgresql" else "json_each"
    each = getattr(func, each_name)(CommentAnalysis.lemma_counts).table_valued("key", "value")
    occurrences = func.sum(cast(each.c.value, Integer)).label("occurrences")
    containing = func.count().label("containing")
    query = (
        analysed_join.with_only_columns(each.c.key, occurrences, containing)
        .join(each, true())
        .group_by(each.c.key)
        .order_by(occurrences.desc(), containing.desc(), each.c.key)
        .execution_options(yield_per=STREAM_CHUNK)
    )
    found: list[KeywordCount] = []
    result = await session.stream(query)
    async for chunk in result.partitions(STREAM_CHUNK):
        for term, count, comments in chunk:
            if count > 0 and keep(term):
                found.append(KeywordCount(term, int(count), int(comments)))
                if len(found) == top_n:
                    break
        if len(found) == top_n:
            break
        await asyncio.sleep(0)  # let the worker's loop run between chunks
    await result.close()
    return found, analysed


async def collect_report(
    session: AsyncSession,
    *,
    group_id: int,
    since: datetime | None = None,
    until: datetime | None = None,
    top_n: int = 20,
    analyzer: MorphAnalyzer | None = None,
    progress: Progress | None = None,
) -> ReportData:
    """Count a community's comments in the period (see the module docstring for the rules)."""

    async def stage(percent: float, message: str) -> None:
        if progress is not None:
            await progress(percent, message)

    since = since.astimezone(UTC) if since is not None else None  # every time shown in UTC
    until = until.astimezone(UTC) if until is not None else None
    conditions: list[ColumnElement[bool]] = [Comment.owner_id == -group_id]
    if since is not None:
        conditions.append(Comment.date >= since)
    if until is not None:
        conditions.append(Comment.date < until)
    generated_at = datetime.now(UTC)

    await stage(5, "counting comments")
    community_row = await session.get(Community, group_id)
    community = (
        CommunityInfo(community_row.id, community_row.screen_name, community_row.name)
        if community_row is not None
        else None
    )
    total, deleted, authors, posts, first_at, last_at = (
        await session.execute(
            select(
                func.count(),
                _deleted(),
                func.count(distinct(Comment.from_id)),
                func.count(distinct(Comment.post_id)),
                func.min(Comment.date),
                func.max(Comment.date),
            ).where(*conditions)
        )
    ).one()

    await stage(20, "counting comments by day")
    day = _day(session.get_bind().dialect.name).label("day")
    by_day = {
        date.fromisoformat(value): (int(count), int(dead))
        for value, count, dead in await session.execute(
            select(day, func.count(), _deleted()).where(*conditions).group_by(day).order_by(day)
        )
    }
    days = _series(by_day, since, until)

    await stage(35, "ranking authors")
    author_rows = await session.execute(
        select(Comment.from_id, func.count(), _deleted())
        .where(*conditions, Comment.from_id.is_not(None))
        .group_by(Comment.from_id)
        .order_by(func.count().desc(), Comment.from_id)
        .limit(top_n)
    )
    top_authors = [AuthorCount(a, n, d) for a, n, d in author_rows if a is not None]

    await stage(45, "ranking posts")
    post_counts = (
        await session.execute(
            select(Comment.post_id, func.count())
            .where(*conditions)
            .group_by(Comment.post_id)
            .order_by(func.count().desc(), Comment.post_id)
            .limit(top_n)
        )
    ).all()
    stored_posts = {
        post_id: (posted_at, excerpt)
        for post_id, posted_at, excerpt in await session.execute(
            select(Post.post_id, Post.date, func.substr(Post.text, 1, EXCERPT_CHARS)).where(
                Post.owner_id == -group_id, Post.post_id.in_([row[0] for row in post_counts])
            )
        )
    }
    top_posts = [
        PostCount(int(post_id), int(count), *stored_posts.get(post_id, (None, None)))
        for post_id, count in post_counts
    ]

    await stage(55, "counting keywords of the analysed comments")
    extractor = KeywordExtractor(
        analyzer.settings if analyzer is not None else None, analyzer=analyzer
    )
    keywords, analysed = await _keywords(
        session,
        conditions,
        group_id=group_id,
        keep=keyword_filter(extractor, analyzer),
        top_n=top_n,
    )

    notes = []
    if community is None:
        notes.append(
            f"community {group_id} is not stored: parse it first "
            "(POST /api/v1/comments/parse/vk/async)"
        )
    if not total:
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
        first_comment_at=first_at,
        last_comment_at=last_at,
        totals=Totals(
            comments=int(total),
            deleted=int(deleted),
            authors=int(authors),
            posts=int(posts),
            days=len(days),
            active_days=sum(1 for d in days if d.comments),
            analysed=analysed,
        ),
        days=days,
        top_authors=top_authors,
        top_posts=top_posts,
        keywords=keywords,
        notes=notes,
    )


# -- rendering --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RenderedReport:
    content: bytes
    content_type: str
    filename: str


def render(data: ReportData, report_format: ReportFormat) -> RenderedReport:
    """The report as a file of the format."""
    if report_format is ReportFormat.JSON:
        text = json.dumps(data.to_document(), ensure_ascii=False, indent=2) + "\n"
    elif report_format is ReportFormat.CSV:
        text = render_csv(data)
    else:
        text = render_html(data)
    stamp = data.generated_at.strftime("%Y%m%d-%H%M%S")
    return RenderedReport(
        content=text.encode(),
        content_type=CONTENT_TYPES[report_format],
        filename=f"comments-report-{data.group_id}-{stamp}.{report_format.value}",
    )


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> object:
    """A CSV cell; text that a spreadsheet would run as a formula gets a leading quote.

    Numbers are written as they are ("-5" is a number to a spreadsheet, not a formula)."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def render_csv(data: ReportData) -> str:
    """RFC 4180 CSV in sections: a row naming the section, its header row, its rows, an empty
    row. Sections: summary, days, top_authors, top_posts, keywords, notes."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)

    def section(name: str, header: Sequence[str], rows: Iterator[Sequence[object]]) -> None:
        writer.writerow([name])
        writer.writerow(header)
        writer.writerows([_cell(value) for value in row] for row in rows)
        writer.writerow([])

    community = data.community
    summary: list[tuple[str, object]] = [
        ("group_id", data.group_id),
        ("screen_name", community.screen_name if community else None),
        ("name", community.name if community else None),
        ("since", _iso(data.since)),
        ("until", _iso(data.until)),
        ("first_comment_at", _iso(data.first_comment_at)),
        ("last_comment_at", _iso(data.last_comment_at)),
        ("generated_at", data.generated_at.isoformat()),
        *asdict(data.totals).items(),
    ]
    section("summary", ("field", "value"), iter(summary))
    section(
        "days",
        ("date", "comments", "deleted"),
        ((d.day.isoformat(), d.comments, d.deleted) for d in data.days),
    )
    section(
        "top_authors",
        ("rank", "from_id", "comments", "deleted", "url"),
        (
            (rank, a.from_id, a.comments, a.deleted, author_url(a.from_id))
            for rank, a in enumerate(data.top_authors, 1)
        ),
    )
    section(
        "top_posts",
        ("rank", "post_id", "comments", "date", "url", "text"),
        (
            (rank, p.post_id, p.comments, _iso(p.date), data.post_url(p.post_id), p.text)
            for rank, p in enumerate(data.top_posts, 1)
        ),
    )
    section(
        "keywords",
        ("rank", "term", "count", "comments"),
        ((rank, k.term, k.count, k.comments) for rank, k in enumerate(data.keywords, 1)),
    )
    section("notes", ("note",), ((note,) for note in data.notes))
    return buffer.getvalue()


_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1f2933;
background:#f5f7fa}
main{max-width:1040px;margin:0 auto;padding:24px}
h1{font-size:1.6rem;margin:0 0 4px}h2{font-size:1.2rem;margin:32px 0 8px}
.meta{color:#52606d;margin:0 0 16px}
.totals{display:flex;flex-wrap:wrap;gap:12px;padding:0;margin:0;list-style:none}
.totals li{background:#fff;border-radius:8px;padding:12px 16px;min-width:110px;
box-shadow:0 1px 2px rgba(0,0,0,.08)}
.totals b{display:block;font-size:1.4rem}.totals span{color:#52606d;font-size:.85rem}
figure{margin:0;background:#fff;border-radius:8px;padding:12px;
box-shadow:0 1px 2px rgba(0,0,0,.08)}
figcaption{color:#52606d;font-size:.85rem;margin-top:4px}
svg{width:100%;height:auto;display:block}
svg .c{fill:#3e7bfa}svg .d{fill:#f0b429}svg text{font-size:11px;fill:#52606d}
svg line{stroke:#cbd2d9}
table{border-collapse:collapse;width:100%;background:#fff;border-radius:8px;overflow:hidden;
box-shadow:0 1px 2px rgba(0,0,0,.08)}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid #e4e7eb;vertical-align:top}
th{background:#e4e7eb;font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.empty{color:#52606d;font-style:italic}
.notes{color:#52606d}
a{color:#2057c9}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _bins(days: Sequence[DayCount]) -> tuple[int, list[tuple[date, date, int, int]]]:
    """Days per bar, and the bars: (first day, last day, comments, deleted)."""
    per_bar = max(1, math.ceil(len(days) / MAX_CHART_BARS))
    bars = []
    for start in range(0, len(days), per_bar):
        group = days[start : start + per_bar]
        bars.append(
            (
                group[0].day,
                group[-1].day,
                sum(d.comments for d in group),
                sum(d.deleted for d in group),
            )
        )
    return per_bar, bars


def render_chart(days: Sequence[DayCount]) -> str:
    """An inline SVG bar chart of comments per day (deleted ones stacked on top)."""
    width, height = 960, 260
    left, right, top, bottom = 52, 12, 12, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    per_bar, bars = _bins(days)
    peak = max((bar[2] for bar in bars), default=0)
    label = "comments per day" if per_bar == 1 else f"comments per {per_bar} days"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{_e(label)}">',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}"/>',
    ]
    scale = plot_h / peak if peak else 0.0
    for tick in sorted({0, peak // 2, peak} if peak else {0}):
        y = top + plot_h - tick * scale
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" '
            'stroke-dasharray="2 4"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick}</text>'
        )
    if not bars:
        parts.append(
            f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" text-anchor="middle">'
            "no comments in this period</text>"
        )
    slot = plot_w / max(1, len(bars))
    gap = min(2.0, slot * 0.2)
    for index, (first, last, comments, deleted) in enumerate(bars):
        x = left + index * slot + gap / 2
        when = first.isoformat() if first == last else f"{first.isoformat()} – {last.isoformat()}"
        tip = _e(f"{when}: {comments} comments ({deleted} deleted)")
        kept_h = (comments - deleted) * scale
        deleted_h = deleted * scale
        base = top + plot_h
        parts.append(f"<g><title>{tip}</title>")
        if kept_h:
            parts.append(
                f'<rect class="c" x="{x:.2f}" y="{base - kept_h:.2f}" '
                f'width="{slot - gap:.2f}" height="{kept_h:.2f}"/>'
            )
        if deleted_h:
            parts.append(
                f'<rect class="d" x="{x:.2f}" y="{base - kept_h - deleted_h:.2f}" '
                f'width="{slot - gap:.2f}" height="{deleted_h:.2f}"/>'
            )
        parts.append("</g>")
    if bars:
        for index, anchor in ((0, "start"), (len(bars) - 1, "end")):
            x = left + (index * slot if anchor == "start" else (index + 1) * slot)
            parts.append(
                f'<text x="{x:.1f}" y="{height - 10}" text-anchor="{anchor}">'
                f"{_e(bars[index][0].isoformat())}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: set[int]) -> str:
    """A table of already escaped cells (`numeric`: the right-aligned columns)."""
    if not rows:
        return '<p class="empty">none</p>'
    head = "".join(
        f'<th class="n">{_e(name)}</th>' if index in numeric else f"<th>{_e(name)}</th>"
        for index, name in enumerate(header)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{cell}</td>' if index in numeric else f"<td>{cell}</td>"
            for index, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _link(url: str, text: object) -> str:
    return f'<a href="{_e(url)}" rel="noopener noreferrer">{_e(text)}</a>'


def render_html(data: ReportData) -> str:
    """A standalone page: inline CSS, an SVG chart, tables; every text escaped."""
    totals = data.totals
    period = (
        f"{_e(_iso(data.since) or 'the first comment')} – "
        f"{_e(_iso(data.until) or 'the last comment')}"
    )
    community = data.community
    who = (
        f"{_link(f'https://vk.com/{community.screen_name}', community.screen_name)} "
        f"(id {data.group_id})"
        if community is not None
        else f"id {data.group_id} (not stored)"
    )
    cards = "".join(
        f"<li><b>{value}</b><span>{_e(name)}</span></li>"
        for name, value in (
            ("comments", totals.comments),
            ("deleted", totals.deleted),
            ("authors", totals.authors),
            ("posts", totals.posts),
            ("days", totals.days),
            ("active days", totals.active_days),
            ("analysed", totals.analysed),
        )
    )
    per_bar, _ = _bins(data.days)
    caption = "Blue: comments, yellow: deleted comments" + (
        f"; each bar is {per_bar} days." if per_bar > 1 else "; each bar is a day (UTC)."
    )
    authors = _table(
        ("#", "author", "comments", "deleted"),
        [
            (str(rank), _link(author_url(a.from_id), a.from_id), str(a.comments), str(a.deleted))
            for rank, a in enumerate(data.top_authors, 1)
        ],
        {0, 2, 3},
    )
    posts = _table(
        ("#", "post", "comments", "date", "text"),
        [
            (
                str(rank),
                _link(data.post_url(p.post_id), p.post_id),
                str(p.comments),
                _e(p.date.strftime("%Y-%m-%d %H:%M") if p.date else "—"),
                _e(p.text or ""),
            )
            for rank, p in enumerate(data.top_posts, 1)
        ],
        {0, 2},
    )
    keywords = _table(
        ("#", "keyword", "occurrences", "comments"),
        [
            (str(rank), _e(k.term), str(k.count), str(k.comments))
            for rank, k in enumerate(data.keywords, 1)
        ],
        {0, 2, 3},
    )
    notes = "".join(f"<li>{_e(note)}</li>" for note in data.notes)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Comments report: {_e(data.title)}</title><style>{_STYLE}</style></head>"
        f"<body><main><h1>Comments report: {_e(data.title)}</h1>"
        f'<p class="meta">Community {who}. Period: {period}. '
        f"Generated {_e(data.generated_at.strftime('%Y-%m-%d %H:%M:%S UTC'))}.</p>"
        f'<ul class="totals">{cards}</ul>'
        f"<h2>Comments per day</h2><figure>{render_chart(data.days)}"
        f"<figcaption>{_e(caption)}</figcaption></figure>"
        f"<h2>Top authors</h2>{authors}"
        f"<h2>Top posts by comments</h2>{posts}"
        f"<h2>Keywords of the analysed comments</h2>{keywords}"
        + (f'<h2>Notes</h2><ul class="notes">{notes}</ul>' if notes else "")
        + "</main></body></html>\n"
    )


# -- storing and serving ----------------------------------------------------------------------


async def job_owner(session: AsyncSession, job_id: str) -> str:
    """Who enqueued the job (`SYSTEM_OWNER` if it has no history row)."""
    return (await history.existing_ids(session, [job_id])).get(job_id, SYSTEM_OWNER)


async def store_report(
    session: AsyncSession,
    *,
    report_id: str,
    owner: str,
    data: ReportData,
    rendered: RenderedReport,
    report_format: ReportFormat,
    params: dict[str, Any],
) -> Report:
    """Insert the report, or replace the one of the same id (a job run again)."""
    report = await session.merge(
        Report(
            id=report_id,
            owner=owner,
            group_id=data.group_id,
            format=report_format.value,
            params=params,
            content_type=rendered.content_type,
            filename=rendered.filename,
            size_bytes=len(rendered.content),
            content=rendered.content,
            summary=asdict(data.totals),
            created_at=data.generated_at,
        )
    )
    await session.flush()
    return report


async def generate_report(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    report_id: str,
    group_id: int,
    since: datetime | None = None,
    until: datetime | None = None,
    report_format: ReportFormat = ReportFormat.JSON,
    top_n: int = 20,
    params: dict[str, Any] | None = None,
    analyzer: MorphAnalyzer | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Collect, render and store the report of the job `report_id` (owned by its owner)."""
    async with sessionmaker() as session:
        owner = await job_owner(session, report_id)
        data = await collect_report(
            session,
            group_id=group_id,
            since=since,
            until=until,
            top_n=top_n,
            analyzer=analyzer,
            progress=progress,
        )
    if progress is not None:
        await progress(85, f"rendering {report_format.value}")
    rendered = render(data, report_format)
    if progress is not None:
        await progress(95, f"storing {len(rendered.content)} bytes")
    async with sessionmaker.begin() as session:
        await store_report(
            session,
            report_id=report_id,
            owner=owner,
            data=data,
            rendered=rendered,
            report_format=report_format,
            params=params or {},
        )
    return {
        "report_id": report_id,
        "group_id": group_id,
        "community_found": data.community is not None,
        "format": report_format.value,
        "content_type": rendered.content_type,
        "filename": rendered.filename,
        "size_bytes": len(rendered.content),
        "totals": asdict(data.totals),
        "notes": data.notes,
    }


async def get_report(session: AsyncSession, report_id: str, *, principal: Principal) -> Report:
    """The stored report, if it is the caller's (an admin's: anyone's); `ReportNotReady` while
    the caller's job that makes it has not finished."""
    report = await session.get(Report, report_id)
    if report is not None and (principal.is_admin or report.owner == principal.owner):
        return report
    if report is None:
        job = (
            await session.execute(
                select(JobRecord.owner, JobRecord.status).where(
                    JobRecord.job_id == report_id, JobRecord.function == REPORT_TASK
                )
            )
        ).first()
        if job is not None and (principal.is_admin or job.owner == principal.owner):
            if job.status not in FINISHED:
                raise ReportNotReady(
                    report_id, status=job.status, status_url=f"{JOB_STATUS_URL}/{report_id}"
                )
            if job.status != JobStatus.COMPLETE:
                raise ReportNotFound(report_id, why=f": its job {job.status}")
    raise ReportNotFound(report_id)


class ReportOut(BaseModel):
    """A stored report, without its content."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    group_id: int
    format: str
    content_type: str
    filename: str
    size_bytes: int
    params: dict[str, Any]
    summary: dict[str, Any]
    created_at: datetime


async def list_reports(
    session: AsyncSession,
    *,
    principal: Principal,
    group_id: int | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[ReportOut], int]:
    """The caller's reports (an admin's: everyone's), newest first, and how many in all."""
    where = [] if principal.is_admin else [Report.owner == principal.owner]
    if group_id is not None:
        where.append(Report.group_id == group_id)
    columns = [column for column in Report.__table__.columns if column.name != "content"]
    rows = await session.execute(
        select(*columns)
        .where(*where)
        .order_by(Report.created_at.desc(), Report.id)
        .limit(limit)
        .offset(offset)
    )
    total = await session.scalar(select(func.count()).select_from(Report).where(*where))
    return [ReportOut.model_validate(row) for row in rows], int(total or 0)
