"""The SVG bar chart of comments per day in the HTML report."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from datetime import date

from src.reports.data import DayCount

MAX_CHART_BARS = 366  # longer series are drawn with several days per bar


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def bins(days: Sequence[DayCount]) -> tuple[int, list[tuple[date, date, int, int]]]:
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
    per_bar, bars = bins(days)
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
