"""Webhook delivery against a real receiver (Starlette + uvicorn on 127.0.0.1, a free port).

The receiver records every request (headers and body) and answers from a script of `Reply`s
(status, headers, body, a delay); once the script is used up it answers 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import shutil
import socket
import ssl
import subprocess
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from src.config import ConfigError, load
from src.webhooks import guard
from src.webhooks.config import NotificationSettings
from src.webhooks.delivery import send_webhook
from src.webhooks.exceptions import (
    AddressRefused,
    HostUnresolvable,
    InvalidTemplateContext,
    InvalidWebhookUrl,
    UnknownTemplate,
    WebhookFailed,
    WebhookPayloadTooLarge,
    WebhookRejected,
)
from src.webhooks.guard import address_refusal, validate_url
from src.webhooks.signing import sign, signature_headers, verify
from src.webhooks.templates import TEMPLATES, render_template
from src.webhooks.transport import GuardedTransport, create_webhook_client
from tests.arq.helpers import enqueue, wait_for
from tests.conftest import WorkerHandle
from tests.servers import serve_app

SECRET = "whsec-0b1e7c4f9a2d6e8f"
PUBLIC_IP = "93.184.216.34"
PAYLOAD = {"event": "job.finished", "job_id": "j-1", "status": "complete", "text": "привет"}


# -- the receiver -------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: bytes = b'{"ok": true}'
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str = ""
    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    script: deque[Reply] = field(default_factory=deque)

    def reply(self, *replies: Reply) -> None:
        self.script.extend(replies)

    async def handle(self, request: Request) -> Response:
        self.requests.append(
            Recorded(request.url.path, dict(request.headers), await request.body())
        )
        reply = self.script.popleft() if self.script else Reply()
        if reply.delay:
            await asyncio.sleep(reply.delay)
        return Response(reply.body, status_code=reply.status, headers=reply.headers)


@contextlib.asynccontextmanager
async def serve(receiver: Receiver, *, tls: TLSFiles | None = None) -> AsyncIterator[Receiver]:
    """Serve `receiver` on a free port of 127.0.0.1 (over TLS with `tls`); sets its url/port."""
    app = Starlette(routes=[Route("/{path:path}", receiver.handle, methods=["GET", "POST"])])
    tls_config = {"ssl_certfile": str(tls.cert), "ssl_keyfile": str(tls.key)} if tls else {}
    async with serve_app(app, **tls_config) as port:
        receiver.port = port
        receiver.url = f"http://127.0.0.1:{port}/hooks/incoming"
        yield receiver


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with serve(Receiver()) as running:
        yield running


@dataclass
class TLSFiles:
    ca: Path
    cert: Path
    key: Path


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A throwaway CA and a certificate it issued for `hooks.example` (made with `openssl`)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    d = tmp_path_factory.mktemp("tls")
    (d / "leaf.ext").write_text(
        "subjectAltName=DNS:hooks.example\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    for command in (
        "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=Test-CA"
        " -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign",
        "req -newkey rsa:2048 -nodes -keyout leaf.key -out leaf.csr -subj /CN=hooks.example",
        "x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out leaf.pem -days 2"
        " -extfile leaf.ext",
    ):
        subprocess.run(["openssl", *command.split()], cwd=d, check=True, capture_output=True)
    return TLSFiles(ca=d / "ca.pem", cert=d / "leaf.pem", key=d / "leaf.key")


def notify_settings(**overrides: Any) -> NotificationSettings:
    """Settings for tests: tiny backoffs, 127.0.0.1 allowed, no `.env`; keyword overrides."""
    values: dict[str, Any] = {
        "timeout": 2,
        "max_attempts": 3,
        "backoff": 0.001,
        "backoff_max": 0.005,
        "retry_after_max": 2,
        "allow_hosts": ["127.0.0.1/32"],
    } | overrides
    return NotificationSettings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[list[str]]]:
    """Host name -> successive answers of the resolver the module uses (the last one repeats).

    Names not listed resolve for real; every lookup is recorded under `"lookups"`.
    """
    answers: dict[str, list[list[str]]] = {"lookups": []}
    real = guard.resolve_host

    async def resolve(host: str, port: int) -> list[guard.IPAddress]:
        answers["lookups"].append([host])
        queue = answers.get(host)
        if not queue:
            return await real(host, port)
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        return [ipaddress.ip_address(a) for a in answer]

    monkeypatch.setattr(guard, "resolve_host", resolve)
    return answers


# -- delivery -------------------------------------------------------------------------------------


async def test_delivers_signed_json(receiver: Receiver) -> None:
    receiver.reply(Reply(200, b"thanks " * 200))
    report = await send_webhook(receiver.url, PAYLOAD, secret=SECRET, settings=notify_settings())

    assert report.status_code == 200
    assert report.attempts == 1
    assert report.duration_ms >= 0
    assert report.response_excerpt == ("thanks " * 200)[:500]
    [request] = receiver.requests
    assert request.path == "/hooks/incoming"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == notify_settings().user_agent
    assert orjson.loads(request.body) == PAYLOAD
    signature = request.headers["x-signature"]
    timestamp = request.headers["x-signature-timestamp"]
    assert signature.startswith("sha256=")
    assert abs(int(timestamp) - time.time()) < 10
    assert verify(request.body, SECRET, signature, timestamp)
    assert not verify(request.body, "another-secret", signature, timestamp)
    assert not verify(request.body + b" ", SECRET, signature, timestamp)
    assert SECRET not in str(request.headers)


async def test_no_secret_no_signature(receiver: Receiver) -> None:
    await send_webhook(receiver.url, PAYLOAD, secret=None, settings=notify_settings())
    [request] = receiver.requests
    assert "x-signature" not in request.headers
    assert "x-signature-timestamp" not in request.headers


def test_sign_and_verify() -> None:
    body = b'{"a":1}'
    digest = sign(body, SECRET, 1_700_000_000)
    assert len(digest) == 64
    assert digest == sign(body, SECRET, 1_700_000_000)
    assert digest != sign(body, SECRET, 1_700_000_001)
    headers = signature_headers(body, SECRET, 1_700_000_000)
    assert headers == {"X-Signature": f"sha256={digest}", "X-Signature-Timestamp": "1700000000"}
    now = 1_700_000_100
    assert verify(body, SECRET, headers["X-Signature"], "1700000000", now=now)
    assert verify(body, SECRET, digest.upper(), 1_700_000_000, now=now)  # bare hex
    assert not verify(body, SECRET, headers["X-Signature"], 1_700_000_000, now=now + 1000)
    assert verify(body, SECRET, digest, 1_700_000_000, tolerance=None, now=now + 10**6)
    assert not verify(body, SECRET, digest, "not-a-number", now=now)
    assert not verify(body, SECRET, "sha256=zz", 1_700_000_000, now=now)
    assert not verify(body, SECRET, "sha256=ü", 1_700_000_000, now=now)


async def test_retries_server_errors_then_succeeds(receiver: Receiver) -> None:
    receiver.reply(Reply(500), Reply(502, b"bad gateway"), Reply(200))
    report = await send_webhook(receiver.url, PAYLOAD, secret=SECRET, settings=notify_settings())

    assert report.attempts == 3
    assert report.status_code == 200
    assert len(receiver.requests) == 3
    # Every attempt is signed afresh and carries the same body.
    for request in receiver.requests:
        assert request.body == receiver.requests[0].body
        assert verify(
            request.body, SECRET, request.headers["x-signature"],
            request.headers["x-signature-timestamp"],
        )  # fmt: skip


async def test_gives_up_after_max_attempts(receiver: Receiver) -> None:
    receiver.reply(*[Reply(503, b"down for maintenance")] * 5)
    with pytest.raises(WebhookFailed) as caught:
        await send_webhook(
            receiver.url, PAYLOAD, secret=SECRET, settings=notify_settings(max_attempts=4)
        )
    error = caught.value
    assert error.attempts == 4
    assert error.receiver_status == 503
    assert error.status_code == 502
    assert error.retryable
    assert "after 4 attempt(s)" in error.detail
    assert "down for maintenance" in error.detail
    assert len(receiver.requests) == 4


async def test_429_retry_after_is_honoured(receiver: Receiver) -> None:
    receiver.reply(Reply(429, headers={"Retry-After": "1"}), Reply(200))
    started = time.monotonic()
    report = await send_webhook(receiver.url, PAYLOAD, secret=None, settings=notify_settings())
    assert report.attempts == 2
    assert time.monotonic() - started >= 0.95  # the backoff alone would be milliseconds


async def test_retry_after_beyond_the_cap_ends_the_send(receiver: Receiver) -> None:
    receiver.reply(Reply(429, headers={"Retry-After": "3600"}))
    with pytest.raises(WebhookFailed) as caught:
        await send_webhook(receiver.url, PAYLOAD, secret=None, settings=notify_settings())
    assert caught.value.attempts == 1
    assert caught.value.retry_after == 3600
    assert caught.value.receiver_status == 429
    assert "retry in 3600 s" in caught.value.detail
    assert len(receiver.requests) == 1


@pytest.mark.parametrize("status", [400, 401, 404, 410, 422])
async def test_client_errors_are_not_retried(receiver: Receiver, status: int) -> None:
    receiver.reply(Reply(status, b'{"error": "bad signature"}'))
    with pytest.raises(WebhookRejected) as caught:
        await send_webhook(receiver.url, PAYLOAD, secret=SECRET, settings=notify_settings())
    assert caught.value.receiver_status == status
    assert caught.value.attempts == 1
    assert not caught.value.retryable
    assert f"rejected the request with {status}" in caught.value.detail
    assert "bad signature" in caught.value.detail
    assert len(receiver.requests) == 1


async def test_timeout_is_retried(receiver: Receiver) -> None:
    # The first request the receiver reads is answered only after 10 s; the sender gives up on it
    # at its 1 s timeout and sends again. On a busy machine an attempt can also time out before
    # the receiver has read it, so the attempts are at least 2: what must hold is that the slow
    # answer was not waited for and the quick one delivered.
    receiver.reply(Reply(200, delay=10.0), Reply(200))
    started = time.monotonic()
    report = await send_webhook(
        receiver.url, PAYLOAD, secret=None, settings=notify_settings(timeout=1.0)
    )
    assert report.status_code == 200
    assert report.attempts >= 2
    assert not receiver.script  # the slow reply was taken, then the quick one
    assert time.monotonic() - started < 10.0


async def test_timeouts_exhaust_the_attempts(receiver: Receiver) -> None:
    receiver.reply(*[Reply(200, delay=1.0)] * 2)
    with pytest.raises(WebhookFailed) as caught:
        await send_webhook(
            receiver.url,
            PAYLOAD,
            secret=None,
            settings=notify_settings(timeout=0.2, max_attempts=2),
        )
    assert caught.value.attempts == 2
    assert caught.value.receiver_status is None
    assert "no answer within 0.2 s" in caught.value.detail


async def test_connection_errors_are_retried() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(WebhookFailed) as caught:
        await send_webhook(
            f"http://127.0.0.1:{port}/hook", PAYLOAD, secret=None, settings=notify_settings()
        )
    assert caught.value.attempts == 3
    assert "ConnectError" in caught.value.detail


@pytest.mark.parametrize(
    "location", ["/hooks/elsewhere", "http://169.254.169.254/latest/meta-data/?token=abc"]
)
async def test_redirects_are_not_followed(receiver: Receiver, location: str) -> None:
    receiver.reply(Reply(302, headers={"Location": location}))
    with pytest.raises(WebhookRejected) as caught:
        await send_webhook(receiver.url, PAYLOAD, secret=SECRET, settings=notify_settings())
    assert caught.value.receiver_status == 302
    assert "redirects are not followed" in caught.value.detail
    assert "token=abc" not in caught.value.detail
    assert [r.path for r in receiver.requests] == ["/hooks/incoming"]


async def test_redirects_are_not_followed_by_a_callers_client(receiver: Receiver) -> None:
    receiver.reply(Reply(307, headers={"Location": "/hooks/elsewhere"}))
    async with httpx.AsyncClient(follow_redirects=True, trust_env=False) as http:
        with pytest.raises(WebhookRejected):
            await send_webhook(
                receiver.url, PAYLOAD, secret=None, settings=notify_settings(), http=http
            )
    assert len(receiver.requests) == 1


async def test_a_callers_client_stays_open(receiver: Receiver) -> None:
    async with create_webhook_client(notify_settings()) as http:
        for _ in range(2):
            report = await send_webhook(
                receiver.url, PAYLOAD, secret=None, settings=notify_settings(), http=http
            )
            assert report.status_code == 200
        assert not http.is_closed
    assert len(receiver.requests) == 2


# -- payloads and templates -----------------------------------------------------------------------


async def test_payload_too_large(receiver: Receiver) -> None:
    with pytest.raises(WebhookPayloadTooLarge) as caught:
        await send_webhook(
            receiver.url,
            {"text": "x" * 200},
            secret=SECRET,
            settings=notify_settings(max_payload_bytes=100),
        )
    assert caught.value.status_code == 422
    assert "at most 100" in caught.value.detail
    assert receiver.requests == []


def test_job_finished_template() -> None:
    payload = render_template(
        "job_finished",
        {"job_id": "j-1", "function": "parse_vk_comments", "status": "complete",
         "result": {"posts_done": 3}, "finished_at": 1_700_000_000},
    )  # fmt: skip
    assert payload == {
        "event": "job.finished",
        "job_id": "j-1",
        "function": "parse_vk_comments",
        "status": "complete",
        "result": {"posts_done": 3},
        "finished_at": "2023-11-14T22:13:20Z",
    }
    failed = render_template(
        "job_finished",
        {"job_id": "j-2", "function": "f", "status": "failed", "error": {"type": "GaveUp"}},
    )
    assert failed["error"] == {"type": "GaveUp"}
    assert "result" not in failed
    assert failed["finished_at"].endswith("Z")
    with pytest.raises(InvalidTemplateContext, match="needs job_id, function"):
        render_template("job_finished", {"status": "complete"})


def test_parse_finished_template() -> None:
    result = {
        "group_id": 42, "screen_name": "club42", "posts_total": 5, "posts_done": 4,
        "posts_resumed": 1, "posts_skipped": [{"post_id": 5, "reason": "closed"}],
        "comments_parsed": 100, "comments_saved": 90, "comments_inserted": 80,
        "comments_updated": 10, "comments_unchanged": 10,
    }  # fmt: skip
    payload = render_template("parse_finished", {"job_id": "j-3", "result": result})
    assert payload["event"] == "parse.finished"
    assert payload["job_id"] == "j-3"
    assert payload["group_id"] == 42
    assert payload["posts"] == {"total": 5, "done": 4, "resumed": 1, "skipped": 1}
    assert payload["comments"]["saved"] == 90
    assert render_template("parse_finished", result)["group_id"] == 42


def test_unknown_template() -> None:
    with pytest.raises(UnknownTemplate) as caught:
        render_template("nope", {})
    assert caught.value.status_code == 422
    assert "job_finished" in caught.value.detail
    assert "parse_finished" in caught.value.detail
    assert caught.value.extra["known_templates"] == sorted(TEMPLATES)


# -- destinations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("10.0.0.5", "a private address"),
        ("192.168.1.1", "a private address"),
        ("172.16.0.1", "a private address"),
        ("127.0.0.1", "a loopback address"),
        ("::1", "a loopback address"),
        ("169.254.169.254", "a cloud metadata address"),
        ("169.254.10.10", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("0.0.0.0", "an unspecified address"),
        ("::", "an unspecified address"),
        ("224.0.0.1", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("fd12:3456::1", "a private address"),
        ("240.0.0.1", "a reserved address"),
        ("::127.0.0.1", "a reserved address"),  # IPv4-compatible, deprecated
        ("100.64.0.1", "a shared (carrier-grade NAT) address"),
        ("100.100.100.200", "a cloud metadata address"),
        ("192.0.0.8", "an IETF protocol assignment address"),  # global to Python 3.11
        ("::ffff:127.0.0.1", "a loopback address (embedding 127.0.0.1)"),
        ("::ffff:10.0.0.5", "a private address (embedding 10.0.0.5)"),
        ("2002:a9fe:a9fe::", "a cloud metadata address (embedding 169.254.169.254)"),
        ("64:ff9b::7f00:1", "a loopback address (embedding 127.0.0.1)"),
        (PUBLIC_IP, None),
        ("2606:4700:4700::1111", None),
        ("::ffff:93.184.216.34", "an IPv4-mapped address"),
        ("2002:5db8:d822::1", None),  # 6to4 of a public address
        ("64:ff9b::5db8:d822", None),  # NAT64 of a public address
    ],
)
def test_address_refusal(address: str, reason: str | None) -> None:
    assert address_refusal(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/",
        "http://user:pw-5e3a@example.com/hook",
        "http:///hook",
        "not a url",
        "",
        "/relative/hook",
    ],
)
async def test_invalid_urls(url: str) -> None:
    with pytest.raises(InvalidWebhookUrl) as caught:
        await validate_url(url, notify_settings(allow_hosts=[]))
    assert caught.value.status_code == 422
    assert "pw-5e3a" not in caught.value.detail


@pytest.mark.parametrize(
    ("host", "shown"),
    [
        ("10.0.0.5", "refused: 10.0.0.5 is a private address"),
        ("127.0.0.1", "refused: 127.0.0.1 is a loopback address"),
        # Not an IP literal to the URL parser: a name the resolver turns into 127.0.0.1.
        ("127.1", "refused: the address of '127.1' is not public"),
        ("169.254.169.254", "refused: 169.254.169.254 is a cloud metadata address"),
        ("[fe80::1]", "refused: fe80::1 is a link-local address"),
        ("[::1]", "refused: ::1 is a loopback address"),
        ("[::ffff:127.0.0.1]", "refused: ::ffff:7f00:1 is a loopback address"),
        ("0.0.0.0", "refused: 0.0.0.0 is an unspecified address"),
    ],
)
async def test_refused_destinations_get_no_request(
    receiver: Receiver, host: str, shown: str
) -> None:
    url = f"http://{host}:{receiver.port}/hooks/incoming"
    with pytest.raises(AddressRefused) as caught:
        await validate_url(url, notify_settings(allow_hosts=[]))
    assert caught.value.detail.startswith(shown)
    assert caught.value.status_code == 422
    with pytest.raises(AddressRefused):
        await send_webhook(url, PAYLOAD, secret=SECRET, settings=notify_settings(allow_hosts=[]))
    assert receiver.requests == []


async def test_allow_hosts_admits_loopback(receiver: Receiver) -> None:
    settings = notify_settings(allow_hosts=["127.0.0.1/32"])
    assert await validate_url(receiver.url, settings) == receiver.url
    report = await send_webhook(receiver.url, PAYLOAD, secret=None, settings=settings)
    assert report.status_code == 200
    # The allowance is exactly what it says: other private addresses stay refused.
    with pytest.raises(AddressRefused, match=re.escape("10.0.0.5 is a private address")):
        await validate_url("http://10.0.0.5/", settings)


async def test_localhost_is_refused_unless_allowed(receiver: Receiver) -> None:
    url = f"http://localhost:{receiver.port}/hooks/incoming"
    with pytest.raises(AddressRefused) as caught:
        await send_webhook(url, PAYLOAD, secret=None, settings=notify_settings(allow_hosts=[]))
    assert caught.value.detail == "refused: the address of 'localhost' is not public"
    assert receiver.requests == []

    settings = notify_settings(allow_hosts=["LOCALHOST."])
    assert settings.allow_hosts == ["localhost"]
    assert await validate_url(url, settings) == url
    report = await send_webhook(url, PAYLOAD, secret=None, settings=settings)
    assert report.status_code == 200
    assert receiver.requests[0].headers["host"] == f"localhost:{receiver.port}"


async def test_a_host_with_any_refused_address_is_refused(fake_dns: dict[str, Any]) -> None:
    fake_dns["mixed.example"] = [[PUBLIC_IP, "10.1.2.3"]]
    with pytest.raises(AddressRefused) as caught:
        await validate_url("https://mixed.example/hook", notify_settings())
    assert caught.value.detail == "refused: the address of 'mixed.example' is not public"
    fake_dns["public.example"] = [[PUBLIC_IP]]
    url = "https://public.example/hook?token=1"
    assert await validate_url(url, notify_settings()) == url


async def test_unresolvable_host() -> None:
    with pytest.raises(
        HostUnresolvable, match=re.escape("cannot resolve host 'no-such-host.invalid'")
    ):
        await validate_url("https://no-such-host.invalid/hook", notify_settings())


async def test_connection_goes_to_the_checked_address(
    receiver: Receiver, fake_dns: dict[str, Any]
) -> None:
    """The name exists only in the module's resolver: the connection uses its answer."""
    fake_dns["hooks.example"] = [["127.0.0.1"]]
    url = f"http://hooks.example:{receiver.port}/hooks/incoming"
    report = await send_webhook(url, PAYLOAD, secret=SECRET, settings=notify_settings())
    assert report.status_code == 200
    [request] = receiver.requests
    assert request.headers["host"] == f"hooks.example:{receiver.port}"
    # Checked before the attempt and again where the connection is made.
    assert fake_dns["lookups"] == [["hooks.example"], ["hooks.example"]]


