"""The guarantees under attack and faults: schedules, ids, leases, endings, priorities, limits.

Each test performs the attack or the fault against the real Redis, PostgreSQL and workers.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as sync_redis
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.arq import history
from src.arq.config import ArqSettings
from src.arq.exceptions import InvalidJobArguments, RateLimited, TaskForbidden
from src.arq.pool import create_redis
from src.arq.queue import JobQueue
from src.arq.reconcile import reconcile
from src.arq.registry import TaskRegistry
from src.arq.schemas import EnqueueRequest, Priority
from src.arq.service import ArqService
from src.arq.worker import worker_options
from src.auth.schemas import Principal, Role
from src.config import Settings
from src.exceptions import ServiceUnavailable
from tests.arq.helpers import API, enqueue, status, wait_for
from tests.arq.test_worker_process import worker_env
from tests.conftest import WorkerHandle, headers

ARQ = str(Path(sys.executable).with_name("arq"))
ALICE = Principal(owner="alice", role=Role.USER)
BOB = Principal(owner="bob", role=Role.USER)


def make_settings(**overrides: Any) -> ArqSettings:
    values: dict[str, Any] = {"poll_delay": 0.05, "job_timeout": 60}
    values.update(overrides)
    return ArqSettings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
async def handles() -> AsyncIterator[Callable[[dict[str, Any]], WorkerHandle]]:
    made: list[WorkerHandle] = []

    def make(options: dict[str, Any]) -> WorkerHandle:
        made.append(WorkerHandle(options))
        return made[-1]

    yield make
    for handle in made:
        await handle.stop()


# -- 2. ids: the system's are out of reach, a client's are per owner ---------------------------


async def test_a_client_cannot_take_a_schedules_or_webhooks_id(client: httpx.AsyncClient) -> None:
    slot = datetime.now(UTC).replace(hour=2, minute=30, second=0, microsecond=123_000)
    for job_id in (f"cron:backup_database:{int(slot.timestamp() * 1000)}", "notify-0123abcd"):
        response = await enqueue(
            client, "ping", job_id=job_id, defer_until=(slot + timedelta(days=1)).isoformat()
        )
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["loc"][-1] == "job_id"
        assert "reserved" in response.json()["detail"]


async def test_a_clients_job_id_is_idempotent_per_owner(client: httpx.AsyncClient) -> None:
    alice = await enqueue(client, "add", kwargs={"a": 1}, job_id="order-42")
    assert alice.status_code == 202
    # Bob's "order-42" is his own: he learns nothing about Alice's, and cannot block her.
    bob = await enqueue(client, "add", owner="bob", kwargs={"a": 2}, job_id="order-42")
    assert bob.status_code == 202, bob.text
    assert bob.json()["job_id"] != alice.json()["job_id"]
    again = await enqueue(client, "add", kwargs={"a": 1}, job_id="order-42")
    assert again.status_code == 409
    assert again.json()["status_url"] == alice.json()["status_url"]
    assert (await status(client, alice.json()["job_id"]))["result"] is None
    other = await client.get(alice.json()["status_url"], headers=headers("bob"))
    assert other.status_code == 404


async def test_a_client_reaches_its_job_by_the_id_it_chose(client: httpx.AsyncClient) -> None:
    """The README's flow: enqueue with "job_id": "ping-1", then status/result/abort/retry by
    "ping-1". Each owner's "ping-1" is their own; nobody reaches another's by that name."""
    alice = (await enqueue(client, "add", kwargs={"a": 1}, job_id="ping-1", defer_by=3600)).json()
    bob = (await enqueue(client, "add", owner="bob", kwargs={"a": 2}, job_id="ping-1")).json()
    assert alice["job_id"] != bob["job_id"]

    mine = await client.get(f"{API}/status/ping-1", headers=headers("alice"))
    assert mine.status_code == 200 and mine.json()["job_id"] == alice["job_id"]
    theirs = await client.get(f"{API}/status/ping-1", headers=headers("bob"))
    assert theirs.json()["job_id"] == bob["job_id"]
    assert (await client.get(f"{API}/status/ping-1", headers=headers("root"))).status_code == 404
    # Someone else's full id is not reachable either, nor is it guessable into one's own.
    stolen = await client.get(f"{API}/status/{alice['job_id']}", headers=headers("bob"))
    assert stolen.status_code == 404

    aborted = await client.delete(f"{API}/abort/ping-1", headers=headers("alice"))
    assert aborted.status_code == 200 and aborted.json()["status"] == "aborted"
    assert (await client.get(f"{API}/result/ping-1", headers=headers("alice"))).status_code == 200
    retried = await client.post(f"{API}/retry/ping-1", headers=headers("alice"))
    assert retried.status_code == 202 and retried.json()["job_id"] == alice["job_id"]
    # Bob's job was never touched by Alice's abort.
    assert (await status(client, bob["job_id"], owner="bob"))["status"] != "aborted"


async def test_a_schedule_whose_slot_is_taken_logs_it_and_still_runs(
    client: httpx.AsyncClient,
    settings: Settings,
    registry: TaskRegistry,
    redis_db: sync_redis.Redis,
    handles: Callable[[dict[str, Any]], WorkerHandle],
    caplog: pytest.LogCaptureFixture,
) -> None:
    handle = handles(
        worker_options(registry=registry, settings=settings, arq_settings=make_settings())
    )
    worker = await handle.start()
    while "arq_service" not in worker.ctx:
        await asyncio.sleep(0.01)
    tick = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    slot = f"cron:update_statistics:{int(tick.timestamp() * 1000)}"
    # Squatted straight in Redis, past the API (as ARQ's cron would have been silenced).
    redis_db.set(f"arq:job:{slot}", b'{"f": "ping"}', px=600_000)
    (job,) = [c for c in worker.cron_jobs if c.name == "cron:update_statistics"]
    job.next_run = tick
    with caplog.at_level(logging.WARNING, logger="src.arq.service"):
        await worker.run_cron(tick - timedelta(seconds=0.5), 0.5)
    assert any(slot in record.getMessage() for record in caplog.records)
    listed = await client.get(
        f"{API}/jobs", params={"function": "update_statistics"}, headers=headers("root")
    )
    (run,) = listed.json()["items"]
    assert run["job_id"].startswith(slot + ":")
    done = await wait_for(client, run["job_id"], owner="root", timeout=30)
    assert done["status"] == "complete", done


# -- 3. a job never runs twice at the same time ------------------------------------------------


@pytest.fixture
async def worker_processes(settings: Settings, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Worker processes started as operators start them (`arq`), with extra settings."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(**env: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [ARQ, "tests.worker_settings.WorkerSettings"],
            cwd=tmp_path,  # not the repository: a developer's ./.env must not reach it
            env={**worker_env(settings), **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(10)


async def test_a_job_stalling_its_loop_for_three_leases_runs_once(
    client: httpx.AsyncClient, worker_processes: Callable[..., Any], tmp_path: Path
) -> None:
    """Two workers with a 2 s lease; the job holds its worker's loop for 6 s."""
    log = tmp_path / "runs.log"
    env = {"ARQ_LEASE": "2", "ARQ_RECONCILE_INTERVAL": "0.5"}
    worker_processes(**env)
    worker_processes(**env)
    response = await enqueue(client, "block_loop", kwargs={"log": str(log), "seconds": 6})
    job_id = response.json()["job_id"]
    done = await wait_for(client, job_id, timeout=60)
    assert done["status"] == "complete", done
    # The other worker has been polling all along; give a second copy every chance to show.
    await asyncio.sleep(2.5)
    lines = [line.split() for line in log.read_text().splitlines()]
    assert [line[0] for line in lines] == ["start", "end"], lines
    assert (await status(client, job_id))["tries"] == 1


