"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against uvicorn
serving the app on a free port, a real in-process worker, Redis and PostgreSQL.

Nothing is downloaded at test time: the browser is the system's (`.ci/run` installs it). The
tests wait for what a user would see (Playwright's `expect` retries until it holds).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from arq.worker import Worker
from playwright.async_api import Browser, Dialog, Page, async_playwright, expect
from pydantic import BaseModel, ConfigDict, Field

from src.arq.context import JobContext
from src.arq.registry import TaskRegistry
from tests.arq.helpers import API, enqueue, status, wait_for
from tests.conftest import API_KEYS, headers
from tests.servers import serve_app
from tests.tasks import registry as test_tasks_registry

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCRIPT = "<script>alert('x')</script>"
# The outermost elements that reach past the window's right edge, for a failure's message.
WIDER_THAN_THE_SCREEN = """
[...document.querySelectorAll("body *")]
  .filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5)
  .filter(e => !(e.parentElement && e.parentElement.getBoundingClientRect().right
                 > window.innerWidth + 0.5))
  .slice(0, 5)
  .map(e => e.tagName.toLowerCase() + (e.className ? "." + e.className : "")
            + " " + Math.round(e.getBoundingClientRect().right) + " px")
"""

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium (`.ci/run` installs it)"
)

steps_registry = TaskRegistry()


class StepsArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gates: str = Field(description="a directory: step i waits for the file named i in it")
    steps: int = Field(4, ge=1, le=20)


@steps_registry.task(args=StepsArgs)
async def steps(ctx: JobContext, args: StepsArgs) -> dict[str, int]:
    """Report progress step by step, each step once the test opens its gate."""
    for step in range(1, args.steps + 1):
        while not (Path(args.gates) / str(step)).exists():
            await asyncio.sleep(0.02)
        await ctx["progress"](100 * step / args.steps, f"step {step} of {args.steps}")
    return {"steps": args.steps}


@pytest.fixture
def registry() -> TaskRegistry:
    return test_tasks_registry.merged(steps_registry)


@pytest.fixture
async def base_url(app: Any, worker: Worker) -> AsyncIterator[str]:
    """The app served by uvicorn on a free loopback port, with a worker running its jobs."""
    async with serve_app(app) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


async def new_page(browser: Browser, base_url: str) -> Page:
    """A page of a fresh browser context (its own cookies), which accepts every confirmation."""
    context = await browser.new_context(base_url=base_url)
    context.set_default_timeout(10_000)
    page = await context.new_page()

    async def accept(dialog: Dialog) -> None:
        await dialog.accept()

    page.on("dialog", accept)
    return page


async def sign_in(page: Page, owner: str) -> None:
    await page.goto("/dashboard/")
    await expect(page).to_have_url("/dashboard/signin?next=%2Fdashboard%2F")
    await page.get_by_label("API key or JWT").fill(API_KEYS[owner])
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_test_id("who")).to_have_text(f"{owner} (" + _role(owner) + ")")


def _role(owner: str) -> str:
    return "admin" if owner == "root" else "user"


async def test_sign_in_watch_a_job_move_to_done_and_sign_out(
    client: httpx.AsyncClient, base_url: str, browser: Browser, tmp_path: Path
) -> None:
    page = await new_page(browser, base_url)
    await page.goto("/dashboard/signin")
    await page.get_by_label("API key or JWT").fill("not-anybodys-key")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_have_text("That API key or token was not accepted.")

    await sign_in(page, "alice")
    response = await enqueue(client, "steps", kwargs={"gates": str(tmp_path), "steps": 4})
    job_id = response.json()["job_id"]
    await page.get_by_role("link", name="Jobs", exact=True).click()
    await page.get_by_role("link", name=job_id).click()
    await expect(page.get_by_test_id("job-id")).to_have_text(job_id)
    await expect(page.get_by_test_id("status")).to_have_text("in progress")
    await page.evaluate("window.notReloaded = true")
    for step in range(1, 4):
        (tmp_path / str(step)).touch()
        await expect(page.get_by_test_id("progress-text")).to_have_text(f"{step * 25} %")
        await expect(page.get_by_test_id("message")).to_have_text(f"step {step} of 4")
        await expect(page.locator("progress")).to_have_js_property("value", step * 25)
    assert await page.evaluate("window.notReloaded") is True  # it moved live
    (tmp_path / "4").touch()
    await expect(page.get_by_test_id("status")).to_have_text("complete")
    await expect(page.get_by_test_id("progress-text")).to_have_text("100 %")
    await expect(page.get_by_test_id("result")).to_contain_text('"steps": 4')

    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url("/dashboard/signin")
    await page.goto(f"/dashboard/jobs/{job_id}")
    await expect(page).to_have_url(f"/dashboard/signin?next=%2Fdashboard%2Fjobs%2F{job_id}")


