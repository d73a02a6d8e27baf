"""A report as CSV: RFC 4180, in sections, safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import asdict

from src.reports.data import ALL_COMMUNITIES, ReportData, author_url, iso

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
        ("group_id", data.group_id if data.group_id is not None else ALL_COMMUNITIES),
        ("screen_name", community.screen_name if community else None),
        ("name", community.name if community else None),
        ("since", iso(data.since)),
        ("until", iso(data.until)),
        ("first_comment_at", iso(data.first_comment_at)),
        ("last_comment_at", iso(data.last_comment_at)),
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
        # owner_id last: the wall, which tells posts apart over all communities.
        ("rank", "post_id", "comments", "date", "url", "text", "owner_id"),
        (
            (rank, p.post_id, p.comments, iso(p.date), data.post_url(p), p.excerpt, p.owner_id)
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
