"""The VK client against the fake VK server over real HTTP, with the run's real Redis."""

from __future__ import annotations

import asyncio
import logging
import pickle
import socket
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from src.config import ConfigError, load
from src.vk.client import VKClient, comments_call, render_execute_code, screen_name_from
from src.vk.config import VKSettings
from src.vk.exceptions import (
    VKAccessDenied,
    VKAuthError,
    VKBadRequest,
    VKError,
    VKNeedsHuman,
    VKRateLimitReached,
    VKRetryableError,
    VKThrottled,
)
from src.vk.ratelimit import NoRateLimit, RedisRateLimiter
from tests.vk.conftest import MakeClient, vk_settings_for
from tests.vk.fake_server import (
    TOKEN,
    Error,
    FakeVK,
    Http,
    Sleep,
    community_with_posts,
    make_comment,
    parse_execute_code,
)

# -- settings -------------------------------------------------------------------------------


def test_settings_defaults_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VK_TOKEN", "  env-token  ")
    monkeypatch.setenv("VK_REQUESTS_PER_SECOND", "20")
    settings = load(VKSettings)
    assert settings.token is not None and settings.token.get_secret_value() == "env-token"
    assert settings.requests_per_second == 20
    assert settings.api_url == "https://api.vk.com/method"
    assert settings.api_version == "5.199"
    assert (settings.timeout, settings.max_retries, settings.execute_batch) == (10, 5, 25)
    assert "env-token" not in repr(settings)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("VK_API_URL", "ftp://api.vk.com/method"),
        ("VK_API_URL", "api.vk.com/method"),
        ("VK_EXECUTE_BATCH", "26"),
        ("VK_EXECUTE_BATCH", "0"),
        ("VK_REQUESTS_PER_SECOND", "0"),
        ("VK_API_VERSION", "latest"),
    ],
)
def test_settings_reject_bad_values(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv("VK_TOKEN", "secret-token-value")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable) as caught:
        load(VKSettings)
    assert "secret-token-value" not in str(caught.value)


def test_empty_token_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VK_TOKEN", "")
    assert load(VKSettings).token is None


async def test_missing_token_fails_without_a_request(fake_vk: FakeVK) -> None:
    settings = vk_settings_for(fake_vk.url, token=None)
    async with VKClient(settings, limiter=NoRateLimit()) as client:
        with pytest.raises(VKAuthError, match="VK_TOKEN is not set"):
            await client.get_posts(-1)
    assert fake_vk.requests == []


# -- paging and threads ---------------------------------------------------------------------


async def test_posts_paging_past_100(fake_vk: FakeVK, vk: VKClient) -> None:
    fake_vk.add(community_with_posts(250))
    seen: list[int] = []
    offset = 0
    while True:
        page = await vk.get_posts(-1, offset=offset, count=100)
        assert page["count"] == 250
        if not page["items"]:
            break
        seen += [post["id"] for post in page["items"]]
        offset += len(page["items"])
    assert seen == list(range(250, 0, -1))  # newest first
    assert [r.params["offset"] for r in fake_vk.requests] == ["0", "100", "200", "250"]
    assert all(r.params["count"] == "100" for r in fake_vk.requests)
    post = (await vk.get_posts(-1, count=1))["items"][0]
    assert post["owner_id"] == -1 and post["comments"]["count"] == 0


async def test_count_above_100_is_refused_before_sending(fake_vk: FakeVK, vk: VKClient) -> None:
    with pytest.raises(ValueError, match="count"):
        await vk.get_posts(-1, count=101)
    assert fake_vk.requests == []


