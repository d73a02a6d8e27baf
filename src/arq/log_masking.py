"""ARQ's worker log lines, made safe and true.

- Arguments under secret-looking keys are masked (by structure, at any depth) in the "→" line of
  every worker of the process, ARQ's own class included; the rest of the line is ARQ's.
- A `JobWorker` run's "→" line gives `delayed=` (in ARQ's format) from the job's ready time
  (`JobRun.ready_ms`, `delayed`), not from its priority-shifted score, which ARQ reads as the
  time it became due; ARQ's own class logs as ARQ does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import arq.worker as arq_worker
from arq.utils import args_to_string as arq_args_to_string

_SECRET_NAME = re.compile(r"secret|token|password|api_?key|authorization", re.IGNORECASE)
MASK = "***"

# ARQ's job-start line (`Worker.run_job`): seconds since enqueue, ref, arguments, extra, where
# extra is " try=N" past the first try and " delayed=S.SSs" once the job is over 1.2 s late.
START_LINE = "%6.2fs → %s(%s)%s"
DELAY_LOGGED_MS = 1200


@dataclass(slots=True)
class JobRun:
    """A `JobWorker` run of one job: what its start line's `delayed=` is measured from."""

    score: int  # where it sorted: a module job's is shifted by its priority (`src.arq.queue`)
    offset_ms: Callable[[str], int]  # how far a priority shifts a ready job's score
    payload: Mapping[str, Any] | None = None  # the job as stored

    def ready_ms(self, job_try: int) -> int:
        """When the job became ready for this try."""
        payload = self.payload or {}
        priority, ready, queued_try = (payload.get(k) for k in ("priority", "ready_ms", "t"))
        if not isinstance(priority, str):
            return self.score  # queued by plain ARQ: the score is the ready time, as ARQ reads it
        if isinstance(ready, int) and job_try <= (queued_try or 1):
            return ready  # its first run: the time it was queued for
        try:  # a retry (or a run again): its score is its due time shifted by its priority
            return self.score + self.offset_ms(priority)
        except (KeyError, ValueError):
            return self.score


def mask_secrets(value: Any) -> Any:
    """`value` with every value under a secret-looking key replaced, at any depth; what holds
    no secret is returned as it is (so its text in a log line is ARQ's)."""
    if isinstance(value, Mapping):
        items = list(value.items())
        masked = [
            MASK if isinstance(key, str) and _SECRET_NAME.search(key) else mask_secrets(item)
            for key, item in items
        ]
        if all(new is old for new, (_, old) in zip(masked, items, strict=True)):
            return value
        return {key: new for (key, _), new in zip(items, masked, strict=True)}
    if isinstance(value, list | tuple):
        masked = [mask_secrets(item) for item in value]
        if all(new is old for new, old in zip(masked, value, strict=True)):
            return value
        return tuple(masked) if isinstance(value, tuple) else masked
    return value


def _masked_args_to_string(args: Sequence[Any], kwargs: dict[str, Any]) -> str:
    """ARQ's argument text for its log lines, secrets masked by structure (not by a pattern
    over the text, which a secret containing a quote escapes)."""
    return arq_args_to_string(mask_secrets(list(args)), mask_secrets(kwargs))


# ARQ's worker builds its "→ job(args)" log line with this module-level function.
arq_worker.args_to_string = _masked_args_to_string


def delayed(*, started_ms: float, ready_ms: int) -> str:
    """The `delayed=` part of a start line's extra text (ARQ's format), measured from
    `ready_ms`; "" unless the job is over `DELAY_LOGGED_MS` late."""
    delay_ms = started_ms - ready_ms
    return f" delayed={delay_ms / 1000:0.2f}s" if delay_ms > DELAY_LOGGED_MS else ""
