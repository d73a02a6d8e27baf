"""Queueing jobs from the dashboard: forms from the tasks' schemas, errors next to the fields."""

from __future__ import annotations

import html
import re

import httpx
from arq.worker import Worker

from src.dashboard.forms import form_fields, read_arguments
from tests.arq.helpers import wait_for
from tests.dashboard.conftest import Clients
from tests.dashboard.helpers import DASHBOARD, post, signed_in
from tests.tasks import registry


async def test_a_job_queued_through_the_form_runs_as_the_viewers(
    client: httpx.AsyncClient, worker: Worker, browsers: Clients
) -> None:
    async with browsers() as browser:
        csrf = await signed_in(browser, "alice")
        form = await browser.get(f"{DASHBOARD}/enqueue/add")
        assert form.status_code == 200
        assert 'name="arg.a"' in form.text and 'type="number" step="1"' in form.text
        response = await post(browser, "/enqueue/add", csrf, **{"arg.a": "2", "arg.b": "40"})
        assert response.status_code == 303
        job_id = response.headers["location"].removeprefix(f"{DASHBOARD}/jobs/")
    done = await wait_for(client, job_id)  # alice's job: the API shows it to her
    assert done["result"] == {"sum": 42}
    assert done["request_id"]


async def test_refused_arguments_are_shown_next_to_their_fields(browsers: Clients) -> None:
    async with browsers() as browser:
        csrf = await signed_in(browser, "alice")
        response = await post(browser, "/enqueue/sleep", csrf, **{"arg.seconds": "500"})
        assert response.status_code == 422
        error = re.search(r'data-testid="error-seconds">([^<]*)<', response.text)
        assert error is not None and "less than or equal to 120" in error.group(1)
        assert 'value="500"' in response.text  # what was typed stays
        not_a_number = await post(browser, "/enqueue/add", csrf, **{"arg.a": "two"})
        assert 'data-testid="error-a">must be a whole number<' in not_a_number.text
        parse = await post(
            browser, "/enqueue/parse_vk_comments", csrf, **{"arg.limit": "10"}
        )  # neither group_id nor screen_name: a rule of no one field
        assert parse.status_code == 422
        assert 'data-testid="form-error"' in parse.text
        too_high = await post(
            browser, "/enqueue/add", csrf, **{"arg.a": "1", "priority": "critical"}
        )
        assert too_high.status_code == 422
        assert "ARQ_USER_MAX_PRIORITY" in html.unescape(too_high.text)


async def test_an_admin_task_is_not_there_for_users(browsers: Clients) -> None:
    async with browsers() as browser:
        csrf = await signed_in(browser, "alice")
        listing = await browser.get(f"{DASHBOARD}/enqueue")
        assert "/dashboard/enqueue/add" in listing.text
        assert "admin_only" not in listing.text
        assert (await browser.get(f"{DASHBOARD}/enqueue/admin_only")).status_code == 404
        assert (await post(browser, "/enqueue/admin_only", csrf)).status_code == 404
        assert (await browser.get(f"{DASHBOARD}/enqueue/nope")).status_code == 404
    async with browsers() as root:
        csrf = await signed_in(root, "root")
        assert (await root.get(f"{DASHBOARD}/enqueue/admin_only")).status_code == 200
        assert (await post(root, "/enqueue/admin_only", csrf)).status_code == 303


async def test_the_form_needs_the_sessions_token(browsers: Clients) -> None:
    async with browsers() as browser:
        await signed_in(browser, "alice")
        assert (await post(browser, "/enqueue/add", None, **{"arg.a": "1"})).status_code == 403
        assert (await post(browser, "/enqueue/add", "forged", **{"arg.a": "1"})).status_code == 403


def test_each_argument_gets_the_field_its_schema_asks_for() -> None:
    schema = registry.get("parse_vk_comments").args_model.model_json_schema()
    fields = {item.name: item for item in form_fields(schema)}
    assert fields["group_id"].kind == "integer" and fields["group_id"].minimum == "0"
    assert fields["screen_name"].kind == "text"
    sleep = {
        item.name: item
        for item in form_fields(registry.get("sleep").args_model.model_json_schema())
    }
    assert sleep["seconds"].required and sleep["seconds"].maximum == "120"
    batch = registry.get("process_batch_comments").args_model.model_json_schema()
    kinds = {item.name: item.kind for item in form_fields(batch)}
    assert kinds["comment_ids"] == "json"
    kwargs, errors = read_arguments(
        form_fields(batch), {"arg.comment_ids": ['["-1_25"]'], "arg.group_id": [""]}
    )
    assert kwargs["comment_ids"] == ["-1_25"] and "group_id" not in kwargs and not errors
    _, errors = read_arguments(form_fields(batch), {"arg.comment_ids": ["[oops"]})
    assert errors["comment_ids"].startswith("must be JSON")