async def test_abort_a_running_job_with_its_button(
    client: httpx.AsyncClient, base_url: str, browser: Browser, tmp_path: Path
) -> None:
    kwargs = {"seconds": 0, "until": str(tmp_path / "never")}
    job_id = (await enqueue(client, "sleep", kwargs=kwargs)).json()["job_id"]
    await wait_for(client, job_id, ("in_progress",))
    page = await new_page(browser, base_url)
    await sign_in(page, "alice")
    await page.goto(f"/dashboard/jobs/{job_id}")
    await expect(page.get_by_test_id("message")).to_have_text("sleeping")
    questions: list[str] = []
    page.on("dialog", lambda dialog: questions.append(dialog.message))
    await page.get_by_role("button", name="Abort").click()
    await expect(page.get_by_test_id("status")).to_have_text("aborted")
    await expect(page.get_by_role("status")).to_have_text(
        "The job was aborted (or is being stopped)."
    )
    assert questions and questions[0].startswith(f"Abort job {job_id}?")
    assert (await wait_for(client, job_id))["status"] == "aborted"


async def test_retry_a_failed_job_from_the_dead_letters(
    client: httpx.AsyncClient, base_url: str, browser: Browser, tmp_path: Path
) -> None:
    flag = tmp_path / "flag"
    job_id = (await enqueue(client, "needs_flag", kwargs={"flag": str(flag)})).json()["job_id"]
    assert (await wait_for(client, job_id))["status"] == "failed"
    flag.touch()  # the cause is fixed
    page = await new_page(browser, base_url)
    await sign_in(page, "alice")
    await page.get_by_role("link", name="Dead letters").click()
    table = page.get_by_test_id("dead-letters")
    await expect(table).to_contain_text("FileNotFoundError")
    await page.get_by_label(f"Select {job_id}").check()
    await page.get_by_role("button", name="Retry selected").click()
    await expect(page.get_by_test_id("retry-outcome")).to_have_text("1 job queued again.")
    assert (await wait_for(client, job_id))["status"] == "complete"
    await page.goto(f"/dashboard/jobs/{job_id}")
    await expect(page.get_by_test_id("status")).to_have_text("complete")
    await expect(page.get_by_text("Earlier rounds")).to_be_visible()


async def test_another_users_job_and_hostile_text(
    client: httpx.AsyncClient, base_url: str, browser: Browser
) -> None:
    job_id = (await enqueue(client, "fail", kwargs={"message": SCRIPT})).json()["job_id"]
    assert (await wait_for(client, job_id))["status"] == "failed"
    alice = await new_page(browser, base_url)
    dialogs: list[str] = []
    alice.on("dialog", lambda dialog: dialogs.append(dialog.message))
    await sign_in(alice, "alice")
    await alice.goto(f"/dashboard/jobs/{job_id}")
    await expect(alice.get_by_test_id("error")).to_have_text(f"ValueError: {SCRIPT}")
    await expect(alice.get_by_test_id("args")).to_contain_text(SCRIPT)
    assert dialogs == []  # shown as text: nothing ran

    bob = await new_page(browser, base_url)
    await sign_in(bob, "bob")
    await bob.get_by_role("link", name="Jobs", exact=True).click()
    await expect(bob.get_by_text("No jobs match these filters.")).to_be_visible()
    response = await bob.goto(f"/dashboard/jobs/{job_id}")
    assert response is not None and response.status == 404
    await expect(bob.get_by_role("heading", level=1)).to_have_text("Not found (404)")


async def test_enqueue_ping_through_its_form_and_see_it_complete(
    base_url: str, browser: Browser
) -> None:
    page = await new_page(browser, base_url)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    await sign_in(page, "alice")
    await page.get_by_role("link", name="Enqueue").click()
    await page.get_by_role("link", name="ping", exact=True).click()
    await page.get_by_label("Message").fill(SCRIPT)
    await page.get_by_role("button", name="Enqueue").click()
    await expect(page.get_by_test_id("status")).to_have_text("complete")
    await expect(page.get_by_test_id("args")).to_contain_text(SCRIPT)
    await expect(page.get_by_test_id("result")).to_contain_text('"message": "<script>')
    assert dialogs == []