def test_a_poll_delay_as_long_as_the_lease_is_refused() -> None:
    with pytest.raises(ValidationError, match="ARQ_LEASE"):
        ArqSettings(_env_file=None, poll_delay=15, lease=15)  # type: ignore[call-arg]


# -- 4. a finished job never runs again -------------------------------------------------------


async def test_an_ending_the_history_misses_past_keep_result_is_not_run_again(
    client: httpx.AsyncClient,
    settings: Settings,
    registry: TaskRegistry,
    sessionmaker: async_sessionmaker[AsyncSession],
    redis_db: sync_redis.Redis,
    handles: Callable[[dict[str, Any]], WorkerHandle],
    tmp_path: Path,
) -> None:
    arq_settings = make_settings(keep_result=1, lease=2, reconcile_interval=0.5)
    handle = handles(
        worker_options(registry=registry, settings=settings, arq_settings=arq_settings)
    )
    await handle.start()
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    job_id = (await enqueue(client, "tick", kwargs={"log": str(log), "until": str(gate)})).json()[
        "job_id"
    ]
    await wait_for(client, job_id, ("in_progress",))
    async with sessionmaker.begin() as session:  # the history cannot be written for a while
        await session.execute(text("ALTER TABLE arq_jobs RENAME TO arq_jobs_away"))
    try:
        gate.touch()
        deadline = time.monotonic() + 20
        while redis_db.get(f"arq:result:{job_id}") is None:  # the job has ended in Redis
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await asyncio.sleep(3.5)  # past keep_result and a lease, reconciliations failing
    finally:
        async with sessionmaker.begin() as session:
            await session.execute(text("ALTER TABLE arq_jobs_away RENAME TO arq_jobs"))
    done = await wait_for(client, job_id, timeout=20)
    assert done["status"] == "complete", done
    assert done["tries"] == 1
    assert log.read_text().splitlines() == [f"{job_id} 1"]
    ttl = redis_db.pttl(f"arq:result:{job_id}")
    assert ttl > 0  # recorded now: Redis' copy expires again (keep_result)