async def test_comments_paging_threads_and_deleted(fake_vk: FakeVK, vk: VKClient) -> None:
    fake_vk.add(
        community_with_posts(1, 230, 3, deleted_every=10, attachments_every=7, community_id=5)
    )
    # One comment with a long thread: 25 replies, 10 inline, the rest paged with comment_id.
    post = fake_vk.communities[5].post(1)
    long = post.comments[3]
    long.replies = [
        make_comment(10_000 + n, reply_to_comment=long.id, reply_to_user=long.from_id)
        for n in range(25)
    ]

    top: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = await vk.get_comments(-5, 1, offset=offset, count=100)
        assert page["current_level_count"] == 230
        assert page["count"] == post.comment_count()
        if not page["items"]:
            break
        top += page["items"]
        offset += len(page["items"])
    assert [c["id"] for c in top] == [c.id for c in post.comments]

    replies: dict[int, list[int]] = {}
    for comment in top:
        thread = comment["thread"]
        ids = [r["id"] for r in thread["items"]]
        while len(ids) < thread["count"]:
            page = await vk.get_comments(-5, 1, offset=len(ids), count=10, comment_id=comment["id"])
            assert page["items"], "the thread ended early"
            ids += [r["id"] for r in page["items"]]
        replies[comment["id"]] = ids
    assert replies[long.id] == [10_000 + n for n in range(25)]
    assert all(len(ids) == 3 for cid, ids in replies.items() if cid != long.id)
    thread_requests = [r for r in fake_vk.requests if "comment_id" in r.params]
    assert len(thread_requests) == 2  # offsets 10 and 20 of the long thread only
    assert thread_requests[0].params["thread_items_count"] == "10"

    deleted = [c for c in top if c.get("deleted")]
    assert len(deleted) == 23
    assert all(c["text"] == "" and c["thread"]["count"] == 3 for c in deleted)
    alive = next(c for c in top if not c.get("deleted") and c.get("attachments"))
    assert alive["attachments"][0]["type"] == "photo"
    assert "count" in alive["likes"]
    sent = fake_vk.requests[0].params
    assert sent["need_likes"] == "1" and sent["extended"] == "0"
    assert sent["preview_length"] == "0" and sent["sort"] == "asc"
    assert sent["v"] == "5.199"


async def test_comments_descending(fake_vk: FakeVK, vk: VKClient) -> None:
    fake_vk.add(community_with_posts(1, 5))
    page = await vk.get_comments(-1, 1, sort="desc", thread_items_count=0)
    assert [c["id"] for c in page["items"]] == [5, 4, 3, 2, 1]


async def test_resolve_screen_name_and_get_group(fake_vk: FakeVK, vk: VKClient) -> None:
    fake_vk.add(community_with_posts(0, community_id=42, screen_name="apiclub", name="API Club"))
    fake_vk.users["durov"] = 1
    assert await vk.resolve_screen_name("https://vk.com/apiclub?w=wall") == {
        "object_id": 42,
        "type": "page",
    }
    assert await vk.resolve_screen_name("@durov") == {"object_id": 1, "type": "user"}
    assert await vk.resolve_screen_name("nobody_here") is None
    group = await vk.get_group("apiclub")
    assert (group["id"], group["name"], group["is_closed"]) == (42, "API Club", 0)
    assert (await vk.get_group(-42))["screen_name"] == "apiclub"
    with pytest.raises(VKBadRequest) as caught:
        await vk.get_group("nobody_here")
    assert caught.value.code == 100 and "group_ids" in caught.value.vk_message


def test_screen_name_from() -> None:
    assert screen_name_from(" https://m.vk.com/club1/ ") == "club1"
    assert screen_name_from("vk.ru/apiclub#x") == "apiclub"
    assert screen_name_from("@name") == "name"


# -- errors ---------------------------------------------------------------------------------


async def test_6_and_9_are_retried_then_succeed(fake_vk: FakeVK, vk: VKClient) -> None:
    fake_vk.add(community_with_posts(3))
    fake_vk.fail("wall.get", 6, 9, 10)
    page = await vk.get_posts(-1)
    assert page["count"] == 3
    assert [r.error for r in fake_vk.requests] == [6, 9, 10, None]


async def test_retries_give_up_after_max_retries(fake_vk: FakeVK, make_client: MakeClient) -> None:
    fake_vk.add(community_with_posts(1))
    fake_vk.fail("wall.get", *[6] * 10)
    client = make_client(max_retries=2)
    with pytest.raises(VKRetryableError) as caught:
        await client.get_posts(-1)
    assert caught.value.code == 6 and caught.value.method == "wall.get"
    assert len(fake_vk.requests) == 3


