"""The VK client's metrics, counted while it talks to the fake VK server over real HTTP.

The registry is the process' own (`prometheus_client.REGISTRY`), shared by every test of the run:
each test compares the samples before and after what it does.
"""

from __future__ import annotations

import socket

import pytest
from redis.asyncio import Redis

from src.vk.client import VKClient, comments_call
from src.vk.exceptions import VKError, VKRetryableError, VKThrottled
from src.vk.ratelimit import NoRateLimit, RedisRateLimiter
from tests.registry_samples import moved_since, registry_samples
from tests.vk.conftest import MakeClient, vk_settings_for
from tests.vk.fake_server import Error, FakeVK, Http, Sleep, community_with_posts

PREFIX = "vkp_vk_"


def samples() -> dict[str, float]:
    """This process' VK samples (`tests.registry_samples`)."""
    return registry_samples(PREFIX)


def changes(before: dict[str, float]) -> dict[str, float]:
    return moved_since(PREFIX, before)


def requests(method: str, outcome: str) -> str:
    return f'vkp_vk_requests_total{{method="{method}",outcome="{outcome}"}}'


def errors(code: str) -> str:
    return f'vkp_vk_errors_total{{code="{code}"}}'


def waits(reason: str, suffix: str = "count") -> str:
    return f'vkp_vk_rate_limit_wait_seconds_{suffix}{{reason="{reason}"}}'


async def test_each_method_counts_its_requests(fake_vk: FakeVK, vk: VKClient) -> None:
    fake_vk.add(community_with_posts(1, 1, community_id=42, screen_name="apiclub"))
    before = samples()
    await vk.get_posts(-42)
    await vk.get_comments(-42, 1)
    assert await vk.resolve_screen_name("apiclub") is not None
    await vk.get_group(42)
    assert changes(before) == {
        requests("wall.get", "ok"): 1,
        requests("wall.getComments", "ok"): 1,
        requests("utils.resolveScreenName", "ok"): 1,
        requests("groups.getById", "ok"): 1,
        waits("limiter"): 4,  # every request asked the limiter for a slot
    }


async def test_vk_errors_http_errors_and_backoffs(fake_vk: FakeVK, make_client: MakeClient) -> None:
    fake_vk.add(community_with_posts(1))
    fake_vk.fail("wall.get", 6, 9, Http(429), Http(502))
    client = make_client(max_retries=4)
    before = samples()
    assert (await client.get_posts(-1))["count"] == 1
    assert changes(before) == {
        requests("wall.get", "vk_error"): 2,
        requests("wall.get", "http_error"): 2,
        requests("wall.get", "ok"): 1,
        errors("6"): 1,
        errors("9"): 1,
        waits("limiter"): 5,
        # VK said "too many requests" twice (error 6, HTTP 429): both backoffs are waits for it;
        # flood control (9) and a 502 are not about the request rate.
        waits("too_many_requests"): 2,
    }
    backoffs = (
        samples()[waits("too_many_requests", "sum")] - before[waits("too_many_requests", "sum")]
    )
    assert 0 < backoffs <= 2 * 0.05  # two backoffs of at most `retry_backoff_max`


async def test_timeouts_and_answers_that_are_not_vk_json(
    fake_vk: FakeVK, make_client: MakeClient
) -> None:
    fake_vk.add(community_with_posts(1))
    fake_vk.fail("wall.get", Sleep(0.6), Http(200))  # no answer in time; an empty 200
    client = make_client(timeout=0.3)
    before = samples()
    assert (await client.get_posts(-1))["count"] == 1
    assert changes(before) == {
        requests("wall.get", "timeout"): 1,
        requests("wall.get", "bad_response"): 1,
        requests("wall.get", "ok"): 1,
        waits("limiter"): 3,
    }


async def test_connection_errors() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = vk_settings_for(f"http://127.0.0.1:{port}/method", max_retries=1)
    before = samples()
    async with VKClient(settings, limiter=NoRateLimit()) as vk:
        with pytest.raises(VKRetryableError, match="connection failed"):
            await vk.get_posts(-1)
    assert changes(before) == {requests("wall.get", "network_error"): 2, waits("limiter"): 2}


async def test_unknown_methods_and_codes_count_as_other(fake_vk: FakeVK, vk: VKClient) -> None:
    fake_vk.add(community_with_posts(1))
    fake_vk.fail("wall.get", Error(777, "Something new"))
    before = samples()
    with pytest.raises(VKError) as unknown_method:
        await vk.call("board.getTopics", group_id=1)  # the fake answers error 3
    assert unknown_method.value.code == 3
    with pytest.raises(VKError) as unknown_code:
        await vk.get_posts(-1)
    assert unknown_code.value.code == 777
    assert changes(before) == {
        requests("other", "vk_error"): 1,
        requests("wall.get", "vk_error"): 1,
        errors("other"): 2,
        waits("limiter"): 2,
    }


async def test_errors_inside_execute(fake_vk: FakeVK, vk: VKClient) -> None:
    fake_vk.add(community_with_posts(3, 1))
    fake_vk.fail("wall.getComments", 6, post_id=2)  # transient: run again in a second execute
    fake_vk.fail("wall.getComments", 15, post_id=3)  # access denied: stays an error
    before = samples()
    results = await vk.execute_calls([comments_call(-1, p) for p in (1, 2, 3)])
    assert [type(r).__name__ for r in results] == ["dict", "dict", "VKAccessDenied"]
    assert changes(before) == {
        requests("execute", "ok"): 2,  # one HTTP request each, whatever failed inside
        errors("6"): 1,
        errors("15"): 1,
        waits("limiter"): 2,
        waits("too_many_requests"): 1,
    }


async def test_rate_limiter_waits(fake_vk: FakeVK, make_client: MakeClient) -> None:
    fake_vk.add(community_with_posts(1))
    client = make_client(requests_per_second=2)  # 2 per 1.05 s: the third request waits
    before = samples()
    for _ in range(3):
        await client.get_posts(-1)
    assert changes(before) == {requests("wall.get", "ok"): 3, waits("limiter"): 3}
    waited = samples()[waits("limiter", "sum")] - before[waits("limiter", "sum")]
    assert 0.25 < waited < 5


async def test_a_throttled_request_is_neither_a_wait_nor_a_request(
    fake_vk: FakeVK, aredis: Redis
) -> None:
    fake_vk.add(community_with_posts(1))
    settings = vk_settings_for(fake_vk.url, requests_per_second=2)
    limiter = RedisRateLimiter(aredis, token=settings.token, requests_per_second=2, window_slack=9)
    before = samples()
    async with VKClient(settings, limiter=limiter, max_rate_wait=0.1) as client:
        await client.get_posts(-1)
        await client.get_posts(-1)
        with pytest.raises(VKThrottled):
            await client.get_posts(-1)
    assert changes(before) == {requests("wall.get", "ok"): 2, waits("limiter"): 2}


def test_every_series_exists_before_its_first_event() -> None:
    values = samples()
    for method in ("execute", "wall.get", "wall.getComments", "other"):
        for outcome in ("ok", "vk_error", "http_error", "bad_response", "timeout"):
            assert requests(method, outcome) in values
    assert errors("29") in values and errors("other") in values
    assert waits("too_many_requests") in values
