"""Job arguments are strict and bounded: an unknown argument is a 422 naming it, arguments past
ARQ_MAX_ARGS_BYTES are a 422 naming the field, a batch past ARQ_BATCH_LIMIT is refused while it
is validated."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from src.arq.context import JobContext
from src.arq.exceptions import InvalidJobArguments
from src.arq.registry import TaskRegistry
from src.arq.service import SYSTEM, ArqService
from src.arq.tasks import registry as app_registry
from tests.arq.helpers import API
from tests.conftest import headers

WEBHOOK = "https://example.org/hooks/vk"


async def total_jobs(client: httpx.AsyncClient) -> int:
    response = await client.get(f"{API}/jobs", headers=headers("root"))
    assert response.status_code == 200, response.text
    total: int = response.json()["total"]
    return total


# -- unknown arguments ------------------------------------------------------------------------


async def test_misspelt_argument_is_422_naming_it(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"{API}/enqueue",
        json={"function_name": "ping", "kwargs": {"mesage": "typo"}},
        headers=headers("alice"),
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["errors"] == [
        {
            "loc": ["body", "kwargs", "mesage"],
            "msg": "Extra inputs are not permitted",
            "type": "extra_forbidden",
        }
    ]
    assert "kwargs.mesage: Extra inputs are not permitted" in body["detail"]
    assert await total_jobs(client) == 0


async def test_every_app_task_refuses_an_unknown_argument(client: httpx.AsyncClient) -> None:
    names = [spec.name for spec in app_registry]
    assert "ping" in names and "send_notification" in names and "parse_vk_comments" in names
    accepted = []
    for name in names:
        response = await client.post(
            f"{API}/enqueue",
            json={"function_name": name, "kwargs": {"no_such_argument": 1}},
            headers=headers("root"),  # admin: the admin tasks are reachable too
        )
        named = [
            err
            for err in response.json().get("errors", [])
            if err["loc"] == ["body", "kwargs", "no_such_argument"]
            and err["type"] == "extra_forbidden"
        ]
        if response.status_code != 422 or not named:
            accepted.append((name, response.status_code, response.text))
    assert accepted == []
    assert await total_jobs(client) == 0


async def test_unknown_argument_refused_through_the_python_api(service: ArqService) -> None:
    with pytest.raises(InvalidJobArguments) as info:
        await service.enqueue_job("add", a=1, c=2)
    assert "kwargs.c: Extra inputs are not permitted" in info.value.detail


def test_registry_refuses_a_task_that_takes_unknown_arguments() -> None:
    class LooseArgs(BaseModel):
        message: str = "hi"

    registry = TaskRegistry()
    with pytest.raises(ValueError, match='extra="forbid"'):

        @registry.task(args=LooseArgs)
        async def loose(ctx: JobContext, args: LooseArgs) -> None:
            """Takes anything."""

    assert "loose" not in registry


@pytest.mark.parametrize(
    ("path", "params"),
    [
        (
            "/api/v1/comments/parse/vk/async",
            {"group_id": 1, "limit": 5, "since": "2026-01-01T00:00:00Z"},
        ),
        ("/api/v1/comments/parse/vk/async", {"screen_name": "apiclub"}),
        ("/api/v1/comments/analyze/async", {"comment_ids": "-1_25", "analysis_type": "keywords"}),
        ("/api/v1/comments/analyze/async", {"comment_ids": "-1_25,-1_26"}),
        (
            "/api/v1/comments/keywords/async",
            {
                "group_id": 1,
                "post_id": 2,
                "top_n": 5,
                "since": "2026-01-01T00:00:00Z",
                "until": "2026-02-01T00:00:00Z",
            },
        ),
        ("/api/v1/comments/cleanup/async", {"older_than_days": 30, "dry_run": "false"}),
        (
            "/api/v1/comments/report/async",
            {
                "group_id": 1,
                "since": "2026-01-01T00:00:00Z",
                "until": "2026-02-01T00:00:00Z",
                "format": "csv",
                "top_n": 5,
            },
        ),
    ],
)
async def test_domain_endpoints_build_valid_arguments(
    client: httpx.AsyncClient, path: str, params: dict[str, Any]
) -> None:
    # Every query parameter becomes a task argument: none may be one the task does not take.
    response = await client.post(path, params=params, headers=headers("root"))
    assert response.status_code == 202, response.text


# -- argument size ------------------------------------------------------------------------------


async def test_50_mb_payload_through_the_python_api_is_refused(service: ArqService) -> None:
    payload = {"blob": "x" * 50_000_000}
    with pytest.raises(InvalidJobArguments) as info:
        await service.enqueue_job("send_notification", url=WEBHOOK, payload=payload)
    assert info.value.status_code == 422
    (error,) = info.value.extra["errors"]
    assert error["loc"] == ["body", "kwargs", "payload"]
    assert error["type"] == "too_large"
    assert error["msg"].startswith("too large: 50000011 bytes, at most 65536")
    assert "kwargs.payload: too large" in info.value.detail
    page = await service.list_jobs(principal=SYSTEM, limit=10, offset=0)
    assert page.total == 0


async def test_args_over_the_cap_over_http_name_the_field(client: httpx.AsyncClient) -> None:
    # Within the 1 MiB body limit, over the 64 KiB argument cap.
    big = {"blob": "y" * 100_000}
    payload = await client.post(
        f"{API}/enqueue",
        json={"function_name": "send_notification", "kwargs": {"url": WEBHOOK, "payload": big}},
        headers=headers("alice"),
    )
    assert payload.status_code == 422, payload.text
    assert [err["loc"] for err in payload.json()["errors"]] == [["body", "kwargs", "payload"]]
    assert "kwargs.payload: too large" in payload.json()["detail"]
    context = await client.post(
        f"{API}/enqueue",
        json={
            "function_name": "send_notification",
            "kwargs": {"url": WEBHOOK, "template": "ping", "context": big},
        },
        headers=headers("alice"),
    )
    assert context.status_code == 422, context.text
    assert "kwargs.context: too large" in context.json()["detail"]
    assert await total_jobs(client) == 0
    # Under the cap the same job is queued.
    fits = await client.post(
        f"{API}/enqueue",
        json={
            "function_name": "send_notification",
            "kwargs": {"url": WEBHOOK, "payload": {"blob": "y" * 60_000}},
        },
        headers=headers("alice"),
    )
    assert fits.status_code == 202, fits.text


async def test_the_cap_is_set_by_arq_max_args_bytes(service: ArqService) -> None:
    small = ArqService(
        redis=service.redis,
        sessionmaker=service.sessionmaker,
        registry=service.registry,
        settings=service.settings.model_copy(update={"max_args_bytes": 2048}),
    )
    with pytest.raises(InvalidJobArguments) as info:
        await small.enqueue_job("fail", message="z" * 3000)
    assert "kwargs.message: too large: 3002 bytes, at most 2048" in info.value.detail
    queued = await small.enqueue_job("fail", message="z" * 1000)
    assert queued.status == "queued"


# -- batches ------------------------------------------------------------------------------------


async def test_batch_over_the_limit_is_refused_while_validated(client: httpx.AsyncClient) -> None:
    # An invalid item among too many: the length is what is reported, the items are not looked at.
    items: list[dict[str, Any]] = [{"function_name": "add", "kwargs": {"a": 1}}] * 1001
    items[3] = {"function_name": "add", "kwargs": {"a": "not a number"}}
    response = await client.post(f"{API}/enqueue-batch", json=items, headers=headers("alice"))
    assert response.status_code == 422, response.text
    body = response.json()
    assert "at most 1000" in body["detail"]
    assert [err["type"] for err in body["errors"]] == ["too_long"]
    assert await total_jobs(client) == 0


async def test_batch_limit_is_in_the_openapi_schema(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    schema = spec["paths"][f"{API}/enqueue-batch"]["post"]["requestBody"]["content"][
        "application/json"
    ]["schema"]
    # ARQ_BATCH_LIMIT is 1000, but a batch must fit the per-minute limit (600): the smaller.
    assert schema["maxItems"] == 600
    assert schema["minItems"] == 1
