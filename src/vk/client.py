"""The async VK API client: rate-limited, retrying, batching calls through `execute`.

The access token travels only as `access_token` in the POST form body: never in the URL, a log
record, an error message or a repr. Any text VK or the network sends back is scrubbed of it
before it reaches an error. The calls themselves are built in `src.vk.calls`, VK's answers read
in `src.vk.responses`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Literal, Self

import httpx

from src.breakers import CircuitBreaker
from src.vk import metrics
from src.vk.breaker import CircuitRequest
from src.vk.calls import (
    MAX_COUNT,
    Call,
    Params,
    ParamValue,
    check_method,
    comments_call,
    posts_call,
    render_execute_code,
    screen_name_from,
)
from src.vk.config import VKSettings
from src.vk.exceptions import (
    VKAuthError,
    VKBadRequest,
    VKError,
    VKNeedsHuman,
    VKRateLimitReached,
    VKResponseTooBig,
    VKRetryableError,
    VKThrottled,
    VKUnavailable,
    error_from_vk,
)
from src.vk.ratelimit import RateLimiter
from src.vk.responses import as_int, as_page, parse_response

# The call builders were defined here first; importers still find them under this module.
__all__ = [
    "MAX_COUNT",
    "Call",
    "ParamValue",
    "Params",
    "VKClient",
    "comments_call",
    "posts_call",
    "render_execute_code",
    "screen_name_from",
]

logger = logging.getLogger(__name__)

# Errors no other call of the batch can get past: fail the whole request.
FATAL_ERRORS = (VKAuthError, VKNeedsHuman, VKUnavailable)


def _form_value(value: str | int | float | bool | Sequence[str | int]) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, str | int | float):
        return str(value)
    return ",".join(str(item) for item in value)


class VKClient:
    """Calls VK API methods under a shared rate limit and circuit breaker, retrying transient
    failures."""

    def __init__(
        self,
        settings: VKSettings,
        *,
        limiter: RateLimiter,
        http: httpx.AsyncClient | None = None,
        max_rate_wait: float | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        """`max_rate_wait`: raise `VKThrottled` instead of waiting longer than this for a slot.
        `breaker` (`src.vk.breaker.vk_breaker`): raise `VKUnavailable` without sending anything
        while VK's circuit is open."""
        self.settings = settings
        self.limiter = limiter
        self.breaker = breaker
        self.max_rate_wait = max_rate_wait
        self._own_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(timeout=settings.timeout)

    def __repr__(self) -> str:
        token = "set" if self.settings.token is not None else "missing"
        return (
            f"VKClient(api_url={self.settings.api_url!r}, "
            f"api_version={self.settings.api_version!r}, token={token})"
        )

    async def aclose(self) -> None:
        """Close the HTTP client if this client created it."""
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- methods ---------------------------------------------------------------------------

    async def call(self, method: str, **params: ParamValue) -> Any:
        """Call one API method and return its `response`."""
        check_method(method)
        body = await self._request(method, params)
        return body["response"]

    async def get_posts(
        self, owner_id: int, offset: int = 0, count: int = MAX_COUNT
    ) -> dict[str, Any]:
        """One page of a wall: `{"count": N, "items": [post, ...]}`."""
        method, params = posts_call(owner_id, offset, count)
        return as_page(await self.call(method, **params), method)

    async def get_comments(
        self,
        owner_id: int,
        post_id: int,
        offset: int = 0,
        count: int = MAX_COUNT,
        comment_id: int | None = None,
        thread_items_count: int = 10,
        sort: Literal["asc", "desc"] = "asc",
    ) -> dict[str, Any]:
        """One page of comments: `{"count", "current_level_count", "items": [comment, ...]}`."""
        method, params = comments_call(
            owner_id, post_id, offset, count, comment_id, thread_items_count, sort
        )
        return as_page(await self.call(method, **params), method)

    async def resolve_screen_name(self, name: str) -> dict[str, Any] | None:
        """`{"object_id": id, "type": "group" | "page" | "user" | ...}`, or None if unknown."""
        screen_name = screen_name_from(name)
        if not screen_name:
            raise VKBadRequest(f"not a screen name: {name!r}", method="utils.resolveScreenName")
        result = await self.call("utils.resolveScreenName", screen_name=screen_name)
        if not isinstance(result, dict) or "object_id" not in result:
            return None
        return result

    async def get_group(self, group_id_or_name: int | str) -> dict[str, Any]:
        """A community by id (either sign) or screen name: `{"id", "name", "screen_name", ...}`."""
        if isinstance(group_id_or_name, int):
            group_ids = str(abs(group_id_or_name))
        else:
            group_ids = screen_name_from(group_id_or_name)
        result = await self.call("groups.getById", group_ids=group_ids)
        # 5.199 answers {"groups": [...], "profiles": [...]}; versions before 5.139 a list.
        groups = result.get("groups", []) if isinstance(result, dict) else result
        if not isinstance(groups, list) or not groups or not isinstance(groups[0], dict):
            raise VKBadRequest(f"community {group_ids!r} not found", method="groups.getById")
        group: dict[str, Any] = groups[0]
        return group

    async def execute_calls(
        self, calls: Sequence[Call], *, concurrency: int = 1
    ) -> list[Any | VKError]:
        """Run `calls` through `execute`, `execute_batch` per request; one result per call.

        A call that failed inside `execute` gets its `VKError` in its place (access denied,
        bad request, or a transient error still failing after the retries). Auth and captcha
        errors raise, as does a failure of the `execute` request itself once retries are spent:
        no other call could succeed. A batch whose response is too big (error 13) is split in
        halves until it fits. `concurrency` requests run at once.
        """
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        for method, _ in calls:
            check_method(method)
        results: list[Any | VKError] = [None] * len(calls)
        size = self.settings.execute_batch
        chunks = [list(range(i, min(i + size, len(calls)))) for i in range(0, len(calls), size)]
        gate = asyncio.Semaphore(concurrency)

        async def run(indices: list[int]) -> None:
            async with gate:
                await self._execute_chunk(calls, indices, results)

        tasks = [asyncio.create_task(run(chunk)) for chunk in chunks]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return results

    # -- execute ---------------------------------------------------------------------------

    async def _execute_chunk(
        self, calls: Sequence[Call], indices: list[int], results: list[Any | VKError]
    ) -> None:
        """Fill `results` at `indices`, running again the calls that failed transiently."""
        pending = indices
        attempt = 0
        while True:
            outcome = await self._execute_once(calls, pending)
            retry: list[int] = []
            for index, result in outcome.items():
                results[index] = result
                if (
                    isinstance(result, VKRetryableError)
                    and not isinstance(result, VKRateLimitReached)
                    and attempt < self.settings.max_retries
                ):
                    retry.append(index)
            if not retry:
                return
            error = results[retry[0]]
            assert isinstance(error, VKRetryableError)
            delay = self._backoff(attempt, error)
            if metrics.is_too_many_requests(error):
                metrics.observe_wait(metrics.WaitReason.TOO_MANY_REQUESTS, delay)
            logger.warning(
                "VK execute: %d inner call(s) failed transiently (%s); retry %d/%d in %.2f s",
                len(retry),
                error.detail,
                attempt + 1,
                self.settings.max_retries,
                delay,
            )
            await asyncio.sleep(delay)
            attempt += 1
            pending = retry

    async def _execute_once(
        self, calls: Sequence[Call], indices: list[int]
    ) -> dict[int, Any | VKError]:
        """One `execute` for the calls at `indices`, halving it while VK says it is too big."""
        try:
            body = await self._request(
                "execute", {"code": render_execute_code([calls[i] for i in indices])}
            )
        except VKResponseTooBig:
            if len(indices) == 1:
                # Execute's 5 MB cap does not apply to a direct call.
                index = indices[0]
                return {index: await self._call_or_error(calls[index])}
            half = len(indices) // 2
            logger.info("VK execute: response too big for %d calls; splitting", len(indices))
            first = await self._execute_once(calls, indices[:half])
            return first | await self._execute_once(calls, indices[half:])
        response = body["response"]
        if not isinstance(response, list) or len(response) != len(indices):
            got = len(response) if isinstance(response, list) else type(response).__name__
            raise VKError(
                f"execute returned {got} results for {len(indices)} calls", method="execute"
            )
        errors = [e for e in body.get("execute_errors") or [] if isinstance(e, dict)]
        outcome: dict[int, Any | VKError] = {}
        for index, item in zip(indices, response, strict=True):
            outcome[index] = self._inner_error(calls[index][0], errors) if item is False else item
        return outcome

    def _inner_error(self, method: str, errors: list[dict[str, Any]]) -> VKError:
        """The `execute_errors` entry of a failed call: the next one for its method, in order."""
        position = next((i for i, e in enumerate(errors) if e.get("method") == method), None)
        if position is None and errors:
            position = 0
        if position is None:
            return VKError("the call failed inside execute without an error", method=method)
        entry = errors.pop(position)
        code = as_int(entry.get("error_code"))
        metrics.count_error(code)
        error = error_from_vk(code, self._redact(str(entry.get("error_msg", ""))), method=method)
        if isinstance(error, FATAL_ERRORS):
            raise error
        return error

    async def _call_or_error(self, call: Call) -> Any | VKError:
        method, params = call
        try:
            return await self.call(method, **params)
        except FATAL_ERRORS:
            raise
        except VKError as exc:
            return exc

    # -- transport -------------------------------------------------------------------------

    async def _request(self, method: str, params: Params) -> dict[str, Any]:
        """POST one method under the circuit breaker and the rate limit, retrying transient
        failures with backoff, but not past a failure that opened the circuit."""
        attempt = 0
        while True:
            request = CircuitRequest(self.breaker, method)
            try:
                async with request:
                    await self._acquire(method)
                    return await self._send(method, params)
            except (VKRateLimitReached, VKThrottled):
                # A method's own limit lasts hours, the limiter's wait is the caller's to spend:
                # the caller defers, this loop does not sleep.
                raise
            except VKRetryableError as exc:
                if request.opened or attempt >= self.settings.max_retries:
                    logger.warning(
                        "VK %s: giving up after %d tries%s: %s",
                        method,
                        attempt + 1,
                        " (the circuit is open now)" if request.opened else "",
                        exc.detail,
                    )
                    raise
                delay = self._backoff(attempt, exc)
                if metrics.is_too_many_requests(exc):
                    metrics.observe_wait(metrics.WaitReason.TOO_MANY_REQUESTS, delay)
                logger.info(
                    "VK %s: %s; retry %d/%d in %.2f s",
                    method,
                    exc.detail,
                    attempt + 1,
                    self.settings.max_retries,
                    delay,
                )
                await asyncio.sleep(delay)
                attempt += 1

    async def _acquire(self, method: str) -> None:
        started = time.monotonic()
        if self.max_rate_wait is None:
            await self.limiter.acquire()
        else:
            while (wait := await self.limiter.try_acquire()) > 0:
                if wait > self.max_rate_wait:
                    raise VKThrottled(wait, method=method)
                await asyncio.sleep(wait)
        metrics.observe_wait(metrics.WaitReason.LIMITER, time.monotonic() - started)

    def _backoff(self, attempt: int, error: VKRetryableError) -> float:
        """Exponential, at least VK's suggestion, capped, with jitter (half to all of it)."""
        delay = max(self.settings.retry_backoff * 2.0**attempt, error.retry_after)
        delay = min(delay, self.settings.retry_backoff_max)
        return delay / 2 + random.uniform(0, delay / 2)

    async def _send(self, method: str, params: Params) -> dict[str, Any]:
        """One HTTP request; VK's answer as a dict with `response`, or a `VKError`."""
        if self.settings.token is None:
            raise VKAuthError("VK_TOKEN is not set", method=method)
        form = {key: _form_value(value) for key, value in params.items() if value is not None}
        form["v"] = self.settings.api_version
        form["access_token"] = self.settings.token.get_secret_value()
        logger.debug("VK %s %s", method, sorted(params))
        failure: VKError | None = None
        try:
            response = await self._http.post(
                f"{self.settings.api_url}/{method}", data=form, timeout=self.settings.timeout
            )
        except httpx.TimeoutException as exc:
            failure = VKRetryableError(
                f"no answer within {self.settings.timeout:g} s ({type(exc).__name__})",
                method=method,
            )
            outcome = metrics.Outcome.TIMEOUT
        except httpx.TransportError as exc:
            failure = VKRetryableError(
                f"connection failed ({type(exc).__name__}: {self._redact(str(exc))})",
                method=method,
            )
            outcome = metrics.Outcome.NETWORK_ERROR
        # Raised outside `except`: httpx's error holds the request, whose body holds the token.
        if failure is not None:
            metrics.count_request(method, outcome)
            raise failure
        try:
            body = parse_response(method, response, redact=self._redact)
        except VKError as exc:
            metrics.count_failed_request(method, response.status_code, exc)
            raise
        metrics.count_request(method, metrics.Outcome.OK)
        return body

    def _redact(self, text: str) -> str:
        token = self.settings.token
        if token is not None and token.get_secret_value():
            text = text.replace(token.get_secret_value(), "***")
        return text
