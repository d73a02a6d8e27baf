"""Structured logs: request ids from the API to the worker's lines, JSON lines, no secrets."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import redis as sync_redis
from sqlalchemy import make_url

from src.arq.config import ArqSettings
from src.arq.registry import TaskRegistry
from src.arq.service import ArqService
from src.auth.config import AuthSettings
from src.config import Settings, configure_logging
from src.main import create_app
from tests.arq.helpers import API, enqueue, status, wait_for
from tests.arq.test_worker_process import ARQ, wait_until_up, worker_env
from tests.conftest import JWT_SECRET, app_and_worker, headers
from tests.vk.fake_server import TOKEN, FakeVK, community_with_posts, serve
from tests.webhooks.test_notifications import Receiver
from tests.webhooks.test_notifications import serve as serve_receiver

GENERATED_ID = re.compile(r"[0-9a-f]{32}")


class LogOutput:
    """What the app's and the worker's handlers write to stderr during the test (they write to
    `sys.stderr` of the moment, here pytest's capture)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        self.text = ""

    def read(self) -> str:
        self.text += self.capsys.readouterr().err
        return self.text


@pytest.fixture
def log_output(capsys: pytest.CaptureFixture[str]) -> Iterator[LogOutput]:
    yield LogOutput(capsys)
    configure_logging("INFO")  # the suite's usual set-up again


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of `text` as JSON (a line that is not JSON fails the test)."""
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            raise AssertionError(f"line {number} is not JSON: {line!r}") from None
        assert isinstance(value, dict), line
        lines.append(value)
    assert lines, "nothing was logged"
    return lines


# -- request ids ---------------------------------------------------------------------------------


async def test_a_request_id_reaches_the_job_status_and_every_line_of_its_run(
    settings: Settings,
    arq_settings: ArqSettings,
    auth_settings: AuthSettings,
    log_output: LogOutput,
) -> None:
    json_settings = settings.model_copy(update={"log_format": "json"})
    async with app_and_worker(
        json_settings, arq_settings=arq_settings, auth_settings=auth_settings
    ) as http:
        response = await http.post(
            f"{API}/enqueue",
            json={"function_name": "add", "kwargs": {"a": 2, "b": 3}},
            headers={**headers("alice"), "X-Request-ID": "abc-123"},
        )
        assert response.status_code == 202, response.text
        assert response.headers["X-Request-ID"] == "abc-123"
        job_id = response.json()["job_id"]
        done = await wait_for(http, job_id)
        assert done["status"] == "complete"
        assert done["request_id"] == "abc-123"
        # A status read is a request of its own, with an id of its own.
        read = await http.get(f"{API}/status/{job_id}", headers=headers("alice"))
        assert GENERATED_ID.fullmatch(read.headers["X-Request-ID"])
        assert read.json()["request_id"] == "abc-123"

    lines = json_lines(log_output.read())
    for line in lines:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"]), line
        assert line["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), line
        assert isinstance(line["logger"], str) and isinstance(line["message"], str), line
        assert None not in line.values(), line

    (access,) = [
        line
        for line in lines
        if line["logger"] == "src.access" and line.get("request_id") == "abc-123"
    ]
    assert access["method"] == "POST" and access["route"] == f"{API}/enqueue"
    assert access["status"] == 202 and access["duration_ms"] >= 0
    reads = [line for line in lines if line.get("route") == f"{API}/status/{{job_id}}"]
    assert reads and all(GENERATED_ID.fullmatch(line["request_id"]) for line in reads)

    run = [line for line in lines if line.get("job_id") == job_id]
    arq_lines = [line for line in run if line["logger"] == "arq.worker"]
    # ARQ's "→ started" and "← finished" lines, like every other line of the run.
    assert any("→" in line["message"] for line in arq_lines), arq_lines
    assert any("←" in line["message"] for line in arq_lines), arq_lines
    for line in run:
        assert line["request_id"] == "abc-123", line
        assert line["task"] == "add" and line["try"] == 1, line
        assert line["owner"] == "alice", line
        assert line["worker_id"].split(":")[1].isdigit(), line
    # The worker's own lines (no job) carry its id and nothing of any request.
    (up,) = [line for line in lines if " up, tasks: " in line["message"]]
    assert "worker_id" in up and "request_id" not in up and "job_id" not in up


async def test_batches_and_domain_endpoints_record_the_request_id_other_producers_none(
    client: httpx.AsyncClient, service: ArqService
) -> None:
    batch = await client.post(
        f"{API}/enqueue-batch",
        json=[{"function_name": "add", "kwargs": {"a": n}} for n in range(2)],
        headers={**headers("alice"), "X-Request-ID": "batch-1"},
    )
    assert batch.status_code == 202, batch.text
    domain = await client.post(
        "/api/v1/comments/parse/vk/async",
        params={"group_id": 1},
        headers={**headers("alice"), "X-Request-ID": "domain-1"},
    )
    assert domain.status_code == 202, domain.text
    assert domain.headers["X-Request-ID"] == "domain-1"
    for job in batch.json():
        assert (await status(client, job["job_id"]))["request_id"] == "batch-1"
    assert (await status(client, domain.json()["data"]["job_id"]))["request_id"] == "domain-1"
    # Queued by the Python API, outside any request: none.
    queued = await service.enqueue_job("add", a=1)
    assert (await service.get_job_status(queued.job_id)).request_id is None


@pytest.mark.parametrize(
    "presented",
    [
        "x" * 65,
        "abc 123",
        "a/b",
        "<script>alert(1)</script>",
        "id;DROP TABLE arq_jobs",
        "",
        "ünïcödé".encode(),
        "line\\nbreak",
    ],
)
async def test_an_unsafe_request_id_is_replaced_never_repeated(
    client: httpx.AsyncClient, presented: str | bytes
) -> None:
    response = await client.post(
        f"{API}/enqueue",
        json={"function_name": "add", "kwargs": {"a": 1}},
        headers={**headers("alice"), "X-Request-ID": presented},  # type: ignore[dict-item]
    )
    assert response.status_code == 202, response.text
    given = response.headers["X-Request-ID"]
    assert GENERATED_ID.fullmatch(given), given
    assert (await status(client, response.json()["job_id"]))["request_id"] == given


@pytest.mark.parametrize("presented", ["a" * 64, "A.b_c:d-1", "7"])
async def test_a_safe_request_id_is_kept(client: httpx.AsyncClient, presented: str) -> None:
    response = await enqueue(client, "add", kwargs={"a": 1}, owner="bob")
    assert GENERATED_ID.fullmatch(response.headers["X-Request-ID"])
    response = await client.get(
        f"{API}/status/{response.json()['job_id']}",
        headers={**headers("bob"), "X-Request-ID": presented},
    )
    assert response.headers["X-Request-ID"] == presented


async def test_errors_carry_the_request_id_and_an_access_line(
    settings: Settings,
    arq_settings: ArqSettings,
    auth_settings: AuthSettings,
    registry: TaskRegistry,
    log_output: LogOutput,
) -> None:
    application = create_app(
        settings=settings.model_copy(update={"log_format": "json"}),
        arq_settings=arq_settings,
        auth_settings=auth_settings,
        registry=registry,
    )

    async def boom() -> None:
        raise RuntimeError("a bug")

    application.add_api_route("/api/v1/boom", boom)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            asked = {
                401: await http.get(f"{API}/jobs", headers={"X-Request-ID": "e-401"}),
                413: await http.post(
                    f"{API}/enqueue",
                    content=b"{" + b" " * settings.api_max_body_bytes + b"}",
                    headers={**headers("alice"), "X-Request-ID": "e-413"},
                ),
                422: await http.post(
                    f"{API}/enqueue",
                    content=b"{not json",
                    headers={
                        **headers("alice"),
                        "X-Request-ID": "e-422",
                        "Content-Type": "application/json",
                    },
                ),
                404: await http.get(
                    f"{API}/status/nope", headers={**headers("alice"), "X-Request-ID": "e-404"}
                ),
                500: await http.get(
                    "/api/v1/boom", headers={**headers("alice"), "X-Request-ID": "e-500"}
                ),
            }
    for code, response in asked.items():
        assert response.status_code == code, response.text
        assert response.headers["X-Request-ID"] == f"e-{code}"
    lines = json_lines(log_output.read())
    for code in asked:
        (access,) = [
            line
            for line in lines
            if line["logger"] == "src.access" and line.get("request_id") == f"e-{code}"
        ]
        assert access["status"] == code, access
    (error,) = [line for line in lines if line["message"].startswith("unhandled error")]
    assert error["request_id"] == "e-500" and "RuntimeError: a bug" in error["exc_info"]
    # Unmatched and refused requests name their path; matched ones their route.
    assert {line["route"] for line in lines if line["logger"] == "src.access"} == {
        f"{API}/jobs",
        f"{API}/enqueue",
        f"{API}/status/{{job_id}}",
        "/api/v1/boom",
    }


# -- the worker process --------------------------------------------------------------------------


async def test_a_worker_process_with_log_format_json_logs_json_lines(
    client: httpx.AsyncClient, settings: Settings, tmp_path: Path, redis_db: sync_redis.Redis
) -> None:
    log_file = tmp_path / "worker.log"
    with log_file.open("wb") as stderr:
        process = subprocess.Popen(
            [ARQ, "tests.worker_settings.WorkerSettings"],
            cwd=tmp_path,  # not ROOT: a developer's ./.env must not reach the worker
            env={**worker_env(settings), "LOG_FORMAT": "json"},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            await wait_until_up(redis_db, process)
            response = await client.post(
                f"{API}/enqueue",
                json={"function_name": "add", "kwargs": {"a": 1, "b": 1}},
                headers={**headers("alice"), "X-Request-ID": "proc-req-1"},
            )
            job_id = response.json()["job_id"]
            assert (await wait_for(client, job_id, timeout=30))["status"] == "complete"
        finally:
            process.terminate()
            await asyncio.to_thread(process.wait, 20)
    lines = json_lines(log_file.read_text())
    # ARQ's lines before the app's start-up ran are JSON too.
    assert lines[0]["logger"] == "arq.worker" and "Starting worker" in lines[0]["message"]
    started = [line for line in lines if line.get("job_id") == job_id and "→" in line["message"]]
    assert started, lines
    for line in started:
        assert line["request_id"] == "proc-req-1" and line["task"] == "add", line
        assert line["try"] == 1, line
        assert line["worker_id"].split(":")[1] == str(process.pid), line


# -- secrets ------------------------------------------------------------------------------------


@pytest.fixture
async def fake_vk(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeVK]:
    fake = FakeVK()
    async with serve(fake):
        monkeypatch.setenv("VK_TOKEN", TOKEN)
        monkeypatch.setenv("VK_API_URL", fake.url)
        monkeypatch.setenv("VK_REQUESTS_PER_SECOND", "50")
        monkeypatch.setenv("VK_RETRY_BACKOFF", "0.01")
        yield fake


async def notified(
    http: httpx.AsyncClient, receiver: Receiver, job_id: str, count: int
) -> dict[str, Any]:
    """The job's finished completion webhook job, once the receiver has `count` requests."""
    deadline = time.monotonic() + 30
    while (body := await status(http, job_id))["notification_job_id"] is None or len(
        receiver.requests
    ) < count:
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.05)
    return await wait_for(http, body["notification_job_id"], timeout=30)


