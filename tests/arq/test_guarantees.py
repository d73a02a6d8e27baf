"""What the module adds to ARQ: priorities, progress streams, retries, dead letters, abort marks,
wake-ups. Real Redis, PostgreSQL and in-process `JobWorker`s."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import redis as sync_redis

from src.arq.config import ArqSettings
from src.arq.keys import wake_channel
from src.arq.registry import TaskRegistry
from src.arq.service import owner_job_id
from src.arq.worker import worker_options
from src.config import Settings
from tests.arq.helpers import API, at, enqueue, status, wait_for
from tests.conftest import WorkerHandle, client_for, headers
from tests.servers import serve_app


def make_worker(settings: Settings, registry: TaskRegistry, **overrides: Any) -> WorkerHandle:
    values: dict[str, Any] = {"poll_delay": 0.05, "job_timeout": 30, **overrides}
    arq_settings = ArqSettings(_env_file=None, **values)
    return WorkerHandle(
        worker_options(registry=registry, settings=settings, arq_settings=arq_settings)
    )


@contextlib.asynccontextmanager
async def running(handle: WorkerHandle) -> AsyncIterator[WorkerHandle]:
    await handle.start()
    try:
        yield handle
    finally:
        await handle.stop()


async def take_the_only_slot(client: httpx.AsyncClient, tmp_path: Path) -> Path:
    """Start a job that holds the worker's one slot until the returned file exists: the test
    queues what it needs first, however slowly, then opens the gate."""
    gate = tmp_path / "gate.open"
    blocker = await enqueue(
        client, "tick", kwargs={"log": str(tmp_path / "gate.log"), "until": str(gate)}
    )
    await wait_for(client, blocker.json()["job_id"], ("in_progress",), timeout=30)
    return gate


async def started_order(client: httpx.AsyncClient, job_ids: list[str]) -> list[str]:
    starts = {
        job_id: at(await status(client, job_id, owner="root"), "started_at") for job_id in job_ids
    }
    return sorted(job_ids, key=lambda job_id: (starts[job_id], job_ids.index(job_id)))


# -- priorities -------------------------------------------------------------------------------


async def test_critical_job_starts_before_500_queued_normal_ones(
    client: httpx.AsyncClient, settings: Settings, registry: TaskRegistry, tmp_path: Path
) -> None:
    async with running(make_worker(settings, registry, max_jobs=1)):
        gate = await take_the_only_slot(client, tmp_path)
        batch = [{"function_name": "add", "kwargs": {"a": i}} for i in range(500)]
        response = await client.post(f"{API}/enqueue-batch", json=batch, headers=headers("alice"))
        normal = [job["job_id"] for job in response.json()]
        low = (await enqueue(client, "add", kwargs={"a": -1}, priority="low")).json()["job_id"]
        high = (await enqueue(client, "add", kwargs={"a": 1}, priority="high")).json()["job_id"]
        critical = (
            await enqueue(client, "add", owner="root", kwargs={"a": 2}, priority="critical")
        ).json()["job_id"]
        assert (await status(client, critical, owner="root"))["priority"] == "critical"
        gate.touch()
        await wait_for(client, low, timeout=60)
    order = await started_order(client, [critical, high, *normal, low])
    assert order[0] == critical
    assert order[1] == high
    assert order[2:-1] == normal  # FIFO within one priority
    assert order[-1] == low


async def test_deferred_job_takes_its_priority_place_when_due(
    client: httpx.AsyncClient, settings: Settings, registry: TaskRegistry, tmp_path: Path
) -> None:
    async with running(make_worker(settings, registry, max_jobs=1)):
        gate = await take_the_only_slot(client, tmp_path)
        urgent = (
            await enqueue(
                client, "add", owner="root", kwargs={"a": 1}, priority="critical", defer_by=2
            )
        ).json()["job_id"]
        assert (await status(client, urgent, owner="root"))["status"] == "deferred"
        batch = [{"function_name": "add", "kwargs": {"a": i}} for i in range(50)]
        response = await client.post(f"{API}/enqueue-batch", json=batch, headers=headers("alice"))
        normal = [job["job_id"] for job in response.json()]
        # Due now, and still behind the gate with the 50 normal jobs.
        await wait_for(client, urgent, ("queued",), owner="root", timeout=30)
        gate.touch()
        await wait_for(client, normal[-1], timeout=30)
    urgent_status = await status(client, urgent, owner="root")
    assert at(urgent_status, "started_at") >= at(urgent_status, "scheduled_for")  # waited
    order = await started_order(client, [urgent, *normal])
    assert order[0] == urgent  # then jumped the 50 normal jobs queued before it was due


async def test_aging_lets_a_waiting_low_job_overtake_newer_normal_ones(
    settings: Settings, registry: TaskRegistry, sessionmaker: Any, tmp_path: Path
) -> None:
    aging = ArqSettings(_env_file=None, poll_delay=0.05, priority_aging=0.5)
    async with (
        client_for(settings, arq_settings=aging) as client,
        running(make_worker(settings, registry, max_jobs=1, priority_aging=0.5)),
    ):
        gate = await take_the_only_slot(client, tmp_path)
        old_low = (await enqueue(client, "add", kwargs={"a": 0}, priority="low")).json()["job_id"]
        await asyncio.sleep(0.8)  # longer than one aging step
        newer_normal = [
            (await enqueue(client, "add", kwargs={"a": i})).json()["job_id"] for i in range(5)
        ]
        fresh_low = (await enqueue(client, "add", kwargs={"a": 9}, priority="low")).json()["job_id"]
        gate.touch()
        await wait_for(client, fresh_low, timeout=20)
        order = await started_order(client, [old_low, *newer_normal, fresh_low])
    assert order == [old_low, *newer_normal, fresh_low]


async def test_priority_is_validated_and_listed(client: httpx.AsyncClient) -> None:
    bad = await enqueue(client, "add", kwargs={"a": 1}, priority="urgent")
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["loc"] == ["body", "priority"]
    await enqueue(client, "add", kwargs={"a": 1}, priority="high")
    page = (await client.get(f"{API}/jobs", headers=headers("alice"))).json()
    assert page["items"][0]["priority"] == "high"


# -- wake-ups ---------------------------------------------------------------------------------


async def test_idle_worker_is_woken_by_enqueue_not_by_its_poll(
    client: httpx.AsyncClient,
    settings: Settings,
    registry: TaskRegistry,
    redis_db: sync_redis.Redis,
) -> None:
    async with running(make_worker(settings, registry, poll_delay=30, lease=60)):
        # Its first round is over (health mark written, wake-ups subscribed): the worker now
        # sleeps in its 30 s poll wait.
        queue_name = ArqSettings(_env_file=None).queue_name
        while not (
            redis_db.exists(f"{queue_name}:health-check")
            and cast(list[tuple[bytes, int]], redis_db.pubsub_numsub(wake_channel(queue_name)))[0][
                1
            ]
        ):
            await asyncio.sleep(0.01)
        job_id = (await enqueue(client, "add", kwargs={"a": 1})).json()["job_id"]
        done = await wait_for(client, job_id, timeout=5)
    waited = datetime.fromisoformat(done["started_at"]) - datetime.fromisoformat(
        done["enqueued_at"]
    )
    assert waited.total_seconds() < 15  # half the poll delay: its poll would wait 30 s


# -- progress over SSE ------------------------------------------------------------------------


@pytest.fixture
async def live_url(app: Any) -> AsyncIterator[str]:
    """The app served by a real uvicorn (ASGITransport cannot stream)."""
    async with serve_app(app) as port:
        yield f"http://127.0.0.1:{port}"


def parse_events(lines: list[str]) -> list[tuple[str, dict[str, Any]]]:
    events, event_id = [], ""
    for line in lines:
        if line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            events.append((event_id, json.loads(line[6:])))
    return events


async def test_status_stream_shows_progress_live_until_the_end(
    client: httpx.AsyncClient, live_url: str, worker: Any, tmp_path: Path
) -> None:
    gate = tmp_path / "gate.open"
    job_id = (await enqueue(client, "sleep", kwargs={"seconds": 0, "until": str(gate)})).json()[
        "job_id"
    ]
    lines: list[str] = []
    seen_mid_job = False
    async with (
        httpx.AsyncClient(base_url=live_url, timeout=10) as http,
        http.stream("GET", f"{API}/status/{job_id}/stream", headers=headers("alice")) as stream,
    ):
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        async for line in stream.aiter_lines():
            lines.append(line)
            if line.startswith("data: ") and json.loads(line[6:])["progress"] == 50:
                # Arrives while the job still runs: it waits for the gate opened only now.
                seen_mid_job = (await status(client, job_id))["status"] == "in_progress"
                gate.touch()
    events = parse_events(lines)
    statuses = [event["status"] for _, event in events]
    assert statuses[-1] == "complete"
    assert "in_progress" in statuses
    assert seen_mid_job
    progress = [event["progress"] for _, event in events]
    assert progress == sorted(progress) and progress[-1] == 100
    assert any(e["message"] == "sleeping" for _, e in events)

    # Reconnecting with the last id: the current state is not sent again, the stream just ends.
    async with httpx.AsyncClient(base_url=live_url, timeout=10) as http:
        again = await http.get(
            f"{API}/status/{job_id}/stream",
            headers={**headers("alice"), "Last-Event-ID": events[-1][0]},
        )
        assert parse_events(again.text.splitlines()) == []
        fresh = await http.get(f"{API}/status/{job_id}/stream", headers=headers("alice"))
        assert [e["status"] for _, e in parse_events(fresh.text.splitlines())] == ["complete"]


async def test_status_stream_of_someone_elses_job_is_404(client: httpx.AsyncClient) -> None:
    job_id = (await enqueue(client, "add", kwargs={"a": 1})).json()["job_id"]
    response = await client.get(f"{API}/status/{job_id}/stream", headers=headers("bob"))
    assert response.status_code == 404
    assert response.json()["error"] == "JobNotFound"


# -- retries ----------------------------------------------------------------------------------


async def every_status_of(
    client: httpx.AsyncClient, live_url: str, job_id: str, gate: Path
) -> list[dict[str, Any]]:
    """Every status the job goes through, from its SSE stream: subscribed while the job waits
    behind the gate, so that no short-lived state can pass unseen."""
    events: list[dict[str, Any]] = []
    async with (
        httpx.AsyncClient(base_url=live_url, timeout=30) as http,
        http.stream("GET", f"{API}/status/{job_id}/stream", headers=headers("alice")) as stream,
    ):
        async for line in stream.aiter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
                gate.touch()  # subscribed: now let the job run
    return events


async def test_transient_failures_retry_with_backoff_then_succeed(
    client: httpx.AsyncClient,
    live_url: str,
    settings: Settings,
    registry: TaskRegistry,
    tmp_path: Path,
) -> None:
    async with running(make_worker(settings, registry, retry_backoff=0.4, max_jobs=1)):
        gate = await take_the_only_slot(client, tmp_path)
        job_id = (await enqueue(client, "flaky", kwargs={"failures": 2})).json()["job_id"]
        events = await every_status_of(client, live_url, job_id, gate)
    waiting = next(e for e in events if e["status"] == "retrying")
    assert waiting["tries"] == 1
    assert "try 1 of 4 failed, retrying in" in waiting["message"]
    assert "transient failure 1" in waiting["message"]
    assert at(waiting, "scheduled_for") > at(waiting, "started_at")  # when it runs again
    done = events[-1]
    assert done["status"] == "complete"
    assert done["result"] == {"succeeded_on_try": 3}
    assert done["tries"] == 3


async def test_backoff_doubles_with_jitter(
    client: httpx.AsyncClient,
    live_url: str,
    settings: Settings,
    registry: TaskRegistry,
    tmp_path: Path,
) -> None:
    async with running(make_worker(settings, registry, retry_backoff=0.3, max_jobs=1)):
        gate = await take_the_only_slot(client, tmp_path)
        job_id = (await enqueue(client, "flaky", kwargs={"failures": 3})).json()["job_id"]
        events = await every_status_of(client, live_url, job_id, gate)
    delays: dict[int, float] = {}
    for event in events:
        if event["status"] == "retrying" and event["tries"] not in delays:
            delays[event["tries"]] = float(event["message"].split(" in ")[1].split()[0])
    assert events[-1]["status"] == "complete"
    assert set(delays) == {1, 2, 3}
    for try_number, delay in delays.items():
        ceiling = 0.3 * 2 ** (try_number - 1)
        assert ceiling / 2 <= delay <= ceiling + 0.05, delays


async def test_retrying_past_max_tries_fails_with_the_reason(
    client: httpx.AsyncClient, settings: Settings, registry: TaskRegistry
) -> None:
    async with running(make_worker(settings, registry)):
        job_id = (await enqueue(client, "flaky", kwargs={"failures": 10, "defer": 0.05})).json()[
            "job_id"
        ]
        done = await wait_for(client, job_id, timeout=20)
    assert done["status"] == "failed"
    assert done["tries"] == 4  # the task declares max_tries=4
    assert done["error"] == {
        "type": "GaveUp",
        "message": "gave up after 4 tries: transient failure 4",
    }


async def test_job_out_of_tries_after_crashes_fails_saying_so(
    client: httpx.AsyncClient, worker_handle: WorkerHandle, redis_db: sync_redis.Redis
) -> None:
    job_id = (await enqueue(client, "add", kwargs={"a": 1})).json()["job_id"]
    redis_db.set(f"arq:retry:{job_id}", 3)  # three earlier runs died with their workers
    await worker_handle.start()
    done = await wait_for(client, job_id)
    assert done["status"] == "failed"
    assert done["tries"] == 3
    assert done["error"]["type"] == "MaxTriesExceeded"
    assert done["error"]["message"].startswith("gave up after 3 tries")


# -- dead letters -----------------------------------------------------------------------------


async def test_failed_jobs_are_listed_and_can_be_retried(
    client: httpx.AsyncClient, worker: Any, tmp_path: Path
) -> None:
    flag = tmp_path / "flag"
    job_id = (await enqueue(client, "needs_flag", kwargs={"flag": str(flag)})).json()["job_id"]
    ok_id = (await enqueue(client, "add", kwargs={"a": 1})).json()["job_id"]
    bob_failed = (await enqueue(client, "fail", owner="bob")).json()["job_id"]
    first = await wait_for(client, job_id)
    await wait_for(client, ok_id)
    await wait_for(client, bob_failed, owner="bob")
    assert first["status"] == "failed"

    failed = (await client.get(f"{API}/failed", headers=headers("alice"))).json()
    assert [item["job_id"] for item in failed["items"]] == [job_id]
    assert failed["items"][0]["error"]["type"] == "FileNotFoundError"
    assert failed["items"][0]["tries"] == 1
    everyone = (await client.get(f"{API}/failed", headers=headers("root"))).json()
    assert {item["job_id"] for item in everyone["items"]} == {job_id, bob_failed}

    conflict = await client.post(f"{API}/retry/{ok_id}", headers=headers("alice"))
    assert conflict.status_code == 409
    assert (await client.post(f"{API}/retry/{job_id}", headers=headers("bob"))).status_code == 404

    flag.touch()  # the cause is fixed
    retried = await client.post(f"{API}/retry/{job_id}", headers=headers("alice"))
    assert retried.status_code == 202
    assert retried.json()["status"] in ("queued", "in_progress", "complete")
    done = await wait_for(client, job_id)
    assert done["status"] == "complete"
    assert done["result"] == "flag found"
    assert done["tries"] == 1
    assert len(done["attempts"]) == 1
    assert done["attempts"][0]["status"] == "failed"
    assert done["attempts"][0]["error"]["type"] == "FileNotFoundError"
    assert done["attempts"][0]["retried_by"] == "alice"
    failed = (await client.get(f"{API}/failed", headers=headers("alice"))).json()
    assert failed["items"] == []


async def test_aborted_job_can_be_retried(
    client: httpx.AsyncClient, worker_handle: WorkerHandle
) -> None:
    job_id = (await enqueue(client, "add", kwargs={"a": 5})).json()["job_id"]
    await client.delete(f"{API}/abort/{job_id}", headers=headers("alice"))
    await worker_handle.start()
    retried = await client.post(f"{API}/retry/{job_id}", headers=headers("alice"))
    assert retried.status_code == 202
    done = await wait_for(client, job_id)
    assert (done["status"], done["result"]) == ("complete", {"sum": 5})
    assert done["attempts"][0]["status"] == "aborted"


# -- abort marks ------------------------------------------------------------------------------


async def test_stale_abort_mark_does_not_abort_a_new_job_with_that_id(
    client: httpx.AsyncClient, worker: Any, redis_db: sync_redis.Redis
) -> None:
    reused = owner_job_id("alice", "reused-id")  # where alice's "reused-id" is stored
    redis_db.zadd("arq:abort", {reused: 1})  # left over by an earlier job (arq #485)
    job_id = (await enqueue(client, "add", kwargs={"a": 1}, job_id="reused-id")).json()["job_id"]
    assert job_id == reused
    done = await wait_for(client, job_id)
    assert done["status"] == "complete"
    assert redis_db.zscore("arq:abort", reused) is None


async def test_abort_of_running_job_records_who_and_when_and_leaves_no_mark(
    client: httpx.AsyncClient, worker: Any, redis_db: sync_redis.Redis
) -> None:
    job_id = (await enqueue(client, "sleep", kwargs={"seconds": 30})).json()["job_id"]
    # Running, not just claimed ("in_progress" comes with the claim): it reported progress.
    while (await status(client, job_id))["message"] != "sleeping":
        await asyncio.sleep(0.02)
    body = (await client.delete(f"{API}/abort/{job_id}", headers=headers("root"))).json()
    assert body["status"] == "aborted"
    assert body["aborted_by"] == "root"
    assert body["abort_requested_at"] is not None
    assert body["error"] == {"type": "JobAborted", "message": "aborted by root"}
    assert redis_db.zscore("arq:abort", job_id) is None
    assert not redis_db.exists(f"arq:in-progress:{job_id}")
