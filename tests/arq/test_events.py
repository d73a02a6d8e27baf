"""Job lifecycle events: what the service and the workers publish, in this process and on Redis."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
from arq.connections import ArqRedis
from arq.jobs import serialize_result
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.arq import keys
from src.arq.config import ArqSettings
from src.arq.events import EventKind, JobEvent
from src.arq.exceptions import InvalidJobArguments
from src.arq.models import JobRecord
from src.arq.outcome import ms_to_datetime, now_ms
from src.arq.queue import JobQueue
from src.arq.reconcile import reconcile
from src.arq.recording import HistoryWriter
from src.arq.registry import TaskRegistry
from src.arq.schemas import JobStatus
from src.arq.serialization import serialize
from src.arq.service import ArqService
from src.config import Settings
from tests.arq.helpers import API, enqueue
from tests.conftest import WorkerHandle, headers
from tests.tasks import registry as app_and_test_registry
from tests.tasks import test_registry

pytestmark = pytest.mark.usefixtures("redis_db")


class Recorder:
    """A subscriber installed on every job service built from the registry."""

    def __init__(self) -> None:
        self.events: list[JobEvent] = []
        self.services: list[ArqService] = []

    def install(self, jobs: ArqService) -> None:
        self.services.append(jobs)

        async def record(events: Sequence[JobEvent]) -> None:
            self.events.extend(events)

        jobs.events.subscribe(record)

    def of(self, job_id: str) -> list[JobEvent]:
        return [event for event in self.events if event.job_id == job_id]

    async def wait(self, job_id: str, kind: EventKind, timeout: float = 10.0) -> JobEvent:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.of(job_id):
                if event.kind is kind:
                    return event
            await asyncio.sleep(0.02)
        raise AssertionError(f"no {kind} event for {job_id}: {self.of(job_id)}")


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def registry(recorder: Recorder) -> TaskRegistry:
    hooked = TaskRegistry()
    hooked.on_service(recorder.install)
    return app_and_test_registry.merged(hooked)


@pytest.fixture
async def channel(redis: ArqRedis) -> AsyncIterator[list[JobEvent]]:
    """Every event published on Redis while the test runs, as another process would see it."""
    received: list[JobEvent] = []
    pubsub = redis.pubsub()
    await pubsub.psubscribe(keys.job_events("*"))
    # Subscribed for sure (the server confirmed) before the test publishes anything.
    confirmed = None
    while confirmed is None or confirmed["type"] != "psubscribe":
        confirmed = await pubsub.get_message(timeout=5)

    async def listen() -> None:
        async for message in pubsub.listen():
            if message["type"] != "pmessage":
                continue
            try:
                received.append(JobEvent.from_json(message["data"]))
            except ValueError:
                # Pub/sub spans Redis databases: another run on this server (an older
                # version, say) may publish on the same channels. Not an event: not ours.
                continue

    task = asyncio.create_task(listen())
    yield received
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await pubsub.aclose()  # type: ignore[no-untyped-call]


async def until(predicate: Any, seen: Any = None, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out; seen: {seen}"
        await asyncio.sleep(0.02)


def add_result(job_id: str, a: int, b: int, *, job_try: int, queue_name: str) -> bytes:
    """ARQ's stored ending of a successful `add` job (as a worker writes it)."""
    now = now_ms()
    return serialize_result(
        "add",
        (),
        {"a": a, "b": b},
        job_try,
        now,
        True,
        {"sum": a + b},
        now,
        now,
        f"{job_id}:add",
        queue_name,
        job_id=job_id,
        serializer=serialize,
    )


async def test_a_job_s_life_reaches_other_processes_in_order(
    client: httpx.AsyncClient, worker: Any, channel: list[JobEvent], recorder: Recorder
) -> None:
    response = await enqueue(client, "add", kwargs={"a": 2, "b": 3})
    job_id = response.json()["job_id"]
    # No status reads meanwhile: a read that finds the ending first records (and announces)
    # it from the API process, and events from two processes have no order between them.
    await until(lambda: any(e.job_id == job_id and e.ends for e in channel), channel)

    mine = [event for event in channel if event.job_id == job_id]
    assert [event.kind for event in mine] == [EventKind.STARTED, EventKind.FINISHED]
    started, finished = mine
    assert (started.function, started.owner, started.job_try) == ("add", "alice", 1)
    assert finished.status is JobStatus.COMPLETE
    assert (finished.function, finished.owner, finished.job_try) == ("add", "alice", 1)
    assert finished.duration_seconds is not None and finished.duration_seconds >= 0
    assert finished.error_type is None and not finished.notify
    # The API process' own subscribers saw the enqueue (which is not sent to Redis).
    enqueued = await recorder.wait(job_id, EventKind.ENQUEUED)
    assert (enqueued.function, enqueued.owner, enqueued.status) == ("add", "alice", "queued")


