"""VK's circuit breaker against the fake VK API, the real Redis and real workers: failures in a
row open it and no request reaches VK while it is open; one probe after the cool-down closes or
re-opens it; jobs wait without spending their tries; worker processes share it; the health
details and `/metrics` show it."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as sync_redis
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from src.arq.config import ArqSettings
from src.breakers import CircuitState, circuit_snapshot
from src.config import Settings
from src.vk.breaker import CIRCUIT_KEY, vk_breaker
from src.vk.client import VKClient
from src.vk.exceptions import (
    VKAccessDenied,
    VKError,
    VKRateLimitReached,
    VKRetryableError,
    VKUnavailable,
)
from src.vk.ratelimit import NoRateLimit
from tests.arq.helpers import status, wait_for
from tests.arq.test_worker_process import ARQ, wait_until_up, worker_env
from tests.conftest import WorkerHandle, headers
from tests.test_metrics import free_port
from tests.vk.conftest import vk_settings_for
from tests.vk.fake_server import TOKEN, FakeVK, Fault, Hold, Http, Sleep, community_with_posts
from tests.vk.fake_server import serve as serve_vk

PARSE = "/api/v1/comments/parse/vk/async"
OPEN = "VK unavailable, circuit open until"
HALF_OPEN = "VK unavailable, circuit half-open"


class FlakyVK(FakeVK):
    """The fake VK API with an outage on command: while `outage` is set, every request gets it
    (an `Http` status, a VK error code, a `Sleep`, or a `Hold` that parks it)."""

    def __init__(self) -> None:
        super().__init__()
        self.outage: Fault | None = None

    def _next_fault(self, method: str, params: dict[str, Any]) -> Fault | None:
        if self.outage is not None:
            return self.outage
        return super()._next_fault(method, params)


@pytest.fixture
async def fake() -> AsyncIterator[FlakyVK]:
    flaky = FlakyVK()
    async with serve_vk(flaky):
        yield flaky


@pytest.fixture
def arq_settings() -> ArqSettings:
    # One try per job: a wait that spent a try would fail it.
    return ArqSettings(_env_file=None, poll_delay=0.05, max_jobs=10, job_timeout=30, max_tries=1)


async def until(condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> None:
    """Wait for `condition()` to hold (a positive signal, however busy the machine is)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.05)


def client_for(redis: Redis, url: str, **overrides: Any) -> VKClient:
    settings = vk_settings_for(url, **{"breaker_failures": 3, "breaker_cooldown": 60} | overrides)
    return VKClient(settings, limiter=NoRateLimit(), breaker=vk_breaker(redis, settings))


async def state(redis: Redis) -> CircuitState:
    return (await circuit_snapshot(redis, CIRCUIT_KEY)).state


# -- the client ---------------------------------------------------------------------------------


async def test_failures_in_a_row_open_the_circuit_and_nothing_more_is_sent(
    fake: FlakyVK, aredis: Redis
) -> None:
    fake.add(community_with_posts(1))
    fake.outage = Http(502)
    async with client_for(aredis, fake.url, max_retries=5) as client:
        with pytest.raises(VKRetryableError, match="HTTP 502"):
            await client.get_posts(-1)
        assert len(fake.requests) == 3  # the third failure opened it: no more retries
        with pytest.raises(VKUnavailable, match=OPEN) as refused:
            await client.get_posts(-1)
        assert 50 < refused.value.retry_after <= 61
    # Another client, as in another process: the circuit lives in Redis.
    async with client_for(aredis, fake.url) as other:
        with pytest.raises(VKUnavailable, match=OPEN):
            await other.execute_calls([("wall.get", {"owner_id": -1})])
    assert len(fake.requests) == 3
    snapshot = await circuit_snapshot(aredis, CIRCUIT_KEY)
    assert (snapshot.state, snapshot.failures) == (CircuitState.OPEN, 3)


