"""Tasks the tests run besides the app's own (kept out of the app's registry)."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, Field

from src.arq.context import JobContext
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


registry = app_registry.merged(test_registry)
