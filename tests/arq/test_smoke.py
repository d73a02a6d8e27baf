from __future__ import annotations

import asyncio

import httpx

from tests.conftest import headers


async def wait_finished(client: httpx.AsyncClient, job_id: str, owner: str = "alice") -> dict:
    for _ in range(200):
        response = await client.get(f"/api/v1/arq/status/{job_id}", headers=headers(owner))
        body = response.json()
        if body["status"] in ("complete", "failed", "aborted"):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {body}")


async def test_enqueue_runs_and_completes(client: httpx.AsyncClient, worker: object) -> None:
    response = await client.post(
        "/api/v1/arq/enqueue",
        json={"function_name": "add", "args": [2], "kwargs": {"b": 3}},
        headers=headers("alice"),
    )
    assert response.status_code == 202, response.text
    body = response.json()
    done = await wait_finished(client, body["job_id"])
    assert done["status"] == "complete"
    assert done["result"] == {"sum": 5}
    assert done["tries"] == 1
