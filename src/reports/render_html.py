"""A report as a standalone HTML page: inline CSS, an SVG chart, tables; every text escaped."""

from __future__ import annotations

import html
from collections.abc import Sequence

from src.reports.chart import bins, render_chart
from src.reports.data import ALL_COMMUNITIES, ReportData, author_url, iso

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
        f"{_e(iso(data.since) or 'the first comment')} – "
        f"{_e(iso(data.until) or 'the last comment')}"
    )
    community = data.community
    if data.group_id is None:
        who = f"Communities: {ALL_COMMUNITIES} ({data.communities or 0} stored)"
    elif community is not None:
        who = (
            f"Community {_link(f'https://vk.com/{community.screen_name}', community.screen_name)} "
            f"(id {data.group_id})"
        )
    else:
        who = f"Community id {data.group_id} (not stored)"
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
    per_bar, _ = bins(data.days)
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
                _link(data.post_url(p), data.post_label(p)),
                str(p.comments),
                _e(p.date.strftime("%Y-%m-%d %H:%M") if p.date else "—"),
                _e(p.excerpt or ""),
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
        f'<p class="meta">{who}. Period: {period}. '
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