async def test_progress_retries_and_failures_are_published(
    client: httpx.AsyncClient, worker: Any, channel: list[JobEvent]
) -> None:
    flaky = (await enqueue(client, "flaky", kwargs={"failures": 1, "defer": 0.05})).json()
    failing = (await enqueue(client, "fail", kwargs={"message": "boom"})).json()
    await until(
        lambda: (
            sum(e.ends for e in channel if e.job_id in (flaky["job_id"], failing["job_id"])) == 2
        ),
        channel,
    )

    kinds = [e.kind for e in channel if e.job_id == flaky["job_id"]]
    assert kinds[:3] == [EventKind.STARTED, EventKind.PROGRESS, EventKind.RETRYING]
    assert kinds[-2:] == [EventKind.STARTED, EventKind.FINISHED]
    mine = [e for e in channel if e.job_id == flaky["job_id"]]
    retrying = next(e for e in mine if e.kind is EventKind.RETRYING)
    assert retrying.job_try == 1
    note = next(e for e in mine if e.kind is EventKind.PROGRESS)
    assert note.function == "flaky" and "retrying" in (note.message or "")
    (failed,) = [e for e in channel if e.job_id == failing["job_id"] and e.ends]
    assert failed.status is JobStatus.FAILED and failed.error_type


async def test_an_abort_is_published_once(
    client: httpx.AsyncClient, channel: list[JobEvent], recorder: Recorder
) -> None:
    job_id = (await enqueue(client, "add", kwargs={"a": 1}, defer_by=3600)).json()["job_id"]
    response = await client.delete(f"{API}/abort/{job_id}", headers=headers("alice"))
    assert response.status_code == 200, response.text
    aborted = await recorder.wait(job_id, EventKind.ABORTED)
    assert aborted.status is JobStatus.ABORTED and aborted.error_type == "JobAborted"
    await until(lambda: any(e.job_id == job_id for e in channel), channel)
    assert [e.kind for e in channel if e.job_id == job_id] == [EventKind.ABORTED]


async def test_an_ending_found_by_many_readers_at_once_is_published_once(
    service: ArqService,
    recorder: Recorder,
    redis: ArqRedis,
    sessionmaker: async_sessionmaker[AsyncSession],
    arq_settings: ArqSettings,
) -> None:
    """Status reads and a reconciliation race to record an ending a worker left in Redis (its
    history write lost): one of them records it, and only that one announces it."""
    job = await service.enqueue_job("add", 1, 2, _defer_by=3600)
    now = int(time.time() * 1000)
    await redis.zrem(arq_settings.queue_name, job.job_id)
    await redis.set(
        keys.result_key_prefix + job.job_id,
        serialize({"t": 1, "f": "add", "s": True, "r": {"sum": 3}, "st": now - 5, "ft": now}),
    )
    await asyncio.gather(
        *(service.get_job_status(job.job_id) for _ in range(6)),
        reconcile(
            queue=service.queue,
            sessionmaker=sessionmaker,
            lease_seconds=0,
            grace_seconds=0,
            events=service.events,
        ),
    )
    endings = [e for e in recorder.of(job.job_id) if e.ends]
    assert len(endings) == 1, endings
    assert endings[0].status is JobStatus.COMPLETE
    assert (await service.get_job_status(job.job_id)).result == {"sum": 3}


