"""The job REST API end to end: real Redis, PostgreSQL and an in-process ARQ worker."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import redis as sync_redis
from arq.worker import Worker

from src.arq.config import ArqSettings
from tests.arq.helpers import API, at, enqueue, status, wait_for
from tests.conftest import WorkerHandle, headers

# -- enqueue and run --------------------------------------------------------------------------


async def test_enqueued_job_runs_and_its_result_is_served(
    client: httpx.AsyncClient, worker: Worker
) -> None:
    response = await enqueue(client, "add", args=[2], kwargs={"b": 3})
    assert response.status_code == 202, response.text
    body = response.json()
    job_id = body["job_id"]
    assert body["function"] == "add"
    assert body["status"] == "queued"
    assert body["status_url"] == f"{API}/status/{job_id}"
    assert body["result_url"] == f"{API}/result/{job_id}"

    done = await wait_for(client, job_id)
    assert done["status"] == "complete"
    assert done["result"] == {"sum": 5}
    assert done["tries"] == 1
    assert done["progress"] == 100
    assert done["started_at"] is not None and done["finished_at"] is not None
    assert done["scheduled_for"] == done["enqueued_at"]
    assert at(done, "enqueued_at") <= at(done, "started_at") <= at(done, "finished_at")

    result = await client.get(body["result_url"], headers=headers("alice"))
    assert result.status_code == 200
    assert result.json()["success"] is True
    assert result.json()["result"] == {"sum": 5}


async def test_failed_job_reports_error_type_and_message(
    client: httpx.AsyncClient, worker: Worker
) -> None:
    job_id = (await enqueue(client, "fail", kwargs={"message": "no such group"})).json()["job_id"]
    done = await wait_for(client, job_id)
    assert done["status"] == "failed"
    assert done["error"] == {"type": "ValueError", "message": "no such group"}
    result = await client.get(f"{API}/result/{job_id}", headers=headers("alice"))
    assert result.status_code == 200
    assert result.json()["success"] is False
    assert result.json()["error"]["type"] == "ValueError"


async def test_task_timeout_fails_the_job(client: httpx.AsyncClient, worker: Worker) -> None:
    job_id = (await enqueue(client, "slow_with_timeout", kwargs={"seconds": 5})).json()["job_id"]
    done = await wait_for(client, job_id)
    assert done["status"] == "failed"
    assert done["error"]["type"] == "TimeoutError"


async def test_result_of_unfinished_job_is_202_with_status(client: httpx.AsyncClient) -> None:
    job_id = (await enqueue(client, "add", kwargs={"a": 1})).json()["job_id"]
    response = await client.get(f"{API}/result/{job_id}", headers=headers("alice"))
    assert response.status_code == 202
    assert response.json()["status"] == "queued"
    assert response.json()["job_id"] == job_id


async def test_progress_is_visible_while_running(
    client: httpx.AsyncClient, worker: Worker, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"  # the job holds at 50 % until it opens
    kwargs = {"seconds": 0, "until": str(gate)}
    job_id = (await enqueue(client, "sleep", kwargs=kwargs)).json()["job_id"]
    running = await wait_for(client, job_id, ("in_progress",))
    for _ in range(500):
        running = await status(client, job_id)
        if running["progress"] == 50:
            break
        await asyncio.sleep(0.02)
    gate.touch()
    assert running["progress"] == 50
    assert running["message"] == "sleeping"
    assert running["tries"] == 1


# -- validation -------------------------------------------------------------------------------


async def test_unknown_task_is_422_naming_known_tasks(client: httpx.AsyncClient) -> None:
    response = await enqueue(client, "rm_rf")
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "UnknownTask"
    assert "rm_rf" in body["detail"]
    assert "add" in body["known_tasks"] and "ping" in body["known_tasks"]


async def test_invalid_arguments_are_422_naming_the_field(
    client: httpx.AsyncClient, redis_db: sync_redis.Redis
) -> None:
    response = await enqueue(client, "add", kwargs={"a": "three"})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "InvalidJobArguments"
    assert body["errors"][0]["loc"][-1] == "a"
    assert "a:" in body["detail"] and "integer" in body["detail"]

    missing = await enqueue(client, "add", kwargs={})
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["loc"][-1] == "a"
    assert missing.json()["errors"][0]["type"] == "missing"

    extra_positional = await enqueue(client, "add", args=[1, 2, 3])
    assert extra_positional.status_code == 422
    assert "at most 2 positional" in extra_positional.json()["detail"]

    twice = await enqueue(client, "add", args=[1], kwargs={"a": 1})
    assert twice.status_code == 422
    assert "both positionally and as a keyword" in twice.json()["detail"]
    # Nothing reached Redis (only the test run's claim key is there).
    assert redis_db.zcard(ArqSettings().queue_name) == 0


async def test_malformed_requests_are_422(client: httpx.AsyncClient) -> None:
    cases: list[dict[str, Any]] = [
        {"function_name": "add", "kwargs": {"a": 1}, "unexpected": True},
        {"function_name": "add", "kwargs": {"a": 1}, "defer_by": -5},
        {
            "function_name": "add",
            "kwargs": {"a": 1},
            "defer_by": 1,
            "defer_until": "2030-01-01T00:00:00Z",
        },
        {"function_name": "add", "kwargs": {"a": 1}, "defer_until": "2030-01-01T00:00:00"},
        {"function_name": "add", "kwargs": {"a": 1}, "job_id": "../../etc/passwd"},
        {"function_name": "add", "kwargs": {"a": 1}, "job_id": "x" * 200},
        {"function_name": "", "kwargs": {}},
        {"kwargs": {"a": 1}},
    ]
    for body in cases:
        response = await client.post(f"{API}/enqueue", json=body, headers=headers("alice"))
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"] == "ValidationError"
        assert response.json()["errors"], body
    not_json = await client.post(
        f"{API}/enqueue",
        content=b"{not json",
        headers={**headers("alice"), "Content-Type": "application/json"},
    )
    assert not_json.status_code == 422


async def test_job_id_in_path_is_checked(client: httpx.AsyncClient) -> None:
    response = await client.get(f"{API}/status/bad%20id%3B", headers=headers("alice"))
    assert response.status_code == 422
    assert (await client.get(f"{API}/status/nope", headers=headers("alice"))).status_code == 404


# -- idempotency and batches ------------------------------------------------------------------


async def test_reused_job_id_is_409_with_status_url(client: httpx.AsyncClient) -> None:
    first = await enqueue(client, "add", kwargs={"a": 1}, job_id="order-42")
    assert first.status_code == 202
    job_id = first.json()["job_id"]
    assert job_id.endswith(":order-42")  # the client's id, in its owner's namespace
    again = await enqueue(client, "add", kwargs={"a": 2}, job_id="order-42")
    assert again.status_code == 409
    assert again.json()["status_url"] == f"{API}/status/{job_id}"
    # The first job is untouched.
    assert (await status(client, job_id))["function"] == "add"


async def test_batch_enqueues_all(client: httpx.AsyncClient, worker: Worker) -> None:
    items = [{"function_name": "add", "kwargs": {"a": i, "b": i}} for i in range(25)]
    response = await client.post(f"{API}/enqueue-batch", json=items, headers=headers("alice"))
    assert response.status_code == 202, response.text
    jobs = response.json()
    assert len(jobs) == 25
    results = [await wait_for(client, job["job_id"]) for job in jobs]
    assert [r["result"]["sum"] for r in results] == [2 * i for i in range(25)]


async def test_batch_with_one_invalid_item_enqueues_nothing(
    client: httpx.AsyncClient, redis_db: sync_redis.Redis
) -> None:
    items: list[dict[str, Any]] = [{"function_name": "add", "kwargs": {"a": i}} for i in range(5)]
    items.insert(3, {"function_name": "add", "kwargs": {"a": "x"}})
    response = await client.post(f"{API}/enqueue-batch", json=items, headers=headers("alice"))
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"][:2] == ["body", 3]
    assert redis_db.zcard(ArqSettings().queue_name) == 0
    listing = await client.get(f"{API}/jobs", headers=headers("alice"))
    assert listing.json()["total"] == 0

    unknown = [{"function_name": "add", "kwargs": {"a": 1}}, {"function_name": "nope"}]
    response = await client.post(f"{API}/enqueue-batch", json=unknown, headers=headers("alice"))
    assert response.status_code == 422
    assert "body.1" in response.json()["errors"][0]["loc"][0]


async def test_batch_with_taken_or_repeated_id_enqueues_nothing(
    client: httpx.AsyncClient, redis_db: sync_redis.Redis
) -> None:
    assert (await enqueue(client, "add", kwargs={"a": 1}, job_id="taken")).status_code == 202
    items = [
        {"function_name": "add", "kwargs": {"a": 1}, "job_id": "fresh-1"},
        {"function_name": "add", "kwargs": {"a": 1}, "job_id": "taken"},
    ]
    response = await client.post(f"{API}/enqueue-batch", json=items, headers=headers("alice"))
    assert response.status_code == 409
    repeated = [
        {"function_name": "add", "kwargs": {"a": 1}, "job_id": "twin"},
        {"function_name": "add", "kwargs": {"a": 1}, "job_id": "twin"},
    ]
    response = await client.post(f"{API}/enqueue-batch", json=repeated, headers=headers("alice"))
    assert response.status_code == 409
    assert redis_db.zcard(ArqSettings().queue_name) == 1
    assert (await client.get(f"{API}/status/fresh-1", headers=headers("alice"))).status_code == 404


async def test_batch_limits(client: httpx.AsyncClient) -> None:
    empty = await client.post(f"{API}/enqueue-batch", json=[], headers=headers("alice"))
    assert empty.status_code == 422
    too_many = [{"function_name": "add", "kwargs": {"a": 1}}] * 1001
    response = await client.post(f"{API}/enqueue-batch", json=too_many, headers=headers("alice"))
    assert response.status_code == 422
    assert "at most 1000" in response.json()["detail"]


# -- deferral ---------------------------------------------------------------------------------


async def test_deferred_job_waits_for_its_time(client: httpx.AsyncClient, worker: Worker) -> None:
    queued = (await enqueue(client, "add", kwargs={"a": 1}, defer_by=3.0)).json()
    assert queued["status"] == "deferred"
    job_id = queued["job_id"]
    first = await status(client, job_id)
    assert at(first, "scheduled_for") > at(first, "enqueued_at")
    # A job queued after it runs first: the worker has looked at the queue meanwhile.
    later = (await enqueue(client, "add", kwargs={"a": 2})).json()["job_id"]
    await wait_for(client, later, timeout=10)
    asked_at = datetime.now(UTC)
    meanwhile = await status(client, job_id)
    if asked_at < at(first, "scheduled_for"):  # (on a very busy machine the time may be up)
        assert meanwhile["status"] == "deferred"
    done = await wait_for(client, job_id, timeout=10)
    assert done["status"] == "complete"
    assert at(done, "started_at") >= at(first, "scheduled_for")


async def test_defer_until_in_the_past_runs_now(client: httpx.AsyncClient, worker: Worker) -> None:
    past = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    response = await enqueue(client, "add", kwargs={"a": 1}, defer_until=past)
    assert response.status_code == 202
    assert response.json()["status"] == "queued"
    assert (await wait_for(client, response.json()["job_id"]))["status"] == "complete"


# -- ownership --------------------------------------------------------------------------------


async def test_other_users_jobs_are_404_and_admins_see_all(client: httpx.AsyncClient) -> None:
    job_id = (await enqueue(client, "add", kwargs={"a": 1})).json()["job_id"]
    for path in (f"status/{job_id}", f"result/{job_id}"):
        response = await client.get(f"{API}/{path}", headers=headers("bob"))
        assert response.status_code == 404, path
        assert response.json() == {"error": "JobNotFound", "detail": f"job '{job_id}' not found"}
    assert (await client.delete(f"{API}/abort/{job_id}", headers=headers("bob"))).status_code == 404
    assert (await status(client, job_id))["status"] == "queued"
    assert (await status(client, job_id, owner="root"))["job_id"] == job_id


async def test_job_list_is_own_newest_first_filtered_and_paginated(
    client: httpx.AsyncClient, worker: Worker
) -> None:
    alice_ids = [(await enqueue(client, "add", kwargs={"a": i})).json()["job_id"] for i in range(5)]
    failed = (await enqueue(client, "fail")).json()["job_id"]
    bob_id = (await enqueue(client, "add", owner="bob", kwargs={"a": 1})).json()["job_id"]
    for job_id in [*alice_ids, failed]:
        await wait_for(client, job_id)
    await wait_for(client, bob_id, owner="bob")

    page = (await client.get(f"{API}/jobs", headers=headers("alice"))).json()
    assert page["total"] == 6
    assert [item["job_id"] for item in page["items"]] == [failed, *reversed(alice_ids)]
    assert all(item["owner"] == "alice" for item in page["items"])

    only_failed = (
        await client.get(f"{API}/jobs", params={"status": "failed"}, headers=headers("alice"))
    ).json()
    assert [item["job_id"] for item in only_failed["items"]] == [failed]
    by_function = (
        await client.get(f"{API}/jobs", params={"function": "add"}, headers=headers("alice"))
    ).json()
    assert by_function["total"] == 5
    second_page = (
        await client.get(f"{API}/jobs", params={"limit": 2, "offset": 2}, headers=headers("alice"))
    ).json()
    assert [item["job_id"] for item in second_page["items"]] == list(reversed(alice_ids))[1:3]

    everyone = (await client.get(f"{API}/jobs", headers=headers("root"))).json()
    assert everyone["total"] == 7
    only_bob = (
        await client.get(f"{API}/jobs", params={"owner": "bob"}, headers=headers("root"))
    ).json()
    assert [item["job_id"] for item in only_bob["items"]] == [bob_id]
    # A user's owner filter cannot widen the view.
    sneaky = (
        await client.get(f"{API}/jobs", params={"owner": "bob"}, headers=headers("alice"))
    ).json()
    assert sneaky["total"] == 6

    bad = await client.get(f"{API}/jobs", params={"status": "done"}, headers=headers("alice"))
    assert bad.status_code == 422
    bad_limit = await client.get(f"{API}/jobs", params={"limit": 0}, headers=headers("alice"))
    assert bad_limit.status_code == 422


# -- abort ------------------------------------------------------------------------------------


async def test_abort_queued_job_never_runs(
    client: httpx.AsyncClient, worker_handle: WorkerHandle
) -> None:
    job_id = (await enqueue(client, "add", kwargs={"a": 1})).json()["job_id"]
    response = await client.delete(f"{API}/abort/{job_id}", headers=headers("alice"))
    assert response.status_code == 200
    assert response.json()["status"] == "aborted"
    assert "before it started" in response.json()["error"]["message"]
    worker = await worker_handle.start()
    # A job queued after it has run: the worker has looked at the queue since the abort.
    later = (await enqueue(client, "add", kwargs={"a": 2})).json()["job_id"]
    await wait_for(client, later)
    final = await status(client, job_id)
    assert final["status"] == "aborted"
    assert final["started_at"] is None
    assert worker.jobs_complete == 1 and worker.jobs_failed == 0  # the later job only
    result = await client.get(f"{API}/result/{job_id}", headers=headers("alice"))
    assert result.status_code == 200
    assert result.json()["success"] is False
    assert result.json()["error"]["type"] == "JobAborted"


async def test_abort_deferred_job(client: httpx.AsyncClient, worker: Worker) -> None:
    # Long enough that the abort surely comes first, however loaded the machine.
    job_id = (await enqueue(client, "add", kwargs={"a": 1}, defer_by=3)).json()["job_id"]
    response = await client.delete(f"{API}/abort/{job_id}", headers=headers("alice"))
    assert response.json()["status"] == "aborted"
    # Past its run time, with a later job done: the worker has looked at the queue since.
    later = (await enqueue(client, "add", kwargs={"a": 2}, defer_by=3.1)).json()["job_id"]
    await wait_for(client, later)
    assert (await status(client, job_id))["status"] == "aborted"
    assert worker.jobs_complete == 1  # the later job only


async def test_abort_running_job_cancels_it_within_2s(
    client: httpx.AsyncClient, worker: Worker
) -> None:
    job_id = (await enqueue(client, "sleep", kwargs={"seconds": 30})).json()["job_id"]
    await wait_for(client, job_id, ("in_progress",))
    started = asyncio.get_running_loop().time()
    response = await client.delete(f"{API}/abort/{job_id}", headers=headers("alice"))
    elapsed = asyncio.get_running_loop().time() - started
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "aborted", body
    assert elapsed < 2.0
    assert body["error"] == {"type": "JobAborted", "message": "aborted by alice"}
    again = await client.delete(f"{API}/abort/{job_id}", headers=headers("alice"))
    assert again.status_code == 409


async def test_abort_finished_job_is_409(client: httpx.AsyncClient, worker: Worker) -> None:
    job_id = (await enqueue(client, "add", kwargs={"a": 1})).json()["job_id"]
    await wait_for(client, job_id)
    response = await client.delete(f"{API}/abort/{job_id}", headers=headers("alice"))
    assert response.status_code == 409
    assert response.json()["error"] == "JobConflict"
    assert (await status(client, job_id))["status"] == "complete"


async def test_admin_can_abort_any_job_and_is_named(client: httpx.AsyncClient) -> None:
    job_id = (await enqueue(client, "add", kwargs={"a": 1})).json()["job_id"]
    response = await client.delete(f"{API}/abort/{job_id}", headers=headers("root"))
    assert response.status_code == 200
    assert response.json()["error"]["message"] == "aborted by root before it started"


# -- history outlives Redis' result -----------------------------------------------------------


async def test_result_is_served_from_history_after_redis_expires_it(
    client: httpx.AsyncClient, worker: Worker, redis_db: sync_redis.Redis
) -> None:
    job_id = (await enqueue(client, "add", kwargs={"a": 20, "b": 22})).json()["job_id"]
    await wait_for(client, job_id)
    assert redis_db.exists(f"arq:result:{job_id}")
    redis_db.delete(f"arq:result:{job_id}")  # what keep_result's expiry does
    done = await status(client, job_id)
    assert done["status"] == "complete"
    assert done["result"] == {"sum": 42}
    result = await client.get(f"{API}/result/{job_id}", headers=headers("alice"))
    assert result.json()["result"] == {"sum": 42}


async def test_result_written_while_history_missed_it_is_repaired_on_read(
    client: httpx.AsyncClient,
    redis_db: sync_redis.Redis,
) -> None:
    """If a worker could not write the ending (database away), the next read finds it in Redis."""
    job_id = (await enqueue(client, "add", kwargs={"a": 1})).json()["job_id"]
    finished_ms = int(datetime.now(UTC).timestamp() * 1000)
    redis_db.set(
        f"arq:result:{job_id}",
        json.dumps(
            {
                "t": 1,
                "f": "add",
                "a": [],
                "k": {"a": 1},
                "et": finished_ms - 10,
                "s": True,
                "r": {"sum": 1},
                "st": finished_ms - 5,
                "ft": finished_ms,
                "q": "arq:queue",
                "id": job_id,
            }
        ),
    )
    redis_db.zrem("arq:queue", job_id)
    done = await status(client, job_id)
    assert done["status"] == "complete"
    assert done["result"] == {"sum": 1}
    redis_db.delete(f"arq:result:{job_id}")
    assert (await status(client, job_id))["status"] == "complete"


# -- queue info and health --------------------------------------------------------------------


async def test_queue_info_counts(client: httpx.AsyncClient, worker_handle: WorkerHandle) -> None:
    quick = [(await enqueue(client, "add", kwargs={"a": i})).json()["job_id"] for i in range(3)]
    quick.append((await enqueue(client, "ping")).json()["job_id"])
    await enqueue(client, "add", kwargs={"a": 1}, defer_by=600)
    info = (await client.get(f"{API}/queue/info", headers=headers("alice"))).json()
    assert info["queue_name"] == "arq:queue"
    assert info["queued"] == 4
    assert info["deferred"] == 1
    assert info["in_progress"] == 0
    assert info["by_function"] == {"add": 4, "ping": 1}
    assert info["workers"] == 0

    await worker_handle.start()
    job_id = (await enqueue(client, "sleep", kwargs={"seconds": 2})).json()["job_id"]
    failed = (await enqueue(client, "fail")).json()["job_id"]
    await wait_for(client, job_id, ("in_progress",))
    for finished in [*quick, failed]:
        await wait_for(client, finished)
    info = (await client.get(f"{API}/queue/info", headers=headers("alice"))).json()
    assert info["in_progress"] == 1
    assert info["queued"] == 0
    assert info["deferred"] == 1
    assert info["workers"] == 1
    assert info["completed_last_hour"] == 4
    assert info["failed_last_hour"] == 1
    assert info["by_function"] == {"add": 1, "sleep": 1}


async def test_health_reports_services_and_workers(
    client: httpx.AsyncClient, worker: Worker
) -> None:
    await enqueue(client, "add", kwargs={"a": 1}, defer_by=600)
    await asyncio.sleep(0.2)
    response = await client.get(f"{API}/health")
    assert response.status_code == 200
    body = response.json()
    assert body["service"] == "ARQ"
    assert body["healthy"] is True
    assert body["details"]["redis_connected"] is True
    assert body["details"]["database_connected"] is True
    assert body["details"]["workers"] == 1
    assert body["details"]["queue_info"] == {"queue_name": "arq:queue", "queued_jobs_count": 0}
    assert datetime.fromisoformat(body["timestamp"]) > datetime.now(UTC) - timedelta(minutes=1)


async def test_tasks_listing_shows_schemas_by_role(client: httpx.AsyncClient) -> None:
    user = (await client.get(f"{API}/tasks", headers=headers("alice"))).json()
    names = {task["name"] for task in user}
    assert "add" in names and "ping" in names and "admin_only" not in names
    add = next(task for task in user if task["name"] == "add")
    assert add["args_schema"]["required"] == ["a"]
    admin = (await client.get(f"{API}/tasks", headers=headers("root"))).json()
    assert "admin_only" in {task["name"] for task in admin}


async def test_openapi_documents_every_task(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    examples = spec["paths"][f"{API}/enqueue"]["post"]["requestBody"]["content"][
        "application/json"
    ]["examples"]
    assert {"add", "ping", "sleep", "fail", "admin_only"} <= set(examples)
    assert examples["ping"]["value"] == {"function_name": "ping", "kwargs": {"message": "pong"}}


async def test_unknown_routes_and_methods_use_the_error_shape(client: httpx.AsyncClient) -> None:
    missing = await client.get("/api/v1/arq/nothing-here", headers=headers("alice"))
    assert missing.status_code == 404
    assert missing.json() == {"error": "NotFound", "detail": "Not Found"}
    wrong_method = await client.put(f"{API}/enqueue", headers=headers("alice"))
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"] == "MethodNotAllowed"
