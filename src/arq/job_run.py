"""One job's run in a `JobWorker`: ARQ's `Worker.run_job`, for a job whose claim has already
read what ARQ's run reads first (its data, its try counted, its abort mark: `src.arq.queue.Claim`).

ARQ's run starts with a MULTI of its own (the job's data, the try counter and its expiry, the
abort mark): a round trip per job that the claim now makes for all the jobs it takes at once.
The rest is ARQ's, line for line: the same checks in the same order (expired, unreadable, aborted
before start, unknown function, out of tries), the same hooks, counters, timeouts, retries,
aborts and result records, and the same log lines, except that the start ("→") and finish ("←")
lines of each run are logged at `ARQ_JOB_LOG_LEVEL` (INFO, as ARQ logs them, by default; at DEBUG
nothing of them is built).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import arq.worker as arq_worker
from arq.constants import keep_cronjob_progress, retry_key_prefix
from arq.jobs import (
    DeserializationError,
    Deserializer,
    SerializationError,
    deserialize_job_raw,
    serialize_result,
)
from arq.utils import ms_to_datetime, timestamp_ms, truncate
from arq.worker import JobExecutionFailed, Retry, RetryJob

from src import logs
from src.arq.job_logs import run_fields
from src.arq.log_masking import START_LINE, JobRun, delayed
from src.arq.queue import Claim
from src.arq.scripts import RETRY_KEY_SECONDS

if TYPE_CHECKING:
    from arq.worker import Worker

logger = logging.getLogger("arq.worker")  # ARQ's lines keep ARQ's logger
# ARQ's finish line: seconds the run took, ref, the result's repr (when `log_results`).
FINISH_LINE = "%6.2fs ← %s ● %s"


async def run_claimed(
    worker: Worker,
    claim: Claim,
    *,
    line_level: int = logging.INFO,
    offset_ms: Callable[[str], int] = lambda priority: 0,
) -> None:
    """Run `claim`'s job as ARQ's `Worker.run_job` runs one (see the module's docstring), in
    the log context `job_logs.bind_run` started: the run binds the task, owner, request id and
    try (`job_logs.run_fields`). `offset_ms(priority)`: how far that priority shifts a ready
    job's score (for the start line's `delayed=`)."""
    job_id, score, job_try = claim.job_id, claim.score, claim.job_try
    start_ms = timestamp_ms()
    function_name, enqueue_time_ms = "<unknown>", 0
    args: tuple[Any, ...] = ()
    kwargs: dict[Any, Any] = {}

    def record(success: bool, result: Any, finished_ms: int, ref: str) -> bytes | None:
        """ARQ's result record of this run."""
        return serialize_result(
            function_name,
            args,
            kwargs,
            job_try,
            enqueue_time_ms,
            success,
            result,
            start_ms,
            finished_ms,
            ref,
            worker.queue_name,
            job_id=job_id,
            serializer=worker.job_serializer,
        )

    async def job_failed(exc: BaseException) -> None:
        worker.jobs_failed += 1
        result_data = record(False, exc, timestamp_ms(), f"{job_id}:{function_name}")
        await asyncio.shield(worker.finish_failed_job(job_id, result_data))

    if not claim.data:
        logger.warning("job %s expired", job_id)
        return await job_failed(JobExecutionFailed("job expired"))
    try:
        function_name, args, kwargs, enqueue_job_try, enqueue_time_ms, payload = _read(
            claim.data, worker.job_deserializer
        )
    except SerializationError as exc:
        logger.exception("deserializing job %s failed", job_id)
        return await job_failed(exc)

    if claim.aborted:
        logs.bind(run_fields(payload))
        t = (timestamp_ms() - enqueue_time_ms) / 1000
        logger.info("%6.2fs ⊘ %s:%s aborted before start", t, job_id, function_name)
        return await job_failed(asyncio.CancelledError())

    try:
        function = worker.functions[function_name]
    except KeyError:
        logs.bind(run_fields(payload))
        logger.warning("job %s, function %r not found", job_id, function_name)
        return await job_failed(JobExecutionFailed(f"function {function_name!r} not found"))

    keep_in_progress: float | None
    if hasattr(function, "next_run"):  # one of ARQ's own cron jobs
        ref, keep_in_progress = function_name, keep_cronjob_progress
    else:
        ref, keep_in_progress = f"{job_id}:{function_name}", None

    if enqueue_job_try and enqueue_job_try > job_try:
        job_try = enqueue_job_try
        await worker.pool.setex(retry_key_prefix + job_id, RETRY_KEY_SECONDS, str(job_try))
    logs.bind(run_fields(payload, job_try))  # on "→" and every later line of the run

    max_tries = worker.max_tries if function.max_tries is None else function.max_tries
    if job_try > max_tries:
        t = (timestamp_ms() - enqueue_time_ms) / 1000
        logger.warning("%6.2fs ! %s max retries %d exceeded", t, ref, max_tries)
        worker.jobs_failed += 1
        exceeded = JobExecutionFailed(f"max {max_tries} retries exceeded")
        result_data = record(False, exceeded, timestamp_ms(), ref)
        return await asyncio.shield(worker.finish_failed_job(job_id, result_data))

    result: Any = arq_worker.no_result
    exc_extra = None
    finish = False
    timeout_s = worker.job_timeout_s if function.timeout_s is None else function.timeout_s
    incr_score: int | None = None
    job_ctx = {
        "job_id": job_id,
        "job_try": job_try,
        "enqueue_time": ms_to_datetime(enqueue_time_ms),
        "score": score,
    }
    ctx = {**worker.ctx, **job_ctx}

    if worker.on_job_start:
        await worker.on_job_start(ctx)

    start_ms = timestamp_ms()
    success = False
    lines = logger.isEnabledFor(line_level)
    result_str = ""
    try:
        if lines:
            s = arq_worker.args_to_string(args, kwargs)  # secrets masked (`log_masking`)
            extra = f" try={job_try}" if job_try > 1 else ""
            # From the job's ready time, not its priority-shifted score (`log_masking`).
            ready = JobRun(score, offset_ms, payload).ready_ms(job_try)
            extra += delayed(started_ms=start_ms, ready_ms=ready)
            _line(line_level, START_LINE, (start_ms - enqueue_time_ms) / 1000, ref, s, extra)
        worker.job_tasks[job_id] = task = worker.loop.create_task(
            function.coroutine(ctx, *args, **kwargs)
        )

        # repr(result) and the exception's extra are taken inside the try: they can raise
        try:
            result = await asyncio.wait_for(task, timeout_s)
        except (Exception, asyncio.CancelledError) as e:
            exc_extra = getattr(e, "extra", None)
            if callable(exc_extra):
                exc_extra = exc_extra()
            raise
        else:
            if lines and result is not None and worker.log_results:
                result_str = truncate(repr(result))
        finally:
            del worker.job_tasks[job_id]

    except (Exception, asyncio.CancelledError) as e:
        finished_ms = timestamp_ms()
        t = (finished_ms - start_ms) / 1000
        if worker.retry_jobs and isinstance(e, Retry):
            incr_score = e.defer_score
            logger.info("%6.2fs ↻ %s retrying job in %0.2fs", t, ref, (e.defer_score or 0) / 1000)
            if e.defer_score:
                incr_score = e.defer_score + (timestamp_ms() - score)
            worker.jobs_retried += 1
        elif job_id in worker.aborting_tasks and isinstance(e, asyncio.CancelledError):
            logger.info("%6.2fs ⊘ %s aborted", t, ref)
            result = e
            finish = True
            worker.aborting_tasks.remove(job_id)
            worker.jobs_failed += 1
        elif worker.retry_jobs and isinstance(e, asyncio.CancelledError | RetryJob):
            logger.info("%6.2fs ↻ %s cancelled, will be run again", t, ref)
            worker.jobs_retried += 1
        else:
            logger.exception(
                "%6.2fs ! %s failed, %s: %s",
                t,
                ref,
                e.__class__.__name__,
                e,
                extra={"extra": exc_extra},
            )
            result = e
            finish = True
            worker.jobs_failed += 1
    else:
        success = True
        finished_ms = timestamp_ms()
        if lines:
            _line(line_level, FINISH_LINE, (finished_ms - start_ms) / 1000, ref, result_str)
        finish = True
        worker.jobs_complete += 1

    keep_result_forever = (
        worker.keep_result_forever
        if function.keep_result_forever is None
        else function.keep_result_forever
    )
    result_timeout_s = (
        worker.keep_result_s if function.keep_result_s is None else function.keep_result_s
    )
    result_data = None
    if result is not arq_worker.no_result and (keep_result_forever or result_timeout_s > 0):
        result_data = record(success, result, finished_ms, ref)

    if worker.on_job_end:
        await worker.on_job_end(ctx)

    await asyncio.shield(
        worker.finish_job(
            job_id,
            finish,
            result_data,
            result_timeout_s,
            keep_result_forever,
            incr_score,
            keep_in_progress,
        )
    )

    if worker.after_job_end:
        await worker.after_job_end(ctx)


def _read(
    raw: bytes, deserializer: Deserializer | None
) -> tuple[str, tuple[Any, ...], dict[str, Any], int, int, Mapping[str, Any] | None]:
    """ARQ's `deserialize_job_raw`, with the whole payload too (for the run's log fields and
    ready time); a worker without a deserializer reads as ARQ does (no payload then)."""
    if deserializer is None:
        return (*deserialize_job_raw(raw), None)
    try:
        data = deserializer(raw)
        return data["f"], data["a"], data["k"], data["t"], data["et"], data
    except Exception as exc:
        raise DeserializationError("unable to deserialize job") from exc


def _line(level: int, msg: str, *args: object) -> None:
    """Log a run's start or finish line as `logger.log` would, without looking up the caller's
    file and line (the formats show neither): two lines a job."""
    if logger.isEnabledFor(level):
        logger.handle(logger.makeRecord(logger.name, level, "", 0, msg, args, None))
