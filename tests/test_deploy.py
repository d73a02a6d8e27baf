"""Static checks of the production deployment files (nothing is built or run).

docker-compose.prod.yml is loaded with yaml.safe_load and docker/Dockerfile is
read as text; the tests assert what an operator would check before deploying.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from src.config import Settings
from tests.arq.test_worker_process import ARQ
from tests.conftest import client_for, migrate

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.prod.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

APP_SERVICES = ("api", "arq_worker", "migrate")
HEALTHCHECKED_SERVICES = ("api", "arq_worker", "redis", "postgres")
REDIS_SERVER = shutil.which("redis-server")


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
    assert env.get("REDIS_URL", "").startswith("redis://:${REDIS_PASSWORD:?")
    assert env["REDIS_URL"].endswith("@redis:6379/0")
    assert env.get("DATABASE_URL", "").startswith("postgresql+asyncpg://")
    assert "@postgres:5432/" in env["DATABASE_URL"]
    assert env.get("ENVIRONMENT") == "production"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_do_not_put_src_on_pythonpath(name: str) -> None:
    # /app/src on sys.path would let the project's src/arq shadow the arq library.
    pythonpath = _env(_services()[name]).get("PYTHONPATH", "")
    assert "src" not in pythonpath, pythonpath


# --- every setting reaches the services that read it -------------------------------

# Which services read each settings class (`src/**/config.py`, found by the test below): a new
# class fails `test_every_settings_class_has_its_readers` until it is placed here.
READERS: dict[str, tuple[str, ...]] = {
    "src.config.Settings": APP_SERVICES,
    "src.arq.config.ArqSettings": ("api", "arq_worker"),
    "src.auth.config.AuthSettings": ("api",),
    "src.dashboard.config.DashboardSettings": ("api",),
    "src.monitoring.config.MetricsSettings": ("api",),
    "src.maintenance.config.MaintenanceSettings": ("arq_worker",),
    "src.maintenance.config.BackupSettings": ("arq_worker",),
    "src.vk.config.VKSettings": ("arq_worker",),
    "src.webhooks.config.NotificationSettings": ("arq_worker",),
    "src.morphology.config.MorphologySettings": ("arq_worker",),
}
# What the compose file sets whatever compose's environment says (its header and the README's
# "Production" bullet name each); every other setting passes through from the environment.
OVERRIDES: dict[str, frozenset[str]] = {
    "api": frozenset({"ENVIRONMENT", "REDIS_URL", "DATABASE_URL", "METRICS_ALLOW"}),
    "arq_worker": frozenset(
        {"ENVIRONMENT", "REDIS_URL", "DATABASE_URL", "ARQ_METRICS_PORT", "ARQ_METRICS_HOST"}
    ),
    "migrate": frozenset({"ENVIRONMENT", "REDIS_URL", "DATABASE_URL"}),
}
SETTINGS_CLASS = re.compile(r"^class (\w+)\(BaseSettings\)", re.MULTILINE)


def _settings_classes() -> dict[str, type[BaseSettings]]:
    """Every pydantic-settings class defined under src/, by qualified name."""
    classes: dict[str, type[BaseSettings]] = {}
    for path in sorted((ROOT / "src").rglob("*.py")):
        names = SETTINGS_CLASS.findall(path.read_text(encoding="utf-8"))
        if not names:
            continue
        module_name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        module = importlib.import_module(module_name)
        for name in names:
            cls = getattr(module, name)
            assert issubclass(cls, BaseSettings), f"{module_name}.{name}"
            classes[f"{module_name}.{name}"] = cls
    return classes


def _env_names(cls: type[BaseSettings]) -> set[str]:
    """The environment variables a settings class reads: each field's aliases as they are (an
    alias takes no prefix), else the prefix and the field's name; upper case as documented."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    names: set[str] = set()
    for field_name, field in cls.model_fields.items():
        alias = field.validation_alias or field.alias
        if isinstance(alias, AliasChoices):
            choices = [choice for choice in alias.choices if isinstance(choice, str)]
        elif isinstance(alias, str):
            choices = [alias]
        else:
            choices = []
        names.update(choice.upper() for choice in choices or [prefix + field_name])
    return names


