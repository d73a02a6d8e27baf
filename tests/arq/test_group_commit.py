"""Concurrent enqueues share history transactions and Redis pipelines (group commit), and each
request stays all or nothing: against the real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select

from src.arq.exceptions import JobConflict
from src.arq.models import JobRecord
from src.arq.queue import JobQueue
from src.arq.schemas import EnqueueRequest
from src.arq.service import ArqService
from src.arq.service.core import owner_job_id
from src.auth.schemas import Principal, Role

ALICE = Principal(owner="alice", role=Role.USER)
BOB = Principal(owner="bob", role=Role.USER)


async def history_ids(sessionmaker: Any) -> set[str]:
    async with sessionmaker() as session:
        return set((await session.scalars(select(JobRecord.job_id))).all())


async def queued_ids(service: ArqService) -> set[str]:
    raw = await service.redis.zrange(service.settings.queue_name, 0, -1)
    return {item.decode() for item in raw}


async def test_many_concurrent_enqueues_are_all_committed_and_queued(
    service: ArqService, sessionmaker: Any
) -> None:
    answers = await asyncio.gather(
        *(service.enqueue_job("add", a=i, b=1, _principal=ALICE) for i in range(300))
    )
    ids = {answer.job_id for answer in answers}
    assert len(ids) == 300
    assert await history_ids(sessionmaker) == ids
    assert await queued_ids(service) == ids
    async with sessionmaker() as session:
        rows = (await session.execute(select(JobRecord.job_id, JobRecord.args))).all()
    assert {job_id: args["a"] for job_id, args in rows} == {
        answer.job_id: i for i, answer in enumerate(answers)
    }


async def test_the_same_id_asked_for_at_once_is_given_once(
    service: ArqService, sessionmaker: Any
) -> None:
    """Ten requests for one client id in the same round: one job, nine conflicts."""
    outcomes = await asyncio.gather(
        *(service.enqueue_job("add", a=i, _job_id="once", _principal=ALICE) for i in range(10)),
        return_exceptions=True,
    )
    accepted = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
    refused = [outcome for outcome in outcomes if isinstance(outcome, JobConflict)]
    assert len(accepted) == 1 and len(refused) == 9, outcomes
    assert await history_ids(sessionmaker) == {owner_job_id("alice", "once")}
    # Another owner's id of the same name is theirs.
    other = await service.enqueue_job("add", a=1, _job_id="once", _principal=BOB)
    assert other.job_id == owner_job_id("bob", "once")


async def test_a_batch_with_a_taken_id_queues_nothing_while_its_neighbours_go_through(
    service: ArqService, sessionmaker: Any
) -> None:
    await service.enqueue_job("add", a=0, _job_id="taken", _principal=ALICE)
    batch = [
        EnqueueRequest(function_name="add", kwargs={"a": 1}, job_id="fresh-1"),
        EnqueueRequest(function_name="add", kwargs={"a": 2}, job_id="taken"),
        EnqueueRequest(function_name="add", kwargs={"a": 3}, job_id="fresh-2"),
    ]
    singles = [service.enqueue_job("add", a=i, _principal=BOB) for i in range(20)]
    outcomes = await asyncio.gather(
        service.enqueue_batch(batch, principal=ALICE), *singles, return_exceptions=True
    )
    assert isinstance(outcomes[0], JobConflict)
    assert "taken" in str(outcomes[0])
    assert not any(isinstance(outcome, BaseException) for outcome in outcomes[1:])
    stored = await history_ids(sessionmaker)
    assert owner_job_id("alice", "fresh-1") not in stored
    assert owner_job_id("alice", "fresh-2") not in stored
    assert len(stored) == 1 + 20
    assert await queued_ids(service) == stored
    # The refused batch goes through once its id is free of conflicts.
    batch[1] = EnqueueRequest(function_name="add", kwargs={"a": 2}, job_id="free")
    assert len(await service.enqueue_batch(batch, principal=ALICE)) == 3


async def test_a_caller_that_goes_away_mid_round_leaves_its_job_recorded(
    service: ArqService, sessionmaker: Any
) -> None:
    """Cancelling an enqueue whose round is being written does not undo the round: the rows
    of the other callers and the cancelled one's are committed (the reconciliation queues a
    job whose push was cut off)."""
    tasks = [
        asyncio.create_task(service.enqueue_job("add", a=i, _principal=ALICE)) for i in range(30)
    ]
    await asyncio.sleep(0)  # every caller has handed its rows over
    tasks[5].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[5], asyncio.CancelledError)
    async with sessionmaker() as session:
        count = await session.scalar(select(func.count()).select_from(JobRecord))
    assert count in (29, 30)  # the cancelled one may or may not have been handed over yet
    done = [result.job_id for result in results if not isinstance(result, BaseException)]
    assert set(done) <= await history_ids(sessionmaker)
    assert set(done) <= await queued_ids(service)


@pytest.mark.parametrize("size", [1, 7])
async def test_rounds_keep_priority_order_in_the_queue(
    service: ArqService, sessionmaker: Any, size: int
) -> None:
    """Jobs of one round are pushed in one pipeline: a critical job still sorts first."""
    normal = [service.enqueue_job("add", a=i, _principal=ALICE) for i in range(size)]
    critical = service.enqueue_job("add", a=99, _priority="high", _principal=ALICE)
    answers = await asyncio.gather(*normal, critical)
    queue = JobQueue.for_settings(service.redis, service.settings)
    first = await service.redis.zrange(queue.queue_name, 0, 0)
    assert first[0].decode() == answers[-1].job_id
