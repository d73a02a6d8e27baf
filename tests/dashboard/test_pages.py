"""The dashboard's pages with real jobs: a real worker, Redis and PostgreSQL behind them."""

from __future__ import annotations

import asyncio
import html
import json
import re
import socket
from pathlib import Path

import httpx
from arq.worker import Worker

from src.arq.config import ArqSettings
from src.arq.service import ArqService
from src.arq.workers import announce, describe
from src.dashboard.config import DashboardSettings
from src.dashboard.pages import CONTENT_SECURITY_POLICY
from tests.arq.helpers import enqueue, wait_for
from tests.dashboard.conftest import Clients
from tests.dashboard.helpers import DASHBOARD, post, queued_job, signed_in

SCRIPT = "<script>alert('x')</script>"


def _rows(page: str, testid: str) -> str:
    """The table with `data-testid=testid` of a page ('' if it has none)."""
    found = re.search(rf'<table[^>]*data-testid="{testid}".*?</table>', page, re.S)
    return found.group(0) if found else ""


async def test_the_pages_show_real_jobs(
    client: httpx.AsyncClient, worker: Worker, browsers: Clients
) -> None:
    done = await queued_job(client, "add", a=2, b=3)
    failed = await queued_job(client, "fail", message="no such group")
    for job_id in (done, failed):
        await wait_for(client, job_id)
    async with browsers() as browser:
        await signed_in(browser, "alice")
        jobs = await browser.get(f"{DASHBOARD}/jobs")
        assert jobs.status_code == 200
        table = _rows(jobs.text, "jobs")
        assert f'href="/dashboard/jobs/{done}"' in table
        assert f'href="/dashboard/jobs/{failed}"' in table
        assert "complete" in table and "failed" in table

        page = await browser.get(f"{DASHBOARD}/jobs/{done}")
        assert page.status_code == 200
        assert '"sum": 5' in html.unescape(page.text)  # the result
        assert '"a": 2' in html.unescape(page.text)  # the arguments
        assert 'value="100"' in page.text  # the progress bar, full
        assert "data-stream-url" not in page.text  # finished: nothing live
        assert "/abort" not in page.text and "/retry" not in page.text

        page = await browser.get(f"{DASHBOARD}/jobs/{failed}")
        assert "ValueError" in page.text and "no such group" in page.text
        assert f'action="/dashboard/jobs/{failed}/retry"' in page.text

        overview = await browser.get(f"{DASHBOARD}/")
        assert overview.status_code == 200
        assert 'data-testid="dead-letters">1<' in overview.text
        assert overview.text.count("<svg") == 4  # throughput and failure rate, hour and day
        assert "1 complete, 1 failed, 0 aborted" in overview.text
        # A user learns how many workers run, not where: hosts are the admins'.
        assert "1 live worker, running 0 job(s) in all." in overview.text
        assert _rows(overview.text, "workers") == ""

        letters = await browser.get(f"{DASHBOARD}/dead-letters")
        assert failed in _rows(letters.text, "dead-letters")
        assert done not in letters.text
    async with browsers() as root:
        await signed_in(root, "root")
        workers = _rows((await root.get(f"{DASHBOARD}/")).text, "workers")
        assert socket.gethostname() in workers
        assert worker.ctx["worker_id"] in workers


async def test_filters_by_status_task_and_period(
    client: httpx.AsyncClient, worker: Worker, browsers: Clients
) -> None:
    ids = [await queued_job(client, "add", a=n) for n in range(7)]
    failed = await queued_job(client, "fail")
    for job_id in [*ids, failed]:
        await wait_for(client, job_id)
    async with browsers() as browser:
        await signed_in(browser, "alice")
        only_failed = await browser.get(f"{DASHBOARD}/jobs", params={"status": "failed"})
        assert failed in only_failed.text and ids[0] not in only_failed.text
        by_task = await browser.get(f"{DASHBOARD}/jobs", params={"task": "add", "period": "1h"})
        assert all(job_id in by_task.text for job_id in ids) and failed not in by_task.text


async def test_paging_walks_every_job_once(
    client: httpx.AsyncClient, browsers: Clients, dashboard_settings: DashboardSettings
) -> None:
    ids = [await queued_job(client, "add", a=n) for n in range(12)]
    dashboard_settings.page_size = 5  # the app's own settings object
    seen: list[str] = []
    async with browsers() as browser:
        await signed_in(browser, "alice")
        url: str | None = f"{DASHBOARD}/jobs"
        while url is not None:
            page = await browser.get(url)
            seen += re.findall(r'href="/dashboard/jobs/([0-9a-f]{32})"', _rows(page.text, "jobs"))
            found = re.search(r'href="([^"]+)" rel="next"', page.text)
            url = f"{DASHBOARD}/jobs{found.group(1).replace('&amp;', '&')}" if found else None
    assert sorted(seen) == sorted(ids)
    assert "page 1 of 3" in (await _first_page(browsers)).text


async def _first_page(browsers: Clients) -> httpx.Response:
    async with browsers() as browser:
        await signed_in(browser, "alice")
        return await browser.get(f"{DASHBOARD}/jobs")


