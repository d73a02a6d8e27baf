"""Tasks the tests run besides the app's own (kept out of the app's registry)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from src.arq.context import JobContext
from src.arq.exceptions import RetryLater
from src.arq.registry import TaskRegistry
from src.arq.tasks import registry as app_registry
from src.auth.schemas import Role

test_registry = TaskRegistry()


class AddArgs(BaseModel):
    a: int
    b: int = 0


@test_registry.task(args=AddArgs)
async def add(ctx: JobContext, args: AddArgs) -> dict[str, int]:
    """Add two integers."""
    return {"sum": args.a + args.b}


class SleepArgs(BaseModel):
    seconds: float = Field(ge=0, le=120)


@test_registry.task(args=SleepArgs)
async def sleep(ctx: JobContext, args: SleepArgs) -> dict[str, float]:
    """Sleep, reporting progress half way."""
    await ctx["progress"](50, "sleeping")
    await asyncio.sleep(args.seconds)
    return {"slept": args.seconds}


class FailArgs(BaseModel):
    message: str = "boom"


@test_registry.task(args=FailArgs)
async def fail(ctx: JobContext, args: FailArgs) -> None:
    """Always raise."""
    raise ValueError(args.message)


class NoArgs(BaseModel):
    pass


@test_registry.task(args=NoArgs, role=Role.ADMIN)
async def admin_only(ctx: JobContext, args: NoArgs) -> dict[str, Any]:
    """A task only admins may enqueue."""
    return {"ok": True}


@test_registry.task(args=SleepArgs, timeout=0.5)
async def slow_with_timeout(ctx: JobContext, args: SleepArgs) -> None:
    """Sleeps past its own 0.5 s timeout."""
    await asyncio.sleep(args.seconds)


class TickArgs(BaseModel):
    log: str = Field(description="file each run appends its job id to")
    seconds: float = Field(0, ge=0, le=120)


@test_registry.task(args=TickArgs)
async def tick(ctx: JobContext, args: TickArgs) -> dict[str, int]:
    """Append the job id to a file (to count runs across processes), then sleep."""
    with Path(args.log).open("a") as log:
        log.write(f"{ctx['job_id']} {ctx['job_try']}\n")
    await asyncio.sleep(args.seconds)
    return {"try": ctx["job_try"]}


class FlakyArgs(BaseModel):
    failures: int = Field(ge=0, description="tries that fail before one succeeds")
    defer: float | None = None


@test_registry.task(args=FlakyArgs, max_tries=4)
async def flaky(ctx: JobContext, args: FlakyArgs) -> dict[str, int]:
    """Ask to be retried until `failures` tries have failed."""
    if ctx["job_try"] <= args.failures:
        raise RetryLater(f"transient failure {ctx['job_try']}", defer=args.defer)
    return {"succeeded_on_try": ctx["job_try"]}


class FlagArgs(BaseModel):
    flag: str = Field(description="the job fails while this file does not exist")


@test_registry.task(args=FlagArgs)
async def needs_flag(ctx: JobContext, args: FlagArgs) -> str:
    """Fail unless a file exists (lets a test fix the cause and retry the job)."""
    if not Path(args.flag).exists():
        raise FileNotFoundError(f"{args.flag} is missing")
    return "flag found"


registry = app_registry.merged(test_registry)