@pytest.mark.parametrize(
    "fault", [Http(500), Http(503), 1, 10, Sleep(2)], ids=["500", "503", "1", "10", "timeout"]
)
async def test_what_counts_as_a_failure(fake: FlakyVK, aredis: Redis, fault: Fault) -> None:
    fake.add(community_with_posts(1))
    fake.outage = fault
    async with client_for(aredis, fake.url, breaker_failures=2, timeout=0.5) as client:
        with pytest.raises(VKRetryableError):
            await client.get_posts(-1)
    fake.outage = None  # a held-up request must not keep the server from stopping
    assert len(fake.requests) == 2
    assert await state(aredis) is CircuitState.OPEN


async def test_a_network_error_counts_as_a_failure(aredis: Redis) -> None:
    # Nothing listens there (the port is taken and closed again).
    url = f"http://127.0.0.1:{free_port()}/method"
    async with client_for(aredis, url, breaker_failures=2) as client:
        with pytest.raises(VKRetryableError, match="connection failed"):
            await client.get_posts(-1)
        with pytest.raises(VKUnavailable):
            await client.get_posts(-1)


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (6, VKRetryableError),  # too many requests: VK answers
        (Http(429), VKRetryableError),
        (29, VKRateLimitReached),
        (15, VKAccessDenied),
        (Http(404), VKError),
        (None, None),  # a page
    ],
    ids=["6", "429", "29", "15", "404", "ok"],
)
async def test_any_answer_of_vk_resets_the_count(
    fake: FlakyVK, aredis: Redis, answer: Fault | None, error: type[VKError] | None
) -> None:
    fake.add(community_with_posts(1))
    async with client_for(aredis, fake.url, max_retries=0) as client:
        fake.fail("wall.get", 10, 10, *([answer] if answer is not None else []))
        for _ in range(2):
            with pytest.raises(VKRetryableError):
                await client.get_posts(-1)
        assert (await circuit_snapshot(aredis, CIRCUIT_KEY)).failures == 2
        if error is None:
            await client.get_posts(-1)
        else:
            with pytest.raises(error):
                await client.get_posts(-1)
        snapshot = await circuit_snapshot(aredis, CIRCUIT_KEY)
        assert (snapshot.state, snapshot.failures) == (CircuitState.CLOSED, 0)
        # Two more failures do not reach the threshold of three.
        fake.fail("wall.get", 10, 10)
        for _ in range(2):
            with pytest.raises(VKRetryableError):
                await client.get_posts(-1)
    assert await state(aredis) is CircuitState.CLOSED


async def test_after_the_cooldown_one_probe_closes_the_circuit(
    fake: FlakyVK, aredis: Redis
) -> None:
    fake.add(community_with_posts(1))
    fake.outage = Http(502)
    first = client_for(aredis, fake.url, breaker_failures=2, breaker_cooldown=0.5)
    second = client_for(aredis, fake.url, breaker_failures=2, breaker_cooldown=0.5)
    async with first, second:
        with pytest.raises(VKRetryableError):
            await first.get_posts(-1)
        await until(lambda: _is(aredis, CircuitState.HALF_OPEN), "the cool-down ended")
        fake.outage = hold = Hold()
        calls = [asyncio.create_task(client.get_posts(-1)) for client in (first, second)]
        await hold.reached.wait()
        done, _ = await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED)
        (refused,) = done  # the other one is the probe, held at VK
        with pytest.raises(VKUnavailable, match=HALF_OPEN):
            refused.result()
        assert len(fake.requests) == 3  # two failures, one probe
        fake.outage = None
        hold.release()
        (probe,) = set(calls) - done
        assert (await probe)["count"] == 1
        snapshot = await circuit_snapshot(aredis, CIRCUIT_KEY)
        assert (snapshot.state, snapshot.failures) == (CircuitState.CLOSED, 0)
        assert (await second.get_posts(-1))["count"] == 1