async def test_another_users_job_is_not_there_for_them(
    client: httpx.AsyncClient, worker: Worker, browsers: Clients
) -> None:
    mine = await queued_job(client, "fail", message="alice's")
    await wait_for(client, mine)
    async with browsers() as bob:
        csrf = await signed_in(bob, "bob")
        assert mine not in (await bob.get(f"{DASHBOARD}/jobs")).text
        assert mine not in (await bob.get(f"{DASHBOARD}/dead-letters")).text
        assert "alice's" not in (await bob.get(f"{DASHBOARD}/")).text
        missing = await bob.get(f"{DASHBOARD}/jobs/{'0' * 32}")
        theirs = await bob.get(f"{DASHBOARD}/jobs/{mine}")
        assert theirs.status_code == missing.status_code == 404
        assert theirs.text == missing.text  # no difference to learn from
        assert (await bob.get(f"{DASHBOARD}/jobs/{mine}/events")).status_code == 404
        for action in ("abort", "retry"):
            response = await post(bob, f"/jobs/{mine}/{action}", csrf)
            assert response.status_code == 404, action
            assert response.text == missing.text
        response = await post(bob, "/dead-letters/retry", csrf, job_id=mine)
        assert response.status_code == 303
        assert "retried=0&refused=1" in response.headers["location"]
        response = await post(bob, "/dead-letters/retry", csrf, only=mine)
        assert "retried=0&refused=1" in response.headers["location"]
    status = await wait_for(client, mine)
    assert status["status"] == "failed" and status["attempts"] == []  # untouched


async def test_an_admin_sees_everyone_and_filters_by_owner(
    client: httpx.AsyncClient, browsers: Clients
) -> None:
    alices = await queued_job(client, "add", a=1)
    bobs = await queued_job(client, "add", owner="bob", a=2)
    async with browsers() as root:
        await signed_in(root, "root")
        everyone = _rows((await root.get(f"{DASHBOARD}/jobs")).text, "jobs")
        assert alices in everyone and bobs in everyone
        assert '<th scope="col">Owner</th>' in everyone
        page = await root.get(f"{DASHBOARD}/jobs", params={"owner": "bob"})
        only_bob = _rows(page.text, "jobs")
        assert bobs in only_bob and alices not in only_bob
        assert (await root.get(f"{DASHBOARD}/jobs/{bobs}")).status_code == 200
    async with browsers() as bob:
        await signed_in(bob, "bob")
        # A user's owner filter is ignored: their own jobs only, whatever they ask.
        asked = _rows((await bob.get(f"{DASHBOARD}/jobs", params={"owner": "alice"})).text, "jobs")
        assert bobs in asked and alices not in asked


async def test_abort_and_retry_through_the_buttons(
    client: httpx.AsyncClient, worker: Worker, browsers: Clients, tmp_path: Path
) -> None:
    running = await queued_job(client, "sleep", seconds=0, until=str(tmp_path / "never"))
    await wait_for(client, running, statuses=("in_progress",))
    async with browsers() as browser:
        csrf = await signed_in(browser, "alice")
        page = await browser.get(f"{DASHBOARD}/jobs/{running}")
        assert f'data-stream-url="/dashboard/jobs/{running}/events"' in page.text
        response = await post(browser, f"/jobs/{running}/abort", csrf)
        assert response.status_code == 303
        assert response.headers["location"] == f"{DASHBOARD}/jobs/{running}?notice=aborted"
        assert (await wait_for(client, running))["status"] == "aborted"
        again = await post(browser, f"/jobs/{running}/abort", csrf)
        assert again.headers["location"].endswith("?notice=abort-late")
        response = await post(browser, f"/jobs/{running}/retry", csrf)
        assert response.headers["location"] == f"{DASHBOARD}/jobs/{running}?notice=retried"
        retried = await browser.get(response.headers["location"])
        assert "The job was queued again." in retried.text
        assert "Earlier rounds" in retried.text


async def test_dead_letters_retry_a_selection(
    client: httpx.AsyncClient, worker: Worker, browsers: Clients, tmp_path: Path
) -> None:
    flag = tmp_path / "flag"
    ids = [await queued_job(client, "needs_flag", flag=str(flag)) for _ in range(3)]
    for job_id in ids:
        assert (await wait_for(client, job_id))["status"] == "failed"
    flag.touch()
    async with browsers() as browser:
        csrf = await signed_in(browser, "alice")
        response = await browser.post(
            f"{DASHBOARD}/dead-letters/retry",
            data={"csrf_token": csrf, "job_id": [*ids[:2], "not a job id", ids[0]]},
        )
        assert response.status_code == 303
        assert response.headers["location"] == f"{DASHBOARD}/dead-letters?retried=2&refused=1"
        for job_id in ids[:2]:
            assert (await wait_for(client, job_id))["status"] == "complete"
        page = await browser.get(response.headers["location"])
        assert "2 jobs queued again, 1 not retried" in page.text
        assert ids[2] in _rows(page.text, "dead-letters")
        assert ids[0] not in _rows(page.text, "dead-letters")


