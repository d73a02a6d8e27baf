"""Queue a job from the dashboard: a form per task, built from its argument schema.

The job is queued by the job service's `enqueue`, as `POST /api/v1/arq/enqueue` does, under the
viewer's principal (its roles, priority ceiling and rate limit apply); a refusal of the
arguments shows the form again with each error next to its field.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from pydantic import ValidationError

from src.arq.dependencies import ArqServiceDep
from src.arq.exceptions import InvalidJobArguments, TaskForbidden
from src.arq.schemas import EnqueueRequest, Priority, TaskInfo
from src.arq.service import ArqService
from src.dashboard.dependencies import CheckedFormDep, Viewer, ViewerDep, field
from src.dashboard.forms import FormField, errors_by_field, form_fields, read_arguments
from src.dashboard.pages import DashboardRoute, not_found, render
from src.dashboard.signin import PREFIX, see_other

TaskPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:\-]{1,100}$")]

router = APIRouter(route_class=DashboardRoute)


def _task(service: ArqService, viewer: Viewer, name: str) -> TaskInfo | None:
    """The task `name` if the viewer may run it (the others are not there for them)."""
    return next(
        (task for task in service.tasks(principal=viewer.principal) if task.name == name), None
    )


def _form_page(
    request: Request,
    viewer: Viewer,
    task: TaskInfo,
    fields: list[FormField],
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "enqueue_form.html",
        {
            "principal": viewer.principal,
            "csrf": viewer.session.csrf,
            "task": task,
            "fields": fields,
            "values": values if values is not None else {f.name: f.default for f in fields},
            "errors": errors or {},
            "priorities": [priority.value for priority in Priority],
        },
        status_code=status_code,
    )


@router.get("/enqueue")
async def tasks_page(request: Request, viewer: ViewerDep, service: ArqServiceDep) -> Response:
    """The tasks the viewer may run, each with its form."""
    return render(
        request,
        "enqueue.html",
        {
            "principal": viewer.principal,
            "csrf": viewer.session.csrf,
            "tasks": sorted(service.tasks(principal=viewer.principal), key=lambda t: t.name),
        },
    )


@router.get("/enqueue/{name}")
async def enqueue_form(
    request: Request, viewer: ViewerDep, service: ArqServiceDep, name: TaskPath
) -> Response:
    """The form of one task, from its argument schema."""
    task = _task(service, viewer, name)
    if task is None:
        return not_found(request)
    return _form_page(request, viewer, task, form_fields(task.args_schema))


@router.post("/enqueue/{name}")
async def enqueue(
    request: Request,
    viewer: ViewerDep,
    form: CheckedFormDep,
    service: ArqServiceDep,
    name: TaskPath,
) -> Response:
    """Queue the job; its page on success, the form with the errors otherwise."""
    task = _task(service, viewer, name)
    if task is None:
        return not_found(request)
    fields = form_fields(task.args_schema)
    kwargs, errors = read_arguments(fields, form)
    values = {f.name: (form.get(f"arg.{f.name}") or [""])[0] for f in fields}
    if not errors:
        try:
            job = EnqueueRequest.model_validate(
                {
                    "function_name": task.name,
                    "kwargs": kwargs,
                    "priority": field(form, "priority") or Priority.NORMAL,
                    "defer_by": field(form, "defer_by") or None,
                }
            )
            queued = await service.enqueue(job, principal=viewer.principal)
        except ValidationError as exc:
            errors = {"": "; ".join(e["msg"] for e in exc.errors(include_url=False))}
        except InvalidJobArguments as exc:
            errors = errors_by_field(exc.extra.get("errors", []))
        except TaskForbidden as exc:
            errors = {"": exc.detail}
        else:
            return see_other(f"{PREFIX}/jobs/{queued.job_id}")
    return _form_page(request, viewer, task, fields, values=values, errors=errors, status_code=422)