# -- 6. priorities per role, fair share between owners -----------------------------------------


async def test_users_may_not_take_the_front_of_the_queue(client: httpx.AsyncClient) -> None:
    refused = await enqueue(client, "add", kwargs={"a": 1}, priority="critical")
    assert refused.status_code == 403
    assert "ARQ_USER_MAX_PRIORITY" in refused.json()["detail"]
    batch = [
        {"function_name": "add", "kwargs": {"a": 1}},
        {"function_name": "add", "kwargs": {"a": 2}, "priority": "critical"},
    ]
    response = await client.post(f"{API}/enqueue-batch", json=batch, headers=headers("alice"))
    assert response.status_code == 403
    assert (await enqueue(client, "add", kwargs={"a": 1}, priority="high")).status_code == 202
    admin = await enqueue(client, "add", owner="root", kwargs={"a": 1}, priority="critical")
    assert admin.status_code == 202


async def test_one_owners_flood_does_not_hold_back_anothers_job(
    settings: Settings,
    registry: TaskRegistry,
    redis: Any,
    sessionmaker: async_sessionmaker[AsyncSession],
    handles: Callable[[dict[str, Any]], WorkerHandle],
) -> None:
    arq_settings = make_settings(max_jobs=1, enqueue_rate_limit=0)
    service = ArqService(
        redis=redis, sessionmaker=sessionmaker, registry=registry, settings=arq_settings
    )
    started = time.time()
    for chunk in range(2):
        requests = [
            EnqueueRequest(function_name="add", kwargs={"a": chunk * 1000 + i}) for i in range(1000)
        ]
        await service.enqueue_batch(requests, principal=ALICE)
    flood_seconds = time.time() - started
    (bobs,) = await service.enqueue_batch(
        [EnqueueRequest(function_name="add", kwargs={"a": -1})], principal=BOB
    )
    await handles(
        worker_options(registry=registry, settings=settings, arq_settings=arq_settings)
    ).start()
    deadline = time.monotonic() + 60
    while (await service.get_job_status(bobs.job_id)).status != "complete":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    async with sessionmaker() as session:
        ahead = await session.scalar(
            text(
                "SELECT count(*) FROM arq_jobs WHERE owner = 'alice' AND started_at < "
                "(SELECT started_at FROM arq_jobs WHERE job_id = :bob)"
            ),
            {"bob": bobs.job_id},
        )
    # Alice's k-th job sorts k x step later: Bob's job waits only for the part of her flood
    # queued before it in virtual time (the time the flood took to queue), not all 2 000.
    allowed = int(flood_seconds / arq_settings.fairness_step) + 2
    assert ahead is not None
    assert ahead <= min(allowed, 100), (ahead, flood_seconds)