def test_retry_after_is_longer_for_flood_control() -> None:
    six = VKRetryableError("x", code=6)
    nine = VKRetryableError("x", code=9)
    twenty_nine = VKRateLimitReached("x", code=29)
    assert six.retry_after < nine.retry_after < twenty_nine.retry_after


async def test_http_5xx_and_timeouts_are_retried(fake_vk: FakeVK, make_client: MakeClient) -> None:
    fake_vk.add(community_with_posts(2))
    fake_vk.fail("wall.get", Http(502), Sleep(0.6), Http(503))
    client = make_client(timeout=0.3)
    assert (await client.get_posts(-1))["count"] == 2
    assert len(fake_vk.requests) == 4


async def test_connection_errors_are_retried_then_raised(aredis: Redis) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = vk_settings_for(f"http://127.0.0.1:{port}/method", max_retries=1)
    async with VKClient(settings, limiter=RedisRateLimiter.from_settings(aredis, settings)) as vk:
        with pytest.raises(VKRetryableError, match="connection failed") as caught:
            await vk.get_posts(-1)
    assert caught.value.code is None
    assert caught.value.__cause__ is None and caught.value.__context__ is None


async def test_5_fails_fast_with_a_clear_message(fake_vk: FakeVK, vk: VKClient) -> None:
    fake_vk.token = "another-token"
    with pytest.raises(VKAuthError) as caught:
        await vk.get_posts(-1)
    message = str(caught.value)
    assert "invalid or expired" in message and "VK_TOKEN" in message
    assert caught.value.code == 5
    assert len(fake_vk.requests) == 1


@pytest.mark.parametrize(("code", "word"), [(14, "captcha"), (17, "validation")])
async def test_captcha_and_validation_need_a_human(
    fake_vk: FakeVK, vk: VKClient, code: int, word: str
) -> None:
    fake_vk.add(community_with_posts(1))
    fake_vk.fail("wall.get", code)
    with pytest.raises(VKNeedsHuman, match=word) as caught:
        await vk.get_posts(-1)
    assert caught.value.code == code
    assert len(fake_vk.requests) == 1


@pytest.mark.parametrize("code", [15, 18, 19, 30, 212])
async def test_access_denied(fake_vk: FakeVK, vk: VKClient, code: int) -> None:
    fake_vk.add(community_with_posts(1, 1))
    fake_vk.fail("wall.getComments", code)
    with pytest.raises(VKAccessDenied) as caught:
        await vk.get_comments(-1, 1)
    assert caught.value.code == code
    assert caught.value.method == "wall.getComments"
    assert caught.value.vk_message
    assert caught.value.status_code == 403
    assert len(fake_vk.requests) == 1


async def test_closed_community_and_closed_comments_are_access_denied(
    fake_vk: FakeVK, vk: VKClient
) -> None:
    fake_vk.add(community_with_posts(1, community_id=2, is_closed=1))
    open_one = fake_vk.add(community_with_posts(1, 1, community_id=3))
    open_one.posts[0].comments_closed = True
    with pytest.raises(VKAccessDenied) as closed:
        await vk.get_posts(-2)
    assert closed.value.code == 15 and "members" in closed.value.vk_message
    with pytest.raises(VKAccessDenied) as no_comments:
        await vk.get_comments(-3, 1)
    assert no_comments.value.code == 212


@pytest.mark.parametrize("code", [100, 104, 113])
async def test_bad_request(fake_vk: FakeVK, vk: VKClient, code: int) -> None:
    fake_vk.fail("wall.get", code)
    with pytest.raises(VKBadRequest) as caught:
        await vk.get_posts(-1)
    assert caught.value.code == code
    assert len(fake_vk.requests) == 1


async def test_unknown_owner_is_a_bad_request(fake_vk: FakeVK, vk: VKClient) -> None:
    with pytest.raises(VKBadRequest, match="owner_id is invalid"):
        await vk.get_posts(-999)


