"""The README's curl examples, run as written against a live stack, so the README cannot drift.

Every `curl` line of the README's bash blocks (continuations joined, JSON bodies included) is
run in README order against a uvicorn API process and an `arq` worker process (the app's own
entry points) on this run's Redis and PostgreSQL databases, with the fake VK server standing in
for VK. Variables the README defines (`KEY=...`, `API=...`, `REPORT=$(curl ... | jq -r .path)`)
are substituted as the shell would, and the README's address, `http://127.0.0.1:8000`, becomes
the live API's. Each example must answer a 2xx, or the status a comment line right below it
starts with (`# 409: ...`); a JSON answer shown right below it (`# {"job_id":...}`) must name only
keys the real answer has. Each job an example queues is let settle (neither queued nor running)
before the next example, as a reader would look at one result before trying the next.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import make_url

from src.config import Environment, Settings
from tests.arq.test_worker_process import ARQ, worker_env
from tests.servers import api_and_worker
from tests.test_cli import _empty
from tests.vk.fake_server import TOKEN, FakeVK, community_with_posts, serve

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
README_ORIGIN = "http://127.0.0.1:8000"
# The development key of .env.example, as the README's examples use it (owner dev, an admin).
DEV_KEYS = "dev:admin:dev-key-change-me"
ASSIGNMENT = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")
CAPTURE = re.compile(r"^\$\((curl .*) \| jq -r (\.[A-Za-z0-9_.]+)\)$")
VARIABLE = re.compile(r"\$(?:\{([A-Z][A-Z0-9_]*)\}|([A-Z][A-Z0-9_]*))")
SETTLED_TIMEOUT = 90.0
UNSETTLED = {"waiting", "queued", "in_progress"}
# The stack's start (two processes importing the app) and every example's job count here.
pytestmark = pytest.mark.timeout(600)


# -- reading the README ---------------------------------------------------------------------


@dataclass
class Example:
    line: int  # in README.md, 1-based
    command: str  # as written, continuations joined
    assign_to: str | None = None  # `NAME=$(curl ... | jq -r path)`
    jq_path: str | None = None
    answers: list[str] = field(default_factory=list)  # the comment lines right below it


@dataclass
class Readme:
    variables: dict[str, str]  # NAME -> its value as written (quotes and all)
    examples: list[Example]


def _bash_lines() -> Iterator[tuple[int, str]]:
    """(line number, logical line) of the README's bash blocks, `\\` continuations joined."""
    in_bash = False
    pending = ""
    start = 0
    for number, raw in enumerate(README.read_text(encoding="utf-8").splitlines(), 1):
        if raw.startswith("```"):
            in_bash = raw.strip() == "```bash"
            continue
        if not in_bash:
            continue
        if not pending:
            start = number
        if raw.endswith("\\"):
            pending += raw[:-1]
            continue
        yield start, pending + raw
        pending = ""


def read_readme() -> Readme:
    variables: dict[str, str] = {}
    examples: list[Example] = []
    previous: Example | None = None
    for number, line in _bash_lines():
        stripped = line.strip()
        if previous is not None and stripped.startswith("#"):
            previous.answers.append(stripped.lstrip("#").strip())
            continue
        previous = None
        assignment = ASSIGNMENT.match(stripped)
        if assignment is not None:
            name, value = assignment.groups()
            capture = CAPTURE.match(value)
            if capture is not None:
                previous = Example(number, capture.group(1), name, capture.group(2))
                examples.append(previous)
            else:
                variables[name] = value
        elif stripped.startswith("curl "):
            previous = Example(number, stripped)
            examples.append(previous)
    return Readme(variables, examples)


def _expand(text: str, values: dict[str, str]) -> str:
    """`$NAME` and `${NAME}` outside single quotes replaced, as the shell would (a value is
    quoted where it stands unquoted, so it stays one word)."""
    out: list[str] = []
    quote = ""
    position = 0
    while position < len(text):
        char = text[position]
        if char in "'\"" and (not quote or quote == char):
            quote = "" if quote else char
        elif char == "$" and quote != "'":
            found = VARIABLE.match(text, position)
            if found is not None:
                name = found.group(1) or found.group(2)
                assert name in values, f"${name} is not defined in the README"
                out.append(values[name] if quote else shlex.quote(values[name]))
                position = found.end()
                continue
        out.append(char)
        position += 1
    return "".join(out)


