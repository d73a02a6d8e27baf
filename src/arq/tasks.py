"""The app's tasks: the module's own, plus every domain's `tasks` module imported here.

`ALL_TASKS` is what `WorkerSettings.functions` runs; `registry` is what the API validates with.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from src.arq.context import JobContext
from src.arq.registry import registry

__all__ = ["ALL_TASKS", "registry"]


class PingArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field("pong", max_length=1000, description="echoed back in the result")


@registry.task(args=PingArgs, timeout=30)
async def ping(ctx: JobContext, args: PingArgs) -> dict[str, Any]:
    """Round trip through a worker: returns the message and which worker ran it."""
    return {
        "message": args.message,
        "worker": ctx["worker_id"],
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "job_try": ctx["job_try"],
    }


# Importing a domain's task module declares its tasks on `registry`.
import src.admin.tasks  # noqa: E402
import src.comments.tasks  # noqa: E402, F401

ALL_TASKS = registry.functions()
