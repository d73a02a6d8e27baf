"""JSON (orjson) serialisation for jobs and results, in the pool and the worker alike. No pickle.

Exceptions cannot be JSON; they are stored as `{"type": ..., "message": ...}`. Read back
(`deserialize`), the error of a failed job's result record is an exception again, so ARQ's own
`Job.result()` raises it and `Job.abort()` sees a `CancelledError`: the builtin (or ARQ's own)
type where the stored type is one, otherwise a `JobError` carrying type and message.
`as_error` gives the `{type, message}` of either form.
"""

from __future__ import annotations

import asyncio
import builtins
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson
from arq.jobs import DeserializationError, SerializationError
from arq.worker import JobExecutionFailed
from pydantic import BaseModel

ERROR_MARKER = "__error__"


class JobError(Exception):
    """A job's exception read back from JSON whose type is neither a builtin nor ARQ's own."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(type_name, message)
        self.type = type_name
        self.message = message

    def __str__(self) -> str:
        return f"{self.type}: {self.message}"


# Exception types that are not builtins but come back as themselves: ARQ's own endings.
_KNOWN: dict[str, type[BaseException]] = {
    "CancelledError": asyncio.CancelledError,
    "JobExecutionFailed": JobExecutionFailed,
    "SerializationError": SerializationError,
    "DeserializationError": DeserializationError,
}
# Where an exception read back keeps the type and message it was stored with (`as_error`).
_STORED = "_stored_error"


def _default(value: Any) -> Any:
    if isinstance(value, BaseException):
        return error_dict(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (datetime, date, time, UUID)):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def error_dict(exc: BaseException) -> dict[str, Any]:
    """The stored shape of an exception."""
    stored = as_error(exc)
    assert stored is not None
    return {ERROR_MARKER: True, **stored}


def error_from_dict(stored: dict[str, str]) -> BaseException:
    """The exception a stored `{type, message}` stands for (see the module's docstring)."""
    name, message = stored["type"], stored["message"]
    known = _KNOWN.get(name)
    builtin = getattr(builtins, name, None)
    if known is None and isinstance(builtin, type) and issubclass(builtin, BaseException):
        known = builtin
    exc: BaseException = JobError(name, message)
    if known is not None:
        try:
            exc = known(message) if message else known()
        except Exception:  # a type that takes other arguments (UnicodeDecodeError, ...)
            exc = JobError(name, message)
    setattr(exc, _STORED, dict(stored))
    return exc


def serialize(data: dict[str, Any]) -> bytes:
    """ARQ `job_serializer`."""
    return orjson.dumps(data, default=_default, option=orjson.OPT_NON_STR_KEYS)


def deserialize(data: bytes) -> dict[str, Any]:
    """ARQ `job_deserializer`: the stored error of a failed job's result comes back as an
    exception (a result record is the one with `s`, its success, and `r`, its result)."""
    value = orjson.loads(data)
    if not isinstance(value, dict):
        raise ValueError("a job or result must be a JSON object")
    if value.get("s") is False:
        stored = as_error(value.get("r"))
        if stored is not None:
            value["r"] = error_from_dict(stored)
    return value


def as_error(value: Any) -> dict[str, str] | None:
    """The `{type, message}` of an exception, stored or read back, or None if `value` is not
    one."""
    if isinstance(value, BaseException):
        stored = getattr(value, _STORED, None)
        if isinstance(stored, dict):
            return dict(stored)
        return {"type": type(value).__name__, "message": str(value)}
    if isinstance(value, dict) and value.get(ERROR_MARKER):
        return {"type": str(value.get("type", "Error")), "message": str(value.get("message", ""))}
    return None


def to_jsonable(value: Any) -> Any:
    """`value` as plain JSON data (what a result looks like after a round trip)."""
    return orjson.loads(serialize({"v": value}))["v"]
