"""The app's tasks: the module's own (`ping`) and every domain's, in one registry.

Each domain declares its tasks on a registry of its own (`tasks = TaskRegistry()` in its
`tasks.py`); this is the one place that combines them. `ALL_TASKS` is what
`WorkerSettings.functions` runs; `registry` is what the API validates with.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from src.arq.context import JobContext
from src.arq.registry import TaskRegistry
from src.comments.tasks import tasks as comments_tasks
from src.maintenance.tasks import tasks as maintenance_tasks
from src.reports.tasks import tasks as reports_tasks
from src.webhooks.tasks import tasks as webhooks_tasks

__all__ = ["ALL_TASKS", "registry"]

tasks = TaskRegistry()


class PingArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field("pong", max_length=1000, description="echoed back in the result")


@tasks.task(args=PingArgs, timeout=30)
async def ping(ctx: JobContext, args: PingArgs) -> dict[str, Any]:
    """Round trip through a worker: returns the message and which worker ran it."""
    return {
        "message": args.message,
        "worker": ctx["worker_id"],
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "job_try": ctx["job_try"],
    }


registry = TaskRegistry.combine(
    tasks, webhooks_tasks, maintenance_tasks, reports_tasks, comments_tasks
)

ALL_TASKS = registry.functions()
