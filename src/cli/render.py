"""What `vkp` prints: job tables, one job's status, a finished job's outcome (rich)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

FINISHED = frozenset({"complete", "failed", "aborted"})
STYLES = {
    "waiting": "blue",
    "queued": "cyan",
    "deferred": "cyan",
    "in_progress": "yellow",
    "retrying": "magenta",
    "complete": "green",
    "failed": "red",
    "aborted": "red",
}


def plain(value: object, style: str = "") -> Text:
    """API text as it is: never read as rich markup."""
    return Text("" if value is None else str(value), style=style)


def status_text(status: str) -> Text:
    return plain(status, STYLES.get(status, ""))


def when(value: object) -> str:
    """An ISO time of the API, in local time, to the second."""
    if not isinstance(value, str) or not value:
        return ""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def error_line(error: object) -> str:
    if isinstance(error, dict):
        kind, message = error.get("type"), error.get("message")
        return f"{kind}: {message}" if kind else str(message)
    return "" if error is None else str(error)


def jobs_table(page: dict[str, Any], *, title: str) -> Table:
    """A page of jobs: id, task, status, progress, tries, enqueued, finished, error."""
    items: list[dict[str, Any]] = page.get("items") or []
    total = page.get("total", len(items))
    offset = page.get("offset", 0)
    shown = f"{offset + 1}-{offset + len(items)} of {total}" if items else f"none of {total}"
    table = Table(title=f"{title} ({shown})", title_justify="left")
    table.add_column("id", no_wrap=True)
    table.add_column("task", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("progress", justify="right", no_wrap=True)
    table.add_column("tries", justify="right", no_wrap=True)
    table.add_column("enqueued", no_wrap=True)
    table.add_column("finished", no_wrap=True)
    table.add_column("error", max_width=60, overflow="ellipsis", no_wrap=True)
    for job in items:
        table.add_row(
            plain(job.get("job_id")),
            plain(job.get("function")),
            status_text(str(job.get("status"))),
            plain(f"{job.get('progress', 0)} %"),
            plain(job.get("tries")),
            plain(when(job.get("enqueued_at"))),
            plain(when(job.get("finished_at"))),
            plain(error_line(job.get("error")), "red"),
        )
    return table


def status_table(job: dict[str, Any]) -> Table:
    """One job's status, a line per fact."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    rows: list[tuple[str, Text]] = [
        ("job", plain(job.get("job_id"))),
        ("task", plain(job.get("function"))),
        ("status", status_text(str(job.get("status")))),
        ("priority", plain(job.get("priority"))),
        ("progress", plain(f"{job.get('progress', 0)} %")),
        ("message", plain(job.get("message"))),
        ("tries", plain(job.get("tries"))),
        ("enqueued", plain(when(job.get("enqueued_at")))),
        ("scheduled for", plain(when(job.get("scheduled_for")))),
        ("started", plain(when(job.get("started_at")))),
        ("finished", plain(when(job.get("finished_at")))),
        ("aborted by", plain(job.get("aborted_by"))),
        ("error", plain(error_line(job.get("error")), "red")),
    ]
    for name, value in rows:
        if value.plain:
            table.add_row(name, value)
    if job.get("status") == "complete":
        table.add_row("result", plain(json.dumps(job.get("result"), ensure_ascii=False)))
    return table


def outcome(console: Console, job: dict[str, Any]) -> None:
    """A finished job's ending: its result, or its error."""
    job_id, state = job.get("job_id"), str(job.get("status"))
    line = Text.assemble("job ", plain(job_id), " ", status_text(state))
    if state == "complete":
        console.print(line)
        console.print_json(data=job.get("result"), ensure_ascii=False)
        return
    if state == "aborted":
        if job.get("aborted_by"):
            line.append(f" by {job['aborted_by']}")
        if job.get("error"):
            line.append(": ").append(error_line(job["error"]), style="red")
    else:
        line.append(": ").append(error_line(job.get("error")) or "no error given", style="red")
    console.print(line)