async def test_the_jobs_table_follows_a_running_job_to_its_end_without_reloading(
    client: httpx.AsyncClient, base_url: str, browser: Browser, tmp_path: Path
) -> None:
    job_id = (await enqueue(client, "steps", kwargs={"gates": str(tmp_path), "steps": 1})).json()[
        "job_id"
    ]
    await wait_for(client, job_id, ("in_progress",))
    page = await new_page(browser, base_url)
    await sign_in(page, "alice")
    await page.get_by_role("link", name="Jobs", exact=True).click()
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=job_id))
    cell = row.locator('[data-field="status"]')
    await expect(cell).to_have_text("in progress")
    await page.evaluate("window.notReloaded = true")
    (tmp_path / "1").touch()  # the gate opens: the job completes
    await expect(cell).to_have_text("complete")
    await expect(row.locator('[data-field="progress-text"]')).to_have_text("100 %")
    await expect(row.locator('[data-field="finished_at"]')).to_contain_text("UTC")
    assert await page.evaluate("window.notReloaded") is True  # it changed live


async def _refused(page: Page, button: str) -> None:
    """Press `button` and see the 403 page come back."""
    async with page.expect_response(lambda response: response.request.method == "POST") as sent:
        await page.get_by_role("button", name=button).click()
    assert (await sent.value).status == 403
    await expect(page.get_by_role("heading", level=1)).to_have_text("Not allowed (403)")


async def test_a_form_whose_csrf_token_was_removed_or_altered_is_refused(
    client: httpx.AsyncClient, base_url: str, browser: Browser, tmp_path: Path
) -> None:
    page = await new_page(browser, base_url)
    await sign_in(page, "alice")
    await page.goto("/dashboard/enqueue/ping")
    await page.get_by_label("Message").fill("sent without its token")
    await page.evaluate("document.querySelector('form.enqueue [name=csrf_token]').remove()")
    await _refused(page, "Enqueue")
    listed = await client.get(f"{API}/jobs", params={"function": "ping"}, headers=headers("alice"))
    assert listed.status_code == 200 and listed.json()["total"] == 0  # nothing was queued

    kwargs = {"seconds": 0, "until": str(tmp_path / "gate")}
    job_id = (await enqueue(client, "sleep", kwargs=kwargs)).json()["job_id"]
    await wait_for(client, job_id, ("in_progress",))
    await page.goto(f"/dashboard/jobs/{job_id}")
    await expect(page.get_by_test_id("message")).to_have_text("sleeping")
    await page.evaluate(
        "for (const input of document.querySelectorAll('[name=csrf_token]')) {"
        " input.value = input.value.slice(0, -2) + (input.value.endsWith('AA') ? 'BB' : 'AA'); }"
    )
    await _refused(page, "Abort")
    body = await status(client, job_id)
    assert body["status"] == "in_progress" and body["aborted_by"] is None  # not aborted
    (tmp_path / "gate").touch()
    assert (await wait_for(client, job_id))["status"] == "complete"


async def test_a_phone_sized_window_and_the_keyboard_alone_reach_every_page(
    base_url: str, browser: Browser
) -> None:
    """At a phone's width (375 px) no page is wider than the screen, and a keyboard alone signs
    in and moves from page to page (Tab to a link, Enter)."""
    context = await browser.new_context(base_url=base_url, viewport={"width": 375, "height": 740})
    context.set_default_timeout(10_000)
    page = await context.new_page()
    await page.goto("/dashboard/signin")
    await expect(page.get_by_label("API key or JWT")).to_be_focused()
    await page.keyboard.type(API_KEYS["alice"])
    await page.keyboard.press("Enter")
    await expect(page.get_by_test_id("who")).to_have_text("alice (user)")
    pages = {
        "Jobs": "/dashboard/jobs",
        "Dead letters": "/dashboard/dead-letters",
        "Communities": "/dashboard/communities",
        "Reports": "/dashboard/reports",
        "Enqueue": "/dashboard/enqueue",
        "Overview": "/dashboard/",
    }
    for name, path in pages.items():
        link = page.get_by_role("navigation", name="Dashboard").get_by_role(
            "link", name=name, exact=True
        )
        for _ in range(40):
            if await link.evaluate("element => element === document.activeElement"):
                break
            await page.keyboard.press("Tab")
        else:
            pytest.fail(f"Tab never reached the {name!r} link")
        await page.keyboard.press("Enter")
        await expect(page).to_have_url(path)
        wider = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert wider <= 0, f"{path} is {wider} px wider than a phone's screen: " + str(
            await page.evaluate(WIDER_THAN_THE_SCREEN)
        )
    await context.close()
