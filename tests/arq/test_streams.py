"""Live status streams (SSE) under pressure: one Redis subscription per API process, caps per
owner and per process, a longest life with a resume hint, slots given back however a stream
ends. A real uvicorn (ASGITransport cannot stream), real Redis, PostgreSQL and worker."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as sync_redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.arq.config import ArqSettings
from src.arq.registry import TaskRegistry
from src.arq.streams import StreamHub
from src.auth.config import AuthSettings
from src.config import Settings
from src.main import create_app
from tests.arq.helpers import API, enqueue, until
from tests.conftest import WorkerHandle, headers
from tests.servers import serve_app

# -- helpers ----------------------------------------------------------------------------------


@dataclass
class Block:
    """One SSE block: its fields (`id`, `event`, `data`, `retry`) and comment lines."""

    fields: dict[str, str] = field(default_factory=dict)
    comments: list[str] = field(default_factory=list)

    @property
    def status(self) -> dict[str, Any] | None:
        if self.fields.get("event") != "status":
            return None
        body: dict[str, Any] = json.loads(self.fields["data"])
        return body


class Reader:
    """Reads an SSE response block by block. Keep it while the stream should stay open: once
    its line iterator is garbage-collected, httpcore closes the connection."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.aiter_lines()

    async def block(self) -> Block | None:
        """The next block, or None once the server has ended the stream."""
        current = Block()
        async for line in self.lines:
            if line == "":
                if current.fields or current.comments:
                    return current
                continue
            if line.startswith(":"):
                current.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            current.fields[name] = value.removeprefix(" ")
        return current if current.fields or current.comments else None

    async def next_status(self) -> dict[str, Any]:
        """The next `status` event (keep-alives and hints skipped)."""
        for _ in range(100):
            block = await self.block()
            assert block is not None, "the stream ended before a status event"
            if block.status is not None:
                return block.status
        raise AssertionError("no status event in 100 blocks")

    async def until_status(self, wanted: Callable[[dict[str, Any]], bool]) -> list[Block]:
        """Every block up to and including the first `status` event that is `wanted`."""
        blocks: list[Block] = []
        for _ in range(1000):
            block = await self.block()
            assert block is not None, "the stream ended before the wanted status"
            blocks.append(block)
            if block.status is not None and wanted(block.status):
                return blocks
        raise AssertionError("no wanted status event in 1000 blocks")

    async def rest(self) -> list[Block]:
        """Every block until the server ends the stream."""
        blocks: list[Block] = []
        for _ in range(1000):
            block = await self.block()
            if block is None:
                return blocks
            blocks.append(block)
        raise AssertionError("the stream did not end")


def statuses(blocks: list[Block]) -> list[dict[str, Any]]:
    return [block.status for block in blocks if block.status is not None]


@dataclass
class Live:
    url: str
    hub: StreamHub
    http: httpx.AsyncClient

    def stream(self, job_id: str, owner: str = "alice", **extra: str) -> Any:
        return self.http.stream(
            "GET", f"{API}/status/{job_id}/stream", headers={**headers(owner), **extra}
        )


@contextlib.asynccontextmanager
async def live_app(
    settings: Settings,
    arq_settings: ArqSettings,
    auth_settings: AuthSettings,
    registry: TaskRegistry,
    *,
    connections: int = 50,
) -> AsyncIterator[Live]:
    """The app on these settings, served by uvicorn, with a client that may hold
    `connections` connections at once."""
    app = create_app(
        settings=settings, arq_settings=arq_settings, auth_settings=auth_settings, registry=registry
    )
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with (
        app.router.lifespan_context(app),
        serve_app(app) as port,
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=httpx.Timeout(60), limits=limits
        ) as http,
    ):
        yield Live(url=f"http://127.0.0.1:{port}", hub=app.state.stream_hub, http=http)


def subscribers(redis_db: sync_redis.Redis) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The connections on this run's Redis database subscribed by pattern, and by channel."""
    number = str(redis_db.connection_pool.connection_kwargs.get("db", 0))
    mine = [c for c in redis_db.client_list() if str(c.get("db")) == number]
    return (
        [c for c in mine if int(c.get("psub", 0)) > 0],
        [c for c in mine if int(c.get("sub", 0)) > 0],
    )


@pytest.fixture
def streams_settings(arq_settings: ArqSettings) -> Callable[..., ArqSettings]:
    def make(**overrides: Any) -> ArqSettings:
        return arq_settings.model_copy(update=overrides)

    return make


# -- the attack -------------------------------------------------------------------------------

ATTACK = 500
ALICE_CAP = 20


