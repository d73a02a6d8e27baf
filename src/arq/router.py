"""REST API of the job module: `/api/v1/arq/*`."""

import hashlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Path, Query, Response, status
from fastapi.openapi.models import Example
from fastapi.responses import JSONResponse, StreamingResponse

from src.arq.dependencies import ArqServiceDep
from src.arq.exceptions import InvalidJobArguments
from src.arq.registry import TaskRegistry
from src.arq.schemas import (
    JOB_ID_PATTERN,
    EnqueueRequest,
    EnqueueResponse,
    HealthResponse,
    JobPage,
    JobResultResponse,
    JobStatus,
    JobStatusResponse,
    QueueInfo,
    TaskInfo,
)
from src.auth.dependencies import PrincipalDep

JobIdPath = Annotated[str, Path(pattern=JOB_ID_PATTERN, description="the job's id")]

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid credential"},
    404: {"description": "No such job, or not yours"},
    503: {"description": "Redis or the database is unreachable"},
}


def _task_examples(registry: TaskRegistry) -> dict[str, Example]:
    examples: dict[str, Example] = {}
    for spec in registry:
        kwargs = {
            name: field.get_default(call_default_factory=True)
            for name, field in spec.args_model.model_fields.items()
            if not field.is_required()
        }
        for name, field in spec.args_model.model_fields.items():
            if field.is_required() and field.examples:
                kwargs[name] = field.examples[0]
        examples[spec.name] = Example(
            summary=f"{spec.name} ({spec.role.value})",
            description=spec.description,
            value={"function_name": spec.name, "kwargs": kwargs},
        )
    return examples


