"""Group commit: enqueues that arrive while one is being written share the next write.

An enqueue's history rows must be committed before it answers (nothing accepted is lost), then
its jobs pushed to Redis; the commit and the round trips are the dominant costs. Requests that
arrive while a round is in flight wait for it to end and then go together: one transaction, one
statement and one commit, then one Redis pipeline. A lone caller waits for nothing. Each request
stays all or nothing: a request whose ids are partly taken has its own rows taken out again
before the commit and learns which of its ids were free.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from src.arq import history
from src.arq.outcome import now_ms
from src.arq.queue import JobQueue, QueuedJob

# Rows (jobs) per round at most; more requests wait for the next round.
MAX_ROUND = 2000

Request = TypeVar("Request")
Answer = TypeVar("Answer")


class Rounds(Generic[Request, Answer]):
    """`await rounds.submit(request)`: `run` is called with every request waiting when a round
    starts (up to `MAX_ROUND` by `size`) and answers each; an error is raised to every
    request of its round."""

    def __init__(
        self,
        run: Callable[[list[Request]], Awaitable[list[Answer]]],
        size: Callable[[Request], int],
    ) -> None:
        self._run = run
        self._size = size
        self._waiting: list[tuple[Request, asyncio.Future[Answer]]] = []
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, request: Request) -> Answer:
        done: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiting.append((request, done))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._rounds())
        # A caller that goes away cancels only its own future, never its round (which skips
        # answering a cancelled future).
        return await done

    async def _rounds(self) -> None:
        while self._waiting:
            count = total = 0
            while count < len(self._waiting) and total < MAX_ROUND:
                total += self._size(self._waiting[count][0])
                count += 1
            round_, self._waiting = self._waiting[:count], self._waiting[count:]
            try:
                answers = await self._run([request for request, _ in round_])
            except BaseException as exc:
                for _, done in round_:
                    if not done.done():
                        done.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, done), answer in zip(round_, answers, strict=True):
                if not done.done():
                    done.set_result(answer)


class GroupCommit:
    """Writes new jobs' history rows and pushes them to Redis, in rounds."""

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], queue: JobQueue, *, wake: bool
    ) -> None:
        self.sessionmaker = sessionmaker
        self._engine: AsyncEngine = sessionmaker.kw["bind"]
        self.queue = queue
        self.wake = wake
        self._inserts = Rounds[Sequence[dict[str, Any]], set[str]](self._insert, len)
        self._pushes = Rounds[Sequence[QueuedJob], list[bool]](self._push, len)

    async def insert(self, rows: Sequence[dict[str, Any]]) -> set[str]:
        """Insert `rows` if all their ids are free, committed; the ids that were free (all of
        them when the rows were committed, fewer when none was)."""
        return await self._inserts.submit(rows)

    async def push(self, jobs: Sequence[QueuedJob]) -> list[bool]:
        """Queue `jobs` in Redis; False for an id Redis still holds (`JobQueue.push`)."""
        return await self._pushes.submit(jobs)

    async def _insert(self, requests: list[Sequence[dict[str, Any]]]) -> list[set[str]]:
        rows = [row for request in requests for row in request]
        if all(len(request) == 1 for request in requests):
            # One statement is atomic and nothing needs taking back: no transaction around it
            # (its BEGIN and COMMIT would be two more round trips), nor an ORM session.
            async with self._engine.connect() as connection:
                autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
                return _answers(requests, await history.insert_new(autocommit, rows))[0]
        async with self.sessionmaker.begin() as session:
            answers, undo = _answers(requests, await history.insert_new(session, rows))
            if undo:
                await history.remove(session, undo)
        return answers

    async def _push(self, requests: list[Sequence[QueuedJob]]) -> list[list[bool]]:
        jobs = [job for request in requests for job in request]
        outcomes = await self.queue.push(jobs, now_ms=now_ms(), wake=self.wake)
        answers, start = [], 0
        for request in requests:
            answers.append(outcomes[start : start + len(request)])
            start += len(request)
        return answers


def _answers(
    requests: list[Sequence[dict[str, Any]]], inserted: set[str]
) -> tuple[list[set[str]], list[str]]:
    """Each request's ids that were free, and the inserted ids to take back: those of requests
    whose ids were not all free (all or nothing)."""
    answers: list[set[str]] = []
    undo: list[str] = []
    owned: set[str] = set()  # an id two requests of the round ask for is the first's
    for request in requests:
        ids = {row["job_id"] for row in request}
        mine = (ids & inserted) - owned
        owned |= ids & inserted
        if mine != ids:
            undo.extend(mine)
        answers.append(mine)
    return answers, undo
