"""API types every domain speaks: VK ids, ISO 8601 times, paging (`Page[T]`), `give either … or …`
rules."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import AwareDatetime, BaseModel, BeforeValidator, Field

# VK ids are stored as BIGINT and travel through Redis as JSON (64-bit integers): a larger one is
# refused at the edge with a 422, never discovered in the database or the queue.
VK_ID_MAX = 2**63 - 1
VkId = Annotated[int, Field(gt=0, le=VK_ID_MAX)]
"""A community's or a post's id, in a task's arguments or a query parameter."""
# Paging deeper than this is a scan nobody needs; the bound also keeps OFFSET within BIGINT.
MAX_OFFSET = 1_000_000_000
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _iso_only(value: Any) -> Any:
    # Pydantic would read `0.5` or `1700000000` as a Unix time; the API speaks ISO 8601 only.
    if isinstance(value, str) and not _ISO_DATE.match(value.strip()):
        raise ValueError("must be an ISO 8601 date-time with a timezone, e.g. 2026-01-01T00:00:00Z")
    return value


IsoDatetime = Annotated[AwareDatetime, BeforeValidator(_iso_only)]
"""A query parameter's date-time: ISO 8601 with a timezone (`Z` or `+03:00`), nothing else."""

_GROUP_ID = Query(description="the community's id")
GroupId = Annotated[VkId, _GROUP_ID]
OptionalGroupId = Annotated[VkId | None, _GROUP_ID]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="items to skip")]
Since = Annotated[IsoDatetime | None, Query(description="from this time on (ISO 8601)")]
Until = Annotated[IsoDatetime | None, Query(description="before this time (ISO 8601)")]


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a list, and how many items there are in all; each list names its own
    (`class CommentPage(Page[CommentOut])`), which is what OpenAPI calls it."""

    items: list[T]
    total: int
    limit: int
    offset: int


def check_aware(value: datetime | None) -> datetime | None:
    """A validator of `since`/`until`: a time without a timezone is refused."""
    if value is not None and value.tzinfo is None:
        raise ValueError("needs a timezone, e.g. 2026-01-01T00:00:00Z")
    return value


def exactly_one(*names: str) -> dict[str, Any]:
    """JSON Schema of a `give either … or …` rule: exactly one of the fields, and not null."""
    return {
        "oneOf": [
            {"required": [name], "properties": {name: {"not": {"type": "null"}}}} for name in names
        ]
    }
