"""`JobWorker` is ARQ's `Worker` wherever the README's "Differences from ARQ" names nothing: the
points ARQ 0.28's own test suite found (issue 16), each against real Redis, with `arq.jobs.Job`
used as ARQ's documentation shows."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from arq.connections import ArqRedis
from arq.jobs import Job
from arq.worker import FailedJobs, JobExecutionFailed, func
from redis.exceptions import RedisError

from src.arq.config import ArqSettings
from src.arq.job_worker import ArqWorker, JobWorker
from src.arq.log_masking import mask_secrets
from src.arq.outcome import outcome_from_result
from src.arq.pool import create_redis
from src.arq.schemas import JobStatus, Priority
from src.arq.serialization import JobError, as_error, deserialize, serialize
from src.arq.service import ArqService
from src.config import Settings
from tests.arq.test_faults import PrivateRedis
from tests.conftest import WorkerHandle

START_LINE = re.compile(r"→ (?P<ref>\S+)\((?P<args>.*)\)(?P<extra>.*)$")


async def foobar(ctx: dict[str, Any]) -> int:
    return 42


async def fails(ctx: dict[str, Any]) -> None:
    raise TypeError("my type error")


class CustomError(Exception):
    pass


async def fails_custom(ctx: dict[str, Any]) -> None:
    raise CustomError("not a builtin")


async def sleeps(ctx: dict[str, Any]) -> None:
    await asyncio.sleep(3600)


async def login(ctx: dict[str, Any], user: str, api_key: str, options: dict[str, Any]) -> None:
    return None


MakeWorker = Callable[..., JobWorker]


@pytest.fixture
async def plain_worker(settings: Settings) -> AsyncIterator[MakeWorker]:
    """`JobWorker(functions=[...], redis_pool=..., ...)` as ARQ's own tests build `Worker`, with
    the module's JSON in the pool and the worker alike."""
    made: list[JobWorker] = []

    def make(functions: list[Any], **kwargs: Any) -> JobWorker:
        options: dict[str, Any] = {
            "burst": True,
            "poll_delay": 0,
            "job_serializer": serialize,
            "job_deserializer": deserialize,
            "handle_signals": False,
        }
        options.update(kwargs)
        pool = options.pop("redis_pool", None) or create_redis(
            settings.redis_url, queue_name="arq:queue"
        )
        made.append(JobWorker(functions=[func(f) for f in functions], redis_pool=pool, **options))
        return made[-1]

    yield make
    for worker in made:
        await worker.close()


def start_lines(caplog: pytest.LogCaptureFixture) -> dict[str, str]:
    """ARQ's "→" lines by job ref: their extra text (" try=N", " delayed=S.SSs")."""
    lines: dict[str, str] = {}
    for record in caplog.records:
        found = START_LINE.search(record.getMessage())
        if record.name == "arq.worker" and found:
            lines[found["ref"]] = found["extra"]
    return lines


def delayed(extra: str) -> float | None:
    found = re.search(r" delayed=(\d+\.\d\d)s", extra)
    return float(found.group(1)) if found else None


# -- queue_read_limit ------------------------------------------------------------------------


async def test_queue_read_limit_is_honoured_per_poll(
    redis: ArqRedis, plain_worker: MakeWorker
) -> None:
    for _ in range(4):
        await redis.enqueue_job("foobar")
    worker = plain_worker([foobar], queue_read_limit=2, max_jobs=10)
    assert worker.queue_read_limit == 2
    await worker._poll_iteration()
    await asyncio.sleep(0.3)
    assert (await redis.zcard("arq:queue"), worker.jobs_complete) == (2, 2)
    await worker._poll_iteration()
    await asyncio.sleep(0.3)
    assert (await redis.zcard("arq:queue"), worker.jobs_complete) == (0, 4)


# -- the job-start line ----------------------------------------------------------------------


