"""A fake VK API speaking VK's JSON over real HTTP (Starlette + uvicorn on 127.0.0.1).

Build data with `community_with_posts(...)`, register it with `FakeVK.add(...)`, and serve with
`async with serve(fake):` (the `fake_vk` fixture does). Faults are injected per method (and
optionally per parameter) with `fake.fail("wall.get", 6, 9)`; `Hold()` parks a request until the
test releases it. `fake.token` is the only token accepted (error 5 otherwise); `fake.rate_limit`
makes it answer error 6 past that many requests per token per rolling second; `fake.too_big_over`
fails an `execute` of more calls with error 13. Every request is recorded in `fake.requests`
with its arrival time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.servers import serve_app

TOKEN = "fake-vk-token-7f3a9c1e5b"

ERROR_MESSAGES = {
    1: "Unknown error occurred",
    5: "User authorization failed: invalid access_token (4).",
    6: "Too many requests per second",
    9: "Flood control",
    10: "Internal server error",
    12: "Unable to compile code",
    13: "Runtime error occurred during code invocation: response size is too big",
    14: "Captcha needed",
    15: "Access denied: this wall available only for community members",
    17: "Validation required: please open redirect_uri in browser",
    18: "User was deleted or banned",
    19: "Content blocked",
    29: "Rate limit reached",
    30: "This profile is private",
    100: "One of the parameters specified was missing or invalid",
    104: "Not found",
    113: "Invalid user id",
    212: "Access to post comments denied",
}


# -- data -----------------------------------------------------------------------------------


@dataclass
class FakeComment:
    id: int
    from_id: int
    text: str = ""
    date: int = 1_700_000_000
    likes: int = 0
    attachments: list[dict[str, Any]] = field(default_factory=list)
    deleted: bool = False
    replies: list[FakeComment] = field(default_factory=list)
    reply_to_comment: int | None = None
    reply_to_user: int | None = None


@dataclass
class FakePost:
    id: int
    text: str = ""
    date: int = 1_700_000_000
    from_id: int | None = None
    likes: int = 0
    comments: list[FakeComment] = field(default_factory=list)
    comments_closed: bool = False
    is_pinned: bool = False

    def comment_count(self) -> int:
        return sum(1 + len(c.replies) for c in self.comments)


@dataclass
class FakeCommunity:
    id: int
    screen_name: str
    name: str
    is_closed: int = 0
    type: str = "page"
    posts: list[FakePost] = field(default_factory=list)

    def post(self, post_id: int) -> FakePost:
        return next(p for p in self.posts if p.id == post_id)


def community_with_posts(
    n_posts: int = 1,
    comments_per_post: int = 0,
    replies_per_comment: int = 0,
    *,
    community_id: int = 1,
    screen_name: str | None = None,
    name: str | None = None,
    is_closed: int = 0,
    deleted_every: int = 0,
    attachments_every: int = 0,
    start_date: int = 1_700_000_000,
) -> FakeCommunity:
    """A community with `n_posts` posts (ids 1..n), each with comments and reply threads.

    Comment ids are unique within the community (as on VK). Every `deleted_every`-th top-level
    comment is deleted (its replies stay); every `attachments_every`-th comment has a photo.
    """
    community = FakeCommunity(
        id=community_id,
        screen_name=screen_name or f"club{community_id}",
        name=name or f"Community {community_id}",
        is_closed=is_closed,
    )
    next_id = 1
    date = start_date
    for post_id in range(1, n_posts + 1):
        post = FakePost(id=post_id, text=f"post {post_id}", date=date, likes=post_id % 7)
        date += 3600
        for n in range(1, comments_per_post + 1):
            comment = make_comment(
                next_id,
                from_id=1000 + n,
                date=date + n,
                text=f"comment {next_id} on post {post_id}",
                likes=n % 5,
                deleted=bool(deleted_every) and n % deleted_every == 0,
                photo=bool(attachments_every) and next_id % attachments_every == 0,
            )
            next_id += 1
            for r in range(1, replies_per_comment + 1):
                comment.replies.append(
                    make_comment(
                        next_id,
                        from_id=5000 + r,
                        date=date + n + r,
                        text=f"reply {next_id} to {comment.id}",
                        likes=r % 3,
                        photo=bool(attachments_every) and next_id % attachments_every == 0,
                        reply_to_comment=comment.id,
                        reply_to_user=comment.from_id,
                    )
                )
                next_id += 1
            post.comments.append(comment)
        community.posts.append(post)
    return community


def make_comment(comment_id: int, *, photo: bool = False, **overrides: Any) -> FakeComment:
    """One comment; `photo=True` attaches a photo."""
    values: dict[str, Any] = {"from_id": 1000, "text": f"comment {comment_id}"} | overrides
    if photo:
        values.setdefault("attachments", []).append(
            {
                "type": "photo",
                "photo": {"id": comment_id, "owner_id": values["from_id"], "sizes": []},
            }
        )
    return FakeComment(id=comment_id, **values)


# -- faults and records ---------------------------------------------------------------------


@dataclass(frozen=True)
class Http:
    """Answer with this HTTP status and no VK body."""

    status: int


@dataclass(frozen=True)
class Sleep:
    """Wait this long before answering (to trip client timeouts)."""

    seconds: float


@dataclass(frozen=True)
class Error:
    """A VK error with a message of the test's choosing."""

    code: int
    message: str


