"""Circuit breakers of webhook receivers, against real receivers that fail on command, the real
Redis and a real worker: failures in a row open an owner's circuit of a host, waiting jobs keep
their tries, one probe after the cool-down closes or re-opens it, and one user's failing URL holds
up nobody else's webhooks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from src.arq.config import ArqSettings
from tests.arq.helpers import enqueue, status, wait_for
from tests.conftest import WorkerHandle, headers
from tests.servers import serve_app

OPEN = "unavailable, circuit open until"
HALF_OPEN = "unavailable, circuit half-open"


class Receiver:
    """A webhook receiver that fails on command: every path while `down`, or the paths in
    `failing`, answer `failure`; `hold` (when set) parks requests until it is set free."""

    def __init__(self) -> None:
        self.url = ""
        self.port = 0
        self.down = False
        self.failing: set[str] = set()
        self.failure = 503
        self.hold: asyncio.Event | None = None
        self.reached = asyncio.Event()
        self.requests: list[str] = []

    async def handle(self, request: Request) -> Response:
        await request.body()
        self.requests.append(request.url.path)
        if self.hold is not None:
            self.reached.set()
            await self.hold.wait()
        if self.down or request.url.path in self.failing:
            return Response(status_code=self.failure)
        return Response(b'{"ok": true}', status_code=200)


@contextlib.asynccontextmanager
async def serve(receiver: Receiver) -> AsyncIterator[Receiver]:
    app = Starlette(routes=[Route("/{path:path}", receiver.handle, methods=["POST"])])
    async with serve_app(app) as port:
        receiver.port = port
        receiver.url = f"http://127.0.0.1:{port}"
        try:
            yield receiver
        finally:
            if receiver.hold is not None:
                receiver.hold.set()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with serve(Receiver()) as running:
        yield running


@pytest.fixture
async def other_receiver() -> AsyncIterator[Receiver]:
    async with serve(Receiver()) as running:
        yield running


@pytest.fixture(autouse=True)
def notify_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "NOTIFY_ALLOW_HOSTS": "127.0.0.1/32",
        "NOTIFY_BACKOFF": "0.01",
        "NOTIFY_BACKOFF_MAX": "0.05",
        "NOTIFY_MAX_ATTEMPTS": "5",
        "NOTIFY_BREAKER_FAILURES": "3",
        # Long enough for a test's checks while a circuit is open on a loaded machine (2 s ran
        # out before them once), short enough to wait out for the probe.
        "NOTIFY_BREAKER_COOLDOWN": "5",
    }.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def arq_settings() -> ArqSettings:
    # Two tries: the send whose failures open the circuit spends one, a wait spends none.
    return ArqSettings(_env_file=None, poll_delay=0.05, max_jobs=10, job_timeout=30, max_tries=2)


async def until(condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.05)


async def notify(client: httpx.AsyncClient, url: str, owner: str = "alice") -> str:
    response = await enqueue(
        client, "send_notification", owner, kwargs={"url": url, "payload": {"n": 1}}
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


async def says(client: httpx.AsyncClient, job_id: str, text: str, owner: str = "alice") -> bool:
    body = await status(client, job_id, owner)
    return body["status"] == "retrying" and text in (body.get("message") or "")


async def webhook_health(client: httpx.AsyncClient) -> tuple[dict[str, Any], str]:
    response = await client.get("/api/v1/arq/health")
    assert response.status_code == 200, response.text
    breakers = {b["name"]: b for b in response.json()["details"]["circuit_breakers"]}
    return breakers["webhooks"], response.text


async def counter(client: httpx.AsyncClient, name: str) -> float:
    text = (await client.get("/metrics", headers=headers("root"))).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"no sample {name}")


async def test_a_failing_host_opens_its_circuit_and_waiting_jobs_keep_their_tries(
    client: httpx.AsyncClient, receiver: Receiver, worker_handle: WorkerHandle
) -> None:
    opened_before = await counter(client, "vkp_webhook_circuits_opened_total")
    refused_before = await counter(client, "vkp_webhook_circuit_refusals_total")
    await worker_handle.start()
    receiver.down = True
    first = await notify(client, f"{receiver.url}/hooks/1")
    await until(lambda: says(client, first, "its circuit is open"), "the third failure opened it")
    assert len(receiver.requests) == 3  # not the five attempts a send may make
    later = [await notify(client, f"{receiver.url}/hooks/{n}") for n in (2, 3)]
    for job_id in later:
        await until(lambda job_id=job_id: says(client, job_id, OPEN), "the job waits")
    body = await status(client, later[0])
    assert f"webhook receiver {receiver.url} {OPEN}" in body["message"]
    assert len(receiver.requests) == 3  # nothing reached the host while open
    health, text = await webhook_health(client)
    assert (health["state"], health["circuits"]) == ("open", 1)
    assert health["open_until"] is not None
    assert str(receiver.port) not in text  # the health (no credential) names no host
    assert await counter(client, "vkp_webhook_circuits_opened_total") == opened_before + 1
    assert await counter(client, "vkp_webhook_circuit_refusals_total") >= refused_before + 2

    # The host is back, slowly: after the cool-down one job probes, the others wait for it.
    receiver.down = False
    receiver.hold = asyncio.Event()
    await receiver.reached.wait()
    jobs = [first, *later]

    async def refused_while_probing() -> bool:
        return sum([await says(client, job_id, HALF_OPEN) for job_id in jobs]) == 2

    await until(refused_while_probing, "two jobs refused while the third probes")
    assert len(receiver.requests) == 4  # exactly one probe
    receiver.hold.set()
    for job_id, tries in zip(jobs, (2, 1, 1), strict=True):
        done = await wait_for(client, job_id, timeout=30)
        assert (done["status"], done["tries"]) == ("complete", tries), done
    assert len(receiver.requests) == 6
    health, _ = await webhook_health(client)
    assert (health["state"], health["circuits"]) == ("closed", 0)


async def test_a_probe_that_fails_opens_the_circuit_again(
    client: httpx.AsyncClient, receiver: Receiver, worker_handle: WorkerHandle
) -> None:
    await worker_handle.start()
    receiver.down = True
    job_id = await notify(client, f"{receiver.url}/hook")
    await until(lambda: says(client, job_id, "its circuit is open"), "the circuit opened")
    first_until = (await webhook_health(client))[0]["open_until"]
    # The probe fails: the circuit opens again and the probing job spends its (last) try.
    done = await wait_for(client, job_id, timeout=30)
    assert (done["status"], done["tries"]) == ("failed", 2), done
    assert "its circuit is open" in done["error"]["message"]
    assert len(receiver.requests) == 4  # three failures, then one probe
    health, _ = await webhook_health(client)
    assert health["state"] == "open"
    assert datetime.fromisoformat(health["open_until"]) > datetime.fromisoformat(first_until)


async def test_one_users_failing_url_holds_up_nobody_else(
    client: httpx.AsyncClient,
    receiver: Receiver,
    other_receiver: Receiver,
    worker_handle: WorkerHandle,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Alice's URL on a host others use too keeps failing: her circuit of that host opens; Bob's
    webhooks to the host, and hers to another host, go out at once."""
    # Her circuit must stay open for the whole test (no probe), however slow the machine: a 2 s
    # cool-down ran out before the last check in a loaded run.
    monkeypatch.setenv("NOTIFY_BREAKER_COOLDOWN", "600")
    await worker_handle.start()
    receiver.failing.add("/alice/broken")
    receiver.failure = 500
    broken = await notify(client, f"{receiver.url}/alice/broken")
    await until(lambda: says(client, broken, "its circuit is open"), "alice's circuit opened")

    bobs = await notify(client, f"{receiver.url}/bob/hook", owner="bob")
    done = await wait_for(client, bobs, owner="bob")
    assert (done["status"], done["tries"], done["result"]["attempts"]) == ("complete", 1, 1)
    elsewhere = await notify(client, f"{other_receiver.url}/alice/hook")
    assert (await wait_for(client, elsewhere))["status"] == "complete"
    # Her circuit is per host: another of her URLs there waits with the broken one.
    same_host = await notify(client, f"{receiver.url}/alice/fine")
    await until(lambda: says(client, same_host, OPEN), "her other URL on that host waits")
    assert "/alice/fine" not in receiver.requests
    health, _ = await webhook_health(client)
    assert (health["state"], health["circuits"]) == ("open", 1)