async def test_fair_share_keeps_one_owners_jobs_in_order(
    service: ArqService, redis: Any, arq_settings: ArqSettings
) -> None:
    queue = JobQueue.for_settings(redis, arq_settings)
    ids = [
        (
            await service.enqueue(
                EnqueueRequest(function_name="add", kwargs={"a": i}), principal=ALICE
            )
        ).job_id
        for i in range(30)
    ]
    scores = [await redis.zscore(arq_settings.queue_name, job_id) for job_id in ids]
    assert scores == sorted(scores)
    assert all(score <= time.time() * 1000 for score in scores)  # all due at once
    found = await queue.poll(30, lease_ms=2000, now_ms=int(time.time() * 1000))
    assert [claim.job_id for claim in found.claims] == ids


# -- 7. roles are checked when a job is retried ------------------------------------------------


async def test_a_demoted_admin_cannot_retry_an_admin_task(
    client: httpx.AsyncClient, service: ArqService
) -> None:
    was_admin = Principal(owner="alice", role=Role.ADMIN)
    job = await service.enqueue(
        EnqueueRequest(function_name="admin_only", defer_by=3600),
        principal=was_admin,
    )
    await service.abort_job(job.job_id, principal=was_admin)
    response = await client.post(f"{API}/retry/{job.job_id}", headers=headers("alice"))
    assert response.status_code == 403, response.text
    assert (await status(client, job.job_id))["status"] == "aborted"


# -- 9. smaller holes ----------------------------------------------------------------------------


