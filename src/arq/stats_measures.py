"""What the queue statistics measure of a job (run time, queue wait), and the log-bucketed
histograms of durations the rollup keeps.

Histograms: bucket k >= 1 holds the durations in [BASE * RATIO^(k-1), BASE * RATIO^k), bucket -k
the same negated, bucket 0 those under BASE in size. A bucket's value, its lower bound times
(1 + PRECISION), is within PRECISION (relative) of every duration in it, so a percentile
interpolated between two bucket values is within PRECISION of the one interpolated between the
two durations (of the same sign; bucket 0 adds at most BASE).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Float, Integer, and_, case, cast, func, literal

from src.arq.models import JobRecord
from src.arq.schemas import FINISHED_STATUSES, JobStatus

PRECISION = 0.05  # the largest relative error of a percentile read from the histograms
RATIO = (1 + PRECISION) / (1 - PRECISION)  # each bucket's upper bound over its lower (~1.105)
BASE = 1e-6  # seconds: the history's timestamps are microseconds

_FINISHED_VALUES = [status.value for status in FINISHED_STATUSES]


def seconds(interval: ColumnElement[Any]) -> ColumnElement[float]:
    # date_part, unlike EXTRACT (numeric since PostgreSQL 14), gives double precision.
    return func.date_part("epoch", interval, type_=Float)


def run_seconds() -> ColumnElement[float]:
    """A job's run time: of finished jobs that ran (null otherwise)."""
    return case(
        (
            JobRecord.status.in_(_FINISHED_VALUES),
            seconds(JobRecord.finished_at - JobRecord.started_at),
        )
    )


def wait_seconds() -> ColumnElement[float]:
    """A job's queue wait: from when it was due to its start, of jobs that started, but not of
    those waiting for their next try (their `scheduled_for` is that try's, later than the last
    start). GREATEST ignores nulls, hence the explicit test of `started_at`."""
    due = func.greatest(JobRecord.enqueued_at, JobRecord.scheduled_for)
    return case(
        (
            and_(JobRecord.started_at.is_not(None), JobRecord.status != JobStatus.RETRYING.value),
            func.greatest(literal(0.0, Float), seconds(JobRecord.started_at - due)),
        )
    )


def bucket(value: ColumnElement[float]) -> ColumnElement[int]:
    """The histogram bucket of a duration in seconds (null for null)."""
    size = func.abs(value, type_=Float)
    steps = func.floor((func.ln(size, type_=Float) - math.log(BASE)) / math.log(RATIO))
    return case(
        (size < literal(BASE, Float), 0),
        else_=cast(func.sign(value), Integer) * (cast(steps, Integer) + 1),
    )


def bucket_value(index: int) -> float:
    """The value a histogram bucket stands for (within PRECISION of each duration in it)."""
    if index == 0:
        return 0.0
    return math.copysign(BASE * RATIO ** (abs(index) - 1) * (1 + PRECISION), index)


def histogram_percentiles(
    histogram: Mapping[int, int], fractions: Sequence[float]
) -> list[float | None]:
    """`percentile_cont` of each of `fractions` over the bucket values of `histogram`
    ({bucket: count}); None for an empty one."""
    counted = sorted((index, count) for index, count in histogram.items() if count > 0)
    total = sum(count for _, count in counted)

    def ranked(rank: int) -> float:
        seen = 0
        for index, count in counted:
            seen += count
            if rank < seen:
                return bucket_value(index)
        raise ValueError(f"rank {rank} of {total}")

    results: list[float | None] = []
    for fraction in fractions:
        if not total:
            results.append(None)
            continue
        position = fraction * (total - 1)
        lower, upper = ranked(math.floor(position)), ranked(math.ceil(position))
        results.append(lower + (position - math.floor(position)) * (upper - lower))
    return results
