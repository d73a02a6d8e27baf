"""Task declarations: argument mapping and validation without Redis."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict

from src.arq.context import JobContext
from src.arq.exceptions import InvalidJobArguments, UnknownTask
from src.arq.registry import TaskRegistry
from src.arq.serialization import deserialize, serialize
from src.arq.tasks import ALL_TASKS
from src.arq.worker import WorkerSettings


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid")

    group_id: int
    limit: int = 100


def make_registry() -> TaskRegistry:
    registry = TaskRegistry()

    @registry.task(args=Args, timeout=5, max_tries=2)
    async def parse(ctx: JobContext, args: Args) -> int:
        """Parse a group."""
        return args.group_id

    return registry


def test_positional_and_keyword_arguments_map_onto_the_model() -> None:
    spec = make_registry().get("parse")
    assert spec.validate_args([7], {}) == {"group_id": 7, "limit": 100}
    assert spec.validate_args([7, 5], {}) == {"group_id": 7, "limit": 5}
    assert spec.validate_args([], {"group_id": "8"}) == {"group_id": 8, "limit": 100}
    assert spec.description == "Parse a group."


def test_bad_arguments_name_the_field() -> None:
    spec = make_registry().get("parse")
    with pytest.raises(InvalidJobArguments) as info:
        spec.validate_args([], {"group_id": 1, "limit": "lots"})
    assert info.value.extra["errors"][0]["loc"] == ["kwargs", "limit"]
    assert info.value.detail.startswith("invalid arguments for task 'parse': kwargs.limit:")


def test_unknown_task_and_duplicate_declaration() -> None:
    registry = make_registry()
    with pytest.raises(UnknownTask) as info:
        registry.get("nope")
    assert info.value.extra["known_tasks"] == ["parse"]
    with pytest.raises(ValueError, match="declared twice"):
        registry.merged(make_registry())


def test_arq_function_carries_limits() -> None:
    (function,) = make_registry().functions()
    assert function.name == "parse"
    assert function.timeout_s == 5
    assert function.max_tries == 2


def test_worker_settings_use_the_registry_and_json() -> None:
    names = {function.name for function in WorkerSettings.functions}  # type: ignore[attr-defined]
    assert names == {function.name for function in ALL_TASKS}
    assert "ping" in names
    assert WorkerSettings.job_serializer is serialize  # type: ignore[attr-defined]
    assert WorkerSettings.job_deserializer is deserialize  # type: ignore[attr-defined]
    assert WorkerSettings.health_check_interval <= 30  # type: ignore[attr-defined]
    assert WorkerSettings.allow_abort_jobs is True  # type: ignore[attr-defined]


def test_serializer_stores_exceptions_as_type_and_message() -> None:
    data = deserialize(serialize({"r": KeyError("group"), "a": (1, 2), "s": {3}}))
    assert data["r"]["type"] == "KeyError"
    assert data["r"]["message"] == "'group'"
    assert data["a"] == [1, 2]
    assert data["s"] == [3]
    with pytest.raises(TypeError):
        serialize({"r": object()})


async def test_worker_hooks_of_domains_run_at_start_and_stop(
    settings: object, arq_settings: object
) -> None:
    from src.arq.worker import JobWorker, worker_options

    registry = make_registry()
    events: list[str] = []

    @registry.on_worker_startup
    async def open_client(ctx: dict[str, object]) -> None:
        ctx["client"] = "open"
        events.append("start")

    @registry.on_worker_shutdown
    async def close_client(ctx: dict[str, object]) -> None:
        events.append(f"stop:{ctx['client']}")

    options = worker_options(registry=registry, settings=settings, arq_settings=arq_settings)  # type: ignore[arg-type]
    worker = JobWorker(**{**options, "burst": True}, handle_signals=False)
    await worker.async_run()
    await worker.close()
    assert events == ["start", "stop:open"]
