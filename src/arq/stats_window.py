"""Where the queue statistics read a window from: whole UTC months, days and hours from the
rollup (`arq_job_stats`), the rest from the history.

A window `[since, until)` of any two times splits into its edges (the partial hours before the
first and after the last whole hour: the history), and its whole hours, taken as whole months
where they fit, else whole days, else hours. A period that holds a dirty hour (one whose jobs
changed since the rollup last summed it) is not taken whole: its clean parts come from the
rollup and its dirty hours from the history.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

GRAINS = ("hour", "day", "month")
HOUR = timedelta(hours=1)
# Spans of enqueue times `[start, end)`; an end of None: no end (the period after it would be
# past the year 9999).
Span = tuple[datetime, datetime | None]


def floor_period(moment: datetime, grain: str) -> datetime:
    """The start of the UTC hour, day or month that holds `moment` (an aware UTC time)."""
    start = moment.replace(minute=0, second=0, microsecond=0)
    if grain == "hour":
        return start
    start = start.replace(hour=0)
    return start if grain == "day" else start.replace(day=1)


def next_period(start: datetime, grain: str) -> datetime | None:
    """The start of the period after the one starting at `start`; None past the year 9999."""
    try:
        if grain == "hour":
            return start + HOUR
        if grain == "day":
            return start + timedelta(days=1)
        return (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    except OverflowError:
        return None


def period_spans(starts: Sequence[datetime], grain: str) -> list[Span]:
    """The periods starting at `starts` (sorted) as spans, adjacent ones joined."""
    spans: list[Span] = []
    for start in starts:
        end = next_period(start, grain)
        if spans and spans[-1][1] == start:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return spans


@dataclass(frozen=True, slots=True)
class WindowPlan:
    """`periods`: grain -> starts of the whole periods read from the rollup; `history`: the
    spans read from the history."""

    periods: dict[str, list[datetime]] = field(default_factory=dict)
    history: list[Span] = field(default_factory=list)


def _dirty_within(dirty: Sequence[datetime], start: datetime, end: datetime) -> bool:
    index = bisect_left(dirty, start)
    return index < len(dirty) and dirty[index] < end


def _whole(
    start: datetime, grain: str, last: datetime, dirty: Sequence[datetime]
) -> datetime | None:
    """The end of the `grain` period starting at `start` if it is one, ends by `last` and holds
    no dirty hour; else None."""
    if floor_period(start, grain) != start:
        return None
    end = next_period(start, grain)
    if end is None or end > last or _dirty_within(dirty, start, end):
        return None
    return end


def _add(spans: list[Span], start: datetime, end: datetime) -> None:
    if spans and spans[-1][1] == start:
        spans[-1] = (spans[-1][0], end)
    else:
        spans.append((start, end))


def plan_window(since: datetime, until: datetime, dirty: Sequence[datetime]) -> WindowPlan:
    """Where to read `[since, until)` from, given the dirty hours (sorted) in it."""
    first = floor_period(since, "hour")
    if first != since:
        first = next_period(first, "hour") or until
    last = floor_period(until, "hour")
    if first >= last:
        return WindowPlan(history=[(since, until)])
    periods: dict[str, list[datetime]] = {}
    history: list[Span] = []
    if since < first:
        history.append((since, first))
    start = first
    while start < last:
        for grain in ("month", "day"):
            end = _whole(start, grain, last, dirty)
            if end is not None:
                periods.setdefault(grain, []).append(start)
                start = end
                break
        else:
            end = start + HOUR
            if _dirty_within(dirty, start, end):
                _add(history, start, end)
            else:
                periods.setdefault("hour", []).append(start)
            start = end
    if last < until:
        _add(history, last, until)
    return WindowPlan(periods=periods, history=history)
