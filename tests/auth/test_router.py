"""Authentication through HTTP: API keys, Bearer JWTs, roles, and every route guarded."""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt
import pytest

from tests.conftest import API_KEYS, JWT_SECRET, headers

JOBS = "/api/v1/arq/jobs"
ENQUEUE = "/api/v1/arq/enqueue"
HEALTH = "/api/v1/arq/health"
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}
# Routes that must answer without a credential.
PUBLIC_PATHS = {HEALTH, "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"}


def bearer(sub: str = "alice", *, secret: str = JWT_SECRET, **claims: Any) -> dict[str, str]:
    payload: dict[str, Any] = {"sub": sub, "exp": int(time.time()) + 300, **claims}
    return {"Authorization": f"Bearer {jwt.encode(payload, secret, algorithm='HS256')}"}


def assert_error(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["error"] == error, body
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return body


def assert_unauthenticated(response: httpx.Response) -> dict[str, Any]:
    body = assert_error(response, 401, "NotAuthenticated")
    challenge = response.headers.get("WWW-Authenticate", "")
    assert "Bearer" in challenge
    assert "X-API-Key" in challenge
    return body


async def enqueue(
    client: httpx.AsyncClient, function_name: str, auth: dict[str, str], **kwargs: Any
) -> httpx.Response:
    return await client.post(
        ENQUEUE, json={"function_name": function_name, "kwargs": kwargs}, headers=auth
    )


# -- API keys -------------------------------------------------------------------------------


async def test_no_credential_is_401_with_error_shape(client: httpx.AsyncClient) -> None:
    body = assert_unauthenticated(await client.get(JOBS))
    assert set(body) == {"error", "detail"}
    assert "X-API-Key" in body["detail"]


async def test_wrong_api_key_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get(JOBS, headers={"X-API-Key": "not-a-real-key-123"})
    body = assert_unauthenticated(response)
    assert body["detail"] == "invalid API key"
    assert "not-a-real-key-123" not in response.text


async def test_api_key_of_another_case_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get(JOBS, headers={"X-API-Key": API_KEYS["alice"].upper()})
    assert_unauthenticated(response)


async def test_empty_api_key_is_401(client: httpx.AsyncClient) -> None:
    assert_unauthenticated(await client.get(JOBS, headers={"X-API-Key": ""}))


@pytest.mark.parametrize("owner", ["alice", "bob", "root"])
async def test_valid_api_key_lists_jobs(client: httpx.AsyncClient, owner: str) -> None:
    response = await client.get(JOBS, headers=headers(owner))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["items"] == []
    assert body["total"] == 0


async def test_api_key_header_name_is_case_insensitive(client: httpx.AsyncClient) -> None:
    response = await client.get(JOBS, headers={"x-api-key": API_KEYS["alice"]})
    assert response.status_code == 200, response.text


async def test_api_key_in_query_string_is_not_accepted(client: httpx.AsyncClient) -> None:
    response = await client.get(JOBS, params={"api_key": API_KEYS["alice"]})
    assert_unauthenticated(response)


# -- Bearer JWTs ----------------------------------------------------------------------------


async def test_bearer_jwt_lists_jobs(client: httpx.AsyncClient) -> None:
    response = await client.get(JOBS, headers=bearer("alice"))
    assert response.status_code == 200, response.text
    assert response.json()["total"] == 0


async def test_bearer_jwt_has_the_same_owner_scoping_as_the_key(
    client: httpx.AsyncClient,
) -> None:
    response = await enqueue(client, "add", headers("alice"), a=1, b=2)
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]

    as_alice = await client.get(JOBS, headers=bearer("alice"))
    assert as_alice.status_code == 200, as_alice.text
    assert [item["job_id"] for item in as_alice.json()["items"]] == [job_id]
    assert as_alice.json()["items"][0]["owner"] == "alice"

    status = await client.get(f"/api/v1/arq/status/{job_id}", headers=bearer("alice"))
    assert status.status_code == 200, status.text
    assert status.json()["job_id"] == job_id

    # Another subject does not see it, whichever way it authenticates.
    as_bob = await client.get(JOBS, headers=bearer("bob"))
    assert as_bob.status_code == 200, as_bob.text
    assert as_bob.json()["items"] == []
    bob_status = await client.get(f"/api/v1/arq/status/{job_id}", headers=bearer("bob"))
    assert bob_status.status_code == 404, bob_status.text
    assert (await client.get(JOBS, headers=headers("bob"))).json()["total"] == 0


