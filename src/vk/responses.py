"""Reading VK's answers: an HTTP response to its body or the `VKError` it stands for.

Whatever VK says in an error passes through `redact` (the client's token scrubber) before it
reaches the error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from src.vk.exceptions import VKError, VKRetryableError, error_from_vk


def parse_response(
    method: str, response: httpx.Response, *, redact: Callable[[str], str]
) -> dict[str, Any]:
    """VK's answer to `method` as a dict with `response`; raises the `VKError` it holds."""
    status = response.status_code
    if status >= 500 or status == 429:
        raise VKRetryableError(f"HTTP {status}", method=method)
    if status >= 400:
        raise VKError(f"HTTP {status}", method=method)
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise VKRetryableError("the answer is not a JSON object", method=method)
    if isinstance(error := body.get("error"), dict):
        raise error_from_vk(
            as_int(error.get("error_code")),
            redact(str(error.get("error_msg", ""))),
            method=method,
        )
    if "response" not in body:
        raise VKError("the answer has neither `response` nor `error`", method=method)
    return body


def as_page(result: Any, method: str) -> dict[str, Any]:
    """`result` if it is a page (`{"items": [...], ...}`), else a `VKError`."""
    if not isinstance(result, dict) or not isinstance(result.get("items"), list):
        raise VKError("the answer is not a page of items", method=method)
    return result


def as_int(value: object) -> int:
    """An error code as VK sends it (a number, or a string of one); 0 if it is neither."""
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return 0