class Hold:
    """Keep the request waiting until the test calls `release()`, then answer normally.

    `reached` is set when a request arrives here: a test waits for it instead of guessing how
    long the client takes to get there.
    """

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self.released = asyncio.Event()

    def release(self) -> None:
        self.released.set()


Fault = int | Error | Http | Sleep | Hold


@dataclass
class RecordedRequest:
    at: float
    method: str
    token: str | None
    params: dict[str, str]
    query: str
    error: int | None = None
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


class VKFail(Exception):
    def __init__(self, code: int, message: str | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.message = message or ERROR_MESSAGES.get(code, "Unknown error")


CALL_START = re.compile(r"API\.([A-Za-z]+\.[A-Za-z]+)\(\s*")


def parse_execute_code(code: str) -> list[tuple[str, dict[str, Any]]]:
    """The `API.method({...})` calls of VKScript `code`, in order."""
    calls: list[tuple[str, dict[str, Any]]] = []
    decoder = json.JSONDecoder()
    position = 0
    while match := CALL_START.search(code, position):
        position = match.end()
        params: dict[str, Any] = {}
        if code[position] != ")":
            try:
                params, position = decoder.raw_decode(code, position)
            except json.JSONDecodeError as exc:
                raise VKFail(12) from exc
            if not isinstance(params, dict):
                raise VKFail(12)
        if code[position : position + 1] != ")":
            raise VKFail(12)
        position += 1
        calls.append((match.group(1), params))
    return calls


# -- the server -----------------------------------------------------------------------------


class FakeVK:
    """The state of the fake API: data, faults, limits and a record of every request."""

    def __init__(self, *, token: str | None = TOKEN, rate_limit: float | None = None) -> None:
        self.token = token
        self.rate_limit = rate_limit
        self.too_big_over: int | None = None
        self.communities: dict[int, FakeCommunity] = {}
        self.users: dict[str, int] = {}
        self.requests: list[RecordedRequest] = []
        self.url = ""
        self._faults: list[tuple[str, dict[str, str], deque[Fault]]] = []
        self._recent: dict[str | None, deque[float]] = {}
        self._held: list[Hold] = []
        self.app = Starlette(
            routes=[Route("/method/{method}", self._endpoint, methods=["GET", "POST"])]
        )

    # -- configuration ----------------------------------------------------------------------

    def add(self, *communities: FakeCommunity) -> FakeCommunity:
        """Register communities; returns the last one."""
        for community in communities:
            self.communities[community.id] = community
        return communities[-1]

    def fail(self, method: str, *faults: Fault, **match: object) -> None:
        """Answer the next calls of `method` (whose params include `match`) with `faults`."""
        self._faults.append((method, {k: str(v) for k, v in match.items()}, deque(faults)))

    def release_holds(self) -> None:
        """Let every held request go (a test that failed midway must not leave one parked)."""
        for _, _, faults in self._faults:
            for fault in faults:
                if isinstance(fault, Hold):
                    fault.release()
        for hold in self._held:
            hold.release()

    # -- inspection -------------------------------------------------------------------------

    def requests_for(self, method: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method]

    def max_per_second(self, token: str | None = TOKEN, window: float = 1.0) -> int:
        """The most requests with `token` that arrived within any `window` seconds."""
        times = sorted(r.at for r in self.requests if r.token == token)
        best = 0
        start = 0
        for end, at in enumerate(times):
            while at - times[start] >= window:
                start += 1
            best = max(best, end - start + 1)
        return best

    # -- HTTP -------------------------------------------------------------------------------

    async def _endpoint(self, request: Request) -> Response:
        method = request.path_params["method"]
        params = dict(request.query_params)
        params.update(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        token = params.pop("access_token", None)
        record = RecordedRequest(
            at=time.monotonic(), method=method, token=token, params=params, query=request.url.query
        )
        self.requests.append(record)
        try:
            self._check_token_and_rate(token)
            fault = self._next_fault(method, params)
            if isinstance(fault, Http):
                record.error = fault.status
                return Response(status_code=fault.status)
            if isinstance(fault, Sleep):
                await asyncio.sleep(fault.seconds)
            elif isinstance(fault, Hold):
                self._held.append(fault)
                fault.reached.set()
                await fault.released.wait()
            elif isinstance(fault, Error):
                raise VKFail(fault.code, fault.message)
            elif fault is not None:
                raise VKFail(fault)
            if method == "execute":
                return JSONResponse(self._execute(params, record))
            return JSONResponse({"response": self._dispatch(method, params)})
        except VKFail as fail:
            record.error = fail.code
            request_params = [{"key": "method", "value": method}, {"key": "v", "value": "5.199"}]
            return JSONResponse(
                {
                    "error": {
                        "error_code": fail.code,
                        "error_msg": fail.message,
                        "request_params": request_params,
                    }
                }
            )

    def _check_token_and_rate(self, token: str | None) -> None:
        if self.token is not None and token != self.token:
            raise VKFail(5)
        if self.rate_limit is None:
            return
        now = time.monotonic()
        recent = self._recent.setdefault(token, deque())
        recent.append(now)
        while recent and recent[0] <= now - 1.0:
            recent.popleft()
        if len(recent) > self.rate_limit:
            raise VKFail(6)

    def _next_fault(self, method: str, params: dict[str, Any]) -> Fault | None:
        for fault_method, match, queue in self._faults:
            if fault_method != method or not queue:
                continue
            if all(str(params.get(k)) == v for k, v in match.items()):
                return queue.popleft()
        return None

    def _execute(self, params: dict[str, str], record: RecordedRequest) -> dict[str, Any]:
        calls = parse_execute_code(params.get("code", ""))
        record.calls = calls
        if not calls or len(calls) > 25:
            raise VKFail(13, "Runtime error occurred during code invocation: Too many API calls")
        if self.too_big_over is not None and len(calls) > self.too_big_over:
            raise VKFail(13)
        response: list[Any] = []
        errors: list[dict[str, Any]] = []
        for method, call_params in calls:
            inner = {k: str(v) for k, v in call_params.items()}
            try:
                fault = self._next_fault(method, inner)
                if isinstance(fault, Error):
                    raise VKFail(fault.code, fault.message)
                if isinstance(fault, int):
                    raise VKFail(fault)
                response.append(self._dispatch(method, inner))
            except VKFail as fail:
                response.append(False)
                errors.append(
                    {"method": method, "error_code": fail.code, "error_msg": fail.message}
                )
        body: dict[str, Any] = {"response": response}
        if errors:
            body["execute_errors"] = errors
        return body

    # -- methods ----------------------------------------------------------------------------

    def _dispatch(self, method: str, params: dict[str, str]) -> Any:
        handlers = {
            "wall.get": self._wall_get,
            "wall.getComments": self._wall_get_comments,
            "groups.getById": self._groups_get_by_id,
            "utils.resolveScreenName": self._resolve_screen_name,
        }
        if method not in handlers:
            raise VKFail(3, "Unknown method passed")
        return handlers[method](params)

    def _community(self, params: dict[str, str]) -> FakeCommunity:
        owner_id = _int(params, "owner_id")
        community = self.communities.get(-owner_id)
        if community is None:
            raise VKFail(100, f"{ERROR_MESSAGES[100]}: owner_id is invalid")
        if community.is_closed:
            raise VKFail(15)
        return community

    def _wall_get(self, params: dict[str, str]) -> dict[str, Any]:
        community = self._community(params)
        offset, count = _paging(params, default_count=20)
        posts = list(reversed(community.posts))[offset : offset + count]
        return {"count": len(community.posts), "items": [_post(community, p) for p in posts]}

    def _wall_get_comments(self, params: dict[str, str]) -> dict[str, Any]:
        community = self._community(params)
        post_id = _int(params, "post_id")
        post = next((p for p in community.posts if p.id == post_id), None)
        if post is None:
            raise VKFail(100, f"{ERROR_MESSAGES[100]}: post_id is invalid")
        if post.comments_closed:
            raise VKFail(212)
        offset, count = _paging(params, default_count=10)
        thread_items = _int(params, "thread_items_count", 0)
        need_likes = params.get("need_likes") == "1"
        descending = params.get("sort") == "desc"
        view = _CommentView(-community.id, post.id, need_likes, thread_items, descending)
        if "comment_id" in params:
            comment_id = _int(params, "comment_id")
            parent = next((c for c in post.comments if c.id == comment_id), None)
            if parent is None:
                raise VKFail(100, f"{ERROR_MESSAGES[100]}: comment_id is invalid")
            level = _ordered(parent.replies, descending)
            return {
                "count": len(level),
                "current_level_count": len(level),
                "can_post": True,
                "items": [view.render(c, parent) for c in level[offset : offset + count]],
            }
        level = _ordered(post.comments, descending)
        return {
            "count": post.comment_count(),
            "current_level_count": len(level),
            "can_post": True,
            "show_reply_button": True,
            "items": [view.render(c) for c in level[offset : offset + count]],
        }

    def _find(self, name: str) -> FakeCommunity | None:
        for prefix in ("club", "public", "event"):
            rest = name.removeprefix(prefix)
            if rest != name and rest.isdigit() and int(rest) in self.communities:
                return self.communities[int(rest)]
        if name.lstrip("-").isdigit():
            return self.communities.get(abs(int(name)))
        return next((c for c in self.communities.values() if c.screen_name == name), None)

    def _groups_get_by_id(self, params: dict[str, str]) -> dict[str, Any]:
        names = (params.get("group_ids") or params.get("group_id") or "").split(",")
        found = [c for c in (self._find(n.strip()) for n in names if n.strip()) if c]
        if not found:
            raise VKFail(100, f"{ERROR_MESSAGES[100]}: group_ids is undefined")
        groups = [
            {
                "id": c.id,
                "name": c.name,
                "screen_name": c.screen_name,
                "is_closed": c.is_closed,
                "type": c.type,
            }
            for c in found
        ]
        return {"groups": groups, "profiles": []}

    def _resolve_screen_name(self, params: dict[str, str]) -> Any:
        name = params.get("screen_name", "")
        if name in self.users:
            return {"object_id": self.users[name], "type": "user"}
        community = None if name.lstrip("-").isdigit() else self._find(name)
        if community is None:
            return []
        return {"object_id": community.id, "type": community.type}


@dataclass
class _CommentView:
    owner_id: int
    post_id: int
    need_likes: bool
    thread_items: int
    descending: bool

    def render(self, comment: FakeComment, parent: FakeComment | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": comment.id,
            "from_id": 0 if comment.deleted else comment.from_id,
            "post_id": self.post_id,
            "owner_id": self.owner_id,
            "parents_stack": [parent.id] if parent else [],
            "date": comment.date,
            "text": "" if comment.deleted else comment.text,
        }
        if comment.deleted:
            body["deleted"] = True
        else:
            if comment.attachments:
                body["attachments"] = comment.attachments
            if self.need_likes:
                body["likes"] = {"count": comment.likes, "user_likes": 0, "can_like": 1}
        if comment.reply_to_comment is not None:
            body["reply_to_comment"] = comment.reply_to_comment
        if comment.reply_to_user is not None:
            body["reply_to_user"] = comment.reply_to_user
        if parent is None:
            replies = _ordered(comment.replies, self.descending)[: self.thread_items]
            body["thread"] = {
                "count": len(comment.replies),
                "items": [self.render(r, comment) for r in replies],
                "can_post": True,
                "show_reply_button": True,
                "groups_can_post": True,
            }
        return body


def _post(community: FakeCommunity, post: FakePost) -> dict[str, Any]:
    return {
        "id": post.id,
        "owner_id": -community.id,
        "from_id": post.from_id if post.from_id is not None else -community.id,
        "date": post.date,
        "text": post.text,
        "comments": {"count": post.comment_count(), "can_post": 0 if post.comments_closed else 1},
        "likes": {"count": post.likes, "user_likes": 0, "can_like": 1},
        "reposts": {"count": 0, "user_reposted": 0},
        "views": {"count": 10 * post.id},
        "is_pinned": int(post.is_pinned),
    }


def _ordered(comments: list[FakeComment], descending: bool) -> list[FakeComment]:
    return list(reversed(comments)) if descending else comments


def _int(params: dict[str, str], key: str, default: int | None = None) -> int:
    value = params.get(key)
    if value is None and default is not None:
        return default
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise VKFail(100, f"{ERROR_MESSAGES[100]}: {key} is invalid") from None


def _paging(params: dict[str, str], *, default_count: int) -> tuple[int, int]:
    offset = _int(params, "offset", 0)
    count = _int(params, "count", default_count)
    if offset < 0 or not 0 <= count <= 100:
        raise VKFail(100, f"{ERROR_MESSAGES[100]}: count should be between 0 and 100")
    return offset, count


# -- serving --------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serve(fake: FakeVK) -> AsyncIterator[FakeVK]:
    """Serve `fake` on a free port of 127.0.0.1 for the duration; sets `fake.url`."""
    async with serve_app(fake.app) as port:
        fake.url = f"http://127.0.0.1:{port}/method"
        try:
            yield fake
        finally:
            fake.release_holds()  # before the server waits for its open requests
