"""The task registry: each task declared once (name, argument model, role, limits, coroutine).

The worker (`ALL_TASKS`), the REST API, the Python API and OpenAPI all read these declarations, so a
job's arguments are validated when it is enqueued, not discovered broken in the worker.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from arq.cron import CronJob
from arq.cron import cron as arq_cron
from arq.worker import Function, Retry
from arq.worker import func as arq_func
from pydantic import BaseModel, ValidationError
from pydantic_settings import BaseSettings
from redis.exceptions import RedisError

from src.arq import keys
from src.arq.context import JobContext, WorkerContext, bind_progress
from src.arq.exceptions import GaveUp, InvalidJobArguments, RetryLater, UnknownTask
from src.arq.serialization import to_jsonable
from src.auth.schemas import Role
from src.config import load

if TYPE_CHECKING:
    from src.arq.service import ArqService

ArgsT = TypeVar("ArgsT", bound=BaseModel)
Handler = Callable[[JobContext, ArgsT], Awaitable[Any]]
WorkerHook = Callable[[WorkerContext], Awaitable[None]]
# Called with each job service built from the registry.
ServiceHook = Callable[["ArqService"], None]


@dataclass(frozen=True)
class TaskSpec:
    """One task: what it is called, what it takes, who may run it and how long it may take."""

    name: str
    args_model: type[BaseModel]
    handler: Callable[[JobContext, Any], Awaitable[Any]]
    role: Role = Role.USER
    timeout: float | None = None
    max_tries: int | None = None
    description: str = ""
    _field_names: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_field_names", tuple(self.args_model.model_fields))

    def validate_args(
        self,
        args: list[Any],
        kwargs: dict[str, Any],
        *,
        loc_prefix: tuple[Any, ...] = (),
        max_bytes: int | None = None,
    ) -> dict[str, Any]:
        """Map positional args onto the model's fields in order, validate, return JSON kwargs
        (refused past `max_bytes` of JSON, ARQ_MAX_ARGS_BYTES, naming the largest fields)."""
        errors: list[dict[str, Any]] = []
        merged = dict(kwargs)
        if len(args) > len(self._field_names):
            errors.append(
                {
                    "loc": [*loc_prefix, "args"],
                    "msg": f"{self.name} takes at most {len(self._field_names)} positional "
                    f"arguments ({', '.join(self._field_names) or 'none'}), got {len(args)}",
                    "type": "too_many_arguments",
                }
            )
        for name, value in zip(self._field_names, args, strict=False):
            if name in merged:
                errors.append(
                    {
                        "loc": [*loc_prefix, "kwargs", name],
                        "msg": f"{name!r} given both positionally and as a keyword",
                        "type": "duplicate_argument",
                    }
                )
            merged[name] = value
        if not errors:
            try:
                model = self.args_model.model_validate(merged)
            except ValidationError as exc:
                errors = [
                    {
                        "loc": [*loc_prefix, "kwargs", *err["loc"]],
                        "msg": err["msg"],
                        "type": err["type"],
                    }
                    for err in exc.errors(include_url=False, include_input=False)
                ]
            else:
                dumped: dict[str, Any] = model.model_dump(mode="json")
                errors = _unstorable(dumped, (*loc_prefix, "kwargs")) or _too_large(
                    dumped, max_bytes, loc_prefix
                )
                if not errors:
                    return dumped
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][len(loc_prefix) :])}: {e['msg']}" for e in errors
        )
        raise InvalidJobArguments(f"invalid arguments for task {self.name!r}: {reasons}", errors)

    async def _retry(self, ctx: JobContext, exc: RetryLater) -> Exception:
        """The exception that makes ARQ run the job again after a backoff, or fail it."""
        settings = ctx["arq_settings"]
        max_tries = self.max_tries or settings.max_tries
        job_try = ctx["job_try"]
        if exc.keep_try and await _give_try_back(ctx):
            wait = exc.defer if exc.defer is not None else settings.retry_backoff
            await ctx["report"](
                f"waiting {wait:.1f} s, try {job_try} of {max_tries} not spent: {exc.reason}"
            )
            return Retry(defer=wait)
        if job_try >= max_tries:
            return GaveUp(f"gave up after {job_try} tries: {exc.reason}")
        delay = exc.defer
        if delay is None:
            ceiling = min(settings.retry_backoff_max, settings.retry_backoff * 2 ** (job_try - 1))
            delay = random.uniform(ceiling / 2, ceiling)  # jitter spreads retries apart
        await ctx["report"](
            f"try {job_try} of {max_tries} failed, retrying in {delay:.1f} s: {exc.reason}"
        )
        return Retry(defer=delay)

    def arq_function(self) -> Function:
        """This task as an ARQ function: re-validates, binds progress, returns JSON data."""

        async def run(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            # Jobs can be queued by other producers than this API: validate again here.
            model = self.args_model.model_validate(kwargs)
            job_ctx = bind_progress(ctx, self.name)
            try:
                return to_jsonable(await self.handler(job_ctx, model))
            except RetryLater as exc:
                raise await self._retry(job_ctx, exc) from exc

        run.__qualname__ = run.__name__ = self.name
        return arq_func(run, name=self.name, timeout=self.timeout, max_tries=self.max_tries)


async def _give_try_back(ctx: JobContext) -> bool:
    """Undo ARQ's count of this run (it counts a try when a run starts), so the job's next run
    has the same try number; False if Redis did not take it (the try is spent then)."""
    try:
        await ctx["redis"].decr(keys.retry_key_prefix + ctx["job_id"])
    except (RedisError, OSError):
        return False
    return True


def _unstorable(value: Any, loc: tuple[Any, ...]) -> list[dict[str, Any]]:
    """Errors for text the job history cannot store: a NUL character (PostgreSQL's JSON and
    text refuse it), in a value or a key, at any depth."""
    if isinstance(value, str):
        if "\x00" in value:
            msg = "must not contain the NUL character (U+0000)"
            return [{"loc": list(loc), "msg": msg, "type": "nul"}]
        return []
    errors: list[dict[str, Any]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            errors += _unstorable(key, (*loc, key)) + _unstorable(item, (*loc, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            errors += _unstorable(item, (*loc, index))
    return errors


def _too_large(
    values: dict[str, Any], max_bytes: int | None, loc_prefix: tuple[Any, ...]
) -> list[dict[str, Any]]:
    """Errors naming the largest arguments if `values` exceed `max_bytes` as JSON (as stored)."""
    if max_bytes is None:
        return []
    total = len(orjson.dumps(values))
    if total <= max_bytes:
        return []
    sizes = sorted(
        ((len(orjson.dumps(value)), name) for name, value in values.items()), reverse=True
    )
    errors: list[dict[str, Any]] = []
    # Name the largest fields until what is left fits: those are the ones to shrink.
    for size, name in sizes:
        errors.append(
            {
                "loc": [*loc_prefix, "kwargs", name],
                "msg": f"too large: {size} bytes, at most {max_bytes} for all arguments",
                "type": "too_large",
            }
        )
        total -= size
        if total <= max_bytes:
            break
    return errors


@dataclass(frozen=True)
class Schedule:
    """Run task `task` with `kwargs` at `hour`/`minute` (None = every), when `enabled` says so.

    `kwargs` and `enabled` are called with an instance of `settings`, the declaring domain's own
    settings class (loaded from the environment unless the worker is given one), or with None
    when the schedule names no settings class.
    """

    task: str
    minute: int | set[int] | None = 0
    hour: int | set[int] | None = None
    kwargs: Callable[[Any], dict[str, Any]] = field(default=lambda settings: {})
    enabled: Callable[[Any], bool] = field(default=lambda settings: True)
    settings: type[BaseSettings] | None = None


class TaskRegistry:
    """Name -> `TaskSpec`. Each domain package declares its tasks on a registry of its own
    (`tasks = TaskRegistry()` in its `tasks.py`); `src.arq.tasks` combines them into the app's."""

    def __init__(self) -> None:
        self._tasks: dict[str, TaskSpec] = {}
        self.schedules: list[Schedule] = []
        self.startup_hooks: list[WorkerHook] = []
        self.shutdown_hooks: list[WorkerHook] = []
        self.service_hooks: list[ServiceHook] = []
        self.reserved_prefixes: list[str] = []

    def on_service(self, hook: ServiceHook) -> ServiceHook:
        """Declare a function called with every job service built from this registry (in the
        API process and in each worker) at start-up: where a package subscribes to the job
        lifecycle events (`jobs.events.subscribe(...)`) or adds a periodic sweep."""
        self.service_hooks.append(hook)
        return hook

    def reserve_id_prefix(self, prefix: str) -> None:
        """Job ids starting with `prefix` are the system's (a package's own follow-up jobs): a
        client's job id may not start with it."""
        self.reserved_prefixes.append(prefix.lower())

    def on_worker_startup(self, hook: WorkerHook) -> WorkerHook:
        """Declare a coroutine that puts a domain's resources (clients, caches) into the worker
        context at start-up (`provide(ctx, KEY, value)`, see `src.arq.context.Resource`);
        shutdown hooks run in reverse order."""
        self.startup_hooks.append(hook)
        return hook

    def schedule(self, schedule: Schedule) -> None:
        """Declare a periodic run (ARQ cron: one run per tick however many workers run)."""
        self.schedules.append(schedule)

    def _enabled_runs(
        self, settings: Iterable[BaseSettings]
    ) -> Iterator[tuple[Schedule, TaskSpec, dict[str, Any]]]:
        """Each enabled schedule with its task and validated arguments. A schedule's callables
        get the instance of its settings class in `settings`, else one loaded from the
        environment (once per class; a `ConfigError` names a bad variable)."""
        given: dict[type[BaseSettings], BaseSettings] = {type(item): item for item in settings}
        for schedule in self.schedules:
            values = None
            if schedule.settings is not None:
                if schedule.settings not in given:
                    given[schedule.settings] = load(schedule.settings)
                values = given[schedule.settings]
            if schedule.enabled(values):
                spec = self.get(schedule.task)
                yield schedule, spec, spec.validate_args([], schedule.kwargs(values))

    def cron_jobs(self, settings: Iterable[BaseSettings] = ()) -> list[CronJob]:
        """The enabled schedules as ARQ cron jobs; `settings` overrides the schedules' own
        settings (by class), which are otherwise read from the environment."""
        jobs = []
        for schedule, spec, values in self._enabled_runs(settings):
            function = spec.arq_function()

            async def run(
                ctx: dict[str, Any],
                _run: Any = function.coroutine,
                _values: dict[str, Any] = values,
            ) -> Any:
                return await _run(ctx, **_values)

            jobs.append(
                arq_cron(
                    run,
                    name=f"cron:{spec.name}",
                    hour=schedule.hour,
                    minute=schedule.minute,
                    unique=True,
                    timeout=spec.timeout,
                    keep_result=3600,
                )
            )
        return jobs

    def scheduled_runs(
        self, settings: Iterable[BaseSettings] = ()
    ) -> dict[str, tuple[str, dict[str, Any]]]:
        """Cron job name -> (task, validated arguments) of each enabled schedule: what the
        worker queues when ARQ's timing says a run is due (`settings` as for `cron_jobs`)."""
        return {
            f"cron:{spec.name}": (spec.name, values)
            for _, spec, values in self._enabled_runs(settings)
        }

    def on_worker_shutdown(self, hook: WorkerHook) -> WorkerHook:
        self.shutdown_hooks.append(hook)
        return hook

    def task(
        self,
        name: str | None = None,
        *,
        args: type[ArgsT],
        role: Role = Role.USER,
        timeout: float | None = None,
        max_tries: int | None = None,
    ) -> Callable[[Handler[ArgsT]], Handler[ArgsT]]:
        """Declare a task: `@registry.task(args=PingArgs) async def ping(ctx, args): ...`."""

        def decorate(handler: Handler[ArgsT]) -> Handler[ArgsT]:
            self.add(
                TaskSpec(
                    name=name or handler.__name__,
                    args_model=args,
                    handler=handler,
                    role=role,
                    timeout=timeout,
                    max_tries=max_tries,
                    description=(handler.__doc__ or "").strip().splitlines()[0]
                    if handler.__doc__
                    else "",
                )
            )
            return handler

        return decorate

    def add(self, spec: TaskSpec) -> None:
        if spec.name in self._tasks:
            raise ValueError(f"task {spec.name!r} is declared twice")
        if spec.args_model.model_config.get("extra") != "forbid":
            # Else a misspelt argument is dropped and the job runs with the default.
            raise ValueError(
                f"task {spec.name!r}: {spec.args_model.__name__} must refuse unknown arguments "
                '(model_config = ConfigDict(extra="forbid"))'
            )
        self._tasks[spec.name] = spec

    def get(self, name: str, *, loc: str = "function_name") -> TaskSpec:
        try:
            return self._tasks[name]
        except KeyError:
            raise UnknownTask(name, self.names(), loc=loc) from None

    def names(self) -> list[str]:
        return sorted(self._tasks)

    def functions(self) -> list[Function]:
        """The ARQ functions for `WorkerSettings.functions`."""
        return [spec.arq_function() for spec in self._tasks.values()]

    def merged(self, other: TaskRegistry) -> TaskRegistry:
        """A registry with the tasks of both (names must not clash)."""
        combined = TaskRegistry()
        for spec in (*self, *other):
            combined.add(spec)
        combined.startup_hooks = [*self.startup_hooks, *other.startup_hooks]
        combined.schedules = [*self.schedules, *other.schedules]
        combined.shutdown_hooks = [*self.shutdown_hooks, *other.shutdown_hooks]
        combined.service_hooks = [*self.service_hooks, *other.service_hooks]
        combined.reserved_prefixes = [*self.reserved_prefixes, *other.reserved_prefixes]
        return combined

    @classmethod
    def combine(cls, *registries: TaskRegistry) -> TaskRegistry:
        """One registry with the tasks, hooks and schedules of all, in order (names must not
        clash)."""
        combined = cls()
        for registry in registries:
            combined = combined.merged(registry)
        return combined

    def __iter__(self) -> Iterator[TaskSpec]:
        return iter(self._tasks.values())

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)