async def test_29_is_not_retried_in_process(fake_vk: FakeVK, vk: VKClient) -> None:
    fake_vk.fail("wall.get", 29)
    with pytest.raises(VKRateLimitReached) as caught:
        await vk.get_posts(-1)
    assert caught.value.retry_after >= 600
    assert len(fake_vk.requests) == 1


def test_errors_pickle() -> None:
    for error in (VKAccessDenied("Access denied", code=15, method="wall.get"), VKThrottled(1.5)):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error)
        assert (str(copy), copy.code, copy.method) == (str(error), error.code, error.method)
    assert pickle.loads(pickle.dumps(VKThrottled(1.5))).retry_after == 1.5


# -- execute --------------------------------------------------------------------------------


def test_execute_code_renders_json_params() -> None:
    calls = [comments_call(-1, 2, comment_id=3), ("groups.getById", {"group_ids": ["a", "b"]})]
    code = render_execute_code(calls)
    assert code.startswith("return [API.wall.getComments({") and code.endswith(")];")
    assert parse_execute_code(code) == [
        ("wall.getComments", {**calls[0][1]}),
        ("groups.getById", {"group_ids": "a,b"}),
    ]
    with pytest.raises(ValueError, match="method"):
        render_execute_code([("wall.get({}); API.x", {})])


async def test_execute_batches_and_keeps_order(fake_vk: FakeVK, vk: VKClient) -> None:
    fake_vk.add(community_with_posts(30, 2))
    calls = [comments_call(-1, post_id) for post_id in range(1, 31)]
    results = await vk.execute_calls(calls)
    assert [r["items"][0]["post_id"] for r in results] == list(range(1, 31))
    assert [len(r.calls) for r in fake_vk.requests_for("execute")] == [25, 5]
    assert len(fake_vk.requests) == 2


async def test_execute_concurrency(fake_vk: FakeVK, make_client: MakeClient) -> None:
    fake_vk.add(community_with_posts(12, 1))
    client = make_client(execute_batch=3)
    calls = [comments_call(-1, post_id) for post_id in range(1, 13)]
    results = await client.execute_calls(calls, concurrency=3)
    assert [r["items"][0]["post_id"] for r in results] == list(range(1, 13))
    assert len(fake_vk.requests_for("execute")) == 4


async def test_execute_partial_errors_map_to_their_calls(fake_vk: FakeVK, vk: VKClient) -> None:
    fake_vk.add(community_with_posts(6, 1), community_with_posts(1, 1, community_id=2, is_closed=1))
    fake_vk.communities[1].post(2).comments_closed = True
    fake_vk.fail("wall.getComments", 100, post_id=5)
    fake_vk.fail("wall.getComments", 30, post_id=4)
    calls = [
        comments_call(-1, 1),  # ok
        comments_call(-1, 2),  # 212 comments closed
        comments_call(-2, 1),  # 15 closed community
        comments_call(-1, 3),  # ok
        comments_call(-1, 4),  # 30 private (injected)
        comments_call(-1, 5),  # 100 bad request (injected)
        comments_call(-1, 6),  # ok
    ]
    results = await vk.execute_calls(calls)
    assert len(fake_vk.requests) == 1
    ok = {0: 1, 3: 3, 6: 6}
    for index, post_id in ok.items():
        assert results[index]["items"][0]["post_id"] == post_id
    expected: dict[int, tuple[type[VKError], int]] = {
        1: (VKAccessDenied, 212),
        2: (VKAccessDenied, 15),
        4: (VKAccessDenied, 30),
        5: (VKBadRequest, 100),
    }
    for index, (cls, code) in expected.items():
        error = results[index]
        assert isinstance(error, cls), (index, error)
        assert error.code == code and error.method == "wall.getComments"
        assert error.vk_message


