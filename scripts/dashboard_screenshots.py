"""Screenshots of every dashboard page, for `docs/` and the README.

Against a running service (`make run`, with a few jobs queued): signs in with the key given and
saves one PNG per page at a desktop's width, and the overview and a job at a phone's width too.
It drives the system's Chromium (Debian's `chromium` package), as the browser tests do:

    .venv/bin/python -m scripts.dashboard_screenshots --url http://127.0.0.1:8000 \
        --api-key dev-key-change-me --out docs/dashboard
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
from pathlib import Path

from playwright.async_api import Page, async_playwright

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
PAGES = {
    "overview": "/dashboard/",
    "jobs": "/dashboard/jobs",
    "dead-letters": "/dashboard/dead-letters",
    "enqueue": "/dashboard/enqueue",
    "communities": "/dashboard/communities",
    "reports": "/dashboard/reports",
}
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


async def shoot(url: str, api_key: str, out: Path, chromium: str) -> list[Path]:
    saved: list[Path] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(base_url=url, viewport=DESKTOP)
            page = await context.new_page()
            await page.goto("/dashboard/signin")
            saved.append(await _save(page, out / "signin.png"))
            await page.get_by_label("API key or JWT").fill(api_key)
            await page.get_by_role("button", name="Sign in").click()
            await page.wait_for_url("**/dashboard/")
            for name, path in PAGES.items():
                await page.goto(path)
                saved.append(await _save(page, out / f"{name}.png"))
            first_job = page.locator("a[href^='/dashboard/jobs/']").first
            await page.goto("/dashboard/jobs")
            if await first_job.count():
                await first_job.click()
                saved.append(await _save(page, out / "job.png"))
                await page.set_viewport_size(PHONE)
                saved.append(await _save(page, out / "job-phone.png"))
            await page.set_viewport_size(PHONE)
            await page.goto("/dashboard/")
            saved.append(await _save(page, out / "overview-phone.png"))
        finally:
            await browser.close()
    return saved


async def _save(page: Page, path: Path) -> Path:
    await page.wait_for_load_state("networkidle")
    await page.screenshot(path=str(path), full_page=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--out", type=Path, default=Path("docs/dashboard"))
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for path in asyncio.run(shoot(args.url, args.api_key, args.out, args.chromium)):
        print(path)


if __name__ == "__main__":
    main()