@pytest.mark.timeout(240)
async def test_one_owner_s_streams_cannot_cut_the_api_off_from_redis(
    settings: Settings,
    streams_settings: Callable[..., ArqSettings],
    auth_settings: AuthSettings,
    registry: TaskRegistry,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """500 streams from alice against a pool of 20 Redis connections: she gets 429s past her
    cap, and bob's enqueue, status, stream and the health check still answer 2xx."""
    small_pool = settings.model_copy(update={"redis_max_connections": 20})
    async with (
        live_app(
            small_pool,
            streams_settings(streams_per_owner=ALICE_CAP),
            auth_settings,
            registry,
            connections=ATTACK + 50,
        ) as live,
        contextlib.AsyncExitStack() as held,
    ):
        # No worker: the job stays queued, so every accepted stream stays open.
        job_id = (await enqueue(live.http, "sleep", kwargs={"seconds": 1})).json()["job_id"]

        readers: list[Reader] = []

        async def attack() -> tuple[int, dict[str, Any] | str]:
            response = await held.enter_async_context(live.stream(job_id))
            if response.status_code == 200:
                reader = Reader(response)
                readers.append(reader)  # dropping a reader would close its connection
                return 200, await reader.next_status()
            await response.aread()
            if response.status_code == 429:
                assert int(response.headers["Retry-After"]) >= 1
                return 429, response.json()
            return response.status_code, response.text

        outcomes = await asyncio.gather(*(attack() for _ in range(ATTACK)))
        codes = [code for code, _ in outcomes]
        assert codes.count(200) == ALICE_CAP, sorted(set(codes))
        assert codes.count(429) == ATTACK - ALICE_CAP, sorted(set(codes))
        assert all(body["status"] == "queued" for code, body in outcomes if code == 200)  # type: ignore[index]
        refusal = next(body for code, body in outcomes if code == 429)
        assert isinstance(refusal, dict)
        assert refusal["error"] == "StreamLimitReached"
        assert refusal["limit"] == ALICE_CAP
        assert live.hub.open_streams_of("alice") == ALICE_CAP

        # Alice's streams are all open now; everyone else is served as usual.
        health = await live.http.get(f"{API}/health")
        assert health.status_code == 200, health.text
        bob_job = await enqueue(live.http, "add", owner="bob", kwargs={"a": 1})
        assert bob_job.status_code == 202, bob_job.text
        bob_id = bob_job.json()["job_id"]
        bob_status = await live.http.get(f"{API}/status/{bob_id}", headers=headers("bob"))
        assert bob_status.status_code == 200, bob_status.text
        async with live.stream(bob_id, "bob") as bob_stream:
            assert bob_stream.status_code == 200
            assert (await Reader(bob_stream).next_status())["job_id"] == bob_id
        # Alice herself still reads her job's status; only her extra streams were refused.
        alice_status = await live.http.get(f"{API}/status/{job_id}", headers=headers("alice"))
        assert alice_status.status_code == 200, alice_status.text


# -- one subscription, live events ------------------------------------------------------------


async def test_streams_share_one_subscription_and_each_gets_live_events(
    app: Any,
    client: httpx.AsyncClient,
    worker_handle: WorkerHandle,
    redis_db: sync_redis.Redis,
    tmp_path: Path,
) -> None:
    # Each job reports "sleeping" at 50 %, then holds until the gate opens: every stream sees
    # that state whatever the machine's load (a stream sends states, not every transition).
    gate = tmp_path / "gate"
    kwargs = {"seconds": 0, "until": str(gate)}
    jobs = [
        (await enqueue(client, "sleep", owner=owner, kwargs=kwargs)).json()["job_id"]
        for owner in ("alice", "alice", "bob")
    ]
    watchers = [(jobs[0], "alice")] * 4 + [(jobs[1], "alice")] * 2 + [(jobs[2], "bob")]
    hub: StreamHub = app.state.stream_hub
    await until(lambda: hub.connected, "the hub's subscription")
    async with (
        serve_app(app) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
        contextlib.AsyncExitStack() as held,
    ):
        readers = []
        for job_id, owner in watchers:
            response = await held.enter_async_context(
                http.stream("GET", f"{API}/status/{job_id}/stream", headers=headers(owner))
            )
            assert response.status_code == 200
            reader = Reader(response)
            assert (await reader.next_status())["status"] == "queued"
            readers.append(reader)

        # Seven streams, one pattern subscription; no stream subscribed on its own.
        by_pattern, by_channel = subscribers(redis_db)
        assert len(by_pattern) == 1, by_pattern
        assert by_channel == [], by_channel  # the worker (its wake-up channel) is not started
        assert hub.open_streams == len(watchers)

        await worker_handle.start()
        sleeping = await asyncio.gather(
            *(reader.until_status(lambda event: event["progress"] == 50) for reader in readers)
        )
        gate.touch()
        ends = await asyncio.gather(*(reader.rest() for reader in readers))
        seen = [first + last for first, last in zip(sleeping, ends, strict=True)]
    for (job_id, _), blocks in zip(watchers, seen, strict=True):
        events = statuses(blocks)
        assert {event["job_id"] for event in events} == {job_id}
        assert events[-1]["status"] == "complete"
        assert any(e["progress"] == 50 and e["message"] == "sleeping" for e in events), events
        assert events[-1]["progress"] == 100
        # One event per change: no state is sent twice in a row.
        ids = [block.fields["id"] for block in blocks if block.status is not None]
        assert all(a != b for a, b in itertools.pairwise(ids))
    await until(lambda: hub.open_streams == 0, "the finished streams' slots")


async def test_the_subscription_comes_back_after_its_connection_drops(
    app: Any,
    client: httpx.AsyncClient,
    worker_handle: WorkerHandle,
    redis_db: sync_redis.Redis,
    tmp_path: Path,
) -> None:
    hub: StreamHub = app.state.stream_hub
    await until(lambda: hub.connected, "the hub's subscription")
    (first,), _ = subscribers(redis_db)
    gate = tmp_path / "gate"  # the job holds at 50 % until it opens
    job_id = (await enqueue(client, "sleep", kwargs={"seconds": 0, "until": str(gate)})).json()[
        "job_id"
    ]
    async with (
        serve_app(app) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
        http.stream("GET", f"{API}/status/{job_id}/stream", headers=headers("alice")) as response,
    ):
        reader = Reader(response)
        assert (await reader.next_status())["status"] == "queued"
        redis_db.client_kill_filter(_id=first["id"])
        await until(lambda: not hub.connected, "the hub to notice the drop")
        await until(lambda: hub.connected, "the hub to subscribe again")
        (second,), _ = subscribers(redis_db)
        assert second["id"] != first["id"]
        await worker_handle.start()
        blocks = await reader.until_status(lambda event: event["progress"] == 50)
        gate.touch()
        events = statuses(blocks + await reader.rest())
    assert events[-1]["status"] == "complete"
    assert any(e["progress"] == 50 for e in events)


# -- longest life and resuming ----------------------------------------------------------------


async def test_max_life_ends_the_stream_with_a_retry_hint_and_resuming_skips_what_was_sent(
    settings: Settings,
    streams_settings: Callable[..., ArqSettings],
    auth_settings: AuthSettings,
    registry: TaskRegistry,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    async with live_app(
        settings, streams_settings(stream_max_seconds=1.0), auth_settings, registry
    ) as live:
        job_id = (await enqueue(live.http, "sleep", kwargs={"seconds": 1})).json()["job_id"]

        async with live.stream(job_id) as response:
            assert response.status_code == 200
            blocks = await Reader(response).rest()
        assert blocks[0].fields == {"retry": "2000"}  # as before: the reconnect delay first
        (event,) = statuses(blocks)
        assert event["status"] == "queued"
        last_id = next(b.fields["id"] for b in blocks if b.status is not None)
        # The server ended it, telling the client to come back.
        assert "retry" in blocks[-1].fields and int(blocks[-1].fields["retry"]) > 0
        assert blocks[-1].status is None

        # Resuming with the last id: the unchanged state is not sent again.
        async with live.stream(job_id, **{"Last-Event-ID": last_id}) as response:
            assert response.status_code == 200
            again = await Reader(response).rest()
        assert statuses(again) == []
        assert "retry" in again[-1].fields

        # A change while away is sent on resuming, and the finished job ends the stream.
        aborted = await live.http.delete(f"{API}/abort/{job_id}", headers=headers("alice"))
        assert aborted.status_code == 200, aborted.text
        async with live.stream(job_id, **{"Last-Event-ID": last_id}) as response:
            ending = await Reader(response).rest()
        assert [e["status"] for e in statuses(ending)] == ["aborted"]
        assert "retry" not in ending[-1].fields  # finished: nothing to come back for
        await until(lambda: live.hub.open_streams == 0, "the ended streams' slots")


# -- caps and slots ---------------------------------------------------------------------------


async def test_caps_per_owner_and_process_and_a_disconnect_frees_the_slot(
    settings: Settings,
    streams_settings: Callable[..., ArqSettings],
    auth_settings: AuthSettings,
    registry: TaskRegistry,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    arq = streams_settings(streams_per_owner=2, streams_per_process=3)
    async with live_app(settings, arq, auth_settings, registry) as live:
        alice_job = (await enqueue(live.http, "sleep", kwargs={"seconds": 1})).json()["job_id"]
        bob_job = (await enqueue(live.http, "sleep", owner="bob", kwargs={"seconds": 1})).json()[
            "job_id"
        ]
        async with contextlib.AsyncExitStack() as held:
            first = await held.enter_async_context(live.stream(alice_job))
            # Readers are kept: dropping one would close its connection.
            first_reader = Reader(first)
            await first_reader.next_status()
            async with live.stream(alice_job) as second:
                assert second.status_code == 200
                second_reader = Reader(second)
                await second_reader.next_status()

                async with live.stream(alice_job) as third:
                    await third.aread()
                assert third.status_code == 429
                assert third.json()["error"] == "StreamLimitReached"
                assert int(third.headers["Retry-After"]) >= 1

                # Bob is not held back by alice's cap...
                bobs = await held.enter_async_context(live.stream(bob_job, "bob"))
                assert bobs.status_code == 200
                bobs_reader = Reader(bobs)
                await bobs_reader.next_status()
                # ...but the process is full now.
                async with live.stream(bob_job, "bob") as over:
                    await over.aread()
                assert over.status_code == 503
                assert over.json()["error"] == "StreamCapacityReached"
                assert "Retry-After" in over.headers
            # Alice hung up her second stream: the server notices and frees its slot.
            await until(lambda: live.hub.open_streams_of("alice") == 1, "the freed slot")
            async with live.stream(alice_job) as again:
                assert again.status_code == 200
                assert (await Reader(again).next_status())["job_id"] == alice_job
        await until(lambda: live.hub.open_streams == 0, "every slot")


async def test_unknown_or_someone_elses_job_is_404_and_takes_no_slot(
    settings: Settings,
    streams_settings: Callable[..., ArqSettings],
    auth_settings: AuthSettings,
    registry: TaskRegistry,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    async with live_app(
        settings, streams_settings(streams_per_owner=1), auth_settings, registry
    ) as live:
        job_id = (await enqueue(live.http, "sleep", kwargs={"seconds": 1})).json()["job_id"]
        for _ in range(3):
            for target, owner in (("no-such-job", "bob"), (job_id, "bob")):
                async with live.stream(target, owner) as response:
                    await response.aread()
                assert response.status_code == 404
                assert response.json()["error"] == "JobNotFound"
        assert live.hub.open_streams == 0


async def test_server_shutdown_ends_streams_with_a_retry_hint_and_frees_them(
    app: Any, client: httpx.AsyncClient
) -> None:
    hub: StreamHub = app.state.stream_hub
    job_id = (await enqueue(client, "sleep", kwargs={"seconds": 1})).json()["job_id"]
    async with (
        serve_app(app) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
        http.stream("GET", f"{API}/status/{job_id}/stream", headers=headers("alice")) as response,
    ):
        reader = Reader(response)
        assert (await reader.next_status())["status"] == "queued"
        await hub.stop()  # what the lifespan does at shutdown
        rest = await reader.rest()
        assert "retry" in rest[-1].fields
        await until(lambda: hub.open_streams == 0, "the slot of the ended stream")
        refused = await http.get(f"{API}/status/{job_id}/stream", headers=headers("alice"))
        assert refused.status_code == 503
        assert "Retry-After" in refused.headers


async def test_a_stream_follows_the_job_by_the_id_its_owner_chose(
    settings: Settings,
    arq_settings: ArqSettings,
    auth_settings: AuthSettings,
    registry: TaskRegistry,
    redis_db: sync_redis.Redis,
) -> None:
    """`status/mine-1/stream` follows the owner's job stored as `o…:mine-1`, woken by the
    changes announced under that stored id (well within the 15 s safety-net re-read)."""
    async with live_app(settings, arq_settings, auth_settings, registry) as live:
        created = await live.http.post(
            f"{API}/enqueue",
            json={"function_name": "add", "kwargs": {"a": 1}, "job_id": "mine-1", "defer_by": 3600},
            headers=headers("alice"),
        )
        stored = created.json()["job_id"]
        assert stored != "mine-1"
        async with live.stream("mine-1") as response:
            assert response.status_code == 200
            reader = Reader(response)
            first = await reader.next_status()
            assert (first["job_id"], first["status"]) == (stored, "deferred")
            aborted = await live.http.delete(f"{API}/abort/mine-1", headers=headers("alice"))
            assert aborted.status_code == 200
            blocks = await asyncio.wait_for(
                reader.until_status(lambda status: status["status"] == "aborted"), 10
            )
            assert statuses(blocks)[-1]["job_id"] == stored
        async with live.stream("mine-1", owner="bob") as other:
            assert other.status_code == 404