async def test_job_enqueued_with_jwt_is_visible_with_the_key(client: httpx.AsyncClient) -> None:
    response = await enqueue(client, "add", bearer("alice"), a=4)
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    listed = await client.get(JOBS, headers=headers("alice"))
    assert [item["job_id"] for item in listed.json()["items"]] == [job_id]


async def test_expired_jwt_is_401(client: httpx.AsyncClient) -> None:
    token = jwt.encode(
        {"sub": "alice", "exp": int(time.time()) - 120}, JWT_SECRET, algorithm="HS256"
    )
    response = await client.get(JOBS, headers={"Authorization": f"Bearer {token}"})
    body = assert_unauthenticated(response)
    assert body["detail"] == "token expired"


async def test_jwt_with_wrong_secret_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get(JOBS, headers=bearer("root", secret="x" * 64, role="admin"))
    assert_unauthenticated(response)


async def test_jwt_without_exp_is_401(client: httpx.AsyncClient) -> None:
    token = jwt.encode({"sub": "alice"}, JWT_SECRET, algorithm="HS256")
    response = await client.get(JOBS, headers={"Authorization": f"Bearer {token}"})
    assert_unauthenticated(response)


async def test_alg_none_jwt_is_401(client: httpx.AsyncClient) -> None:
    token = jwt.encode(
        {"sub": "root", "role": "admin", "exp": int(time.time()) + 300}, None, algorithm="none"
    )
    response = await client.get(JOBS, headers={"Authorization": f"Bearer {token}"})
    assert_unauthenticated(response)


@pytest.mark.parametrize(
    "authorization",
    [f"Basic {API_KEYS['alice']}", API_KEYS["alice"], "Bearer", "Bearer not.a.jwt"],
)
async def test_malformed_authorization_is_401(
    client: httpx.AsyncClient, authorization: str
) -> None:
    assert_unauthenticated(await client.get(JOBS, headers={"Authorization": authorization}))


# -- roles ----------------------------------------------------------------------------------


async def test_user_enqueueing_admin_task_is_403(client: httpx.AsyncClient) -> None:
    response = await enqueue(client, "admin_only", headers("alice"))
    body = assert_error(response, 403, "TaskForbidden")
    assert "admin" in body["detail"]
    # Nothing was queued.
    listed = await client.get(JOBS, headers=headers("root"))
    assert listed.json()["total"] == 0


async def test_jwt_user_enqueueing_admin_task_is_403(client: httpx.AsyncClient) -> None:
    response = await enqueue(client, "admin_only", bearer("carol", role="user"))
    assert_error(response, 403, "TaskForbidden")


async def test_admin_enqueueing_admin_task_is_202(client: httpx.AsyncClient) -> None:
    response = await enqueue(client, "admin_only", headers("root"))
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["function"] == "admin_only"
    assert body["status"] == "queued"
    listed = await client.get(JOBS, headers=headers("root"))
    assert [(item["job_id"], item["owner"]) for item in listed.json()["items"]] == [
        (body["job_id"], "root")
    ]


async def test_jwt_admin_enqueueing_admin_task_is_202(client: httpx.AsyncClient) -> None:
    response = await enqueue(client, "admin_only", bearer("ops", role="admin"))
    assert response.status_code == 202, response.text
    assert response.json()["function"] == "admin_only"