def _raw_env(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's environment mapping as written (None: passed through from compose's own)."""
    env = service.get("environment") or {}
    assert isinstance(env, dict), "environment must be a mapping"
    return {str(key): None if value is None else str(value) for key, value in env.items()}


def _read_by(service: str) -> dict[str, set[str]]:
    """{settings class: its variables} of the classes `service` reads."""
    return {
        name: _env_names(cls)
        for name, cls in _settings_classes().items()
        if service in READERS.get(name, ())
    }


def test_every_settings_class_has_its_readers() -> None:
    classes = _settings_classes()
    assert len(classes) >= 9, sorted(classes)
    assert set(classes) == set(READERS), "place each settings class in READERS"
    names = set().union(*(_env_names(cls) for cls in classes.values()))
    # The alias the admin docs use, and a few of those the issue found missing.
    for name in ("CLEANUP_RETENTION_DAYS", "ARQ_CLEANUP_RETENTION_DAYS", "VK_TOKEN", "LOG_FORMAT"):
        assert name in names


@pytest.mark.parametrize("service", APP_SERVICES)
def test_compose_passes_every_setting_to_the_services_that_read_it(service: str) -> None:
    env = _raw_env(_services()[service])
    missing: list[str] = []
    fixed: list[str] = []
    for class_name, names in _read_by(service).items():
        for name in sorted(names):
            if name not in env:
                missing.append(f"{name} ({class_name})")
            elif name in OVERRIDES[service]:
                continue
            # Passed through (no value), or interpolated from the variable of the same name.
            elif env[name] is not None and not str(env[name]).startswith("${" + name):
                fixed.append(f"{name}={env[name]}")
    assert missing == [], f"{service} never gets {missing}"
    assert fixed == [], f"{service} gets fixed values the environment cannot change: {fixed}"
    for name in OVERRIDES[service]:
        assert env.get(name), f"{service}: override {name} is not set"


@pytest.mark.parametrize("service", APP_SERVICES)
def test_services_get_no_settings_they_do_not_read(service: str) -> None:
    # Secrets go only where they are used: no VK token in the API, no API keys in a worker.
    read = set().union(*_read_by(service).values(), OVERRIDES[service])
    every = set().union(*(_env_names(cls) for cls in _settings_classes().values()))
    extra = sorted((set(_raw_env(_services()[service])) & every) - read)
    assert extra == [], f"{service} gets settings it does not read: {extra}"


def test_env_example_lists_every_setting() -> None:
    # The production env file is a copy of it: a setting it leaves out is one nobody sets.
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    names = set().union(*(_env_names(cls) for cls in _settings_classes().values()))
    missing = sorted(name for name in names if not re.search(rf"\b{name}\b", example))
    assert missing == [], f".env.example does not mention {missing}"
    for name in ("POSTGRES_PASSWORD", "REDIS_PASSWORD"):  # what compose requires besides
        assert re.search(rf"^{name}=", example, re.M), name


def test_the_overrides_are_documented() -> None:
    header = COMPOSE_FILE.read_text(encoding="utf-8").split("\nx-app-env:", 1)[0]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    [production] = re.findall(r"^- \*\*Production\*\*:.*?(?=^- \*\*|^#)", readme, re.M | re.S)
    for name in set().union(*OVERRIDES.values()) | {"REDIS_PASSWORD", "POSTGRES_PASSWORD"}:
        assert name in header, f"the compose file's header does not name {name}"
        assert name in production, f"README's Production bullet does not name {name}"
    assert "--env-file" in production


def test_redis_requires_a_password_that_the_app_urls_carry() -> None:
    services = _services()
    redis = services["redis"]
    command = list(redis["command"])
    password = command[command.index("--requirepass") + 1]
    assert password.startswith("${REDIS_PASSWORD:?"), password  # required, never a default
    # The healthcheck authenticates (REDISCLI_AUTH) and needs PONG: redis-cli exits 0 on NOAUTH.
    assert _env(redis)["REDISCLI_AUTH"] == password
    assert _cmd(redis["healthcheck"]["test"]).endswith("redis-cli ping | grep -q PONG")
    for name in APP_SERVICES:
        url = _env(services[name])["REDIS_URL"]
        assert url == "redis://:" + password + "@redis:6379/0", name
    assert "ports" not in redis  # reachable on the compose network only


def _interpolate(value: str, variables: dict[str, str]) -> str:
    """`${NAME}`, `${NAME:-default}` and `${NAME:?error}` as compose replaces them."""

    def replace(match: re.Match[str]) -> str:
        name, operator, default = match.group(1), match.group(2), match.group(3) or ""
        if variables.get(name):
            return variables[name]
        assert operator != ":?", f"{name} is required"
        return default

    return re.sub(r"\$\{([A-Z0-9_]+)(?:(:-|:\?)([^}]*))?\}", replace, value)


@pytest.mark.skipif(REDIS_SERVER is None, reason="needs the redis-server binary")
async def test_a_password_protected_redis_serves_the_worker_check_and_the_api(
    tmp_path: Path,
) -> None:
    """Redis started with the compose file's command; the worker, `arq --check` and the API's
    health use the compose file's REDIS_URL (its host made this machine's)."""
    assert REDIS_SERVER is not None
    password = secrets.token_hex(16)  # URL-safe, as the compose file asks
    variables = {"REDIS_PASSWORD": password, "POSTGRES_PASSWORD": "unused", "API_KEYS": "unused"}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [_interpolate(str(arg), variables) for arg in _services()["redis"]["command"]]
    assert command[0] == "redis-server"
    local = ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path), "--save", ""]
    server = subprocess.Popen([REDIS_SERVER, *command[1:], *local], stdout=subprocess.DEVNULL)
    worker: subprocess.Popen[bytes] | None = None
    try:
        template = _env(_services()["arq_worker"])["REDIS_URL"]
        url = _interpolate(template, variables).replace("@redis:6379/", f"@127.0.0.1:{port}/")
        wrong = url.replace(password, "not-the-password")
        await _until(lambda: _pings(url), "the private Redis never answered")
        with pytest.raises(sync_redis.AuthenticationError):
            _pings(url.replace(f":{password}@", "@"))
        with pytest.raises(sync_redis.AuthenticationError):
            _pings(wrong)

        database = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
        await asyncio.to_thread(migrate, database)
        scratch = tmp_path / "cwd"  # no developer's ./.env reaches the processes
        scratch.mkdir()
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "REDIS_URL": url,
            "DATABASE_URL": database,
            "ARQ_HEALTH_CHECK_INTERVAL": "1",
        }
        worker = subprocess.Popen(
            [ARQ, "src.arq.worker.WorkerSettings"],
            cwd=scratch,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def check(redis_url: str) -> int:
            return subprocess.run(
                [ARQ, "--check", "src.arq.worker.WorkerSettings"],
                cwd=scratch,
                env={**env, "REDIS_URL": redis_url},
                capture_output=True,
                timeout=60,
                check=False,
            ).returncode

        async def healthy() -> bool:
            assert worker is not None and worker.poll() is None, "the worker exited"
            return await asyncio.to_thread(check, url) == 0

        await _until(healthy, "arq --check never passed", timeout=60)
        assert await asyncio.to_thread(check, wrong) != 0

        settings = Settings(_env_file=None, redis_url=url, database_url=database)
        async with client_for(settings) as http:
            health = await http.get("/api/v1/arq/health")
        assert health.status_code == 200, health.text
        assert health.json()["details"]["redis_connected"] is True
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(20)
        server.terminate()
        server.wait(10)


def _pings(url: str) -> bool:
    client = sync_redis.Redis.from_url(url, socket_timeout=2)
    try:
        return bool(client.ping())
    finally:
        client.close()


async def _until(
    condition: Callable[[], bool | Awaitable[bool]], message: str, *, timeout: float = 20
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            outcome = condition()
            if inspect.isawaitable(outcome):
                outcome = await outcome
        except sync_redis.ConnectionError:
            outcome = False
        if outcome:
            return
        assert time.monotonic() < deadline, message
        await asyncio.sleep(0.2)


def test_compose_config_is_valid() -> None:
    """`docker-compose config -q`: the schema and the interpolation, as compose reads them."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("no docker-compose binary")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "POSTGRES_PASSWORD": "pg-password",
        "REDIS_PASSWORD": "redis-password",
        "API_KEYS": "ops:admin:a-long-production-key",
    }
    # .env.example as the env file (as the README says to deploy): the shell's passwords win.
    example = ["--env-file", str(ROOT / ".env.example")]
    for options in ([], ["--profile", "monitoring"], example):
        result = subprocess.run(
            [binary, "-f", str(COMPOSE_FILE), *options, "config", "-q"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
    # Without a required password compose refuses to start.
    result = subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=ROOT,
        env={k: v for k, v in env.items() if k != "REDIS_PASSWORD"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "REDIS_PASSWORD" in result.stderr


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
    for entry in (".venv", ".git", "var", "tests", ".env", ".env.*"):
        assert entry in entries, f"{entry} not in .dockerignore"
