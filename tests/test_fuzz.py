"""Fuzzing: every operation of the app's own OpenAPI document, driven by schemathesis in-process
(ASGI) against the real Redis and PostgreSQL of this run, as a user and as an admin.

Each generated request must get: no 5xx, a status the operation documents, a body of the
documented schema, and, when the request is valid by the schema, no 4xx but 401/403/404/409/429
(a 422 only for a cross-field rule that the operation's documentation states, since OpenAPI
cannot say "give either this query parameter or that one"). Runs are derandomized, so CI sees
the same requests every time. No worker runs: queued jobs just wait in Redis.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis import Case
from schemathesis.checks import CheckContext, not_a_server_error
from schemathesis.core.failures import Failure
from schemathesis.python import asgi as schemathesis_asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from src.arq.config import ArqSettings
from src.arq.registry import TaskRegistry
from src.arq.tasks import registry as app_registry
from src.auth.config import AuthSettings
from src.config import Environment, Settings
from src.main import create_app
from src.openapi import task_example
from tests.conftest import API_KEYS_SETTING, headers

# The document is the app's own, read once at import (it needs no database): the app of the
# app's registry, which is what /docs shows.
_DOCUMENT_APP = create_app(
    settings=Settings(
        redis_url="redis://127.0.0.1:6379/0",
        database_url="postgresql+asyncpg://postgres@127.0.0.1:5432/unused",
        environment=Environment.TEST,
    ),
    auth_settings=AuthSettings(api_keys=API_KEYS_SETTING),  # type: ignore[arg-type]
    registry=app_registry,
)
DOCUMENT: dict[str, Any] = json.loads(json.dumps(_DOCUMENT_APP.openapi()))
schema = schemathesis.openapi.from_dict(DOCUMENT)
# Requests go in-process to the app each test builds (`app_under_test`), passed on every call.
schema.app = _DOCUMENT_APP
schema.location = "/openapi.json"
# The coverage phase sends a placeholder ("0") for an optional header whatever its pattern (the
# webhook URL), which the API rightly refuses; the generate phase honours patterns.
schema.config.phases.coverage.enabled = False


@pytest.fixture
def app_under_test(settings: Settings, arq_settings: ArqSettings) -> Iterator[Any]:
    """The app on this run's Redis and database; schemathesis runs its lifespan."""
    application = create_app(
        settings=settings,
        # Far from the rate limit: a 429 is documented, but the fuzzer should reach the service.
        arq_settings=arq_settings,
        auth_settings=AuthSettings(api_keys=API_KEYS_SETTING),  # type: ignore[arg-type]
        registry=app_registry,
    )
    yield application
    schemathesis_asgi.shutdown_lifespans()


def _resolved_text(node: Any, seen: set[str]) -> str:
    """The operation's text with every component it references, recursively."""
    parts = [json.dumps(node)]
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str) and ref not in seen:
                seen.add(ref)
                target = DOCUMENT["components"]["schemas"][ref.rsplit("/", 1)[-1]]
                parts.append(json.dumps(target))
                stack.append(target)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return "\n".join(parts)


def _stated_rule(case: Case, status_code: int, body: Any) -> bool:
    """A 422 whose every reason is a rule the operation's documentation states in words."""
    if status_code != 422 or not isinstance(body, dict) or not body.get("errors"):
        return False
    operation = DOCUMENT["paths"][case.operation.path][case.method.lower()]
    text = _words(_resolved_text(operation, set()))
    reasons = [
        _words(str(error.get("msg", "")).removeprefix("Value error, ")) for error in body["errors"]
    ]
    return all(reason and reason in text for reason in reasons)


def _words(text: str) -> str:
    return " ".join(text.replace("\\n", " ").split()).lower()


