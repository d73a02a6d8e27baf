"""`vkp`, the command-line client, run as its console script against a real stack: a uvicorn API
process and an `arq` worker process on this run's Redis and PostgreSQL databases."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import jwt
import pytest
import redis as sync_redis
from fastapi import FastAPI
from sqlalchemy import make_url

from src.cli.client import Connection
from src.cli.sse import EventReader
from src.config import Environment, Settings
from src.main import create_app
from tests.arq.test_worker_process import ARQ, worker_env
from tests.conftest import API_KEYS, API_KEYS_SETTING, CLAIM_KEY, JWT_SECRET
from tests.servers import api_and_worker
from tests.tasks import registry as test_registry

VKP = str(Path(sys.executable).with_name("vkp"))
# The stack's start (two processes importing the app) counts towards the first test.
pytestmark = pytest.mark.timeout(150)
STREAM_MAX_SECONDS = 8  # the API ends each status stream after this: the client must come back
STREAMS_PER_OWNER = 1  # a second stream of one owner is a 429: the client must poll instead


def api_app() -> FastAPI:
    """`uvicorn --factory tests.test_cli:api_app`: the app with the test tasks, every setting
    from the environment."""
    return create_app(registry=test_registry)


@dataclass(frozen=True)
class Stack:
    url: str
    tmp: Path


def _empty(redis_url: str, database_url: str) -> None:
    """Nothing of earlier tests for this module's worker to run or reconcile."""
    client = sync_redis.Redis.from_url(redis_url)
    try:
        for key in client.scan_iter(count=1000):
            if key != CLAIM_KEY.encode():
                client.delete(key)
    finally:
        client.close()
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)

    async def truncate() -> None:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await conn.execute("TRUNCATE arq_jobs, arq_job_dependencies")
        finally:
            await conn.close()

    asyncio.run(truncate())