async def test_execute_retries_inner_transient_errors(fake_vk: FakeVK, vk: VKClient) -> None:
    fake_vk.add(community_with_posts(3, 1))
    fake_vk.fail("wall.getComments", 10, post_id=2)
    results = await vk.execute_calls([comments_call(-1, p) for p in (1, 2, 3)])
    assert [r["items"][0]["post_id"] for r in results] == [1, 2, 3]
    assert [len(r.calls) for r in fake_vk.requests_for("execute")] == [3, 1]


async def test_execute_inner_auth_error_raises(fake_vk: FakeVK, vk: VKClient) -> None:
    fake_vk.add(community_with_posts(2, 1))
    fake_vk.fail("wall.getComments", 14, post_id=2)
    with pytest.raises(VKNeedsHuman):
        await vk.execute_calls([comments_call(-1, p) for p in (1, 2)])


async def test_execute_outer_errors_are_retried(fake_vk: FakeVK, vk: VKClient) -> None:
    fake_vk.add(community_with_posts(2, 1))
    fake_vk.fail("execute", 6, 9)
    results = await vk.execute_calls([comments_call(-1, p) for p in (1, 2)])
    assert [r["count"] for r in results] == [1, 1]
    assert [r.error for r in fake_vk.requests] == [6, 9, None]


async def test_execute_13_splits_the_batch(fake_vk: FakeVK, vk: VKClient) -> None:
    fake_vk.add(community_with_posts(20, 1))
    fake_vk.too_big_over = 6
    calls = [comments_call(-1, post_id) for post_id in range(1, 21)]
    results = await vk.execute_calls(calls)
    assert [r["items"][0]["post_id"] for r in results] == list(range(1, 21))
    sizes = [(len(r.calls), r.error) for r in fake_vk.requests_for("execute")]
    # 20 -> 10 + 10 -> 5 + 5 + 5 + 5, in order.
    assert sizes == [(20, 13), (10, 13), (5, None), (5, None), (10, 13), (5, None), (5, None)]
    served = [
        c[1]["post_id"] for r in fake_vk.requests_for("execute") if not r.error for c in r.calls
    ]
    assert served == list(range(1, 21))


async def test_execute_13_on_one_call_falls_back_to_a_direct_call(
    fake_vk: FakeVK, vk: VKClient
) -> None:
    fake_vk.add(community_with_posts(2, 1))
    fake_vk.too_big_over = 0
    results = await vk.execute_calls([comments_call(-1, 1), comments_call(-1, 2)])
    assert [r["items"][0]["post_id"] for r in results] == [1, 2]
    assert [r.method for r in fake_vk.requests] == [
        "execute",
        "execute",
        "wall.getComments",
        "execute",
        "wall.getComments",
    ]


# -- rate limit -----------------------------------------------------------------------------


async def test_two_clients_share_the_rate_limit(
    fake_vk: FakeVK, aredis: Redis, redis_url: str
) -> None:
    """Two clients (own HTTP clients, own Redis connections, one token) share one budget.

    A budget of 5 per 30 s and clients that would rather fail than wait: exactly 5 of their 16
    requests reach VK, whatever the timing (separate budgets would let 10 through). The pace
    within a window is the limiter's test, timed by Redis' clock (tests/vk/test_ratelimit.py).
    """
    fake_vk.add(community_with_posts(3))
    fake_vk.rate_limit = 5
    other_redis = Redis.from_url(redis_url)
    settings = vk_settings_for(fake_vk.url, requests_per_second=5)

    def limiter(redis: Redis) -> RedisRateLimiter:
        return RedisRateLimiter(redis, token=settings.token, requests_per_second=5, window_slack=29)

    first = VKClient(settings, limiter=limiter(aredis), max_rate_wait=1)
    second = VKClient(
        settings,
        limiter=limiter(other_redis),
        http=httpx.AsyncClient(),
        max_rate_wait=1,
    )
    try:
        outcomes = await asyncio.gather(
            *[client.get_posts(-1) for client in (first, second) for _ in range(8)],
            return_exceptions=True,
        )
    finally:
        await first.aclose()
        await second.aclose()
        await second._http.aclose()
        await other_redis.aclose()
    served = [o for o in outcomes if isinstance(o, dict)]
    throttled = [o for o in outcomes if isinstance(o, VKThrottled)]
    assert (len(served), len(throttled)) == (5, 11), outcomes
    assert all(1 < t.retry_after <= 30 for t in throttled)
    assert len(fake_vk.requests) == 5
    assert all(r.error is None for r in fake_vk.requests)  # VK never saw a sixth


