"""Prometheus metrics: the API's `/metrics` (who may scrape, HTTP and queue figures) and a worker
process' metrics port, checked against a run of known jobs."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as sync_redis
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from src.arq.config import ArqSettings
from src.config import Settings
from src.monitoring.config import MetricsSettings
from tests.arq.helpers import API, enqueue
from tests.arq.test_worker_process import ARQ, wait_until_up, worker_env
from tests.conftest import client_for, headers

pytestmark = pytest.mark.usefixtures("redis_db")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page: (name, sorted labels) -> value."""
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(page: dict[Any, float], name: str, **labels: str) -> float:
    return page.get((name, tuple(sorted(labels.items()))), 0.0)


def local(name: str, **labels: str) -> float:
    """A sample of this process' registry (the in-process API and workers count here)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def scrape(client: httpx.AsyncClient, owner: str = "root") -> dict[Any, float]:
    response = await client.get("/metrics", headers=headers(owner))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


# -- who may scrape -----------------------------------------------------------------------------


async def test_metrics_need_an_admin_or_an_allowed_network(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    assert (await client.get("/metrics")).status_code == 401
    user = await client.get("/metrics", headers=headers("alice"))
    assert user.status_code == 403
    assert user.json()["error"] == "PermissionDenied"
    assert (await client.get("/metrics", headers={"X-API-Key": "forged-key-0000"})).status_code == (
        401
    )
    assert (await client.get("/metrics", headers=headers("root"))).status_code == 200

    # The test client comes from 127.0.0.1: allow-listed, it needs no credential; elsewhere not.
    allowed = MetricsSettings(_env_file=None, allow="10.0.0.0/8, 127.0.0.1/32")
    async with client_for(settings, metrics_settings=allowed) as trusted:
        assert (await trusted.get("/metrics")).status_code == 200
    other = MetricsSettings(_env_file=None, allow="10.0.0.0/8")
    async with client_for(settings, metrics_settings=other) as untrusted:
        assert (await untrusted.get("/metrics")).status_code == 401


def test_a_bad_allow_list_is_refused_naming_the_entry() -> None:
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33'"):
        MetricsSettings(_env_file=None, allow="127.0.0.1, 10.0.0.0/33")


# -- the API's own figures ----------------------------------------------------------------------


async def test_requests_and_enqueues_are_counted_by_route_template(
    client: httpx.AsyncClient,
) -> None:
    route = f"{API}/status/{{job_id}}"
    before = (
        local("vkp_http_requests_total", route=f"{API}/enqueue", method="POST", status="202"),
        local("vkp_http_requests_total", route=route, method="GET", status="200"),
        local("vkp_http_requests_total", route=route, method="GET", status="401"),
        local("vkp_http_requests_total", route=route, method="GET", status="404"),
        local("vkp_jobs_enqueued_total", task="add"),
        local("vkp_http_request_duration_seconds_count", route=f"{API}/enqueue", method="POST"),
    )
    ids = [(await enqueue(client, "add", kwargs={"a": n})).json()["job_id"] for n in range(3)]
    for job_id in ids:
        assert (await client.get(f"{API}/status/{job_id}", headers=headers("alice"))).is_success
    assert (await client.get(f"{API}/status/{ids[0]}")).status_code == 401  # no credential
    for n in range(4):  # other people's or made-up ids: one route label, not one per id
        response = await client.get(f"{API}/status/made-up-{n}", headers=headers("bob"))
        assert response.status_code == 404

    after = (
        local("vkp_http_requests_total", route=f"{API}/enqueue", method="POST", status="202"),
        local("vkp_http_requests_total", route=route, method="GET", status="200"),
        local("vkp_http_requests_total", route=route, method="GET", status="401"),
        local("vkp_http_requests_total", route=route, method="GET", status="404"),
        local("vkp_jobs_enqueued_total", task="add"),
        local("vkp_http_request_duration_seconds_count", route=f"{API}/enqueue", method="POST"),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [3, 3, 1, 4, 3, 3]
    page = await scrape(client)
    routes = {
        dict(labels).get("route") for name, labels in page if name == "vkp_http_requests_total"
    }
    assert not any("made-up" in (r or "") or (ids[0] in (r or "")) for r in routes), routes


async def test_paths_nobody_routes_share_one_label(client: httpx.AsyncClient) -> None:
    """A client inventing paths cannot grow the metrics: every unrouted path is one label."""
    before = local("vkp_http_requests_total", route="<unmatched>", method="GET", status="401")
    for n in range(25):
        await client.get(f"/nothing/here/{n}")
    after = local("vkp_http_requests_total", route="<unmatched>", method="GET", status="401")
    assert after - before == 25
    page = await scrape(client)
    assert not any("nothing" in str(labels) for _, labels in page)


# -- the queue's gauges, read at scrape time ---------------------------------------------------


async def test_queue_gauges_show_what_waits_by_priority(client: httpx.AsyncClient) -> None:
    for priority, count in (("high", 2), ("low", 1)):
        for _ in range(count):
            response = await enqueue(client, "add", kwargs={"a": 1}, priority=priority)
            assert response.status_code == 202
    for _ in range(3):
        await enqueue(client, "add", kwargs={"a": 1}, defer_by=3600)
    chain = [
        {"function_name": "add", "kwargs": {"a": 1}, "priority": "low"},
        {"function_name": "add", "kwargs": {"a": 2}, "depends_on": ["$0"]},
    ]
    response = await client.post(f"{API}/enqueue-batch", json=chain, headers=headers("alice"))
    assert response.status_code == 202, response.text
    await asyncio.sleep(0.05)  # the oldest ready job has waited a little

    page = await scrape(client)
    assert value(page, "vkp_queue_jobs", state="blocked", priority="normal") == 1
    assert value(page, "vkp_queue_jobs", state="ready", priority="high") == 2
    assert value(page, "vkp_queue_jobs", state="ready", priority="low") == 2
    assert value(page, "vkp_queue_jobs", state="deferred", priority="normal") == 3
    assert value(page, "vkp_queue_in_progress_jobs") == 0
    assert value(page, "vkp_workers") == 0
    assert value(page, "vkp_dead_letter_jobs") == 0
    assert 0.05 <= value(page, "vkp_queue_oldest_ready_age_seconds") < 60


async def test_a_scrape_without_redis_still_answers_without_queue_figures(
    settings: Settings, arq_settings: ArqSettings
) -> None:
    dead = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0", "redis_timeout": 0.5})
    async with client_for(dead, arq_settings=arq_settings) as http:
        response = await http.get("/metrics", headers=headers("root"))
    assert response.status_code == 200
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert "vkp_http_requests" in names  # the process' own figures are there
    assert "vkp_queue_jobs" not in names and "vkp_workers" not in names  # not stale ones


# -- a worker process' metrics port -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def worker_port(
    settings: Settings, redis_db: sync_redis.Redis, tmp_path: Path
) -> AsyncIterator[int]:
    port = free_port()
    env = {**worker_env(settings), "ARQ_METRICS_PORT": str(port), "ARQ_RETRY_BACKOFF": "0.05"}
    log = (tmp_path / "worker.log").open("wb")
    process = subprocess.Popen(
        [ARQ, "tests.worker_settings.WorkerSettings"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        await wait_until_up(redis_db, process)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


async def test_a_worker_s_scrape_counts_exactly_the_jobs_it_ran(
    client: httpx.AsyncClient, worker_port: int
) -> None:
    jobs = [(await enqueue(client, "add", kwargs={"a": n})).json()["job_id"] for n in range(5)]
    jobs.append((await enqueue(client, "fail", kwargs={"message": "boom"})).json()["job_id"])
    jobs.append((await enqueue(client, "flaky", kwargs={"failures": 2})).json()["job_id"])
    # No status reads meanwhile: a read that finds an ending first records it in the API
    # process (and counts it there, not on the worker).
    async with httpx.AsyncClient() as http:
        deadline = time.monotonic() + 30
        while True:
            page = samples((await http.get(f"http://127.0.0.1:{worker_port}/metrics")).text)
            ended = sum(
                value(page, name, task=task)
                for name, task in (
                    ("vkp_jobs_completed_total", "add"),
                    ("vkp_jobs_failed_total", "fail"),
                    ("vkp_jobs_completed_total", "flaky"),
                )
            )
            if ended >= 7 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)

    assert value(page, "vkp_jobs_started_total", task="add") == 5
    assert value(page, "vkp_jobs_completed_total", task="add") == 5
    assert value(page, "vkp_job_duration_seconds_count", task="add") == 5
    assert value(page, "vkp_job_queue_wait_seconds_count", task="add") == 5
    assert value(page, "vkp_jobs_failed_total", task="fail") == 1
    assert value(page, "vkp_jobs_started_total", task="flaky") == 3
    assert value(page, "vkp_jobs_retried_total", task="flaky") == 2
    assert value(page, "vkp_jobs_completed_total", task="flaky") == 1
    assert value(page, "vkp_jobs_lost_total", task="add") == 0
    assert value(page, "vkp_history_write_batch_size_sum") >= 7 + 7 + 2  # starts and endings
    # The worker enqueued nothing and serves no queue gauges (the API does).
    assert value(page, "vkp_jobs_enqueued_total", task="add") == 0
    assert not any(name == "vkp_queue_jobs" for name, _ in page)
