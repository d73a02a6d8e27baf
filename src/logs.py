"""Log lines as text or JSON (LOG_FORMAT), each carrying what is known of its request and job.

The context (`request_id`, `job_id`, `task`, `try`, `owner`, `worker_id`) lives in a contextvar:
the API's request middleware (`src.request_log`) binds the request id, the worker binds a job's
fields in the job's own asyncio task (`src.arq.job_logs`), so every line logged there (the
app's, ARQ's, a task's) carries them, through the filter of the one handler that
`configure` installs on the `src` and `arq` loggers (and, for JSON, on uvicorn's).

A JSON line holds `time` (ISO 8601, UTC), `level`, `logger`, `message`, the context fields that
are known, the access fields of `src.access` lines and `exc_info`; nothing else a caller passes
in `extra=` (text lines never showed it either, so nothing unvetted reaches the logs).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal, TextIO

from pythonjsonlogger.json import JsonFormatter as _LibraryJsonFormatter

LogFormat = Literal["text", "json"]

# What a line carries about its request and job, when known (absent, never null).
CONTEXT_FIELDS = ("request_id", "job_id", "task", "try", "owner", "worker_id")
# What the access line of a request (`src.access`) adds.
ACCESS_FIELDS = ("method", "route", "status", "duration_ms")

_context: ContextVar[Mapping[str, object]] = ContextVar("log_context", default=MappingProxyType({}))


def bind(fields: Mapping[str, object]) -> Token[Mapping[str, object]]:
    """Add `fields` to this context's log fields (None removes one); `reset` undoes it."""
    merged = {**_context.get(), **fields}
    return _context.set({key: value for key, value in merged.items() if value is not None})


def reset(token: Token[Mapping[str, object]]) -> None:
    """The log fields as they were before the `bind` that returned `token`."""
    _context.reset(token)


def context() -> Mapping[str, object]:
    """This context's log fields."""
    return _context.get()


def request_id() -> str | None:
    """The id of the request (or of the job's request) this code runs for, if any."""
    value = _context.get().get("request_id")
    return value if isinstance(value, str) else None


class ContextFilter(logging.Filter):
    """Puts this context's log fields on each record (a field the record has is kept)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def _utc_iso(created: float) -> str:
    moment = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    return moment.replace("+00:00", "Z")


class JsonFormatter(_LibraryJsonFormatter):
    """One JSON object per line: time, level, logger, message, the known fields, exc_info."""

    def __init__(self) -> None:
        super().__init__(json_ensure_ascii=False)

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data["time"] = _utc_iso(record.created)
        log_data["level"] = record.levelname
        log_data["logger"] = record.name
        log_data["message"] = record.message
        for key in (*CONTEXT_FIELDS, *ACCESS_FIELDS):
            value = getattr(record, key, None)
            if value is not None:
                log_data[key] = value
        # The formatted exception and stack, and nothing else of a dict logged as the message.
        for key in ("exc_info", "stack_info"):
            if message_dict.get(key):
                log_data[key] = message_dict[key]


class TextFormatter(logging.Formatter):
    """The human format, with the request and job ids (short) after the message."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        ids = [
            f"{label}={str(value)[:width]}"
            for key, label, width in (("request_id", "req", 12), ("job_id", "job", 64))
            if (value := getattr(record, key, None)) is not None
        ]
        job_try = getattr(record, "try", None)
        if job_try is not None and getattr(record, "job_id", None) is not None:
            ids.append(f"try={job_try}")
        return f"{line} [{' '.join(ids)}]" if ids else line


class _AppHandler(logging.StreamHandler[TextIO]):
    """Writes to the `sys.stderr` of the moment (as logging's last resort does), so a handler
    installed before stderr is redirected still writes where it points now."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> TextIO:  # type: ignore[override]
        return sys.stderr


# The handlers other set-ups install on the loggers this one takes over: ARQ's CLI default
# (`arq.logs.default_log_config`) and uvicorn's (`uvicorn.config.LOGGING_CONFIG`).
_REPLACED = {"arq": {"arq.standard"}, "uvicorn": {"default"}, "uvicorn.access": {"access"}}


def configure(level: str, log_format: LogFormat) -> None:
    """Send the app's (`src.*`) and ARQ's (`arq.*`) lines to stderr at `level`, as text or JSON
    lines; under JSON uvicorn's lines too (uvicorn keeps its own format for text). Each call
    replaces what an earlier one installed."""
    handler = _AppHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    names = ["src", "arq"]
    if log_format == "json":
        names += ["uvicorn", "uvicorn.access"]
    for name in ("src", "arq", "uvicorn", "uvicorn.access"):
        logger = logging.getLogger(name)
        replaced = _REPLACED.get(name, set()) if name in names else set()
        for old in list(logger.handlers):
            if isinstance(old, _AppHandler) or old.name in replaced:
                logger.removeHandler(old)
        if name in names:
            logger.addHandler(handler)
    for name in ("src", "arq"):
        logging.getLogger(name).setLevel(level)
    # The app's lines are written here only (ARQ's also reach the root's handlers, if any).
    logging.getLogger("src").propagate = False
