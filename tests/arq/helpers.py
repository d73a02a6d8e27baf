"""Small helpers for job tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx

from tests.conftest import headers

API = "/api/v1/arq"
FINISHED = ("complete", "failed", "aborted")


async def enqueue(
    client: httpx.AsyncClient, function_name: str, owner: str = "alice", **body: Any
) -> httpx.Response:
    return await client.post(
        f"{API}/enqueue", json={"function_name": function_name, **body}, headers=headers(owner)
    )


async def status(client: httpx.AsyncClient, job_id: str, owner: str = "alice") -> dict[str, Any]:
    response = await client.get(f"{API}/status/{job_id}", headers=headers(owner))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def wait_for(
    client: httpx.AsyncClient,
    job_id: str,
    statuses: tuple[str, ...] = FINISHED,
    owner: str = "alice",
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Poll the status endpoint until the job reaches one of `statuses`."""
    deadline = asyncio.get_running_loop().time() + timeout
    body: dict[str, Any] = {}
    while asyncio.get_running_loop().time() < deadline:
        body = await status(client, job_id, owner)
        if body["status"] in statuses:
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} never reached {statuses}: {body}")


async def until(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Wait (bounded) until the server-side `condition` holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def at(body: dict[str, Any], field: str) -> datetime:
    """A timestamp of a status body, parsed (ISO strings do not sort: '…36Z' > '…36.013Z')."""
    return datetime.fromisoformat(body[field])