def resolve_variables(readme: Readme) -> dict[str, str]:
    """The README's plain variables' values, as the shell would assign them."""
    values: dict[str, str] = {}
    for name, raw in readme.variables.items():
        words = shlex.split(_expand(raw, values))
        assert len(words) == 1, f"{name}={raw} is not one word"
        values[name] = words[0]
    return values


@dataclass
class Request:
    method: str
    url: str
    headers: dict[str, str]
    body: str | None
    stream: bool  # -N: read the first event, then close (a stream lasts until its job ends)


def parse_curl(command: str, values: dict[str, str], origin: str) -> Request:
    words = shlex.split(_expand(command, values), comments=True)
    assert words[0] == "curl", command
    method, url, body, stream = "GET", None, None, False
    headers: dict[str, str] = {}
    items = iter(words[1:])
    for word in items:
        if word == "-X":
            method = next(items)
        elif word == "-H":
            name, _, value = next(items).partition(":")
            headers[name.strip()] = value.strip()
        elif word == "-d":
            body = next(items)
            method = "POST" if method == "GET" else method
        elif word == "-N":
            stream = True
        elif word in ("-s", "-i", "-O", "-J", "-OJ", "-sS"):
            continue  # output only: silent, headers shown, saved to a file
        else:
            assert not word.startswith("-"), f"an option this test does not know: {word}"
            assert url is None, f"two URLs in {command}"
            url = word
    assert url is not None, command
    assert "…" not in url and "…" not in (body or ""), f"a placeholder in {command}"
    assert url.startswith(README_ORIGIN), f"not the README's API address: {url}"
    if body is not None and headers.get("Content-Type") == "application/json":
        json.loads(body)  # a documented body is valid JSON
    return Request(method, origin + url.removeprefix(README_ORIGIN), headers, body, stream)


def expected_status(example: Example) -> int | None:
    """The status the comment line right below the example starts with (`# 409: ...`); None:
    any 2xx."""
    found = re.match(r"^([1-5]\d\d)\b", example.answers[0]) if example.answers else None
    return int(found.group(1)) if found is not None else None


def documented_keys(example: Example) -> set[str]:
    """The keys of the JSON answers shown right below the example."""
    keys: set[str] = set()
    for answer in example.answers:
        if answer.startswith(("{", "[")):
            keys.update(re.findall(r'"([A-Za-z_]+)":', answer))
    return keys


def _keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {key for item in value.values() for key in _keys(item)}
    if isinstance(value, list):
        return {key for item in value for key in _keys(item)}
    return set()


def _job_ids(value: Any) -> list[str]:
    """The ids of the jobs an answer reports as queued (`job_id`, at any depth)."""
    if isinstance(value, dict):
        found = [value["job_id"]] if isinstance(value.get("job_id"), str) else []
        return found + [job for item in value.values() for job in _job_ids(item)]
    if isinstance(value, list):
        return [job for item in value for job in _job_ids(item)]
    return []


def _jq(document: Any, path: str) -> str:
    for part in path.strip(".").split("."):
        document = document[part]
    assert isinstance(document, str), path
    return document


# -- what can be checked without a stack ------------------------------------------------------


def test_the_readme_examples_are_found_and_complete() -> None:
    readme = read_readme()
    values = resolve_variables(readme)
    assert {"KEY", "API"} <= set(values)
    assert len(readme.examples) >= 30, len(readme.examples)
    # Every example parses: known options, defined variables, no placeholder, valid JSON.
    captured = {example.assign_to: "x" for example in readme.examples if example.assign_to}
    for example in readme.examples:
        parse_curl(example.command, {**values, **captured}, "http://test")
    commands = " ".join(example.command for example in readme.examples)
    for endpoint in (
        "/enqueue",
        "/enqueue-batch",
        "/status/",
        "/abort/",
        "/comments/parse/vk/async",
        "/comments/analyze/async",
        "/comments/report/async",
        "/comments/cleanup/async",
        "/comments/reports/$REPORT",
    ):
        assert endpoint in commands, endpoint


# -- the live stack -------------------------------------------------------------------------


@pytest.fixture
async def fake_vk() -> AsyncIterator[FakeVK]:
    """Community 1 (`apiclub`): 3 posts of 15 comments, ids 1-45 (post 2: 16-30)."""
    fake = FakeVK()
    fake.add(community_with_posts(3, 15, community_id=1, screen_name="apiclub"))
    async with serve(fake):
        yield fake


