"""`vkp follow`: a job's status live, from its SSE stream (polling if the stream cannot be had),
shown as a progress bar until the job ends."""

from __future__ import annotations

import json
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn

from src.cli.client import Api, CliError, job_path
from src.cli.render import FINISHED, plain, status_text
from src.cli.sse import EventReader

POLL_SECONDS = 1.0
# Polling rides out this many failed reads in a row (network, 429, 5xx) before giving up.
POLL_FAILURES = 10
# Statuses that a stream cannot serve now but polling may: limits and outages.
STREAM_UNAVAILABLE = frozenset({429, 500, 502, 503, 504})


class JobView:
    """The progress bar, with the job's status and message; each change of status is also
    printed as a line above it (so a log of the run stays when output is not a terminal)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[message]}"),
            console=console,
        )
        self.task: TaskID | None = None
        self.last_status: str | None = None

    def __enter__(self) -> JobView:
        self.progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.progress.stop()

    def note(self, message: str) -> None:
        self.progress.console.print(plain(message, "dim"))

    def update(self, job: dict[str, Any]) -> None:
        state = str(job.get("status"))
        description = f"{job.get('function', '')} {state}"
        percent = 100 if state == "complete" else int(job.get("progress") or 0)
        message = str(job.get("message") or "")
        if self.task is None:
            self.task = self.progress.add_task(description, total=100, message=message)
        self.progress.update(self.task, description=description, completed=percent, message=message)
        if state != self.last_status:
            self.last_status = state
            line = status_text(state)
            if state not in FINISHED and job.get("tries"):
                line.append(f" (try {job['tries']})")
            if message and state not in FINISHED:
                line.append(f": {message}")
            self.progress.console.print(line)


def follow(api: Api, job_id: str, console: Console) -> dict[str, Any]:
    """Show the job until it ends; its last status (with result or error)."""
    with JobView(console) as view:
        final = _stream(api, job_id, view)
        if final is None:
            final = _poll(api, job_id, view)
    return final


def _stream(api: Api, job_id: str, view: JobView) -> dict[str, Any] | None:
    """Follow the SSE stream to the job's end, reconnecting with Last-Event-ID when the server
    ends a stream early (its `retry:` hint says when); None when polling should take over."""
    reader = EventReader()
    while True:
        try:
            path = job_path("status", job_id, "/stream")
            with api.stream(path, last_event_id=reader.last_event_id) as response:
                if response.status_code != 200:
                    response.read()
                    raise api.error(response)
                for event in reader.events(response.iter_lines()):
                    if event.type != "status":
                        continue
                    job = json.loads(event.data)
                    if not isinstance(job, dict):
                        raise ValueError("a status event that is not an object")
                    view.update(job)
                    if job.get("status") in FINISHED:
                        return job
        except CliError as error:
            # Not found, not allowed: polling would be told the same. Limits, outages and a
            # broken connection: polling may do.
            if error.status is not None and error.status not in STREAM_UNAVAILABLE:
                raise
            view.note(f"live stream unavailable ({error.message}); polling instead")
            return None
        except ValueError:
            view.note("live stream sent something unreadable; polling instead")
            return None
        # The stream ended before the job did: come back when the server said to.
        time.sleep((reader.retry_ms if reader.retry_ms is not None else 2000) / 1000)


def _poll(api: Api, job_id: str, view: JobView) -> dict[str, Any]:
    failures = 0
    while True:
        try:
            job: dict[str, Any] = api.get(job_path("status", job_id))
        except CliError as error:
            failures += 1
            if not error.transient or failures >= POLL_FAILURES:
                raise
            time.sleep(max(POLL_SECONDS, min(error.retry_after or 0, 30)))
            continue
        failures = 0
        view.update(job)
        if job.get("status") in FINISHED:
            return job
        time.sleep(POLL_SECONDS)