@pytest.mark.parametrize("worker_class", [ArqWorker, JobWorker])
async def test_a_late_job_queued_by_plain_arq_logs_its_delay_in_either_class(
    worker_class: type[ArqWorker],
    redis: ArqRedis,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """ARQ's class keeps ARQ's line in a process that imported the module; `JobWorker` logs
    the same for a job plain ARQ queued (its score is its ready time)."""
    caplog.set_level(logging.INFO)
    await redis.enqueue_job("foobar", _job_id="old", _defer_by=-2)
    pool = create_redis(settings.redis_url, queue_name="arq:queue")
    worker = worker_class(
        functions=[func(foobar)],
        redis_pool=pool,
        burst=True,
        poll_delay=0,
        job_serializer=serialize,
        job_deserializer=deserialize,
        handle_signals=False,
    )
    try:
        await worker.main()
    finally:
        await worker.close()  # ARQ's own close calls redis-py's deprecated close (ignored)
    assert worker.jobs_complete == 1
    extra = start_lines(caplog)["old:foobar"]
    assert re.fullmatch(r" delayed=[2-4]\.\d\ds", extra), extra  # 2 s late, as ARQ logs it


async def test_a_priority_jobs_delay_is_measured_from_its_ready_time(
    service: ArqService, worker_handle: WorkerHandle, caplog: pytest.LogCaptureFixture
) -> None:
    """A module job's score is its ready time minus its priority's offset (hours): the line
    shows the real wait, in ARQ's format, not the offset."""
    caplog.set_level(logging.INFO)
    waited = await service.enqueue_job("add", a=1, _priority=Priority.HIGH)
    await asyncio.sleep(1.6)  # ready, and no worker yet
    await worker_handle.start()
    prompt = await service.enqueue_job("add", a=2, _priority=Priority.CRITICAL)
    retried = await service.enqueue_job("flaky", failures=1, defer=0.2, _priority=Priority.HIGH)
    for job in (waited, prompt, retried):
        for _ in range(500):
            if (await service.get_job_status(job.job_id)).status is JobStatus.COMPLETE:
                break
            await asyncio.sleep(0.02)
    lines = start_lines(caplog)
    waited_for = delayed(lines[f"{waited.job_id}:add"])
    assert waited_for is not None and 1.5 <= waited_for < 60, lines
    for ref in (f"{prompt.job_id}:add", f"{retried.job_id}:flaky"):
        late = delayed(lines[ref])
        assert late is None or late < 60, lines  # never the hours of a priority offset
    assert lines[f"{retried.job_id}:flaky"].startswith(" try=2"), lines


async def test_secrets_are_masked_and_the_rest_of_the_line_is_arqs(
    redis: ArqRedis, plain_worker: MakeWorker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await redis.enqueue_job("login", "ann", api_key="k-123", options={"password": "p", "n": 1})
    await plain_worker([login]).main()
    (extra,) = [
        record.getMessage()
        for record in caplog.records
        if record.name == "arq.worker" and ":login(" in record.getMessage()
    ]
    assert extra.endswith(":login('ann', api_key='***', options={'password': '***', 'n': 1})")
    assert "k-123" not in caplog.text
    # Nothing secret: the very object, so ARQ's text of it (tuples stay tuples).
    plain = {"n": (1, 2), "items": [("a", 1)]}
    assert mask_secrets(plain) is plain
    assert mask_secrets({"token": "t", "n": (1, 2)}) == {"token": "***", "n": (1, 2)}


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
async def test_each_runs_start_and_finish_lines_are_logged_at_the_job_log_level(
    level: str, redis: ArqRedis, plain_worker: MakeWorker, caplog: pytest.LogCaptureFixture
) -> None:
    """ARQ_JOB_LOG_LEVEL: at INFO ARQ's "→" and "←" lines, at DEBUG none of them at INFO;
    a failure's line is logged either way."""
    caplog.set_level(logging.INFO)
    ok = await redis.enqueue_job("foobar")
    bad = await redis.enqueue_job("fails")
    assert ok is not None and bad is not None
    worker = plain_worker(
        [foobar, fails], ctx={"arq_settings": ArqSettings(_env_file=None, job_log_level=level)}
    )
    await worker.main()
    assert (worker.jobs_complete, worker.jobs_failed) == (1, 1)
    lines = [r.getMessage() for r in caplog.records if r.name == "arq.worker"]
    runs = [line for line in lines if f"{ok.job_id}:foobar" in line]
    if level == "INFO":
        assert any("→ " in line for line in runs) and any("← " in line for line in runs), lines
    else:
        assert runs == [], runs
    assert any(f"{bad.job_id}:fails failed, TypeError: my type error" in line for line in lines)


# -- ARQ's Job API on the module's JSON jobs -------------------------------------------------


async def test_job_abort_returns_true_and_result_raises_the_jobs_exception(
    redis: ArqRedis, plain_worker: MakeWorker
) -> None:
    worker = plain_worker([sleeps, fails, fails_custom], burst=False, allow_abort_jobs=True)
    running = asyncio.create_task(worker.main())
    try:
        # As ARQ's documentation does: the Job that enqueue_job returns, and Job(job_id, redis)
        # (with the pool's deserializer: ARQ's Job defaults to pickle).
        job = await redis.enqueue_job("sleeps", _job_id="long")
        assert job is not None
        await asyncio.sleep(0.3)
        assert await job.abort(timeout=10) is True
        with pytest.raises(asyncio.CancelledError):
            await Job("long", redis, _deserializer=deserialize).result(timeout=5)

        failing = await redis.enqueue_job("fails")
        assert failing is not None
        with pytest.raises(TypeError, match=r"^my type error$"):
            await failing.result(timeout=10)
        custom = await redis.enqueue_job("fails_custom")
        assert custom is not None
        with pytest.raises(JobError) as caught:
            await custom.result(timeout=10)
        assert (caught.value.type, caught.value.message) == ("CustomError", "not a builtin")
        info = await custom.result_info()
        assert info is not None and info.success is False
    finally:
        await worker.close()
        await asyncio.wait_for(running, 5)


async def test_a_module_jobs_failure_and_abort_through_arqs_job(
    service: ArqService, worker_handle: WorkerHandle, redis: ArqRedis
) -> None:
    await worker_handle.start()
    failed = await service.enqueue_job("fail", message="bad input")
    with pytest.raises(ValueError, match=r"^bad input$"):
        await Job(failed.job_id, redis, _deserializer=deserialize).result(timeout=10)
    sleeping = await service.enqueue_job("sleep", seconds=60)
    for _ in range(500):
        if (await service.get_job_status(sleeping.job_id)).status is JobStatus.IN_PROGRESS:
            break
        await asyncio.sleep(0.02)
    assert await Job(sleeping.job_id, redis, _deserializer=deserialize).abort(timeout=10) is True
    # The module reads the same records as it always did.
    for _ in range(500):
        status = await service.get_job_status(sleeping.job_id)
        if status.status is JobStatus.ABORTED:
            break
        await asyncio.sleep(0.02)
    assert status.status is JobStatus.ABORTED
    failure = await service.get_job_status(failed.job_id)
    assert failure.status is JobStatus.FAILED
    assert failure.error is not None and failure.error.model_dump() == {
        "type": "ValueError",
        "message": "bad input",
    }


async def test_failed_jobs_names_the_exception_not_a_dict(
    redis: ArqRedis, plain_worker: MakeWorker
) -> None:
    await redis.enqueue_job("fails")
    with pytest.raises(FailedJobs, match=r"^1 job failed TypeError\('my type error'\)$"):
        await plain_worker([fails]).run_check()
    await redis.enqueue_job("missing", _job_id="gone")
    with pytest.raises(FailedJobs) as caught:
        await plain_worker([fails]).run_check()
    results = [result.result for result in caught.value.job_results]
    assert JobExecutionFailed("function 'missing' not found") in results


@pytest.mark.parametrize(
    ("error", "stored"),
    [
        (ValueError("bad"), {"type": "ValueError", "message": "bad"}),
        (KeyError("group"), {"type": "KeyError", "message": "'group'"}),
        (asyncio.CancelledError(), {"type": "CancelledError", "message": ""}),
        (CustomError("x"), {"type": "CustomError", "message": "x"}),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"), None),
    ],
)
def test_stored_errors_come_back_as_exceptions_and_read_the_same(
    error: BaseException, stored: dict[str, str] | None
) -> None:
    record = {"t": 1, "f": "task", "a": [], "k": {}, "et": 1, "s": False, "r": error, "st": 2}
    read = deserialize(serialize({**record, "ft": 3}))
    expected = stored or {"type": type(error).__name__, "message": str(error)}
    assert isinstance(read["r"], BaseException)
    assert as_error(read["r"]) == expected  # exactly as stored, whatever the type's str does
    if type(error).__module__ in ("builtins", "asyncio.exceptions") and stored is not None:
        assert type(read["r"]) is type(error)
    else:
        assert isinstance(read["r"], JobError)
    outcome = outcome_from_result(read)
    if isinstance(error, asyncio.CancelledError):
        assert outcome.status is JobStatus.ABORTED
    else:
        assert (outcome.status, outcome.error) == (JobStatus.FAILED, expected)
    # A stored exception read back stores the same again; a success keeps its data as JSON.
    assert deserialize(serialize({**record, "ft": 3, "r": read["r"]}))["r"].args == read["r"].args
    ok = deserialize(serialize({**record, "s": True, "ft": 3, "r": error}))
    assert ok["r"] == {"__error__": True, **expected}


# -- Redis outages and closing -----------------------------------------------------------------


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


async def test_outage_exit_is_a_setting_off_by_default(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    # The module's lines do not propagate to the root logger (`src.logs`): listen here.
    module_logger = logging.getLogger("src.arq.worker")
    module_logger.addHandler(caplog.handler)
    workers: list[JobWorker] = []
    for exit_after in (1.0, None):
        settings = ArqSettings(
            _env_file=None,
            poll_delay=0.05,
            wake_on_enqueue=False,
            redis_outage_exit_after=exit_after,
        )
        workers.append(
            JobWorker(
                functions=[func(foobar)],
                redis_pool=create_redis(private_redis.url, queue_name="arq:queue", timeout=1.0),
                poll_delay=0.05,
                ctx={"arq_settings": settings},
                job_serializer=serialize,
                job_deserializer=deserialize,
                handle_signals=False,
            )
        )
    leaving, staying = workers
    tasks = [asyncio.create_task(worker.main()) for worker in workers]
    try:
        await asyncio.sleep(0.3)
        private_redis.stop()
        with pytest.raises((RedisError, OSError)):  # the error it waited out, as ARQ raises it
            await asyncio.wait_for(tasks[0], 15)
        assert "ARQ_REDIS_OUTAGE_EXIT_AFTER" in caplog.text
        assert not tasks[1].done()  # the default: waits the outage out
        private_redis.start()
        pool = create_redis(private_redis.url, queue_name="arq:queue")
        job = await pool.enqueue_job("foobar")
        assert job is not None and await job.result(timeout=15) == 42
        await pool.aclose(close_connection_pool=True)
        assert staying.jobs_complete == 1 and leaving.jobs_complete == 0
    finally:
        module_logger.removeHandler(caplog.handler)
        for worker, task in zip(workers, tasks, strict=True):
            await worker.close()
            await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 5)


async def test_closing_a_worker_ends_its_loop(plain_worker: MakeWorker) -> None:
    worker = plain_worker([foobar], burst=False, poll_delay=0.05)
    running = asyncio.create_task(worker.main())
    await asyncio.sleep(0.3)
    await worker.close()
    await asyncio.wait_for(running, 5)  # before: polled on, through the closed pool


# -- burst, poll delay, context, settings ---------------------------------------------------------


async def test_a_burst_worker_exits_after_the_poll_that_finds_the_queue_empty(
    redis: ArqRedis, plain_worker: MakeWorker
) -> None:
    idle = plain_worker([foobar], poll_delay=5)
    assert idle.poll_delay_s == 5  # ARQ's attribute, ARQ's value
    await asyncio.wait_for(idle.main(), 3)  # at once, not one 5 s poll delay later
    await redis.enqueue_job("foobar")
    busy = plain_worker([foobar], poll_delay=5)
    await asyncio.wait_for(busy.main(), 4)  # once its job is done (a freed slot wakes it)
    assert busy.jobs_complete == 1


async def test_the_callers_context_is_shared_as_arq_shares_it(plain_worker: MakeWorker) -> None:
    ctx: dict[str, Any] = {"mine": 1}
    worker = plain_worker([foobar], ctx=ctx)
    assert worker.ctx is ctx
    await worker.main()
    assert ctx["redis"] is worker.pool


async def test_a_workers_arguments_alone_decide_without_arq_settings(
    redis: ArqRedis, plain_worker: MakeWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARQ_LEASE", "99")
    monkeypatch.setenv("ARQ_QUEUE_NAME", "arq:elsewhere")
    worker = plain_worker([foobar], queue_name="arq:mine")
    assert worker.settings == ArqSettings.defaults()
    assert worker.in_progress_timeout_s == ArqSettings.defaults().lease == 15
    given = ArqSettings(_env_file=None, lease=20)
    assert plain_worker([foobar], ctx={"arq_settings": given}).in_progress_timeout_s == 20
    # Its queue is its `queue_name`, as ARQ's.
    job = await redis.enqueue_job("foobar", _queue_name="arq:mine")
    assert job is not None
    await asyncio.wait_for(worker.main(), 10)
    assert worker.jobs_complete == 1
