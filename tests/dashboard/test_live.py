"""The jobs table's live statuses: one stream per page, whatever its rows, the viewer's jobs only.

A real worker, Redis and PostgreSQL; the streams are read through httpx (which hands a
response over once the stream has ended: a stream still open is observed through the hub).
"""

from __future__ import annotations

import asyncio
import html
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from arq.worker import Worker

from src.arq.config import ArqSettings
from src.arq.streams import StreamHub
from tests.arq.helpers import until, wait_for
from tests.dashboard.conftest import Clients
from tests.dashboard.helpers import DASHBOARD, queued_job, signed_in

# Fewer streams per owner than the page has rows: a stream per row could not follow them all.
STREAMS_PER_OWNER = 2
ROWS = 5
_STREAM_URL = re.compile(r'data-rows-stream-url="([^"]+)"')


@pytest.fixture
def arq_settings() -> ArqSettings:
    return ArqSettings(
        _env_file=None,
        poll_delay=0.05,
        max_jobs=10,
        job_timeout=30,
        abort_wait=3.0,
        streams_per_owner=STREAMS_PER_OWNER,
    )


def _events(body: str) -> list[tuple[str, dict[str, Any]]]:
    """(event, data) of each event of a Server-Sent Events body."""
    found = []
    for block in re.split(r"\r?\n\r?\n", body):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            found.append((lines["event"], json.loads(lines["data"])))
    return found


async def test_one_stream_follows_every_moving_row_of_the_page(
    client: httpx.AsyncClient, worker: Worker, browsers: Clients, app: Any, tmp_path: Path
) -> None:
    hub: StreamHub = app.state.stream_hub
    done = await queued_job(client, "add", a=1, b=2)
    await wait_for(client, done)
    gate = tmp_path / "gate"
    moving = [await queued_job(client, "sleep", seconds=0, until=str(gate)) for _ in range(ROWS)]
    async with browsers() as browser:
        await signed_in(browser, "alice")
        page = (await browser.get(f"{DASHBOARD}/jobs")).text
        found = _STREAM_URL.search(page)
        assert found is not None, "the jobs page has no live stream"
        url = html.unescape(found.group(1))
        followed = httpx.URL(url).params.get_list("job")
        assert sorted(followed) == sorted(moving)  # the finished row is not followed

        first = asyncio.create_task(browser.get(url))
        await until(lambda: hub.open_streams_of("alice") == 1, "the page's stream to open")
        second = asyncio.create_task(browser.get(url))  # the same page in another tab
        await until(lambda: hub.open_streams_of("alice") == 2, "the second tab's stream")
        # Two pages of five rows each hold one place: the owner's cap (2) is what is full now.
        third = await browser.get(url)
        assert third.status_code == 429
        assert not first.done() and not second.done()

        gate.touch()  # every job completes
        responses = await asyncio.wait_for(asyncio.gather(first, second), timeout=30)
    for response in responses:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = _events(response.text)
        assert events[-1][0] == "end"
        last = {data["job_id"]: data for event, data in events if event == "status"}
        assert sorted(last) == sorted(moving)
        for data in last.values():
            assert data["status"] == "complete" and data["finished"] is True
            assert data["progress"] == 100 and data["finished_at"].endswith("UTC")
    assert hub.open_streams_of("alice") == 0  # every place given back


async def test_another_users_job_ids_are_not_followed(
    client: httpx.AsyncClient, worker: Worker, browsers: Clients, tmp_path: Path
) -> None:
    alices_running = await queued_job(client, "sleep", seconds=0, until=str(tmp_path / "gate"))
    alices_done = await queued_job(client, "add", a=1)
    bobs = await queued_job(client, "add", owner="bob", a=2)
    await wait_for(client, alices_done)
    await wait_for(client, bobs, owner="bob")
    try:
        async with browsers() as bob:
            await signed_in(bob, "bob")
            missing = await bob.get(f"{DASHBOARD}/events", params={"job": "0" * 32})
            assert missing.status_code == 404
            for theirs in (alices_running, alices_done):
                response = await bob.get(f"{DASHBOARD}/events", params={"job": theirs})
                assert response.status_code == 404
                assert response.text == missing.text  # nothing tells them apart
            none = await bob.get(f"{DASHBOARD}/events")
            assert none.status_code == 404 and none.text == missing.text

            # Listed with their own job, someone else's is left out as an unknown one is.
            params = {"job": [alices_running, "0" * 32, bobs, alices_done]}
            mixed = await bob.get(f"{DASHBOARD}/events", params=params)
            assert mixed.status_code == 200
            events = _events(mixed.text)
            assert [data["job_id"] for event, data in events if event == "status"] == [bobs]
            assert alices_running not in mixed.text and alices_done not in mixed.text
    finally:
        (tmp_path / "gate").touch()
    assert (await wait_for(client, alices_running))["status"] == "complete"


async def test_a_row_other_than_the_held_one_updates_when_its_job_changes(
    client: httpx.AsyncClient,
    worker: Worker,
    browsers: Clients,
    app: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hub: StreamHub = app.state.stream_hub
    # No periodic re-read within the test: a row's update can only come from its announcement.
    monkeypatch.setattr("src.dashboard.live.STREAM_IDLE_SECONDS", 3600.0)
    held_gate, other_gate = tmp_path / "held", tmp_path / "other"
    held = await queued_job(client, "sleep", seconds=0, until=str(held_gate))
    other = await queued_job(client, "sleep", seconds=0, until=str(other_gate))
    await wait_for(client, held, ("in_progress",))
    await wait_for(client, other, ("in_progress",))
    async with browsers() as browser:
        await signed_in(browser, "alice")
        # The stream holds the first listed job's place; the other row rides along.
        stream = asyncio.create_task(browser.get(f"{DASHBOARD}/events?job={held}&job={other}"))
        await until(lambda: hub.watchers_of(other) == 1, "the stream to follow the other row")
        other_gate.touch()
        await wait_for(client, other)
        held_gate.touch()  # wakes the held job's reads; the other row must be done by then
        response = await asyncio.wait_for(stream, timeout=30)
    events = _events(response.text)
    assert events[-1][0] == "end"
    statuses = [(data["job_id"], data["status"]) for event, data in events if event == "status"]
    assert statuses.index((other, "complete")) < statuses.index((held, "complete"))
