"""Time helpers and the reading of ARQ's result records into job endings."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from src.arq.schemas import JobStatus
from src.arq.serialization import as_error

_MAX_TRIES = re.compile(r"^max (\d+) retries exceeded$")


def now_utc() -> datetime:
    return datetime.now(UTC)


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def ms_to_datetime(ms: float) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def datetime_to_ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A finished job as ARQ recorded it in `arq:result:<id>`."""

    status: JobStatus
    result: Any
    error: dict[str, str] | None
    tries: int | None
    started_at: datetime | None
    finished_at: datetime


def outcome_from_result(data: dict[str, Any], *, aborted_by: str | None = None) -> Outcome:
    """Read ARQ's result record; a cancelled job is an aborted one (by `aborted_by`)."""
    started = ms_to_datetime(data["st"]) if data.get("st") else None
    finished = ms_to_datetime(data["ft"]) if data.get("ft") else now_utc()
    tries = int(data["t"]) if data.get("t") else None
    if data.get("s"):
        return Outcome(JobStatus.COMPLETE, data.get("r"), None, tries, started, finished)
    error = as_error(data.get("r")) or {"type": "Error", "message": str(data.get("r"))}
    if error["type"] == "CancelledError":
        message = f"aborted by {aborted_by}" if aborted_by else "aborted"
        error = {"type": "JobAborted", "message": message}
        return Outcome(JobStatus.ABORTED, None, error, tries, started, finished)
    exhausted = _MAX_TRIES.match(error["message"])
    if error["type"] == "JobExecutionFailed" and exhausted:
        tries = int(exhausted.group(1))  # ARQ counts the refused pick-up as one more try
        error = {
            "type": "MaxTriesExceeded",
            "message": f"gave up after {exhausted.group(1)} tries: the job did not finish "
            "(its worker stopped or crashed each time)",
        }
    return Outcome(JobStatus.FAILED, None, error, tries, started, finished)
