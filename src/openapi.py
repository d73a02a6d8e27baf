"""The API's contract as OpenAPI states it, and the request rules it states that FastAPI does not
enforce by itself.

- One error shape (`Error`: `error`, `detail`, and `errors` on a 422) for every error status of
  every operation, instead of FastAPI's `HTTPValidationError`, which no response has.
- The enqueue body as one schema per task (`oneOf` with a discriminator on `function_name`), so
  `/docs` shows each task's real arguments and a valid example of each.
- A query parameter given twice is a 422 (`single_query_values`), not one value silently kept.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import to_jsonable_python

from src.arq.registry import TaskRegistry, TaskSpec
from src.arq.schemas import EnqueueRequest
from src.auth.dependencies import PrincipalDep

ENQUEUE_PATH = "/api/v1/arq/enqueue"
ENQUEUE_BATCH_PATH = "/api/v1/arq/enqueue-batch"
SCHEMAS = "#/components/schemas/"

# The statuses that carry an `Error`, and what each means where an operation does not say more.
ERROR_DESCRIPTIONS: dict[str, str] = {
    "400": "The body could not be read (not UTF-8 text)",
    "401": "No valid credential (`X-API-Key`, or `Authorization: Bearer` with a JWT)",
    "403": "Needs the admin role",
    "404": "Not found, or not yours",
    "409": "Conflicts with the current state",
    "413": "The body is larger than the server accepts",
    "422": "Invalid input: `errors` names each field (`loc`) and what is wrong with it (`msg`)",
    "429": "A rate or stream limit was reached; try again after `Retry-After` seconds",
    "503": "Redis or the database is unreachable; try again after `Retry-After` seconds",
}
RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before trying again",
        "schema": {"type": "string"},
    }
}
# A webhook URL as the API accepts it (it checks with `urlsplit`): http(s), a host without
# credentials, an optional port, printable characters.
WEBHOOK_URL_PATTERN = r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,4})?(/[!-~]*)?$"
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


class ErrorItem(BaseModel):
    """One reason a request was refused: where (`loc`) and why (`msg`)."""

    loc: list[str | int] = Field(description="e.g. `['query', 'limit']` or `['body', 'kwargs']`")
    msg: str
    type: str | None = Field(description="a stable code, e.g. `greater_than_equal`")


class Error(BaseModel):
    """The one shape of every error response."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "error": "ValidationError",
                    "detail": "query.limit: Input should be less than or equal to 500",
                    "errors": [
                        {
                            "loc": ["query", "limit"],
                            "msg": "Input should be less than or equal to 500",
                            "type": "less_than_equal",
                        }
                    ],
                },
                {"error": "JobNotFound", "detail": "job 'x' not found"},
            ]
        },
    )

    error: str = Field(description="the error's name, e.g. `ValidationError`, `JobNotFound`")
    detail: str = Field(description="what went wrong, for a person")
    errors: list[ErrorItem] | None = Field(
        None, description="on a 422: each invalid field and why; other errors may add fields"
    )


# -- the request rules FastAPI does not enforce ------------------------------------------------