async def test_a_failing_subscriber_harms_neither_the_job_nor_the_caller(
    settings: Settings,
    arq_settings: ArqSettings,
    redis: ArqRedis,
    sessionmaker: async_sessionmaker[AsyncSession],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from src.arq.worker import worker_options

    def install(jobs: ArqService) -> None:
        async def explode(events: Sequence[JobEvent]) -> None:
            raise RuntimeError("subscriber bug")

        jobs.events.subscribe(explode)

    broken = TaskRegistry()
    broken.on_service(install)
    registry = app_and_test_registry.merged(broken)
    service = ArqService(
        redis=redis, sessionmaker=sessionmaker, registry=registry, settings=arq_settings
    )
    handle = WorkerHandle(
        worker_options(registry=registry, settings=settings, arq_settings=arq_settings)
    )
    caplog.set_level(logging.ERROR, logger="src.arq.events")
    await handle.start()
    try:
        job = await service.enqueue_job("add", 4, 5)
        deadline = time.monotonic() + 10
        while not (status := await service.get_job_status(job.job_id)).status.finished:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    finally:
        await handle.stop()
    assert status.status is JobStatus.COMPLETE and status.result == {"sum": 9}
    assert "subscriber" in caplog.text and "subscriber bug" in caplog.text


async def test_completion_webhooks_need_a_package_that_delivers_them(
    redis: ArqRedis, sessionmaker: async_sessionmaker[AsyncSession], arq_settings: ArqSettings
) -> None:
    """The job module sends no webhooks itself: without the webhooks package, `notify_url` is
    refused, and its reserved id prefix is an ordinary id."""
    bare = ArqService(
        redis=redis, sessionmaker=sessionmaker, registry=test_registry, settings=arq_settings
    )
    with pytest.raises(InvalidJobArguments) as refused:
        await bare.enqueue_job("add", 1, _notify_url="https://example.org/hook")
    assert refused.value.extra["errors"][0]["loc"][-1] == "notify_url"
    mine = await bare.enqueue_job("add", 1, _job_id="notify-mine", _principal=_user("bob"))
    assert mine.job_id.endswith(":notify-mine")

    full = ArqService(
        redis=redis,
        sessionmaker=sessionmaker,
        registry=app_and_test_registry,
        settings=arq_settings,
    )
    with pytest.raises(InvalidJobArguments, match="reserved"):
        await full.enqueue_job("add", 1, _job_id="notify-mine", _principal=_user("bob"))


def _user(owner: str) -> Any:
    from src.auth.schemas import Principal, Role

    return Principal(owner=owner, role=Role.USER)


def test_the_job_module_loads_no_domain_package() -> None:
    """Importing the job service, the worker machinery and the router loads no domain: the
    domains are loaded by the registration point (`src.arq.tasks`) only."""
    code = (
        "import sys\n"
        "import src.arq.service, src.arq.worker, src.arq.router, src.arq.streams\n"
        "domains = ('src.comments', 'src.reports', 'src.maintenance', 'src.webhooks',"
        " 'src.vk', 'src.morphology')\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(domains))\n"
        "assert not loaded, loaded\n"
        "assert 'src.arq.tasks' not in sys.modules\n"
        "import src.arq.worker as w\n"
        "assert w.WorkerSettings.functions\n"  # the CLI's entry point still brings them all
        "assert 'src.comments.tasks' in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_an_event_survives_its_trip_through_redis_and_junk_is_refused() -> None:
    event = JobEvent(
        EventKind.FINISHED,
        "job-1",
        "add",
        "alice",
        JobStatus.FAILED,
        job_try=2,
        error_type="ValueError",
        duration_seconds=0.25,
        notify=True,
    )
    assert JobEvent.from_json(event.to_json()) == event
    for junk in (b"1", b"{}", b'{"kind": "exploded", "job_id": "x"}', b"\xff", b'{"kind": 1}'):
        with pytest.raises(ValueError, match="not a job event"):
            JobEvent.from_json(junk)


async def test_a_writer_that_catches_up_late_still_tells_the_retry_and_the_ending_once(
    service: ArqService, redis: ArqRedis, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """A worker's history writer behind by a whole retry: by the time it writes the first try's
    end, Redis already holds the second try's ending. What it announces still follows what
    happened: started 1, retrying 1, started 2, finished, the ending once."""
    job = await service.enqueue_job("add", a=1, b=2)
    queue = JobQueue.for_settings(redis, service.settings)
    result = add_result(job.job_id, 1, 2, job_try=2, queue_name=service.settings.queue_name)
    assert result is not None
    await redis.set(keys.result_key_prefix + job.job_id, result)
    await redis.zrem(service.settings.queue_name, job.job_id)
    writer = HistoryWriter(queue=queue, sessionmaker=sessionmaker, events=service.events)
    seen: list[JobEvent] = []

    async def record(events: Sequence[JobEvent]) -> None:
        seen.extend(event for event in events if event.job_id == job.job_id)

    service.events.subscribe(record)
    # All in one turn of the loop: one batch, read from Redis after the second try ended.
    writer.started(job.job_id, 1, ms_to_datetime(now_ms()))
    writer.going_again(job.job_id)
    writer.ended(job.job_id, 1)
    writer.started(job.job_id, 2, ms_to_datetime(now_ms()))
    writer.ended(job.job_id, 2)
    await writer.flush()
    await writer.close()
    assert [(event.kind, event.job_try) for event in seen] == [
        (EventKind.STARTED, 1),
        (EventKind.RETRYING, 1),
        (EventKind.STARTED, 2),
        (EventKind.FINISHED, 2),
    ]
    done = await service.get_job_status(job.job_id)
    assert done.status is JobStatus.COMPLETE and done.tries == 2


async def test_a_later_tries_remembered_ending_outlives_the_earlier_retry_and_redis_losing_it(
    service: ArqService, redis: ArqRedis, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """The writer writes try 1's retry while try 2 has already ended (the worker remembers its
    ending until the history has it); then Redis loses that ending (an empty restart) before
    the writer gets to try 2's end. The history still records it, from the worker's memory,
    and only then lets the worker go of it (a chaos run lost it: the retry's write let go)."""
    job = await service.enqueue_job("add", a=1, b=2)
    queue = JobQueue.for_settings(redis, service.settings)
    result = add_result(job.job_id, 1, 2, job_try=2, queue_name=service.settings.queue_name)
    await redis.set(keys.result_key_prefix + job.job_id, result)
    await redis.zrem(service.settings.queue_name, job.job_id)
    writer = HistoryWriter(queue=queue, sessionmaker=sessionmaker, events=service.events)
    settled: list[str] = []
    writer.started(job.job_id, 1, ms_to_datetime(now_ms()))
    writer.going_again(job.job_id)
    writer.ended(job.job_id, 1)
    writer.started(job.job_id, 2, ms_to_datetime(now_ms()))
    writer.remember(job.job_id, result, settled=settled.append)
    await writer.flush()  # try 1's retry and try 2's start are written
    assert settled == []  # try 2's ending is still held for the history
    async with sessionmaker() as session:
        row = await session.get(JobRecord, job.job_id)
        assert row is not None and (row.status, row.tries) == ("in_progress", 2)
    await redis.delete(keys.result_key_prefix + job.job_id)  # Redis restarted empty
    writer.ended(job.job_id, 2)
    await writer.flush()
    await writer.close()
    assert settled == [job.job_id]
    async with sessionmaker() as session:
        row = await session.get(JobRecord, job.job_id)
        assert row is not None
        assert (row.status, row.tries, row.result) == ("complete", 2, {"sum": 3})


async def test_an_ending_the_worker_stored_is_recorded_without_the_runs_end_hook(
    service: ArqService, worker: Any, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """A shutdown can cancel a run after its ending is stored and before ARQ's end hook: the
    history still records the ending (and announces it once when the hook runs after all)."""
    for _ in range(200):  # the worker's start-up hooks have run (its history writer)
        if "history_writer" in worker.ctx:
            break
        await asyncio.sleep(0.05)
    job = await service.enqueue_job("add", a=2, b=2, _defer_by=3600)  # never run by the worker
    seen: list[JobEvent] = []

    async def record(events: Sequence[JobEvent]) -> None:
        seen.extend(event for event in events if event.job_id == job.job_id and event.ends)

    worker.ctx["arq_service"].events.subscribe(record)
    result = add_result(job.job_id, 2, 2, job_try=1, queue_name=service.settings.queue_name)
    await worker.finish_job(job.job_id, True, result, None, False, None, None)
    writer = worker.ctx["history_writer"]
    await writer.flush()
    # Recorded by the worker (read the row itself: a status read would copy it from Redis).
    async with sessionmaker() as session:
        row = await session.get(JobRecord, job.job_id)
    assert row is not None and row.status == "complete" and row.result == {"sum": 4}
    assert [event.kind for event in seen] == [EventKind.FINISHED]
    writer.ended(job.job_id, 1)  # the end hook, late: nothing more to record
    await writer.flush()
    assert [event.kind for event in seen] == [EventKind.FINISHED]
