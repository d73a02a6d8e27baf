"""Errors of the VK API client, one class per thing a caller does about them.

| class                 | VK codes               | what the caller does                          |
| --------------------- | ---------------------- | --------------------------------------------- |
| `VKRetryableError`    | 1, 6, 9, 10, network   | retry after `retry_after` s (the client does) |
| `VKRateLimitReached`  | 29                     | pause long (defer the job), fail if it stays  |
| `VKUnavailable`       | (its circuit is open)  | wait `retry_after` s without spending a try   |
| `VKAuthError`         | 5                      | fail fast: the token is invalid or expired    |
| `VKNeedsHuman`        | 14, 17                 | fail: captcha or validation needs a person    |
| `VKAccessDenied`      | 15, 18, 19, 30, 212    | skip that object, record `code` + message     |
| `VKBadRequest`        | 100, 104, 113          | fail fast with VK's message                   |
| `VKResponseTooBig`    | 13                     | smaller `execute` batches (the client does)   |

No message here ever holds the access token: the client never passes it in and redacts VK's
text before building an error.
"""

from __future__ import annotations

from typing import ClassVar

from src.exceptions import AppError


class VKError(AppError):
    """A VK API call failed; `code` is VK's `error_code` (None for HTTP/network failures)."""

    status_code = 502

    def __init__(
        self,
        vk_message: str,
        *,
        code: int | None = None,
        method: str = "",
        detail: str | None = None,
    ) -> None:
        self.code = code
        self.vk_message = vk_message
        self.method = method
        super().__init__(detail or self._describe(), code=code, method=method)

    def _describe(self) -> str:
        where = f"VK {self.method}" if self.method else "VK API"
        what = f"error {self.code}: " if self.code is not None else ""
        return f"{where}: {what}{self.vk_message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, method={self.method!r}, "
            f"vk_message={self.vk_message!r})"
        )

    def __reduce__(self) -> tuple[object, ...]:
        # The constructors take keyword-only arguments, which pickle cannot replay; rebuild
        # from the attributes instead so errors survive ARQ results and process pools.
        return (_rebuild, (type(self), self.args), self.__dict__)


def _rebuild(cls: type[VKError], args: tuple[object, ...]) -> VKError:
    error = cls.__new__(cls)
    error.args = args
    return error


class VKRetryableError(VKError):
    """Transient: too many requests, flood control, VK internal errors, timeouts, 5xx."""

    status_code = 503
    # Suggested wait before the next try, in seconds, by VK error code.
    RETRY_AFTER: ClassVar[dict[int | None, float]] = {1: 1.0, 6: 1.0, 9: 10.0, 10: 2.0, 29: 3600}

    @property
    def retry_after(self) -> float:
        """Seconds to wait before trying again (longer for flood control and method limits)."""
        return self.RETRY_AFTER.get(self.code, 1.0)


class VKRateLimitReached(VKRetryableError):
    """Error 29: the method's own (daily) limit is spent; pause long, not seconds."""

    status_code = 429


class VKThrottled(VKRetryableError):
    """The shared rate limiter has no free slot within the wait the caller allows."""

    status_code = 429

    def __init__(self, wait: float, *, method: str = "") -> None:
        self.wait = wait
        super().__init__(f"rate limiter: next slot in {wait:.2f} s", method=method)

    @property
    def retry_after(self) -> float:
        return self.wait


class VKUnavailable(VKError):
    """VK's circuit is open (it kept failing): no request is sent until the cool-down ends, or
    while another caller probes it. `reason` says until when; wait `retry_after` seconds."""

    status_code = 503

    def __init__(self, reason: str, *, retry_after: float, method: str = "") -> None:
        self.reason = reason
        self.wait = retry_after
        super().__init__(reason, method=method, detail=reason)

    @property
    def retry_after(self) -> float:
        return self.wait


class VKAuthError(VKError):
    """Error 5: the token is invalid, expired or missing. Fail fast."""

    def _describe(self) -> str:
        if self.code is None:
            return f"{self.vk_message}; set a valid VK_TOKEN"
        return (
            f"VK rejected the access token (error {self.code}: {self.vk_message}): "
            "it is invalid or expired; set a valid VK_TOKEN"
        )


class VKNeedsHuman(VKError):
    """Errors 14/17: a captcha or a validation only a person can pass."""

    def _describe(self) -> str:
        what = "captcha" if self.code == 14 else "validation"
        return (
            f"VK {self.method}: {what} required, a person must act "
            f"(error {self.code}: {self.vk_message})"
        )


class VKAccessDenied(VKError):
    """Errors 15/18/19/30/212: that object is private, deleted, blocked or closed. Skip it."""

    status_code = 403


class VKBadRequest(VKError):
    """Errors 100/104/113: a bad parameter, an unknown object or an invalid id."""

    status_code = 422


class VKResponseTooBig(VKError):
    """Error 13 (runtime error in `execute`, usually a response over 5 MB)."""


RETRYABLE_CODES = frozenset({1, 6, 9, 10})
ERROR_CLASSES: dict[int, type[VKError]] = {
    **dict.fromkeys(RETRYABLE_CODES, VKRetryableError),
    29: VKRateLimitReached,
    5: VKAuthError,
    14: VKNeedsHuman,
    17: VKNeedsHuman,
    **dict.fromkeys((15, 18, 19, 30, 212), VKAccessDenied),
    **dict.fromkeys((100, 104, 113), VKBadRequest),
    13: VKResponseTooBig,
}


def error_from_vk(code: int, vk_message: str, *, method: str = "") -> VKError:
    """The error class VK's `error_code` maps to; unknown codes give a plain `VKError`."""
    return ERROR_CLASSES.get(code, VKError)(vk_message, code=code, method=method)