async def test_tasks_list_depends_on_role(client: httpx.AsyncClient) -> None:
    as_user = await client.get("/api/v1/arq/tasks", headers=headers("alice"))
    as_admin = await client.get("/api/v1/arq/tasks", headers=headers("root"))
    assert as_user.status_code == 200, as_user.text
    assert as_admin.status_code == 200, as_admin.text
    user_tasks = {task["name"] for task in as_user.json()}
    admin_tasks = {task["name"] for task in as_admin.json()}
    assert "add" in user_tasks
    assert "admin_only" not in user_tasks
    assert "admin_only" in admin_tasks


# -- public routes, and every other route guarded ---------------------------------------------


async def test_health_needs_no_credential(client: httpx.AsyncClient) -> None:
    response = await client.get(HEALTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["healthy"] is True
    assert body["details"]["redis_connected"] is True
    assert body["details"]["database_connected"] is True


async def test_openapi_and_docs_need_no_credential(client: httpx.AsyncClient) -> None:
    assert (await client.get("/openapi.json")).status_code == 200
    assert (await client.get("/docs")).status_code == 200


def guarded_operations(openapi: dict[str, Any]) -> list[tuple[str, str]]:
    operations = []
    for path, item in openapi["paths"].items():
        if path in PUBLIC_PATHS:
            continue
        for method in item:
            if method in HTTP_METHODS:
                operations.append((method.upper(), path))
    return operations


def fill_path(path: str) -> str:
    # Every path parameter is a job id here; `abc` matches its pattern.
    url = path
    while "{" in url:
        start, end = url.index("{"), url.index("}")
        url = url[:start] + "abc" + url[end + 1 :]
    return url


async def test_every_route_but_public_ones_needs_a_credential(
    client: httpx.AsyncClient,
) -> None:
    openapi = (await client.get("/openapi.json")).json()
    operations = guarded_operations(openapi)
    # The job API is really there (otherwise this test would check nothing).
    assert ("POST", ENQUEUE) in operations
    assert ("GET", JOBS) in operations
    assert ("DELETE", "/api/v1/arq/abort/{job_id}") in operations
    assert ("GET", "/api/v1/arq/status/{job_id}") in operations
    unguarded = []
    for method, path in operations:
        for auth in ({}, {"X-API-Key": "wrong-key-00000"}, bearer(secret="y" * 64)):
            response = await client.request(method, fill_path(path), headers=auth)
            if response.status_code != 401 or response.json().get("error") != "NotAuthenticated":
                unguarded.append((method, path, auth, response.status_code, response.text))
    assert unguarded == []


async def test_every_guarded_route_declares_its_security_in_openapi(
    client: httpx.AsyncClient,
) -> None:
    openapi = (await client.get("/openapi.json")).json()
    schemes = openapi["components"]["securitySchemes"]
    assert {scheme["type"] for scheme in schemes.values()} == {"apiKey", "http"}
    for method, path in guarded_operations(openapi):
        security = openapi["paths"][path][method.lower()].get("security", [])
        declared = {name for requirement in security for name in requirement}
        assert declared == set(schemes), (method, path, security)
    health_security = openapi["paths"][HEALTH]["get"].get("security", [])
    assert health_security == []


async def test_guarded_route_with_valid_key_is_not_401(client: httpx.AsyncClient) -> None:
    # The counterpart of the loop above: the same requests with a key get past authentication.
    openapi = (await client.get("/openapi.json")).json()
    for method, path in guarded_operations(openapi):
        response = await client.request(method, fill_path(path), headers=headers("alice"))
        assert response.status_code != 401, (method, path, response.text)
        if response.status_code == 403:  # an admin's operation (/metrics): an admin gets past
            response = await client.request(method, fill_path(path), headers=headers("root"))
        assert response.status_code not in (401, 403), (method, path, response.text)


# -- token lifetime and subjects (JWT_MAX_TTL, reserved and over-long owners) -------------------

DAY = 86400  # the default JWT_MAX_TTL, which the `app` fixture keeps


def token(claims: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {jwt.encode(claims, JWT_SECRET, algorithm='HS256')}"}


async def test_jwt_valid_for_a_hundred_years_is_401(client: httpx.AsyncClient) -> None:
    now = int(time.time())
    for claims in (
        {"sub": "alice", "iat": now, "exp": now + 100 * 365 * DAY},
        {"sub": "alice", "exp": now + 100 * 365 * DAY},  # no iat: measured from now
    ):
        body = assert_unauthenticated(await client.get(JOBS, headers=token(claims)))
        assert "JWT_MAX_TTL" in body["detail"]
        assert body["detail"].startswith("invalid token")


async def test_jwt_living_exactly_max_ttl_is_accepted(client: httpx.AsyncClient) -> None:
    iat = int(time.time()) - 5
    response = await client.get(JOBS, headers=token({"sub": "alice", "iat": iat, "exp": iat + DAY}))
    assert response.status_code == 200, response.text
    # Without iat, exp may be up to JWT_MAX_TTL from now.
    response = await client.get(
        JOBS, headers=token({"sub": "alice", "exp": int(time.time()) + DAY})
    )
    assert response.status_code == 200, response.text


async def test_jwt_living_one_second_over_max_ttl_is_401(client: httpx.AsyncClient) -> None:
    iat = int(time.time()) - 5
    response = await client.get(
        JOBS, headers=token({"sub": "alice", "iat": iat, "exp": iat + DAY + 1})
    )
    assert "JWT_MAX_TTL (86400 s)" in assert_unauthenticated(response)["detail"]


async def test_jwt_with_an_old_iat_cannot_be_stretched(client: httpx.AsyncClient) -> None:
    # Issued long ago, still valid for an hour: its lifetime is what counts.
    now = int(time.time())
    response = await client.get(
        JOBS, headers=token({"sub": "alice", "iat": now - 30 * DAY, "exp": now + 3600})
    )
    assert_unauthenticated(response)


async def test_jwt_with_a_future_iat_is_401(client: httpx.AsyncClient) -> None:
    # Moving iat forward would otherwise make a long-lived token look short.
    now = int(time.time())
    response = await client.get(
        JOBS, headers=token({"sub": "alice", "iat": now + 50 * DAY, "exp": now + 51 * DAY})
    )
    assert_unauthenticated(response)


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": str(int(time.time()) + 100 * 365 * DAY)},  # PyJWT accepts numeric strings
        {"iat": str(int(time.time())), "exp": int(time.time()) + 60},
    ],
)
async def test_jwt_with_non_numeric_times_is_401(
    client: httpx.AsyncClient, claims: dict[str, Any]
) -> None:
    assert_unauthenticated(await client.get(JOBS, headers=token({"sub": "alice", **claims})))


@pytest.mark.parametrize("sub", ["system", "System", "SYSTEM"])
async def test_jwt_for_the_system_owner_is_401(client: httpx.AsyncClient, sub: str) -> None:
    response = await client.get(JOBS, headers=bearer(sub, role="admin"))
    body = assert_unauthenticated(response)
    assert body["detail"] == f"invalid token: sub {sub!r} is reserved"
    response = await enqueue(client, "add", bearer(sub), a=1, b=2)
    assert_unauthenticated(response)


async def test_jwt_with_a_sub_over_100_characters_is_401_not_503(
    client: httpx.AsyncClient,
) -> None:
    response = await enqueue(client, "add", bearer("a" * 101), a=1, b=2)
    body = assert_unauthenticated(response)
    assert body["detail"] == "invalid token: sub too long"
    assert (await client.get(JOBS, headers=headers("root"))).json()["total"] == 0


async def test_jwt_with_a_sub_of_100_characters_enqueues(client: httpx.AsyncClient) -> None:
    owner = "b" * 100
    response = await enqueue(client, "add", bearer(owner), a=1, b=2)
    assert response.status_code == 202, response.text
    listed = await client.get(JOBS, headers=bearer(owner))
    assert [item["owner"] for item in listed.json()["items"]] == [owner]
