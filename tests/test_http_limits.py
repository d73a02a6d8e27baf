"""Request bodies: counted while they are read (413 past API_MAX_BODY_BYTES) and never parsed
before the caller is authenticated (401 beats 413 beats 422)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from src.auth.service import Authenticator
from src.config import ConfigError, Settings, load
from tests.conftest import client_for, headers
from tests.servers import serve_app

ENQUEUE = "/api/v1/arq/enqueue"
JOBS = "/api/v1/arq/jobs"
HEALTH = "/api/v1/arq/health"
LIMIT = 1_048_576  # the default API_MAX_BODY_BYTES
TWO_MB = 2_000_000
JSON = {"Content-Type": "application/json"}
BAD_JSON = b'{"function_name": "ping", "kwargs": '


def assert_too_large(response: httpx.Response, limit: int = LIMIT) -> None:
    assert response.status_code == 413, response.text[:500]
    body = response.json()
    assert body["error"] == "PayloadTooLarge"
    assert body["detail"].endswith(f"at most {limit} bytes")


def assert_unauthenticated(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text[:500]
    assert response.json()["error"] == "NotAuthenticated"
    assert "X-API-Key" in response.headers["WWW-Authenticate"]


def huge_enqueue_body(size: int = TWO_MB) -> bytes:
    """A well-formed enqueue request of about `size` bytes (a webhook with a big payload)."""
    head = b'{"function_name": "send_notification", "kwargs": {"url": "https://example.org/h", '
    return head + b'"payload": {"blob": "' + b"x" * size + b'"}}}'


async def chunks(total: int, size: int = 65_536) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        piece = min(size, total - sent)
        sent += piece
        yield b"x" * piece


@contextlib.asynccontextmanager
async def served(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of `app` served by a real uvicorn (request bodies arrive as a stream)."""
    async with (
        serve_app(app) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http,
    ):
        yield http


# -- the body limit ---------------------------------------------------------------------------


async def test_body_declared_too_large_is_413(client: httpx.AsyncClient) -> None:
    response = await client.post(
        ENQUEUE, content=huge_enqueue_body(), headers={**headers("alice"), **JSON}
    )
    assert_too_large(response)
    jobs = await client.get(JOBS, headers=headers("alice"))
    assert jobs.json()["total"] == 0


async def test_too_large_beats_bad_json(client: httpx.AsyncClient) -> None:
    # 413 beats 422: the body is refused before anyone tries to parse it.
    response = await client.post(
        ENQUEUE, content=BAD_JSON + b"x" * TWO_MB, headers={**headers("alice"), **JSON}
    )
    assert_too_large(response)


async def test_chunked_body_growing_too_large_is_413(app: Any) -> None:
    # A real server, so the body arrives as an ASGI stream of chunks without Content-Length.
    async with served(app) as http:
        request = http.build_request(
            "POST", ENQUEUE, content=chunks(TWO_MB), headers={**headers("alice"), **JSON}
        )
        assert "content-length" not in request.headers
        assert request.headers["transfer-encoding"] == "chunked"
        response = await http.send(request)
    assert_too_large(response)


