"""The task registry of the app. Domain packages declare their tasks here or on `registry`.

`ALL_TASKS` is what `WorkerSettings.functions` runs.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from pydantic import BaseModel, Field

from src.arq.context import JobContext
from src.arq.registry import TaskRegistry

registry = TaskRegistry()


class PingArgs(BaseModel):
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


ALL_TASKS = registry.functions()