@pytest.mark.parametrize("log_format", ["json", "text"])
async def test_no_secret_reaches_any_log_line(
    log_format: str,
    settings: Settings,
    arq_settings: ArqSettings,
    auth_settings: AuthSettings,
    database_url: str,
    fake_vk: FakeVK,
    monkeypatch: pytest.MonkeyPatch,
    log_output: LogOutput,
) -> None:
    db_password = "db-pa55word-in-the-url"
    header_secret = "x-notify-secret-0123456789abcdef"
    body_secret = "body-notify-secret-0123456789abcdef"
    wrong_key = "not-a-key-but-secret-42"
    token = jwt.encode(
        {"sub": "alice", "exp": int(time.time()) + 300}, JWT_SECRET, algorithm="HS256"
    )
    # PostgreSQL here trusts local connections: the password is sent along, never checked.
    url = make_url(database_url).set(password=db_password).render_as_string(hide_password=False)
    run_settings = settings.model_copy(
        update={"database_url": url, "log_level": "DEBUG", "log_format": log_format}
    )
    monkeypatch.setenv("NOTIFY_ALLOW_HOSTS", "127.0.0.1/32")
    monkeypatch.setenv("NOTIFY_BACKOFF", "0.01")
    fake_vk.add(community_with_posts(2, 3, 1, community_id=31, screen_name="club31"))
    # Servers first: uvicorn's own logging set-up must not come after the app's.
    async with (
        serve_receiver(Receiver()) as receiver,
        app_and_worker(
            run_settings, arq_settings=arq_settings, auth_settings=auth_settings
        ) as http,
    ):
        parse = await http.post(
            "/api/v1/comments/parse/vk/async",
            params={"group_id": 31},
            headers={
                **headers("alice"),
                "X-Notify-Url": receiver.url,
                "X-Notify-Secret": header_secret,
            },
        )
        assert parse.status_code == 202, parse.text
        parse_id = parse.json()["data"]["job_id"]
        added = await enqueue(
            http, "add", kwargs={"a": 1}, notify_url=receiver.url, notify_secret=body_secret
        )
        assert added.status_code == 202, added.text
        assert (await wait_for(http, parse_id, timeout=60))["status"] == "complete"
        assert (await notified(http, receiver, parse_id, 1))["status"] == "complete"
        assert (await notified(http, receiver, added.json()["job_id"], 2))["status"] == "complete"
        by_jwt = await http.get(
            f"{API}/status/{parse_id}", headers={"Authorization": f"Bearer {token}"}
        )
        assert by_jwt.status_code == 200, by_jwt.text
        refused = [
            await http.get(f"{API}/jobs", headers={"X-API-Key": wrong_key}),
            await http.get(f"{API}/jobs", headers={"Authorization": f"Bearer {token}x"}),
        ]
        assert [response.status_code for response in refused] == [401, 401]

    text = log_output.read()
    # The run was logged: the parse, its VK calls, the webhooks, the requests.
    for seen in ("parse_vk_comments", "send_notification", "src.vk", "src.access"):
        assert seen in text, seen
    if log_format == "json":
        json_lines(text)
    secrets = {
        "VK token": TOKEN,
        "X-Notify-Secret": header_secret,
        "notify_secret": body_secret,
        "API key": headers("alice")["X-API-Key"],
        "wrong API key": wrong_key,
        "JWT": token,
        "JWT signature": token.rsplit(".", 1)[1],
        "JWT secret": JWT_SECRET,
        "database password": db_password,
    }
    leaked = {name for name, secret in secrets.items() if secret in text}
    assert not leaked, leaked