async def test_max_rate_wait_gives_the_slot_back(fake_vk: FakeVK, aredis: Redis) -> None:
    fake_vk.add(community_with_posts(1))
    # 2 per 10 s: the third request surely falls in the first one's window.
    settings = vk_settings_for(fake_vk.url, requests_per_second=2)
    limiter = RedisRateLimiter(aredis, token=settings.token, requests_per_second=2, window_slack=9)
    async with VKClient(settings, limiter=limiter, max_rate_wait=0.1) as client:
        await client.get_posts(-1)
        await client.get_posts(-1)
        with pytest.raises(VKThrottled) as caught:
            await client.get_posts(-1)
    assert 0.1 < caught.value.retry_after <= 10
    assert len(fake_vk.requests) == 2
    # A throttled request took no slot: the log still holds the two that were sent.
    assert await aredis.zcard(limiter.key) == 2


# -- the token stays secret -----------------------------------------------------------------


async def test_token_never_leaks(
    fake_vk: FakeVK, make_client: MakeClient, aredis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # `configure_logging` may have stopped `src.*` records from reaching the root handler.
    vk_logger = logging.getLogger("src.vk")
    vk_logger.addHandler(caplog.handler)
    try:
        await _leak_scenarios(fake_vk, make_client, aredis, caplog)
    finally:
        vk_logger.removeHandler(caplog.handler)


async def _leak_scenarios(
    fake_vk: FakeVK, make_client: MakeClient, aredis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    fake_vk.add(community_with_posts(2, 2))
    client = make_client(timeout=0.3, max_retries=1)
    texts: list[str] = [
        repr(client),
        repr(client.settings),
        str(client.settings),
        repr(client.limiter),
    ]
    errors: list[BaseException] = []

    fake_vk.fail("wall.get", 6, Http(500), Sleep(0.5), 9)
    for _ in range(2):
        with pytest.raises(VKRetryableError) as retry:
            await client.get_posts(-1)
        errors.append(retry.value)
    fake_vk.fail("wall.getComments", 15, post_id=2)
    results = await client.execute_calls([comments_call(-1, 1), comments_call(-1, 2)])
    errors += [r for r in results if isinstance(r, VKError)]
    texts.append(repr(results))
    # VK echoing the token in a message must not carry it through either.
    fake_vk.fail("wall.get", Error(100, f"invalid parameter access_token={TOKEN}"))
    fake_vk.fail("wall.getComments", Error(15, f"denied for {TOKEN}"), post_id=1)
    with pytest.raises(VKBadRequest) as bad:
        await client.get_posts(-1)
    errors.append(bad.value)
    assert "access_token=***" in str(bad.value)
    (echoed,) = await client.execute_calls([comments_call(-1, 1)])
    assert isinstance(echoed, VKAccessDenied) and echoed.vk_message == "denied for ***"
    errors.append(echoed)
    fake_vk.token = "a-different-token"
    with pytest.raises(VKAuthError) as auth:
        await client.get_posts(-1)
    errors.append(auth.value)

    assert len(errors) == 6
    for error in errors:
        texts += [str(error), repr(error), repr(error.args), repr(vars(error))]
        texts += [repr(getattr(error, "extra", None))]
    texts.append(caplog.text)
    texts += [key.decode() for key in await aredis.keys("*")]
    for text in texts:
        assert TOKEN not in text
    logged = {record.name for record in caplog.records}
    assert {"src.vk.client", "httpx"} <= logged, logged
    # Sent in the POST body, never in the URL.
    assert all(r.token == TOKEN and TOKEN not in r.query for r in fake_vk.requests)