async def test_a_secret_with_a_quote_is_masked_in_the_workers_log(
    client: httpx.AsyncClient, worker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "it's-a-s3cr3t'-with=quotes"
    with caplog.at_level(logging.INFO, logger="arq.worker"):
        response = await enqueue(
            client,
            "send_notification",
            kwargs={"url": "http://127.0.0.1:9/hook", "secret": secret, "payload": {"a": 1}},
        )
        assert response.status_code == 202, response.text
        await wait_for(client, response.json()["job_id"], timeout=30)
    lines = [record.getMessage() for record in caplog.records if record.name == "arq.worker"]
    assert any("send_notification" in line for line in lines)
    assert not any("s3cr3t" in line for line in lines), lines


async def test_a_retry_that_cannot_clear_the_old_ending_changes_nothing(
    client: httpx.AsyncClient,
    worker: Any,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    registry: TaskRegistry,
    arq_settings: ArqSettings,
) -> None:
    job_id = (await enqueue(client, "fail")).json()["job_id"]
    assert (await wait_for(client, job_id))["status"] == "failed"
    dead = create_redis("redis://127.0.0.1:1/0", queue_name=arq_settings.queue_name, timeout=0.5)
    cut_off = ArqService(
        redis=dead, sessionmaker=sessionmaker, registry=registry, settings=arq_settings
    )
    try:
        with pytest.raises(ServiceUnavailable):
            await cut_off.retry_job(job_id, principal=ALICE)
    finally:
        await dead.aclose(close_connection_pool=True)
    after = await status(client, job_id)
    assert (after["status"], after["attempts"]) == ("failed", [])
    # With Redis back, the retry works and the old ending never comes back over it.
    retried = await client.post(f"{API}/retry/{job_id}", headers=headers("alice"))
    assert retried.status_code == 202
    assert retried.json()["status"] in ("queued", "in_progress", "failed")
    again = await wait_for(client, job_id)
    assert len(again["attempts"]) == 1


async def test_a_failed_job_keeps_no_retrying_message(
    client: httpx.AsyncClient, worker: Any
) -> None:
    job_id = (await enqueue(client, "flaky", kwargs={"failures": 10, "defer": 0.05})).json()[
        "job_id"
    ]
    done = await wait_for(client, job_id, timeout=30)
    assert done["status"] == "failed"
    assert done["error"]["type"] == "GaveUp"
    assert done["message"] is None


async def test_a_batch_never_exceeds_what_the_rate_limit_lets_through(
    client: httpx.AsyncClient,
) -> None:
    batch = [{"function_name": "add", "kwargs": {"a": i}} for i in range(601)]
    refused = await client.post(f"{API}/enqueue-batch", json=batch, headers=headers("alice"))
    assert refused.status_code == 422
    assert "ARQ_ENQUEUE_RATE_LIMIT" in refused.json()["detail"]
    accepted = await client.post(f"{API}/enqueue-batch", json=batch[:600], headers=headers("alice"))
    assert accepted.status_code == 202


async def test_the_rate_limit_holds_while_redis_is_unreachable(
    sessionmaker: async_sessionmaker[AsyncSession], registry: TaskRegistry
) -> None:
    settings = make_settings(enqueue_rate_limit=3)
    dead = create_redis("redis://127.0.0.1:1/0", queue_name=settings.queue_name, timeout=0.5)
    service = ArqService(
        redis=dead, sessionmaker=sessionmaker, registry=registry, settings=settings
    )
    try:
        for i in range(3):  # accepted: they wait in the history for Redis
            await service.enqueue(
                EnqueueRequest(function_name="add", kwargs={"a": i}), principal=ALICE
            )
        with pytest.raises(RateLimited):
            await service.enqueue(
                EnqueueRequest(function_name="add", kwargs={"a": 9}), principal=ALICE
            )
        await service.enqueue(EnqueueRequest(function_name="add", kwargs={"a": 1}), principal=BOB)
    finally:
        await dead.aclose(close_connection_pool=True)


async def test_the_rate_limit_counts_clients_not_the_applications_own_code(
    sessionmaker: async_sessionmaker[AsyncSession], registry: TaskRegistry, redis: Any
) -> None:
    """The Python API's system principal (scripts, schedules, follow-ups) is not a client: it
    is never charged, and uses nothing of a client's minute."""
    settings = make_settings(enqueue_rate_limit=3)
    service = ArqService(
        redis=redis, sessionmaker=sessionmaker, registry=registry, settings=settings
    )
    for i in range(10):
        await service.enqueue_job("add", a=i)
    for i in range(3):
        await service.enqueue(EnqueueRequest(function_name="add", kwargs={"a": i}), principal=ALICE)
    with pytest.raises(RateLimited):
        await service.enqueue(EnqueueRequest(function_name="add", kwargs={"a": 9}), principal=ALICE)


async def test_reconciliation_skips_and_fails_a_row_it_cannot_queue(
    service: ArqService,
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Any,
    arq_settings: ArqSettings,
) -> None:
    good = await service.enqueue(
        EnqueueRequest(function_name="add", kwargs={"a": 1}), principal=ALICE
    )
    old = datetime.now(UTC) - timedelta(minutes=5)
    async with sessionmaker.begin() as session:
        await history.insert_new(
            session,
            [
                {
                    "job_id": "broken-1",
                    "function": "add",
                    "queue_name": arq_settings.queue_name,
                    "args": {"a": 2**70},  # written before ranges were checked at the edge
                    "owner": "alice",
                    "priority": "normal",
                    "status": "queued",
                    "progress": 0,
                    "tries": 0,
                    "enqueued_at": old,
                    "scheduled_for": old,
                }
            ],
        )
        await session.execute(text("UPDATE arq_jobs SET enqueued_at = :old"), {"old": old})
    # Both are lost from Redis.
    await redis.delete(arq_settings.queue_name, f"arq:job:{good.job_id}")
    queue = JobQueue.for_settings(redis, arq_settings)
    await reconcile(queue=queue, sessionmaker=sessionmaker, lease_seconds=0.0)
    await asyncio.sleep(0.01)  # "missing for longer than a lease" (of 0 s)
    report = await reconcile(queue=queue, sessionmaker=sessionmaker, lease_seconds=0.0)
    assert good.job_id in report.requeued or await redis.zscore(
        arq_settings.queue_name, good.job_id
    )
    broken = await service.get_job_status("broken-1")
    assert broken.status == "failed"
    assert broken.error is not None and broken.error.type == "InvalidJob"


async def test_text_the_history_cannot_store_is_a_422_naming_the_field(
    client: httpx.AsyncClient,
) -> None:
    response = await enqueue(client, "ping", kwargs={"message": "a\u0000b"})
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"][-1] == "message"
    nested = await enqueue(
        client,
        "send_notification",
        kwargs={"url": "https://example.com/hook", "payload": {"k\u0000": 1}},
    )
    assert nested.status_code == 422, nested.text


async def test_python_api_refuses_reserved_ids_and_user_priorities(service: ArqService) -> None:
    with pytest.raises(InvalidJobArguments):
        await service.enqueue_job("add", a=1, _job_id="cron:update_statistics:1")
    with pytest.raises(TaskForbidden):
        await service.enqueue_job("add", a=1, _priority=Priority.CRITICAL, _principal=ALICE)
