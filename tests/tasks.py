"""Tasks the tests run besides the app's own (kept out of the app's registry)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from src.arq.context import JobContext
from src.arq.exceptions import RetryLater
from src.arq.registry import TaskRegistry
from src.arq.tasks import registry as app_registry
from src.auth.schemas import Role

test_registry = TaskRegistry()


class AddArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    a: int
    b: int = 0


@test_registry.task(args=AddArgs)
async def add(ctx: JobContext, args: AddArgs) -> dict[str, int]:
    """Add two integers."""
    return {"sum": args.a + args.b}


class SleepArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(ge=0, le=120)
    until: str | None = Field(None, description="then wait until this file exists (a gate)")


@test_registry.task(args=SleepArgs)
async def sleep(ctx: JobContext, args: SleepArgs) -> dict[str, float]:
    """Sleep, reporting progress half way."""
    await ctx["progress"](50, "sleeping")
    await asyncio.sleep(args.seconds)
    while args.until is not None and not Path(args.until).exists():
        await asyncio.sleep(0.02)
    return {"slept": args.seconds}


class FailArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = "boom"


@test_registry.task(args=FailArgs)
async def fail(ctx: JobContext, args: FailArgs) -> None:
    """Always raise."""
    raise ValueError(args.message)


class NoArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


@test_registry.task(args=NoArgs, role=Role.ADMIN)
async def admin_only(ctx: JobContext, args: NoArgs) -> dict[str, Any]:
    """A task only admins may enqueue."""
    return {"ok": True}


@test_registry.task(args=SleepArgs, timeout=0.5)
async def slow_with_timeout(ctx: JobContext, args: SleepArgs) -> None:
    """Sleeps past its own 0.5 s timeout."""
    await asyncio.sleep(args.seconds)


class TickArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    log: str = Field(description="file each run appends its job id to")
    seconds: float = Field(0, ge=0, le=120)
    until: str | None = Field(None, description="then wait until this file exists (a gate)")


@test_registry.task(args=TickArgs)
async def tick(ctx: JobContext, args: TickArgs) -> dict[str, int]:
    """Append the job id to a file (to count runs across processes), then sleep."""
    with Path(args.log).open("a") as log:
        log.write(f"{ctx['job_id']} {ctx['job_try']}\n")
    await asyncio.sleep(args.seconds)
    while args.until is not None and not Path(args.until).exists():
        await asyncio.sleep(0.02)
    return {"try": ctx["job_try"]}


class FlakyArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    failures: int = Field(ge=0, description="tries that fail before one succeeds")
    defer: float | None = None


@test_registry.task(args=FlakyArgs, max_tries=4)
async def flaky(ctx: JobContext, args: FlakyArgs) -> dict[str, int]:
    """Ask to be retried until `failures` tries have failed."""
    if ctx["job_try"] <= args.failures:
        raise RetryLater(f"transient failure {ctx['job_try']}", defer=args.defer)
    return {"succeeded_on_try": ctx["job_try"]}


class FlagArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    flag: str = Field(description="the job fails while this file does not exist")


@test_registry.task(args=FlagArgs)
async def needs_flag(ctx: JobContext, args: FlagArgs) -> str:
    """Fail unless a file exists (lets a test fix the cause and retry the job)."""
    if not Path(args.flag).exists():
        raise FileNotFoundError(f"{args.flag} is missing")
    return "flag found"


class BlockArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    log: str = Field(description="file each run appends its start and end to")
    seconds: float = Field(ge=0, le=120)


@test_registry.task(args=BlockArgs)
async def block_loop(ctx: JobContext, args: BlockArgs) -> dict[str, int]:
    """Hold the event loop (a blocking call, as CPU work would) for `seconds`."""
    with Path(args.log).open("a") as log:
        log.write(f"start {ctx['job_id']} {os.getpid()} {time.time()}\n")
    time.sleep(args.seconds)  # the point: the event loop is stalled
    with Path(args.log).open("a") as log:
        log.write(f"end {ctx['job_id']} {os.getpid()} {time.time()}\n")
    return {"pid": os.getpid()}


class TracedArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    log: str = Field(description="file each run appends its start and end to")
    seconds: float = Field(0, ge=0, le=120)
    failures: int = Field(0, ge=0, description="tries that ask for a retry before one succeeds")
    fail: bool = Field(False, description="raise instead of succeeding")


@test_registry.task(args=TracedArgs, max_tries=4)
async def traced(ctx: JobContext, args: TracedArgs) -> dict[str, int]:
    """Log each run's start and end (job id, try, pid, time, outcome) around an async sleep,
    then succeed, fail or ask for a retry as told (the chaos test reads the log)."""
    job_id, job_try = ctx["job_id"], ctx["job_try"]
    with Path(args.log).open("a") as log:
        log.write(f"start {job_id} {job_try} {os.getpid()} {time.time()}\n")
    await asyncio.sleep(args.seconds)
    outcome = "fail" if args.fail else "retry" if job_try <= args.failures else "ok"
    with Path(args.log).open("a") as log:
        log.write(f"end {job_id} {job_try} {os.getpid()} {time.time()} {outcome}\n")
    if outcome == "fail":
        raise ValueError("told to fail")
    if outcome == "retry":
        raise RetryLater(f"transient failure {job_try}", defer=0.2)
    return {"try": job_try}


registry = app_registry.merged(test_registry)
