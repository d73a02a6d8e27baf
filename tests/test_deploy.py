"""Static checks of the production deployment files (nothing is built or run).

docker-compose.prod.yml is loaded with yaml.safe_load and docker/Dockerfile is
read as text; the tests assert what an operator would check before deploying.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.prod.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

APP_SERVICES = ("api", "arq_worker", "migrate")
HEALTHCHECKED_SERVICES = ("api", "arq_worker", "redis", "postgres")


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _services() -> dict[str, Any]:
    services = _compose()["services"]
    assert isinstance(services, dict)
    return services


def _cmd(value: Any) -> str:
    """A compose command/test (string or list form) as one space-separated string."""
    if value is None:
        return ""
    if isinstance(value, str):
        return " ".join(value.split())
    return " ".join(str(part) for part in value)


def _env(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment (mapping or KEY=VALUE list form) as a dict."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def _depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):  # short form: no condition, i.e. service_started
        return {name: {"condition": "service_started"} for name in deps}
    return {name: (spec or {}) for name, spec in deps.items()}


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comments dropped and continuations joined."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, args = current.partition(" ")
        instructions.append((keyword.upper(), " ".join(args.split())))
        current = ""
    return instructions


def _dockerfile(keyword: str) -> list[str]:
    return [args for kw, args in _dockerfile_instructions() if kw == keyword]


# --- docker-compose.prod.yml -------------------------------------------------


def test_compose_has_the_services() -> None:
    services = _services()
    for name in ("api", "arq_worker", "redis", "postgres", "migrate"):
        assert name in services, f"service {name!r} missing"


def test_redis_persists_with_aof() -> None:
    redis = _services()["redis"]
    command = _cmd(redis.get("command"))
    assert re.search(r"--appendonly\s+yes", command), command
    assert any(str(v).endswith(":/data") for v in redis.get("volumes", [])), redis.get("volumes")


def test_postgres_has_a_data_volume() -> None:
    compose = _compose()
    volumes = compose["services"]["postgres"].get("volumes", [])
    mounts = [str(v).split(":") for v in volumes]
    data_mounts = [m for m in mounts if len(m) >= 2 and m[1] == "/var/lib/postgresql/data"]
    assert data_mounts, volumes
    # A named volume declared at the top level, not a bind mount into the repo.
    assert data_mounts[0][0] in (compose.get("volumes") or {})


def test_arq_worker_runs_worker_settings_with_replicas() -> None:
    worker = _services()["arq_worker"]
    assert _cmd(worker.get("command")) == "arq src.arq.worker.WorkerSettings"
    assert "replicas" in (worker.get("deploy") or {})
    # SIGTERM lets ARQ cancel and re-queue running jobs; it needs time before SIGKILL.
    assert worker.get("stop_grace_period")


def test_api_runs_uvicorn_on_port_8000() -> None:
    api = _services()["api"]
    command = _cmd(api.get("command"))
    assert command.startswith("uvicorn src.main:app"), command
    assert re.search(r"--port[ =]8000\b", command), command
    assert re.search(r"--host[ =]0\.0\.0\.0\b", command), command
    assert any(str(p).endswith("8000") for p in api.get("ports", [])), api.get("ports")


def test_migrations_run_before_the_api_and_worker() -> None:
    services = _services()
    assert _cmd(services["migrate"].get("command")) == "alembic upgrade head"
    assert str(services["migrate"].get("restart", "no")) == "no"
    for name in ("api", "arq_worker"):
        deps = _depends_on(services[name])
        assert deps.get("migrate", {}).get("condition") == "service_completed_successfully", name
        for backing in ("redis", "postgres"):
            assert deps.get(backing, {}).get("condition") == "service_healthy", (name, backing)
    migrate_deps = _depends_on(services["migrate"])
    assert migrate_deps.get("postgres", {}).get("condition") == "service_healthy"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_build_from_the_dockerfile(name: str) -> None:
    build = _services()[name].get("build")
    assert isinstance(build, dict), f"{name}: build must name docker/Dockerfile"
    assert build.get("dockerfile") == "docker/Dockerfile"
    assert build.get("context") in (".", "./")


@pytest.mark.parametrize("name", HEALTHCHECKED_SERVICES)
def test_services_have_healthchecks(name: str) -> None:
    healthcheck = _services()[name].get("healthcheck") or {}
    assert not healthcheck.get("disable"), name
    assert _cmd(healthcheck.get("test")), f"{name} has no healthcheck test"


def test_healthcheck_commands() -> None:
    services = _services()
    assert "/api/v1/arq/health" in _cmd(services["api"]["healthcheck"]["test"])
    assert "curl" not in _cmd(services["api"]["healthcheck"]["test"])  # not in the slim image
    assert "arq --check src.arq.worker.WorkerSettings" in _cmd(
        services["arq_worker"]["healthcheck"]["test"]
    )
    assert "redis-cli ping" in _cmd(services["redis"]["healthcheck"]["test"])
    assert "pg_isready" in _cmd(services["postgres"]["healthcheck"]["test"])


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_share_the_environment(name: str) -> None:
    env = _env(_services()[name])
    assert env.get("REDIS_URL", "").startswith("redis://redis:6379")
    assert env.get("DATABASE_URL", "").startswith("postgresql+asyncpg://")
    assert "@postgres:5432/" in env["DATABASE_URL"]
    assert env.get("ENVIRONMENT") == "production"
    for key in ("API_KEYS", "ARQ_MAX_JOBS", "ARQ_JOB_TIMEOUT", "ARQ_QUEUE_NAME"):
        assert key in env, f"{name}: {key} not set"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_do_not_put_src_on_pythonpath(name: str) -> None:
    # /app/src on sys.path would let the project's src/arq shadow the arq library.
    pythonpath = _env(_services()[name]).get("PYTHONPATH", "")
    assert "src" not in pythonpath, pythonpath


# --- docker/Dockerfile ---------------------------------------------------------


def test_dockerfile_base_and_workdir() -> None:
    assert _dockerfile("FROM")[0].startswith("python:3.11-slim")
    assert _dockerfile("WORKDIR")[-1] == "/app"
    assert "8000" in " ".join(_dockerfile("EXPOSE"))


def test_dockerfile_cmd_runs_the_api() -> None:
    cmd_args = _dockerfile("CMD")
    assert cmd_args, "no CMD"
    last = cmd_args[-1]
    command = " ".join(json.loads(last)) if last.startswith("[") else last
    assert command.startswith("uvicorn src.main:app"), command
    assert "8000" in command


def test_dockerfile_installs_with_the_lock_constraints() -> None:
    runs = " && ".join(_dockerfile("RUN"))
    assert re.search(r"pip install[^&;]*-c requirements\.lock", runs), runs
    copied = " ".join(_dockerfile("COPY"))
    for path in ("pyproject.toml", "requirements.lock", "src/", "migrations/", "alembic.ini"):
        assert path in copied, f"{path} not copied into the image"


def test_dockerfile_runs_as_non_root() -> None:
    instructions = _dockerfile_instructions()
    users = [(i, args) for i, (kw, args) in enumerate(instructions) if kw == "USER"]
    assert users, "no USER instruction"
    index, user = users[-1]
    assert user.split(":")[0] not in ("root", "0"), user
    # Everything after the install runs as that user, including the CMD.
    cmd_index = max(i for i, (kw, _) in enumerate(instructions) if kw == "CMD")
    assert index < cmd_index


def test_dockerfile_does_not_put_src_on_pythonpath() -> None:
    env_lines = " ".join(_dockerfile("ENV") + _dockerfile("ARG"))
    assert "/app/src" not in env_lines
    match = re.search(r"PYTHONPATH[= ]+(\S+)", env_lines)
    assert match is None or "src" not in match.group(1), match and match.group(1)
    assert "PYTHONUNBUFFERED=1" in env_lines


def test_dockerignore_keeps_local_state_out() -> None:
    entries = {
        line.strip().strip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for entry in (".venv", ".git", "var", "tests"):
        assert entry in entries, f"{entry} not in .dockerignore"
