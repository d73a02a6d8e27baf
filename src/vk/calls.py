"""VK API calls as data: their parameters, the `wall.get` / `wall.getComments` pages, and the
VKScript that runs a batch of them through `execute`."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Literal, TypeAlias

ParamValue: TypeAlias = str | int | float | bool | Sequence[str | int] | None
Params: TypeAlias = Mapping[str, ParamValue]
Call: TypeAlias = tuple[str, Params]
"""One API call: `("wall.getComments", {"owner_id": -1, "post_id": 2})`."""

MAX_COUNT = 100
# Method names go into VKScript verbatim, so only `section.name` shapes are allowed.
METHOD_NAME = re.compile(r"^[a-z]+\.[a-zA-Z]+$")
SCREEN_NAME_URL = re.compile(r"^(?:https?://)?(?:m\.)?vk\.(?:com|ru)/", re.IGNORECASE)


def _script_value(value: str | int | float | bool | Sequence[str | int]) -> str | int | float:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str | int | float):
        return value
    return ",".join(str(item) for item in value)


def render_execute_code(calls: Sequence[Call]) -> str:
    """VKScript returning the results of `calls` in order: `return [API.m({...}), ...];`."""
    parts = []
    for method, params in calls:
        check_method(method)
        arguments = {key: _script_value(v) for key, v in params.items() if v is not None}
        rendered = json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))
        parts.append(f"API.{method}({rendered})")
    return "return [" + ",".join(parts) + "];"


def check_method(method: str) -> None:
    """Refuse anything but a `section.name` method name (it goes into VKScript verbatim)."""
    if not METHOD_NAME.fullmatch(method):
        raise ValueError(f"not a VK API method name: {method!r}")


def _check_count(count: int) -> None:
    if not 0 < count <= MAX_COUNT:
        raise ValueError(f"count must be between 1 and {MAX_COUNT}, got {count}")


def posts_call(owner_id: int, offset: int = 0, count: int = MAX_COUNT) -> Call:
    """The `wall.get` call for one page of a wall (newest first)."""
    _check_count(count)
    return "wall.get", {"owner_id": owner_id, "offset": offset, "count": count, "filter": "all"}


def comments_call(
    owner_id: int,
    post_id: int,
    offset: int = 0,
    count: int = MAX_COUNT,
    comment_id: int | None = None,
    thread_items_count: int = 10,
    sort: Literal["asc", "desc"] = "asc",
) -> Call:
    """The `wall.getComments` call for one page of a post's comments (or of one thread)."""
    _check_count(count)
    if not 0 <= thread_items_count <= 10:
        raise ValueError(f"thread_items_count must be between 0 and 10, got {thread_items_count}")
    params: dict[str, ParamValue] = {
        "owner_id": owner_id,
        "post_id": post_id,
        "offset": offset,
        "count": count,
        "sort": sort,
        "need_likes": 1,
        "extended": 0,
        "preview_length": 0,
        "thread_items_count": thread_items_count,
    }
    if comment_id is not None:
        params["comment_id"] = comment_id
    return "wall.getComments", params


def screen_name_from(text: str) -> str:
    """`club1` from `club1`, `@club1`, `vk.com/club1` or `https://vk.com/club1?w=x`."""
    name = SCREEN_NAME_URL.sub("", text.strip()).lstrip("@")
    return re.split(r"[/?#]", name, maxsplit=1)[0]
