"""Task dependencies: a job waits (`waiting`, `blocked_by`) until the jobs it depends on have
completed, then runs with its own priority; a failed or aborted dependency ends it (or, with
`on_dependency_failure: "run"`, lets it run). The waiting set lives in the history: a flushed
Redis, a reconciliation pass and a process that dies between an ending and the release lose
nothing and run nothing early."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import redis as sync_redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.arq import history
from src.arq.config import ArqSettings
from src.arq.outcome import now_utc
from src.arq.reconcile import reconcile
from src.arq.schemas import JobStatus
from src.arq.service import ArqService
from src.auth.schemas import Principal, Role
from tests.arq.helpers import API, at, enqueue, status, wait_for
from tests.arq.test_worker_process import (  # noqa: F401 (start_worker: a fixture)
    StartWorker,
    start_worker,
    wait_until_up,
)
from tests.conftest import WorkerHandle, headers

ALICE = Principal(owner="alice", role=Role.USER)


async def batch(
    client: httpx.AsyncClient, jobs: list[dict[str, Any]], owner: str = "alice"
) -> httpx.Response:
    return await client.post(f"{API}/enqueue-batch", json=jobs, headers=headers(owner))


def ticks(log: Path) -> list[str]:
    return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []


def gated(log: Path, gate: Path, **extra: Any) -> dict[str, Any]:
    return {"function_name": "tick", "kwargs": {"log": str(log), "until": str(gate)}, **extra}


def tick(log: Path, **extra: Any) -> dict[str, Any]:
    return {"function_name": "tick", "kwargs": {"log": str(log)}, **extra}


async def test_a_chain_in_one_batch_runs_in_order_each_job_once(
    client: httpx.AsyncClient, worker: Any, tmp_path: Path
) -> None:
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    response = await batch(
        client,
        [
            gated(log, gate, job_id="parse"),
            tick(log, depends_on=["$0"], priority="high"),
            tick(log, depends_on=["parse", "$1"]),  # by the id given earlier in the batch, too
        ],
    )
    assert response.status_code == 202, response.text
    first, second, third = (job["job_id"] for job in response.json())
    assert [job["status"] for job in response.json()] == ["queued", "waiting", "waiting"]
    await wait_for(client, first, ("in_progress",))
    waiting = await status(client, second)
    assert waiting["status"] == "waiting"
    assert waiting["depends_on"] == waiting["blocked_by"] == [first]
    assert waiting["on_dependency_failure"] == "fail"
    assert (await status(client, third))["blocked_by"] == [first, second]
    await asyncio.sleep(0.3)  # a few polls of the worker: nothing else may start
    assert ticks(log) == [first]
    gate.touch()
    done = [await wait_for(client, job_id) for job_id in (first, second, third)]
    assert [job["status"] for job in done] == ["complete"] * 3
    assert ticks(log) == [first, second, third]
    assert at(done[1], "started_at") >= at(done[0], "finished_at")
    assert at(done[2], "started_at") >= at(done[1], "finished_at")
    assert done[1]["priority"] == "high"  # released with its own priority
    assert done[2]["blocked_by"] == [] and done[2]["depends_on"] == [first, second]


async def test_a_failed_dependency_fails_the_chain_below_it_naming_it(
    client: httpx.AsyncClient, worker: Any, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    response = await batch(
        client,
        [
            {"function_name": "fail", "kwargs": {"message": "no"}},
            tick(log, depends_on=["$0"]),
            tick(log, depends_on=["$1"]),
            tick(log, depends_on=["$0"], on_dependency_failure="run"),
        ],
    )
    failing, dependent, below, anyway = (job["job_id"] for job in response.json())
    assert (await wait_for(client, failing))["status"] == "failed"
    ended = await wait_for(client, dependent)
    assert ended["status"] == "failed"
    assert ended["error"] == {
        "type": "DependencyFailed",
        "message": f"dependency {failing} failed",
    }
    assert ended["tries"] == 0 and ended["started_at"] is None  # it never ran
    assert (await wait_for(client, below))["error"] == {
        "type": "DependencyFailed",
        "message": f"dependency {dependent} failed",
    }
    assert (await wait_for(client, anyway))["status"] == "complete"
    assert ticks(log) == [anyway]


async def test_an_aborted_dependency_and_an_aborted_waiting_job(
    client: httpx.AsyncClient, worker: Any, tmp_path: Path
) -> None:
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    response = await batch(
        client,
        [gated(log, gate), tick(log, depends_on=["$0"]), tick(log, depends_on=["$1"])],
    )
    first, second, third = (job["job_id"] for job in response.json())
    # The waiting job itself: aborted at once (it is not in Redis), its dependents fail.
    aborted = await client.delete(f"{API}/abort/{second}", headers=headers("alice"))
    assert aborted.status_code == 200, aborted.text
    assert aborted.json()["status"] == "aborted"
    assert (await wait_for(client, third))["error"] == {
        "type": "DependencyFailed",
        "message": f"dependency {second} was aborted",
    }
    gate.touch()
    assert (await wait_for(client, first))["status"] == "complete"
    await asyncio.sleep(0.3)
    assert ticks(log) == [first]  # the aborted job never ran, though its dependency completed


async def test_a_job_whose_dependencies_already_completed_is_queued_at_once(
    client: httpx.AsyncClient, worker: Any, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    done = (await enqueue(client, "tick", kwargs={"log": str(log)})).json()["job_id"]
    await wait_for(client, done)
    response = await enqueue(client, "tick", kwargs={"log": str(log)}, depends_on=[done])
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued"
    assert (await wait_for(client, response.json()["job_id"]))["status"] == "complete"


async def test_the_python_api_takes_dependencies(
    service: ArqService, worker: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    first = await service.enqueue_job("tick", log=str(log), _principal=ALICE, _job_id="one")
    second = await service.enqueue_job(
        "tick", log=str(log), _principal=ALICE, _depends_on=["one"], _on_dependency_failure="run"
    )
    body = await wait_for(client, second.job_id)
    assert body["status"] == "complete"
    assert body["depends_on"] == [first.job_id] and body["on_dependency_failure"] == "run"


async def test_dependencies_another_user_cannot_name_or_probe(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    bobs = (await enqueue(client, "tick", owner="bob", kwargs={"log": str(log)})).json()["job_id"]
    theirs = await enqueue(client, "tick", kwargs={"log": str(log)}, depends_on=[bobs])
    unknown = await enqueue(client, "tick", kwargs={"log": str(log)}, depends_on=["f" * 32])
    assert theirs.status_code == unknown.status_code == 422
    assert theirs.json()["errors"] == [
        {
            "loc": ["body", "depends_on", 0],
            "msg": "no job you may see has this id",
            "type": "unknown_dependency",
            "input": bobs,
        }
    ]
    assert unknown.json()["errors"][0]["msg"] == theirs.json()["errors"][0]["msg"]
    # An admin may depend on anyone's job.
    rooted = await enqueue(
        client, "tick", owner="root", kwargs={"log": str(log)}, depends_on=[bobs]
    )
    assert rooted.status_code == 202, rooted.text


async def test_bad_dependency_lists_are_422_naming_the_field(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    job = tick(tmp_path / "runs.log")
    cases = {
        "later": [tick(tmp_path, depends_on=["$1"]), job],
        "itself": [tick(tmp_path, depends_on=["$0"])],
        "twice": [job, tick(tmp_path, depends_on=["$0", "$0"])],
        "too many": [job, tick(tmp_path, depends_on=[f"id{n}" for n in range(101)])],
        "bad id": [job, tick(tmp_path, depends_on=["../etc"])],
        "empty": [job, tick(tmp_path, depends_on=[])],
        "policy": [job, tick(tmp_path, depends_on=["$0"], on_dependency_failure="maybe")],
    }
    for name, jobs in cases.items():
        response = await batch(client, jobs)
        assert response.status_code == 422, (name, response.text)
        locs = [error["loc"] for error in response.json()["errors"]]
        assert any("depends_on" in loc or "on_dependency_failure" in loc for loc in locs), (
            name,
            locs,
        )
    # Nothing of a refused batch was kept.
    listing = await client.get(f"{API}/jobs", headers=headers("alice"))
    assert listing.json()["total"] == 0


async def test_redis_flushed_and_a_reconciliation_never_queue_a_waiting_job(
    client: httpx.AsyncClient,
    worker_handle: WorkerHandle,
    redis_db: sync_redis.Redis,
    service: ArqService,
    arq_settings: ArqSettings,
    tmp_path: Path,
) -> None:
    log = tmp_path / "runs.log"
    response = await batch(client, [tick(log), tick(log, depends_on=["$0"])])
    first, second = (job["job_id"] for job in response.json())
    redis_db.flushdb()  # the queued job is gone from Redis; the waiting one never was there
    report = await reconcile(
        queue=service.queue,
        sessionmaker=service.sessionmaker,
        lease_seconds=0,
        grace_seconds=0,
        events=service.events,
    )
    assert report.requeued == [] and report.checked == 1  # the waiting job is not Redis's
    await asyncio.sleep(0.01)
    report = await reconcile(
        queue=service.queue,
        sessionmaker=service.sessionmaker,
        lease_seconds=0,
        grace_seconds=0,
        events=service.events,
    )
    assert report.requeued == [first]  # missing for longer than a (zero) lease: queued again
    assert (await status(client, second))["status"] == "waiting"
    await worker_handle.start()
    assert (await wait_for(client, second))["status"] == "complete"
    assert ticks(log) == [first, second]


async def test_an_ending_whose_process_died_before_releasing_is_caught_by_the_sweep(
    client: httpx.AsyncClient,
    service: ArqService,
    sessionmaker: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    log = tmp_path / "runs.log"
    response = await batch(client, [tick(log), tick(log, depends_on=["$0"])])
    first, second = (job["job_id"] for job in response.json())
    # The dependency's ending is committed, and its process dies before it settles anything.
    async with sessionmaker.begin() as session:
        assert await history.mark_finished(
            session, first, status=JobStatus.COMPLETE, at=now_utc(), result={"try": 1}
        )
    assert (await status(client, second))["status"] == "waiting"
    await service.sweep()  # what every reconciliation pass runs
    assert (await status(client, second))["status"] == "queued"
    assert await service.redis.zscore(service.settings.queue_name, second) is not None


async def test_a_retried_job_waits_for_its_dependencies_again(
    client: httpx.AsyncClient, worker: Any, tmp_path: Path
) -> None:
    flag, log = tmp_path / "flag", tmp_path / "runs.log"
    response = await batch(
        client,
        [
            {"function_name": "needs_flag", "kwargs": {"flag": str(flag)}},
            tick(log, depends_on=["$0"]),
        ],
    )
    first, second = (job["job_id"] for job in response.json())
    assert (await wait_for(client, second))["error"]["type"] == "DependencyFailed"
    retried = await client.post(f"{API}/retry/{second}", headers=headers("alice"))
    assert retried.status_code == 202, retried.text
    # Its dependency is still failed: it fails again at once, without running.
    assert retried.json()["status"] == "failed"
    assert retried.json()["error"]["type"] == "DependencyFailed"
    assert len(retried.json()["attempts"]) == 1
    flag.touch()
    for job_id in (first, second):
        again = await client.post(f"{API}/retry/{job_id}", headers=headers("alice"))
        assert again.status_code == 202, again.text
    assert (await wait_for(client, second))["status"] == "complete"
    assert ticks(log) == [second]


async def test_dependents_enqueued_while_the_dependency_ends_are_each_released_once(
    client: httpx.AsyncClient, worker: Any, tmp_path: Path
) -> None:
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    first = (await batch(client, [gated(log, gate)])).json()[0]["job_id"]
    await wait_for(client, first, ("in_progress",))

    async def dependent() -> str:
        response = await enqueue(client, "tick", kwargs={"log": str(log)}, depends_on=[first])
        assert response.status_code == 202, response.text
        job_id: str = response.json()["job_id"]
        return job_id

    early = [asyncio.create_task(dependent()) for _ in range(20)]
    await asyncio.sleep(0.01)
    gate.touch()  # the ending races the enqueues
    late = [asyncio.create_task(dependent()) for _ in range(20)]
    ids = [await task for task in [*early, *late]]
    done = [await wait_for(client, job_id, timeout=30) for job_id in ids]
    assert {job["status"] for job in done} == {"complete"}
    assert sorted(ticks(log)) == sorted([first, *ids])  # each ran, and exactly once


async def test_queue_info_counts_the_waiting_jobs_apart(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    await batch(client, [tick(log), tick(log, depends_on=["$0"]), tick(log, depends_on=["$0"])])
    info = (await client.get(f"{API}/queue/info", headers=headers("alice"))).json()
    assert (info["queued"], info["waiting"]) == (1, 2)
    assert info["by_function"] == {"tick": 3}


async def test_a_chain_goes_on_after_the_worker_running_it_is_killed(
    client: httpx.AsyncClient,
    start_worker: StartWorker,  # noqa: F811
    redis_db: sync_redis.Redis,
    tmp_path: Path,
) -> None:
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    response = await batch(client, [gated(log, gate), tick(log, depends_on=["$0"])])
    first, second = (job["job_id"] for job in response.json())
    doomed = start_worker()
    await wait_for(client, first, ("in_progress",), timeout=30)
    survivor = start_worker()
    await wait_until_up(redis_db, survivor)  # idle: the running job is leased to the doomed one
    doomed.kill()  # SIGKILL: no ending, no release; the lease lapses
    await asyncio.to_thread(doomed.wait, 20)
    assert (await status(client, second))["status"] == "waiting"
    gate.touch()
    done = await wait_for(client, second, timeout=60)
    assert done["status"] == "complete" and done["tries"] == 1
    assert ticks(log) == [first, first, second]  # the first ran again, then the second, once