async def test_dns_rebinding_is_refused_at_connect(
    receiver: Receiver, fake_dns: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    # Public when checked, loopback when connecting: the classic rebinding attack.
    fake_dns["rebind.example"] = [[PUBLIC_IP], ["127.0.0.1"]]
    url = f"http://rebind.example:{receiver.port}/hooks/incoming"
    with pytest.raises(AddressRefused) as caught:
        await send_webhook(url, PAYLOAD, secret=SECRET, settings=notify_settings(allow_hosts=[]))
    assert caught.value.detail == "refused: the address of 'rebind.example' is not public"
    assert receiver.requests == []
    assert fake_dns["lookups"] == [["rebind.example"], ["rebind.example"]]


async def test_dns_rebinding_with_a_callers_client(
    receiver: Receiver, fake_dns: dict[str, Any]
) -> None:
    """A plain httpx client resolves for itself; the peer is checked before a byte is sent."""
    fake_dns["localhost"] = [[PUBLIC_IP]]  # our resolver says public, the system's loopback
    url = f"http://localhost:{receiver.port}/hooks/incoming"
    async with httpx.AsyncClient(trust_env=False) as http:
        with pytest.raises(AddressRefused, match="the address of 'localhost' is not public"):
            await send_webhook(
                url, PAYLOAD, secret=SECRET, settings=notify_settings(allow_hosts=[]), http=http
            )
        assert receiver.requests == []
        # The same client still works for an allowed destination.
        report = await send_webhook(
            receiver.url, PAYLOAD, secret=None, settings=notify_settings(), http=http
        )
        assert report.status_code == 200


# -- secrets --------------------------------------------------------------------------------------


async def test_secret_and_url_tokens_stay_out_of_logs_and_errors(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = "tok-5c2a91e0d4"
    url = f"{receiver.url}/{token}?key={token}"
    errors: list[Exception] = []
    receiver.reply(Reply(500), Reply(500), Reply(500), Reply(400), Reply(302, headers={
        "Location": f"https://elsewhere.example/{token}"}))  # fmt: skip
    for _ in range(3):
        try:
            await send_webhook(url, PAYLOAD, secret=SECRET, settings=notify_settings())
        except Exception as exc:
            errors.append(exc)
    for refused in (f"http://10.0.0.5/{token}", f"http://u:{SECRET}@example.com/"):
        try:
            await send_webhook(refused, PAYLOAD, secret=SECRET, settings=notify_settings())
        except Exception as exc:
            errors.append(exc)
    assert [type(e) for e in errors] == [
        WebhookFailed, WebhookRejected, WebhookRejected, AddressRefused, InvalidWebhookUrl
    ]  # fmt: skip
    assert len(receiver.requests) == 5
    for error in errors:
        text = f"{error} {error!r} {getattr(error, 'extra', '')} {error.__cause__!r}"
        assert SECRET not in text
        assert token not in text
    assert SECRET not in caplog.text
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("src.webhooks")]
    assert ours
    assert not any(token in message for message in ours)


# -- settings -------------------------------------------------------------------------------------


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_ALLOW_HOSTS", "127.0.0.1/32, Hooks.Example ,10.0.0.0/8,[::1]")
    monkeypatch.setenv("NOTIFY_MAX_ATTEMPTS", "2")
    settings = load(NotificationSettings)
    assert settings.allow_hosts == ["127.0.0.1/32", "hooks.example", "10.0.0.0/8", "::1/128"]
    assert settings.max_attempts == 2

    monkeypatch.setenv("NOTIFY_ALLOW_HOSTS", "127.0.0.1/32,not a host!")
    with pytest.raises(ConfigError, match="NOTIFY_ALLOW_HOSTS"):
        load(NotificationSettings)
    monkeypatch.setenv("NOTIFY_ALLOW_HOSTS", "")
    monkeypatch.setenv("NOTIFY_MAX_ATTEMPTS", "0")
    with pytest.raises(ConfigError, match="NOTIFY_MAX_ATTEMPTS"):
        load(NotificationSettings)


async def test_dns_rebinding_never_even_connects(fake_dns: dict[str, Any]) -> None:
    """Nothing listens on the port: refusal (not a connection error) shows no connect happened."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    # Public at every check before an attempt, loopback at every connect.
    fake_dns["rebind.example"] = [[PUBLIC_IP], ["127.0.0.1"]] * 3 + [[PUBLIC_IP]]
    with pytest.raises(AddressRefused):
        await send_webhook(
            f"http://rebind.example:{port}/", PAYLOAD, secret=None,
            settings=notify_settings(allow_hosts=[]),
        )  # fmt: skip
    assert len(fake_dns["lookups"]) == 2


async def test_https_keeps_the_name_for_sni_and_the_certificate(
    tls_files: TLSFiles, fake_dns: dict[str, Any]
) -> None:
    """Connected to the checked IP, TLS still sends and verifies the host name."""
    fake_dns["hooks.example"] = [["127.0.0.1"]]
    fake_dns["other.example"] = [["127.0.0.1"]]
    settings = notify_settings()
    trusted = ssl.create_default_context(cafile=str(tls_files.ca))
    transport = GuardedTransport(settings, verify=trusted)
    async with (
        serve(Receiver(), tls=tls_files) as tls_receiver,
        httpx.AsyncClient(transport=transport, trust_env=False) as http,
    ):
        url = f"https://hooks.example:{tls_receiver.port}/hook"
        report = await send_webhook(url, PAYLOAD, secret=SECRET, settings=settings, http=http)
        assert report.status_code == 200
        [request] = tls_receiver.requests
        assert request.headers["host"] == f"hooks.example:{tls_receiver.port}"
        # The certificate names hooks.example only: another name on the same IP fails.
        with pytest.raises(WebhookFailed, match="CERTIFICATE_VERIFY_FAILED"):
            await send_webhook(
                f"https://other.example:{tls_receiver.port}/hook", PAYLOAD, secret=None,
                settings=settings, http=http,
            )  # fmt: skip
        assert len(tls_receiver.requests) == 1


# -- special-purpose ranges, by table -------------------------------------------------------------

# One address inside each range refused whatever `ipaddress.is_global` says (IANA's IPv4 and IPv6
# special-purpose registries, multicast, broadcast, embeddings of a non-public IPv4 address).
SPECIAL_ADDRESSES = [
    "0.1.2.3",  # 0.0.0.0/8 "this network"
    "10.20.30.40",
    "100.64.0.1",  # 100.64.0.0/10 shared (CGNAT)
    "100.127.255.254",
    "127.8.8.8",
    "169.254.1.1",
    "172.31.255.1",
    "192.0.0.1",  # 192.0.0.0/24 IETF protocol assignments
    "192.0.0.8",  # global to this Python's ipaddress
    "192.0.0.9",  # PCP anycast, global to IANA too: still no webhook receiver
    "192.0.0.170",  # NAT64 discovery
    "192.0.2.10",  # TEST-NET-1
    "192.31.196.1",  # AS112
    "192.52.193.1",  # AMT
    "192.88.99.1",  # 6to4 relay anycast
    "192.168.0.1",
    "192.175.48.1",  # AS112
    "198.18.0.1",  # benchmarking
    "198.19.255.254",
    "198.51.100.7",  # TEST-NET-2
    "203.0.113.9",  # TEST-NET-3
    "224.0.0.251",  # multicast
    "239.255.255.250",
    "240.0.0.1",  # reserved
    "255.255.255.255",  # broadcast
    "::",
    "::1",
    "::7f00:1",  # IPv4-compatible, deprecated
    "::ffff:93.184.216.34",  # IPv4-mapped, even of a public address
    "::ffff:172.18.0.3",
    "64:ff9b::a00:1",  # NAT64 embedding 10.0.0.1
    "64:ff9b::c000:8",  # NAT64 embedding 192.0.0.8
    "64:ff9b:1::1",  # local-use translation
    "100::1",  # discard-only
    "2001::1",  # Teredo (2001::/32) in IETF protocol assignments
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo embedding 192.0.2.45
    "2001:20::1",  # ORCHIDv2
    "2001:db8::1",  # documentation
    "2002:ac12:3::1",  # 6to4 embedding 172.18.0.3
    "2002:c000:8::1",  # 6to4 embedding 192.0.0.8
    "2620:4f:8000::1",  # AS112
    "3fff::1",  # documentation (RFC 9637)
    "5f00::1",  # SRv6 SIDs
    "fc00::1",  # unique local
    "fd00:ec2::254",  # cloud metadata
    "fe80::1",
    "fec0::1",  # site-local, deprecated
    "ff02::1",
    "ff0e::1",
    "4000::1",  # outside global unicast 2000::/3
]


@pytest.mark.parametrize("address", SPECIAL_ADDRESSES)
async def test_special_purpose_addresses_are_refused(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is not None
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(AddressRefused) as caught:
        await validate_url(f"http://{host}/hook", notify_settings(allow_hosts=[]))
    assert caught.value.status_code == 422


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "1.1.1.1", "8.8.8.8", "192.0.1.1", "2606:4700:4700::1111"]
)
def test_public_addresses_pass(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is None


# -- refusals name no resolved address ------------------------------------------------------------

INTERNAL_ADDRESSES = ["172.18.0.3", "192.0.0.8", "10.0.0.5", "fd00::3", "::ffff:172.18.0.3"]


def assert_no_resolution_details(text: str, address: str) -> None:
    for shown in {address, str(ipaddress.ip_address(address))}:
        assert shown not in text
    for kind in ("private", "loopback", "protocol assignment", "embedding", "mapped"):
        assert kind not in text


@pytest.mark.parametrize("address", INTERNAL_ADDRESSES)
async def test_a_refused_host_name_shows_no_resolved_address(
    fake_dns: dict[str, Any], caplog: pytest.LogCaptureFixture, address: str
) -> None:
    caplog.set_level(logging.DEBUG)
    fake_dns["postgres"] = [[address]]
    errors: list[AddressRefused] = []
    for attempt in (
        validate_url("http://postgres:5432/hook", notify_settings(allow_hosts=[])),
        send_webhook(
            "http://postgres:5432/hook", PAYLOAD, secret=None,
            settings=notify_settings(allow_hosts=[]),
        ),
    ):  # fmt: skip
        with pytest.raises(AddressRefused) as caught:
            await attempt
        errors.append(caught.value)
    for error in errors:
        assert error.detail == "refused: the address of 'postgres' is not public"
        assert error.extra == {"host": "postgres"}
        assert_no_resolution_details(f"{error} {error!r} {error.extra}", address)
    assert_no_resolution_details(caplog.text, address)


async def test_a_refusal_at_connect_shows_no_resolved_address(
    fake_dns: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Public when checked, internal where the transport connects: still no address shown."""
    caplog.set_level(logging.DEBUG)
    fake_dns["rebind.example"] = [[PUBLIC_IP], ["172.18.0.3"]]
    with pytest.raises(AddressRefused) as caught:
        await send_webhook(
            "http://rebind.example:8080/", PAYLOAD, secret=None,
            settings=notify_settings(allow_hosts=[]),
        )  # fmt: skip
    assert caught.value.detail == "refused: the address of 'rebind.example' is not public"
    assert_no_resolution_details(f"{caught.value!r} {caught.value.extra}", "172.18.0.3")
    assert_no_resolution_details(caplog.text, "172.18.0.3")


async def test_an_ip_literal_is_told_what_kind_of_address_it_is() -> None:
    # The caller wrote the address: saying what it is gives nothing away.
    with pytest.raises(AddressRefused) as caught:
        await validate_url("http://192.0.0.8/hook", notify_settings(allow_hosts=[]))
    assert caught.value.detail.startswith(
        "refused: 192.0.0.8 is an IETF protocol assignment address"
    )


async def test_a_refused_webhook_job_shows_no_resolved_address(
    client: httpx.AsyncClient,
    worker_handle: WorkerHandle,
    fake_dns: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Through the job API and a real worker: the job's error, as its owner reads it."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("NOTIFY_ALLOW_HOSTS", "")
    fake_dns["postgres"] = [["172.18.0.3"]]
    await worker_handle.start()
    response = await enqueue(
        client, "send_notification", kwargs={"url": "http://postgres/hook", "payload": {"a": 1}}
    )
    assert response.status_code == 202, response.text
    done = await wait_for(client, response.json()["job_id"])
    assert done["status"] == "failed"
    assert done["error"]["message"] == "refused: the address of 'postgres' is not public"
    assert_no_resolution_details(orjson.dumps(done).decode(), "172.18.0.3")
    # The worker's log line of the failure is there, and names no address either.
    assert "the address of 'postgres' is not public" in caplog.text
    assert_no_resolution_details(caplog.text, "172.18.0.3")