async def test_a_failed_probe_opens_the_circuit_again(fake: FlakyVK, aredis: Redis) -> None:
    fake.outage = Http(503)
    async with client_for(aredis, fake.url, breaker_failures=2, breaker_cooldown=0.5) as client:
        with pytest.raises(VKRetryableError):
            await client.get_posts(-1)
        opened = (await circuit_snapshot(aredis, CIRCUIT_KEY)).open_until
        await until(lambda: _is(aredis, CircuitState.HALF_OPEN), "the cool-down ended")
        with pytest.raises(VKRetryableError, match="HTTP 503"):  # the probe's own failure
            await client.get_posts(-1)
        assert len(fake.requests) == 3  # the probe failed once: no retries past it
        again = await circuit_snapshot(aredis, CIRCUIT_KEY)
        assert again.state is CircuitState.OPEN
        assert opened is not None and again.open_until is not None and again.open_until > opened
        with pytest.raises(VKUnavailable, match=OPEN):
            await client.get_posts(-1)
    assert len(fake.requests) == 3


async def test_zero_failures_is_no_breaker(fake: FlakyVK, aredis: Redis) -> None:
    settings = vk_settings_for(fake.url, breaker_failures=0, max_retries=9)
    assert vk_breaker(aredis, settings) is None
    fake.outage = Http(502)
    async with VKClient(settings, limiter=NoRateLimit()) as client:
        with pytest.raises(VKRetryableError):
            await client.get_posts(-1)
    assert len(fake.requests) == 10


async def _is(redis: Redis, expected: CircuitState) -> bool:
    return await state(redis) is expected


# -- jobs ---------------------------------------------------------------------------------------


def vk_env(fake: FakeVK, *, cooldown: float) -> dict[str, str]:
    return {
        "VK_TOKEN": TOKEN,
        "VK_API_URL": fake.url,
        "VK_REQUESTS_PER_SECOND": "50",
        "VK_RETRY_BACKOFF": "0.01",
        "VK_RETRY_BACKOFF_MAX": "0.05",
        "VK_MAX_RETRIES": "5",
        "VK_BREAKER_FAILURES": "2",
        "VK_BREAKER_COOLDOWN": str(cooldown),
    }


async def parse(client: httpx.AsyncClient, group_id: int) -> str:
    response = await client.post(PARSE, params={"group_id": group_id}, headers=headers("alice"))
    assert response.status_code == 202, response.text
    job_id: str = response.json()["data"]["job_id"]
    return job_id


async def says(client: httpx.AsyncClient, job_id: str, text: str) -> bool:
    body = await status(client, job_id)
    return body["status"] == "retrying" and text in (body.get("message") or "")