def build_router(registry: TaskRegistry) -> APIRouter:
    """The job API for the tasks of `registry` (they feed the OpenAPI examples)."""
    router = APIRouter(prefix="/api/v1/arq", tags=["jobs"])
    examples = _task_examples(registry)

    @router.post(
        "/enqueue",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=EnqueueResponse,
        responses={
            **ERROR_RESPONSES,
            403: {"description": "The task needs the admin role"},
            409: {"description": "job_id already in use; carries its status_url"},
            422: {"description": "Unknown task or invalid arguments (names the field)"},
            429: {"description": "Enqueue rate limit reached; see Retry-After"},
        },
    )
    async def enqueue(
        service: ArqServiceDep,
        principal: PrincipalDep,
        request: Annotated[EnqueueRequest, Body(openapi_examples=examples)],
    ) -> EnqueueResponse:
        """Queue one job. Arguments are validated against the task's declaration now."""
        return await service.enqueue(request, principal=principal)

    @router.post(
        "/enqueue-batch",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=list[EnqueueResponse],
        responses={**ERROR_RESPONSES, 409: {"description": "a job_id is in use"}},
    )
    async def enqueue_batch(
        service: ArqServiceDep,
        principal: PrincipalDep,
        requests: Annotated[list[EnqueueRequest], Body(min_length=1)],
    ) -> list[EnqueueResponse]:
        """Queue several jobs: all are validated first, and either all are queued or none."""
        limit = service.settings.batch_limit
        if len(requests) > limit:
            raise InvalidJobArguments(
                f"a batch holds at most {limit} jobs, got {len(requests)}",
                [{"loc": ["body"], "msg": f"at most {limit} items", "type": "too_long"}],
            )
        return await service.enqueue_batch(requests, principal=principal)

    @router.get("/status/{job_id}", response_model=JobStatusResponse, responses=ERROR_RESPONSES)
    async def job_status(
        service: ArqServiceDep, principal: PrincipalDep, job_id: JobIdPath
    ) -> JobStatusResponse:
        """Status, progress, tries and timestamps of a job; its result or error once finished."""
        return await service.get_job_status(job_id, principal=principal)

    @router.get(
        "/result/{job_id}",
        response_model=JobResultResponse,
        responses={
            **ERROR_RESPONSES,
            202: {"model": JobStatusResponse, "description": "Not finished yet: the status"},
        },
    )
    async def job_result(service: ArqServiceDep, principal: PrincipalDep, job_id: JobIdPath) -> Any:
        """200 with the result (or error) once the job has finished; 202 with its status before.

        A failed or aborted job is finished, so its result is a 200 with `success: false` and
        the error: the request for the result succeeded, the job did not.
        """
        outcome = await service.get_job_result(job_id, principal=principal)
        if isinstance(outcome, JobStatusResponse):
            return JSONResponse(
                status_code=status.HTTP_202_ACCEPTED, content=outcome.model_dump(mode="json")
            )
        return outcome

    @router.delete(
        "/abort/{job_id}",
        response_model=JobStatusResponse,
        responses={**ERROR_RESPONSES, 409: {"description": "The job has already finished"}},
    )
    async def abort(
        service: ArqServiceDep, principal: PrincipalDep, job_id: JobIdPath
    ) -> JobStatusResponse:
        """Abort a job: a waiting one never runs; a running one is cancelled within 2 s."""
        return await service.abort_job(job_id, principal=principal)

    @router.get(
        "/status/{job_id}/stream",
        response_class=StreamingResponse,
        responses={
            **ERROR_RESPONSES,
            200: {
                "content": {"text/event-stream": {}},
                "description": "Server-Sent Events: one `status` event per change, ending when "
                "the job finishes",
            },
        },
    )
    async def job_status_stream(
        service: ArqServiceDep,
        principal: PrincipalDep,
        job_id: JobIdPath,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> StreamingResponse:
        """Live status: an SSE `status` event now and after each change (progress included),
        until the job finishes. On reconnect, send `Last-Event-ID` to skip a state you have."""
        updates = service.watch_job(job_id, principal=principal)
        first = await anext(updates)  # a 404 is raised here, before the stream starts
        return StreamingResponse(
            _sse(first, updates, last_event_id),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @router.get("/jobs", response_model=JobPage, responses=ERROR_RESPONSES)
    async def list_jobs(
        service: ArqServiceDep,
        principal: PrincipalDep,
        status_filter: Annotated[JobStatus | None, Query(alias="status")] = None,
        function: Annotated[str | None, Query(max_length=100)] = None,
        owner: Annotated[
            str | None, Query(max_length=100, description="admins only: one owner's jobs")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> JobPage:
        """Your jobs, newest first (an admin sees everyone's)."""
        return await service.list_jobs(
            principal=principal,
            status=status_filter,
            function=function,
            owner=owner,
            limit=limit,
            offset=offset,
        )

    @router.get("/failed", response_model=JobPage, responses=ERROR_RESPONSES)
    async def failed_jobs(
        service: ArqServiceDep,
        principal: PrincipalDep,
        function: Annotated[str | None, Query(max_length=100)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> JobPage:
        """Dead letters: failed jobs with their error and tries (an admin sees everyone's)."""
        return await service.list_failed(
            principal=principal, function=function, limit=limit, offset=offset
        )

    @router.post(
        "/retry/{job_id}",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=JobStatusResponse,
        responses={**ERROR_RESPONSES, 409: {"description": "The job is not failed or aborted"}},
    )
    async def retry(
        service: ArqServiceDep, principal: PrincipalDep, job_id: JobIdPath
    ) -> JobStatusResponse:
        """Queue a failed or aborted job again under its id; earlier rounds stay in `attempts`."""
        return await service.retry_job(job_id, principal=principal)

    @router.get("/queue/info", response_model=QueueInfo, responses=ERROR_RESPONSES)
    async def queue_info(service: ArqServiceDep, principal: PrincipalDep) -> QueueInfo:
        """Queue depth, jobs by task, live workers and the last hour's outcomes."""
        return await service.queue_info()

    @router.get("/tasks", response_model=list[TaskInfo], responses=ERROR_RESPONSES)
    async def tasks(service: ArqServiceDep, principal: PrincipalDep) -> list[TaskInfo]:
        """The tasks you may enqueue, with the JSON schema of their arguments."""
        return service.tasks(principal=principal)

    @router.get(
        "/health",
        response_model=HealthResponse,
        responses={503: {"model": HealthResponse, "description": "Redis or database down"}},
    )
    async def health(service: ArqServiceDep, response: Response) -> HealthResponse:
        """Liveness of Redis, the database and the workers. Needs no credential."""
        report = await service.health()
        if not report.healthy:
            response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return report

    return router


KEEP_ALIVE_SECONDS = 15.0


def _event(update: JobStatusResponse) -> str:
    data = update.model_dump_json()
    return f"id: {_event_id(update)}\nevent: status\ndata: {data}\n\n"


def _event_id(update: JobStatusResponse) -> str:
    # The state itself names the event, so a reconnecting client that has it is not sent it again.
    key = (
        f"{update.status}|{update.progress}|{update.message}|{update.tries}|"
        f"{update.scheduled_for.isoformat()}"
    )
    return hashlib.sha256(key.encode()).hexdigest()[:16]


async def _sse(
    first: JobStatusResponse | None,
    updates: AsyncIterator[JobStatusResponse | None],
    last_event_id: str | None,
) -> AsyncIterator[str]:
    try:
        yield "retry: 2000\n\n"
        if first is not None and _event_id(first) != last_event_id:
            yield _event(first)
        if first is not None and first.status.finished:
            return
        quiet = 0.0
        async for update in updates:
            if update is None:
                quiet += 1.0
                if quiet >= KEEP_ALIVE_SECONDS:
                    quiet = 0.0
                    yield ": keep-alive\n\n"
                continue
            quiet = 0.0
            yield _event(update)
    finally:
        await updates.aclose()  # type: ignore[attr-defined]