@pytest.fixture(scope="module")
def stack(
    redis_url: str, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    _empty(redis_url, database_url)
    tmp = tmp_path_factory.mktemp("cli")
    settings = Settings(
        _env_file=None,
        redis_url=redis_url,
        database_url=database_url,
        environment=Environment.TEST,
    )
    env = {
        **worker_env(settings),
        "API_KEYS": API_KEYS_SETTING,
        "JWT_SECRET": JWT_SECRET,
        "ARQ_STREAM_MAX_SECONDS": str(STREAM_MAX_SECONDS),
        "ARQ_STREAMS_PER_OWNER": str(STREAMS_PER_OWNER),
    }
    with api_and_worker(
        tmp,
        env,
        api=("--factory", "tests.test_cli:api_app", "--no-access-log"),
        worker=(ARQ, "tests.worker_settings.WorkerSettings"),
    ) as url:
        yield Stack(url=url, tmp=tmp)


def vkp(
    stack: Stack | None, *args: str, owner: str = "alice", timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run the console script as a person at a terminal would, with VKP_URL and VKP_API_KEY."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("VKP_")}
    if stack is not None:
        environ["VKP_URL"] = stack.url
    environ["VKP_API_KEY"] = API_KEYS[owner]
    environ.pop("COLUMNS", None)
    environ.update(env)
    return subprocess.run(
        [VKP, *args], env=environ, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_python_m_src_cli_is_the_same_client(stack: Stack) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("VKP_")}
    environ |= {"VKP_URL": stack.url, "VKP_API_KEY": API_KEYS["alice"]}
    result = subprocess.run(
        [sys.executable, "-m", "src.cli", "enqueue", "ping", "--message", "hi", "--follow"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "complete" in result.stdout, result.stdout


def queued_id(output: str) -> str:
    found = re.search(r"as job (\S+) \(", output)
    assert found, output
    return found.group(1)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """A failed command's stderr: one clear line, no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("vkp"), result.stderr
    return lines[0]


# -- enqueue and follow ---------------------------------------------------------------------------


def test_enqueue_ping_and_follow_it_to_complete(stack: Stack) -> None:
    result = vkp(stack, "enqueue", "ping", "--message", "hello from vkp", "--follow")
    assert result.returncode == 0, result.stdout + result.stderr
    job_id = queued_id(result.stdout)
    assert "100%" in result.stdout
    assert f"job {job_id} complete" in result.stdout
    assert '"message": "hello from vkp"' in result.stdout  # the result, printed at the end
    assert result.stderr == ""


def test_a_failing_task_exits_1_with_its_error(stack: Stack) -> None:
    result = vkp(stack, "enqueue", "fail", "--message", "broken on purpose", "--follow")
    assert result.returncode == 1, result.stdout + result.stderr
    job_id = queued_id(result.stdout)
    assert f"job {job_id} failed: ValueError: broken on purpose" in result.stdout


def test_follow_comes_back_with_last_event_id_when_the_server_ends_the_stream(
    stack: Stack,
) -> None:
    """The job outlives one stream's life: the client reconnects (no polling), sees it end."""
    seconds = STREAM_MAX_SECONDS + 2
    queued = vkp(stack, "enqueue", "sleep", "--seconds", str(seconds))
    assert queued.returncode == 0, queued.stderr
    job_id = queued_id(queued.stdout)
    started = time.monotonic()
    result = vkp(stack, "follow", job_id)
    assert result.returncode == 0, result.stdout + result.stderr
    assert time.monotonic() - started > STREAM_MAX_SECONDS  # so one stream could not have done
    assert "polling" not in result.stdout + result.stderr
    assert f"job {job_id} complete" in result.stdout
    assert f'"slept": {float(seconds)}' in result.stdout


def test_follow_polls_when_the_stream_is_refused(stack: Stack) -> None:
    """bob already holds his one stream: `vkp follow` gets a 429 and polls instead."""
    gate = stack.tmp / "bob-gate"
    blocker = queued_id(
        vkp(stack, "enqueue", "sleep", "--seconds", "0", "--until", str(gate), owner="bob").stdout
    )
    job_id = queued_id(vkp(stack, "enqueue", "sleep", "--seconds", "1", owner="bob").stdout)
    headers = {"X-API-Key": API_KEYS["bob"]}
    try:
        with (
            httpx.Client(base_url=stack.url, headers=headers, timeout=30) as http,
            http.stream("GET", f"/api/v1/arq/status/{blocker}/stream") as held,
        ):
            assert held.status_code == 200
            lines = held.iter_lines()  # kept: a dropped iterator closes the response
            assert next(lines).startswith("retry:")  # the stream is open and counted
            result = vkp(stack, "follow", job_id, owner="bob")
    finally:
        gate.touch()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "polling instead" in result.stdout, (stack.tmp / "api.log").read_text()[-3000:]
    assert f"job {job_id} complete" in result.stdout


def test_typed_options_from_the_task_schema(stack: Stack) -> None:
    log = stack.tmp / "tick.log"
    result = vkp(stack, "enqueue", "tick", "--log", str(log), "--seconds", "0.2", "--follow")
    assert result.returncode == 0, result.stdout + result.stderr
    assert log.read_text().split() == [queued_id(result.stdout), "1"]
    # A boolean option, as a flag: the job raises.
    traced = stack.tmp / "traced.log"
    result = vkp(stack, "enqueue", "traced", "--log", str(traced), "--fail", "--follow")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "ValueError: told to fail" in result.stdout
    # ... and turned off: it succeeds.
    result = vkp(stack, "enqueue", "traced", "--log", str(traced), "--no-fail", "--follow")
    assert result.returncode == 0, result.stdout + result.stderr


def test_task_help_lists_the_schema_options(stack: Stack) -> None:
    result = vkp(stack, "enqueue", "sleep", "--help")
    assert result.returncode == 0, result.stderr
    assert "--seconds NUMBER" in result.stdout
    assert "(required; 0 to 120)" in result.stdout
    assert "--until TEXT" in result.stdout


# -- arguments the CLI or the API refuses ---------------------------------------------------------


def sleep_jobs(stack: Stack) -> int:
    listed = vkp(stack, "jobs", "--function", "sleep", "--limit", "1")
    found = re.search(r"of (\d+)\)", listed.stdout)
    assert found, listed.stdout + listed.stderr
    return int(found.group(1))


def test_a_bad_argument_exits_2_naming_the_field(stack: Stack) -> None:
    before = sleep_jobs(stack)
    result = vkp(stack, "enqueue", "sleep", "--seconds", "500")  # the API's 422
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "422" in result.stderr
    assert "--seconds: Input should be less than or equal to 120" in result.stderr
    missing = vkp(stack, "enqueue", "sleep")
    assert missing.returncode == 2
    assert "--seconds: Field required" in missing.stderr
    wrong_type = vkp(stack, "enqueue", "sleep", "--seconds", "long")
    assert wrong_type.returncode == 2
    assert "--seconds" in one_line_error(wrong_type)
    assert sleep_jobs(stack) == before  # nothing was queued by any of them


def test_an_unknown_option_or_task_is_named(stack: Stack) -> None:
    result = vkp(stack, "enqueue", "ping", "--mesage", "hi")
    assert result.returncode == 2
    line = one_line_error(result)
    assert "unknown option --mesage" in line
    assert "did you mean --message?" in line
    result = vkp(stack, "enqueue", "pnig")
    assert result.returncode == 2
    assert "no task 'pnig' that you may run (did you mean 'ping'?)" in one_line_error(result)


# -- listing, status, retry, abort ----------------------------------------------------------------


def test_jobs_and_failed_tables_status_retry_and_abort(stack: Stack) -> None:
    added = vkp(stack, "enqueue", "add", "--a", "2", "--b", "40", "--follow")
    assert added.returncode == 0, added.stdout + added.stderr
    added_id = queued_id(added.stdout)
    assert '"sum": 42' in added.stdout

    table = vkp(stack, "jobs", "--function", "add")
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if added_id in line)
    for cell in ("add", "complete", "100 %", " 1 "):
        assert cell in row, row

    flag = stack.tmp / "flag"
    failed = vkp(stack, "enqueue", "needs_flag", "--flag", str(flag), "--follow")
    assert failed.returncode == 1
    failed_id = queued_id(failed.stdout)
    dead = vkp(stack, "failed")
    row = next(line for line in dead.stdout.splitlines() if failed_id in line)
    assert "FileNotFoundError" in row and "failed" in row, row
    assert added_id not in dead.stdout

    status = vkp(stack, "status", failed_id)
    assert status.returncode == 0
    assert "FileNotFoundError" in status.stdout

    flag.touch()  # the cause fixed: the retry succeeds
    retried = vkp(stack, "retry", failed_id, "--follow")
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert f"job {failed_id} queued again" in retried.stdout
    assert '"flag found"' in retried.stdout

    deferred = vkp(stack, "enqueue", "ping", "--defer-by", "600", "--job-id", "later-1")
    assert deferred.returncode == 0, deferred.stderr
    assert "(deferred)" in deferred.stdout
    later = queued_id(deferred.stdout)
    assert later.endswith(":later-1")  # the caller's id, in the caller's namespace
    taken = vkp(stack, "enqueue", "ping", "--job-id", "later-1")
    assert taken.returncode == 3
    assert "409" in one_line_error(taken)
    aborted = vkp(stack, "abort", later)
    assert aborted.returncode == 0, aborted.stderr
    assert f"job {later}: aborted" in aborted.stdout
    again = vkp(stack, "abort", later)  # finished: 409
    assert again.returncode == 3
    assert "409" in one_line_error(again)


def test_a_job_can_wait_for_another(stack: Stack, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    first = vkp(stack, "enqueue", "sleep", "--seconds", "0", "--until", str(gate), "--job-id", "a1")
    assert first.returncode == 0, first.stderr
    log = str(tmp_path / "log")
    second = vkp(stack, "enqueue", "tick", "--log", log, "--depends-on", "a1")
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip().endswith("(waiting)"), second.stdout
    job_id = queued_id(second.stdout)
    assert "waiting" in vkp(stack, "status", job_id).stdout
    gate.touch()
    followed = vkp(stack, "follow", job_id)
    assert followed.returncode == 0, followed.stderr
    assert "complete" in followed.stdout
    unknown = vkp(stack, "enqueue", "ping", "--depends-on", "no-such-job")
    assert unknown.returncode == 2, unknown.stderr  # refused arguments, as a bad task option
    assert "422" in unknown.stderr
    assert "--depends-on.0: no job you may see has this id" in unknown.stderr


def test_parse_queues_a_parse_job(stack: Stack) -> None:
    result = vkp(stack, "parse", "apiclub", "--limit", "5")
    assert result.returncode == 0, result.stderr
    job_id = re.search(r"job (\S+)$", result.stdout.strip())
    assert job_id, result.stdout
    status = vkp(stack, "status", job_id.group(1))
    assert "parse_vk_comments" in status.stdout
    bad = vkp(stack, "parse", "1", "--limit", "0")
    assert bad.returncode == 2
    assert "--limit" in bad.stderr


def test_parse_with_follow_follows_the_parse_to_its_end(stack: Stack) -> None:
    # This stack's worker has no VK token: the parse fails at once, and `--follow` shows how it
    # ended and exits 1 (the common case of the CLI, followed to its end).
    result = vkp(stack, "parse", "apiclub", "--limit", "5", "--follow")
    assert result.returncode == 1, result.stdout + result.stderr
    job_id = re.search(r"job (\S+) failed: VKNotConfigured", result.stdout)
    assert job_id, result.stdout
    status = vkp(stack, "status", job_id.group(1))
    assert "parse_vk_comments" in status.stdout and "failed" in status.stdout, status.stdout


# -- request errors: one line, exit 3 -------------------------------------------------------------


def test_an_unknown_job_is_a_clear_error(stack: Stack) -> None:
    for command in ("status", "follow", "retry", "abort"):
        result = vkp(stack, command, "no-such-job")
        assert result.returncode == 3, (command, result.stdout, result.stderr)
        line = one_line_error(result)
        assert "404" in line and "not found" in line, line


def test_a_wrong_api_key_is_a_clear_401_that_never_shows_the_key(stack: Stack) -> None:
    secret = "not-a-key-of-anyone-123"
    result = vkp(stack, "jobs", VKP_API_KEY=secret)
    assert result.returncode == 3
    line = one_line_error(result)
    assert "401" in line and "VKP_API_KEY" in line, line
    assert secret not in result.stdout + result.stderr
    result = vkp(stack, "jobs", VKP_API_KEY="")
    assert result.returncode == 3
    assert "no credential given" in one_line_error(result)


def test_a_jwt_is_sent_as_bearer(stack: Stack) -> None:
    token = jwt.encode(
        {"sub": "alice", "exp": int(time.time()) + 300}, JWT_SECRET, algorithm="HS256"
    )
    result = vkp(stack, "jobs", VKP_API_KEY="", VKP_TOKEN=token)
    assert result.returncode == 0, result.stderr
    assert "jobs (" in result.stdout
    assert token not in result.stdout + result.stderr


def test_an_unreachable_api_is_a_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = sock.getsockname()[1]
        result = vkp(None, "jobs", VKP_URL=f"http://127.0.0.1:{port}")
    assert result.returncode == 3
    line = one_line_error(result)
    assert f"cannot connect to http://127.0.0.1:{port}" in line, line


# -- the pieces, without a server -----------------------------------------------------------------


def test_the_event_reader_follows_the_sse_rules() -> None:
    reader = EventReader()
    lines = [
        "retry: 2000",
        "",
        ": keep-alive",
        "id: a1",
        "event: status",
        'data: {"status":',
        'data: "queued"}',
        "",
        "id: a2",
        "data:no space",
        "",
        ": stream life over",
        "retry: 1500",
        "",
        "data: cut off mid-event",
    ]
    events = list(reader.events(lines))
    assert [(e.type, e.data, e.id) for e in events] == [
        ("status", '{"status":\n"queued"}', "a1"),
        ("message", "no space", "a2"),
    ]
    assert reader.last_event_id == "a2"
    assert reader.retry_ms == 1500


def test_flags_beat_the_environment_and_a_key_beats_a_token() -> None:
    env = {"VKP_URL": "http://api.example:9000/", "VKP_API_KEY": "key-1", "VKP_TOKEN": "jwt-1"}
    from_env = Connection.resolve(url=None, api_key=None, token=None, environ=env)
    assert from_env.url == "http://api.example:9000"
    assert from_env.headers == {"X-API-Key": "key-1"}
    flagged = Connection.resolve(url="https://other", api_key=None, token="jwt-2", environ=env)
    assert flagged.url == "https://other"
    assert flagged.headers == {"Authorization": "Bearer jwt-2"}
    assert "key-1" not in repr(from_env) and "jwt-2" not in repr(flagged)
    shown = Connection.resolve(url="http://user:pw@host:1", api_key=None, token=None, environ={})
    assert shown.shown_url == "http://host:1"