async def vk_health(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/api/v1/arq/health")
    assert response.status_code == 200, response.text
    breakers = {b["name"]: b for b in response.json()["details"]["circuit_breakers"]}
    return breakers["vk"]


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    raise AssertionError(f"no sample {name}{labels}")


async def test_jobs_wait_for_an_open_circuit_without_spending_tries(
    client: httpx.AsyncClient,
    fake: FlakyVK,
    aredis: Redis,
    worker_handle: WorkerHandle,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Tasks have one try here: a wait that spent it would fail the job."""
    # The cool-down must outlast the worker's start and the checks while the circuit is open,
    # on a loaded machine too (2 s is as thin as a webhook test found it), then is waited out.
    for name, value in vk_env(fake, cooldown=5).items():
        monkeypatch.setenv(name, value)
    for group in (61, 62, 63):
        fake.add(community_with_posts(2, 3, community_id=group))
    # VK fails; a client elsewhere (this test) opens the circuit.
    fake.outage = Http(500)
    async with client_for(aredis, fake.url, breaker_failures=2, breaker_cooldown=5) as other:
        with pytest.raises(VKRetryableError):
            await other.get_posts(-61)
    fake.outage = hold = Hold()  # still down: whatever reaches it now is held
    before = (await client.get("/metrics", headers=headers("root"))).text
    await worker_handle.start()
    jobs = [await parse(client, group) for group in (61, 62, 63)]
    for job_id in jobs:
        await until(lambda job_id=job_id: says(client, job_id, OPEN), "the job waits")
    assert len(fake.requests) == 2  # none of the jobs reached VK
    health = await vk_health(client)
    assert (health["state"], health["failures"]) == ("open", 2)
    assert health["open_until"] is not None
    scrape = (await client.get("/metrics", headers=headers("root"))).text
    assert metric(scrape, "vkp_vk_circuit_state", state="open") == 1
    refusals = metric(scrape, "vkp_vk_circuit_refusals_total")
    assert refusals - metric(before, "vkp_vk_circuit_refusals_total") >= 3

    # After the cool-down one job probes (held at VK); the others are refused meanwhile.
    await hold.reached.wait()

    async def refused_while_probing() -> bool:
        return sum([await says(client, job_id, HALF_OPEN) for job_id in jobs]) == 2

    await until(refused_while_probing, "two jobs refused while the third probes")
    assert len(fake.requests) == 3  # exactly one probe
    assert (await vk_health(client))["state"] == "half_open"

    fake.outage = None  # VK is back: the probe succeeds and closes the circuit
    hold.release()
    for job_id in jobs:
        done = await wait_for(client, job_id, timeout=30)
        assert done["status"] == "complete", done
        assert done["tries"] == 1
        assert done["result"]["comments_saved"] == 6
    health = await vk_health(client)
    assert (health["state"], health["failures"], health["open_until"]) == ("closed", 0, None)
    scrape = (await client.get("/metrics", headers=headers("root"))).text
    assert metric(scrape, "vkp_vk_circuit_state", state="closed") == 1


async def test_worker_processes_share_the_circuit(
    client: httpx.AsyncClient,
    fake: FlakyVK,
    settings: Settings,
    redis_db: sync_redis.Redis,
    tmp_path: Path,
) -> None:
    """One worker opens the circuit, the other honours it and later closes it with its probe."""
    ports = [free_port(), free_port()]
    processes = [
        subprocess.Popen(
            [ARQ, "tests.worker_settings.WorkerSettings"],
            cwd=tmp_path,  # not ROOT: a developer's ./.env must not reach the workers
            env={
                **worker_env(settings),
                **vk_env(fake, cooldown=8),
                "ARQ_MAX_JOBS": "1",
                "ARQ_MAX_TRIES": "3",
                "ARQ_METRICS_PORT": str(port),
            },
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    gates = [tmp_path / "gate-a", tmp_path / "gate-b"]
    try:
        for process in processes:
            await wait_until_up(redis_db, process)
        for group in (71, 72):
            fake.add(community_with_posts(1, 2, community_id=group))
        fake.outage = Http(502)
        # One worker holds a gated job; the other runs the first parse and opens the circuit.
        gate_a = await sleep_job(client, gates[0])
        first = await parse(client, 71)
        await until(lambda: _health_is(client, "open"), "the circuit opened")
        # The opener takes the next gated job; the first worker is let go and gets the next parse.
        gate_b = await sleep_job(client, gates[1])
        gates[0].touch()
        assert (await wait_for(client, gate_a, timeout=30))["status"] == "complete"
        second = await parse(client, 72)
        await until(lambda: says(client, second, OPEN), "the second job waits")
        assert len(fake.requests) == 2
        async with httpx.AsyncClient() as http:
            scrapes = [(await http.get(f"http://127.0.0.1:{p}/metrics")).text for p in ports]
        opened = [metric(s, "vkp_vk_circuit_opened_total") for s in scrapes]
        assert sorted(opened) == [0, 1]
        honouring = scrapes[opened.index(0)]
        assert metric(honouring, "vkp_vk_circuit_refusals_total") >= 1
        assert metric(honouring, "vkp_vk_circuit_state", state="open") == 1

        fake.outage = None
        gates[1].touch()
        for job_id, tries in ((first, 2), (second, 1)):
            done = await wait_for(client, job_id, timeout=60)
            assert (done["status"], done["tries"]) == ("complete", tries), done
        assert (await wait_for(client, gate_b, timeout=30))["status"] == "complete"
        assert await _health_is(client, "closed")
    finally:
        for gate in gates:
            gate.touch()
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(20)


async def sleep_job(client: httpx.AsyncClient, gate: Path) -> str:
    response = await client.post(
        "/api/v1/arq/enqueue",
        json={"function_name": "sleep", "kwargs": {"seconds": 0, "until": str(gate)}},
        headers=headers("alice"),
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    await wait_for(client, job_id, ("in_progress",), timeout=30)
    return job_id


async def _health_is(client: httpx.AsyncClient, expected: str) -> bool:
    return bool((await vk_health(client))["state"] == expected)