async def test_body_is_refused_while_it_is_read(app: Any) -> None:
    """The client sends a little more than the limit and then nothing: the 413 must come
    without waiting for the end of the body (a check after reading would wait forever)."""
    async with serve_app(app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(
                f"POST {ENQUEUE} HTTP/1.1\r\nHost: test\r\nX-API-Key: alice-key-0001\r\n"
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
            )
            piece = b"x" * 65_536
            for _ in range(LIMIT // len(piece) + 1):
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
            # No last chunk: the body never ends.
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
            status_line, *header_lines = head.decode().split("\r\n")
            assert status_line.split(" ")[1] == "413", status_line
            length = next(
                int(line.split(":", 1)[1])
                for line in header_lines
                if line.lower().startswith("content-length:")
            )
            body = await asyncio.wait_for(reader.readexactly(length), timeout=30)
        finally:
            writer.close()
    assert b'"error":"PayloadTooLarge"' in body
    assert f"at most {LIMIT} bytes".encode() in body


async def test_limit_applies_to_public_routes_too(client: httpx.AsyncClient) -> None:
    response = await client.request("GET", HEALTH, content=b"x" * TWO_MB)
    assert_too_large(response)


async def test_limit_is_set_by_api_max_body_bytes(settings: Settings) -> None:
    small = settings.model_copy(update={"api_max_body_bytes": 2048})
    async with client_for(small) as http:
        at_limit = b'{"function_name": "add", "kwargs": {"a": 1}, "job_id": "%s"}'
        padded = at_limit % (b"j" * (2048 - len(at_limit) + 2))
        assert len(padded) == 2048
        accepted = await http.post(ENQUEUE, content=padded, headers={**headers("alice"), **JSON})
        # Within the limit the app reads it (and validates it: the id is too long for it).
        assert accepted.status_code == 422, accepted.text
        over = await http.post(ENQUEUE, content=padded + b" ", headers={**headers("alice"), **JSON})
        assert_too_large(over, 2048)


def test_api_max_body_bytes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_MAX_BODY_BYTES", "4096")
    assert load(Settings).api_max_body_bytes == 4096
    monkeypatch.setenv("API_MAX_BODY_BYTES", "10")
    with pytest.raises(ConfigError, match="API_MAX_BODY_BYTES"):
        load(Settings)


# -- authentication before the body -------------------------------------------------------------


async def test_bad_json_without_a_key_is_401(client: httpx.AsyncClient) -> None:
    assert_unauthenticated(await client.post(ENQUEUE, content=BAD_JSON, headers=JSON))
    wrong = {"X-API-Key": "wrong-key-00000", **JSON}
    assert_unauthenticated(await client.post(ENQUEUE, content=BAD_JSON, headers=wrong))
    assert_unauthenticated(
        await client.post("/api/v1/arq/enqueue-batch", content=BAD_JSON, headers=JSON)
    )


async def test_bad_json_with_a_key_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(ENQUEUE, content=BAD_JSON, headers={**headers("alice"), **JSON})
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "ValidationError"


async def test_huge_body_without_a_key_is_401(client: httpx.AsyncClient) -> None:
    # 401 beats 413 (and 422): nothing of the body is read for a caller without a credential.
    assert_unauthenticated(await client.post(ENQUEUE, content=huge_enqueue_body(), headers=JSON))
    huge_and_bad = BAD_JSON + b"x" * TWO_MB
    assert_unauthenticated(await client.post(ENQUEUE, content=huge_and_bad, headers=JSON))


async def test_huge_chunked_body_without_a_key_is_401(app: Any) -> None:
    async with served(app) as http:
        response = await http.post(ENQUEUE, content=chunks(TWO_MB), headers=JSON)
    assert_unauthenticated(response)


class CountingAuthenticator(Authenticator):
    calls = 0

    def from_api_key(self, presented: str) -> Any:
        CountingAuthenticator.calls += 1
        return super().from_api_key(presented)


async def test_a_request_is_authenticated_once(
    app: Any, client: httpx.AsyncClient, auth_settings: Any
) -> None:
    app.state.authenticator = CountingAuthenticator(auth_settings)
    CountingAuthenticator.calls = 0
    response = await client.post(
        ENQUEUE, json={"function_name": "add", "kwargs": {"a": 1}}, headers=headers("bob")
    )
    assert response.status_code == 202, response.text
    assert CountingAuthenticator.calls == 1
    # The principal the guard found is the one the route used: the job is bob's.
    job_id = response.json()["job_id"]
    status = await client.get(f"/api/v1/arq/status/{job_id}", headers=headers("bob"))
    assert status.status_code == 200
    assert (
        await client.get(f"/api/v1/arq/status/{job_id}", headers=headers("alice"))
    ).status_code == 404