async def single_query_values(request: Request, principal: PrincipalDep) -> None:
    """A 422 for a query parameter given more than once: every parameter of this API takes one
    value, and keeping one of several would silently ignore the others. Runs after
    authentication (it depends on the principal), so a request without a credential is a 401."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    declared = _query_names(route.dependant)
    counts = Counter(key for key, _ in request.query_params.multi_items())
    repeated = sorted(name for name, count in counts.items() if count > 1 and name in declared)
    if repeated:
        raise RequestValidationError(
            [
                {"loc": ("query", name), "msg": "give this parameter once", "type": "repeated"}
                for name in repeated
            ]
        )


SingleQueryValues = Depends(single_query_values)


def _query_names(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


# -- the enqueue body, one schema per task -----------------------------------------------------


def task_example(spec: TaskSpec) -> dict[str, Any]:
    """A valid `kwargs` of `spec`: the args model's own example, or else its fields' defaults
    (but null) and the examples of its required fields."""
    schema = spec.args_model.model_json_schema(mode="serialization")
    examples = schema.get("examples")
    if examples:
        example: dict[str, Any] = examples[0]
        return example
    kwargs: dict[str, Any] = {}
    for name, field in spec.args_model.model_fields.items():
        if field.is_required():
            if field.examples:
                kwargs[name] = field.examples[0]
        else:
            default = field.get_default(call_default_factory=True)
            if default is not None:
                kwargs[name] = to_jsonable_python(default)
    return kwargs


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """`X | None` as `X`: in a task's request an optional field is left out, not sent as null,
    which keeps the cross-field rules (`not both`, `needs`) expressible in JSON Schema."""
    variants = schema.get("anyOf")
    if not variants:
        return schema
    kept = [variant for variant in variants if variant.get("type") != "null"]
    rest = {key: value for key, value in schema.items() if key not in ("anyOf", "default")}
    if len(kept) == 1:
        return {**kept[0], **rest}
    return {**rest, "anyOf": kept}


def _task_schemas(registry: TaskRegistry) -> tuple[dict[str, Any], dict[str, Any]]:
    """(components, the `oneOf` of one request schema per task)."""
    base = EnqueueRequest.model_json_schema(ref_template=SCHEMAS + "{model}")
    components: dict[str, Any] = dict(base.pop("$defs", {}))
    common = {name: _without_null(schema) for name, schema in base["properties"].items()}
    common["notify_url"]["pattern"] = WEBHOOK_URL_PATTERN
    mapping: dict[str, str] = {}
    for spec in sorted(registry, key=lambda spec: spec.name):
        args_name = f"{spec.name}.kwargs"
        args_schema = spec.args_model.model_json_schema(ref_template=SCHEMAS + "{model}")
        components.update(args_schema.pop("$defs", {}))
        args_schema.setdefault("description", spec.description)
        components[args_name] = args_schema
        properties = {
            **common,
            "function_name": {
                "type": "string",
                "enum": [spec.name],
                "description": f"{spec.description} ({spec.role.value})",
            },
            "args": {
                "type": "array",
                "maxItems": 0,
                "description": "positional arguments (the fields of `kwargs` in order) are "
                "accepted too, but only `kwargs` is described per task: prefer it",
            },
            "kwargs": {"$ref": SCHEMAS + args_name},
        }
        required = ["function_name"]
        if _needs_kwargs(spec):
            required.append("kwargs")
        request_name = f"EnqueueRequest.{spec.name}"
        components[request_name] = {
            "title": request_name,
            "type": "object",
            "description": f"Queue `{spec.name}`: {spec.description}",
            "properties": properties,
            "required": required,
            "additionalProperties": False,
            # The rules of EnqueueRequest's validator, as JSON Schema can say them.
            "not": {"required": ["defer_by", "defer_until"]},
            "dependentRequired": {"notify_secret": ["notify_url"]},
        }
        mapping[spec.name] = SCHEMAS + request_name
    one_of = {
        "oneOf": [{"$ref": ref} for ref in mapping.values()],
        "discriminator": {"propertyName": "function_name", "mapping": mapping},
    }
    return components, one_of


def _needs_kwargs(spec: TaskSpec) -> bool:
    try:
        spec.args_model.model_validate({})
    except ValidationError:
        return True
    return False


def _examples(registry: TaskRegistry) -> dict[str, Any]:
    return {
        spec.name: {
            "summary": f"{spec.name} ({spec.role.value})",
            "description": spec.description,
            "value": {"function_name": spec.name, "kwargs": task_example(spec)},
        }
        for spec in sorted(registry, key=lambda spec: spec.name)
    }


# -- the document ------------------------------------------------------------------------------


def _document_errors(operation: dict[str, Any]) -> None:
    for parameter in operation.get("parameters", []):
        if parameter["name"].lower() == "x-notify-url":
            parameter["schema"] = {
                "type": "string",
                "maxLength": 2048,
                "pattern": WEBHOOK_URL_PATTERN,
                "title": "X-Notify-Url",
                "examples": ["https://example.org/hooks/jobs"],
            }
        elif parameter["name"].lower() == "x-notify-secret":
            # Printable, without blanks at either end (a header's are stripped in transit).
            parameter["schema"] = {
                "type": "string",
                "minLength": 16,
                "maxLength": 256,
                "pattern": r"^[!-~]+$",
                "title": "X-Notify-Secret",
            }
    responses: dict[str, Any] = operation.setdefault("responses", {})
    if operation.get("security"):
        responses.setdefault("401", {})
    if operation.get("parameters") or operation.get("requestBody"):
        responses.setdefault("422", {})
    if operation.get("requestBody"):
        responses.setdefault("400", {})
        responses.setdefault("413", {})
    for status, default in ERROR_DESCRIPTIONS.items():
        response = responses.get(status)
        if response is None:
            continue
        if status == "422" or not response.get("content"):
            response["content"] = {"application/json": {"schema": {"$ref": SCHEMAS + "Error"}}}
        if not response.get("description") or response["description"] == "Validation Error":
            response["description"] = default
        if status in ("429", "503"):
            response.setdefault("headers", RETRY_AFTER)
    # Sorted by status, as a reader scans them.
    operation["responses"] = dict(sorted(responses.items()))


def customise(document: dict[str, Any], registry: TaskRegistry, *, batch_limit: int) -> None:
    """Rewrite FastAPI's document in place (see the module's docstring)."""
    components = document.setdefault("components", {}).setdefault("schemas", {})
    error = Error.model_json_schema(ref_template=SCHEMAS + "{model}")
    components.update(error.pop("$defs", {}))
    components["Error"] = error
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    task_components, one_of = _task_schemas(registry)
    components.update(task_components)
    examples = _examples(registry)
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            _document_errors(operation)
            media = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if media is None:
                continue
            if path == ENQUEUE_PATH:
                media["schema"] = copy.deepcopy(one_of)
                media["examples"] = examples
            elif path == ENQUEUE_BATCH_PATH:
                media["schema"] = {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": batch_limit,
                    "items": copy.deepcopy(one_of),
                    "description": "jobs to queue: all or none (each `job_id` at most once)",
                }


def install(app: FastAPI, registry: TaskRegistry, *, batch_limit: int) -> None:
    """Make `app` serve the customised document at `/openapi.json` (and so in `/docs`)."""
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = plain()
            customise(document, registry, batch_limit=batch_limit)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