async def test_the_status_stream_follows_the_job_to_its_end(
    client: httpx.AsyncClient, worker: Worker, browsers: Clients
) -> None:
    job_id = await queued_job(client, "sleep", seconds=0.2)
    async with browsers() as browser:
        await signed_in(browser, "alice")
        response = await browser.get(f"{DASHBOARD}/jobs/{job_id}/events")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
    states = [
        json.loads(line.removeprefix("data: "))
        for line in response.text.splitlines()
        if line.startswith("data: ")
    ]
    assert [state["status"] for state in states][-1] == "complete"
    assert states[-1]["finished"] is True and states[-1]["progress"] == 100
    assert set(states[0]) == {"status", "finished", "progress", "message", "tries"}
    assert all(not state["finished"] for state in states[:-1])


async def test_what_a_job_carries_is_shown_as_text(
    client: httpx.AsyncClient, worker: Worker, browsers: Clients
) -> None:
    job_id = await queued_job(client, "fail", message=SCRIPT)
    await wait_for(client, job_id)
    async with browsers() as browser:
        await signed_in(browser, "alice")
        for path in (f"/jobs/{job_id}", "/dead-letters"):  # the pages showing the error
            page = await browser.get(f"{DASHBOARD}{path}")
            assert SCRIPT not in page.text, path
            assert "&lt;script&gt;alert(" in page.text, path
            assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


async def test_crafted_ids_and_unknown_pages_get_the_404_page(browsers: Clients) -> None:
    async with browsers() as browser:
        await signed_in(browser, "alice")
        for path in (
            "/jobs/%3Cscript%3E",
            "/jobs/" + "a" * 200,
            "/jobs/..%2F..%2Fapi",
            "/jobs/a%00b",
            "/nope",
            "/static/../config.py",
            "/static/nope.js",
        ):
            page = await browser.get(f"{DASHBOARD}{path}")
            assert page.status_code == 404, path
            assert "Not found" in page.text, path
            assert "<script>" not in page.text.lower().replace("<script src=", ""), path
            assert page.headers["x-frame-options"] == "DENY"


async def test_filters_out_of_range_are_a_400_page(browsers: Clients) -> None:
    async with browsers() as browser:
        await signed_in(browser, "alice")
        for params in ({"page": "0"}, {"owner": "x" * 101}, {"page": "many"}):
            page = await browser.get(f"{DASHBOARD}/jobs", params=params)
            assert page.status_code == 400, params
            assert "Check the filters" in page.text


async def test_every_answer_carries_the_security_headers(browsers: Clients) -> None:
    async with browsers() as browser:
        for response in (
            await browser.get(f"{DASHBOARD}/signin"),
            await browser.get(f"{DASHBOARD}/jobs"),  # the redirect to sign in
            await browser.get(f"{DASHBOARD}/static/dashboard.js"),
        ):
            assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["x-content-type-options"] == "nosniff"
        page = await browser.get(f"{DASHBOARD}/signin")
        assert page.headers["cache-control"] == "no-store"
        assert " on" not in re.sub(r"<[^>]*\bon\w+=", "", page.text)  # no inline handlers
        assert "<script>" not in page.text and "style=" not in page.text


async def test_the_overview_shows_the_schedules_the_workers_announce(
    worker: Worker, browsers: Clients, service: ArqService, arq_settings: ArqSettings
) -> None:
    for _ in range(200):  # the worker's first poll computes its schedules' next runs
        if any(job.next_run for job in worker.cron_jobs):
            break
        await asyncio.sleep(0.02)
    state = describe(worker)
    assert state["schedules"]
    # What the heartbeat sends, sent now instead of in up to five seconds.
    await announce(service.redis, arq_settings.queue_name, worker.ctx["worker_id"], state)
    async with browsers() as root:
        await signed_in(root, "root")
        overview = (await root.get(f"{DASHBOARD}/")).text
    for name in state["schedules"]:
        assert f"<code>{name}</code>" in overview


async def test_a_job_waiting_for_another_shows_what_blocks_it(
    client: httpx.AsyncClient, worker: Worker, browsers: Clients, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    first = await queued_job(client, "sleep", seconds=0, until=str(gate))
    response = await enqueue(client, "add", kwargs={"a": 1}, depends_on=[first])
    assert response.status_code == 202, response.text
    second = response.json()["job_id"]
    try:
        async with browsers() as browser:
            await signed_in(browser, "alice")
            page = (await browser.get(f"{DASHBOARD}/jobs/{second}")).text
            found = re.search(r'data-testid="depends-on">(.*?)</dd>', page, re.S)
            assert found is not None, "the job page does not say what the job waits for"
            assert f'href="/dashboard/jobs/{first}"' in found.group(1)
            assert "(not complete yet)" in found.group(1)
            assert "this job fails" in found.group(1)
            assert re.search(r'data-testid="status">\s*<[^>]+>\s*waiting', page)
            overview = (await browser.get(f"{DASHBOARD}/")).text
            assert re.search(r'data-testid="waiting">1<', overview)
    finally:
        gate.touch()
    assert (await wait_for(client, second))["status"] == "complete"