def accepted_if_valid(ctx: CheckContext, response: Any, case: Case) -> bool | None:
    """schemathesis's `positive_data_acceptance`, but for a 422 naming a documented rule."""
    try:
        return positive_data_acceptance(ctx, response, case)
    except Failure:
        try:
            body = response.json()
        except ValueError:
            raise
        if _stated_rule(case, response.status_code, body):
            return None
        raise


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    accepted_if_valid,
]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("owner", ["alice", "root"])
@schema.parametrize()
@settings(
    max_examples=40,
    derandomize=True,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_as_documented(case: Case, owner: str, app_under_test: Any) -> None:
    case.call_and_validate(headers=headers(owner), app=app_under_test, checks=CHECKS)


# -- the documented examples ---------------------------------------------------------------------


@pytest.fixture
def registry() -> TaskRegistry:
    """The app's own tasks (not the test tasks): the examples of /docs are theirs."""
    return app_registry


def test_every_task_has_a_documented_example_and_schema() -> None:
    body = DOCUMENT["paths"]["/api/v1/arq/enqueue"]["post"]["requestBody"]["content"][
        "application/json"
    ]
    assert set(body["examples"]) == set(app_registry.names())
    mapping = body["schema"]["discriminator"]["mapping"]
    assert set(mapping) == set(app_registry.names())
    for name, ref in mapping.items():
        request = DOCUMENT["components"]["schemas"][ref.rsplit("/", 1)[-1]]
        assert request["properties"]["function_name"]["enum"] == [name]


async def test_every_documented_example_is_accepted(client: httpx.AsyncClient) -> None:
    # The `client` fixture's app is built with the app's registry (see `registry` above).
    document = (await client.get("/openapi.json")).json()
    examples = document["paths"]["/api/v1/arq/enqueue"]["post"]["requestBody"]["content"][
        "application/json"
    ]["examples"]
    assert set(examples) == set(app_registry.names())
    refused = {}
    for name, example in examples.items():
        response = await client.post(
            "/api/v1/arq/enqueue", json=example["value"], headers=headers("root")
        )
        if response.status_code != 202:
            refused[name] = (response.status_code, response.text)
    assert refused == {}
    for spec in app_registry:
        assert examples[spec.name]["value"] == {
            "function_name": spec.name,
            "kwargs": task_example(spec),
        }


# -- what fuzzing found, pinned ------------------------------------------------------------------

BEYOND_BIGINT = "9223372036854775808"
REFUSED_AT_THE_EDGE = [
    ("POST", "/api/v1/comments/parse/vk/async?group_id=99999999999999999999"),
    ("POST", "/api/v1/comments/keywords/async?group_id=1&post_id=99999999999999999999"),
    ("POST", "/api/v1/comments/report/async?group_id=99999999999999999999"),
    ("POST", "/api/v1/comments/analyze/async?comment_ids=9999999999999999999_1"),
    ("GET", f"/api/v1/arq/jobs?offset={BEYOND_BIGINT}"),
    ("GET", f"/api/v1/arq/failed?offset={BEYOND_BIGINT}"),
    ("GET", f"/api/v1/comments?post_id={BEYOND_BIGINT}"),
    ("GET", f"/api/v1/comments/reports?group_id={BEYOND_BIGINT}"),
    ("GET", f"/api/v1/comments/{BEYOND_BIGINT}_1"),
    ("GET", "/api/v1/comments?until=0.5"),
    ("GET", "/api/v1/arq/jobs?limit=1&limit=2"),
    ("GET", "/api/v1/comments?group_id=1&group_id=2"),
]


@pytest.mark.parametrize(("method", "url"), REFUSED_AT_THE_EDGE)
async def test_out_of_range_and_ambiguous_input_is_a_422(
    client: httpx.AsyncClient, method: str, url: str
) -> None:
    response = await client.request(method, url, headers=headers("alice"))
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "ValidationError"
    assert body["errors"] and all(
        error["loc"][0] == "query" or error["loc"][0] == "path" for error in body["errors"]
    )


async def test_arguments_beyond_bigint_are_refused_when_enqueued(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/api/v1/arq/enqueue",
        json={
            "function_name": "analyze_text_morphology",
            "kwargs": {"comment_ids": ["9999999999999999999_1"]},
        },
        headers=headers("alice"),
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"][-1] == "comment_ids"


async def test_a_body_that_is_not_utf8_is_a_documented_4xx(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/arq/enqueue",
        content=b'{"function_name": "\xff\xfe"}',
        headers={**headers("alice"), "Content-Type": "application/json"},
    )
    documented = DOCUMENT["paths"]["/api/v1/arq/enqueue"]["post"]["responses"]
    assert 400 <= response.status_code < 500
    assert str(response.status_code) in documented
    assert set(response.json()) >= {"error", "detail"}