@pytest.fixture
def stack(redis_url: str, database_url: str, tmp_path: Path, fake_vk: FakeVK) -> Iterator[str]:
    """A uvicorn API and an `arq` worker, as `make run` starts them; the API's URL."""
    _empty(redis_url, database_url)
    # Only community 1 is stored, as for a reader who parsed it: another wall's comment 5
    # (other tests') would make the README's plain ids ambiguous.
    asyncio.run(_truncate(database_url, "comments, posts, communities, comment_analyses, reports"))
    settings = Settings(
        _env_file=None,
        redis_url=redis_url,
        database_url=database_url,
        environment=Environment.TEST,
    )
    env = {
        **worker_env(settings),
        "API_KEYS": DEV_KEYS,
        "VK_TOKEN": TOKEN,
        "VK_API_URL": fake_vk.url,
        "VK_REQUESTS_PER_SECOND": "50",
        "VK_RETRY_BACKOFF": "0.01",
        "VK_RETRY_BACKOFF_MAX": "0.05",
        # The webhooks of the examples go to example.org: one short attempt, whatever comes.
        "NOTIFY_MAX_ATTEMPTS": "1",
        "NOTIFY_TIMEOUT": "2",
        "BACKUP_DIR": str(tmp_path / "backups"),
    }
    with api_and_worker(
        tmp_path, env, api=("src.main:app",), worker=(ARQ, "src.arq.worker.WorkerSettings")
    ) as url:
        yield url


async def _truncate(database_url: str, tables: str) -> None:
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(f"TRUNCATE {tables}")
    finally:
        await conn.close()


async def _settle(http: httpx.AsyncClient, origin: str, key: dict[str, str], job_id: str) -> str:
    """Wait until the job is neither waiting, queued nor running; its status."""
    deadline = time.monotonic() + SETTLED_TIMEOUT
    while True:
        response = await http.get(f"{origin}/api/v1/arq/status/{job_id}", headers=key)
        assert response.status_code == 200, response.text
        status: str = response.json()["status"]
        if status not in UNSETTLED or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.1)


async def _run(http: httpx.AsyncClient, request: Request) -> tuple[int, Any, httpx.Headers]:
    if request.stream:
        async with http.stream(
            request.method, request.url, headers=request.headers, content=request.body
        ) as response:
            first = ""
            if response.status_code == 200:
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        first = line.removeprefix("data:").strip()
                        break
            return response.status_code, json.loads(first) if first else None, response.headers
    response = await http.request(
        request.method, request.url, headers=request.headers, content=request.body
    )
    try:
        document = response.json()
    except ValueError:
        document = None
    return response.status_code, document, response.headers


async def test_the_readme_examples_answer_as_documented(stack: str) -> None:
    readme = read_readme()
    values = resolve_variables(readme)
    key = {"X-API-Key": DEV_KEYS.rsplit(":", 1)[1]}
    failures: list[str] = []
    async with httpx.AsyncClient(timeout=30) as http:
        for example in readme.examples:
            request = parse_curl(example.command, values, stack)
            where = f"README.md:{example.line}: {example.command}"
            status, document, headers = await _run(http, request)
            wanted = expected_status(example)
            if wanted is not None and status != wanted:
                failures.append(f"{where}\n  answered {status}, the README says {wanted}")
            elif wanted is None and not 200 <= status < 300:
                failures.append(f"{where}\n  answered {status}: {str(document)[:300]}")
            unknown = documented_keys(example) - _keys(document)
            if unknown:
                failures.append(
                    f"{where}\n  the answer shown has keys the real one lacks: {unknown}"
                )
            if "-OJ" in example.command and "attachment" not in headers.get(
                "content-disposition", ""
            ):
                failures.append(f"{where}\n  no attachment to save")
            if request.method != "GET" and 200 <= status < 300:
                for job_id in _job_ids(document):
                    settled = await _settle(http, stack, key, job_id)
                    if settled in UNSETTLED:
                        failures.append(f"{where}\n  its job {job_id} is still {settled}")
            if example.assign_to is not None:
                assert example.jq_path is not None
                values[example.assign_to] = _jq(document, example.jq_path)
    assert failures == [], "\n".join(failures)
