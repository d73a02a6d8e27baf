"""JSON (orjson) serialisation for jobs and results, in the pool and the worker alike. No pickle.

Exceptions cannot be JSON; they are stored as `{"type": ..., "message": ...}`.
"""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson
from pydantic import BaseModel

ERROR_MARKER = "__error__"


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
    return {ERROR_MARKER: True, "type": type(exc).__name__, "message": str(exc)}


def serialize(data: dict[str, Any]) -> bytes:
    """ARQ `job_serializer`."""
    return orjson.dumps(data, default=_default, option=orjson.OPT_NON_STR_KEYS)


def deserialize(data: bytes) -> dict[str, Any]:
    """ARQ `job_deserializer`."""
    value = orjson.loads(data)
    if not isinstance(value, dict):
        raise ValueError("a job or result must be a JSON object")
    return value


def as_error(value: Any) -> dict[str, str] | None:
    """The `{type, message}` of a stored exception, or None if `value` is not one."""
    if isinstance(value, dict) and value.get(ERROR_MARKER):
        return {"type": str(value.get("type", "Error")), "message": str(value.get("message", ""))}
    return None


def to_jsonable(value: Any) -> Any:
    """`value` as plain JSON data (what a result looks like after a round trip)."""
    return orjson.loads(serialize({"v": value}))["v"]
