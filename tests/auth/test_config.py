"""Credentials at start: the development key in production, duplicate keys, reserved owners and
`JWT_MAX_TTL`; each refusal is a `ConfigError` naming the variable, never a key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from src.auth.config import DEVELOPMENT_API_KEY, AuthSettings
from src.auth.schemas import RESERVED_OWNERS
from src.config import ConfigError, Environment, Settings, load
from src.main import create_app
from tests.conftest import client_for, headers

ROOT = Path(__file__).resolve().parents[2]
JOBS = "/api/v1/arq/jobs"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No credential from the environment or a `.env` file but what a test sets."""
    for name in ("API_KEYS", "JWT_SECRET", "JWT_MAX_TTL", "ENVIRONMENT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


# -- the development key in production ------------------------------------------------------


def test_production_with_the_development_key_refuses_to_build_the_app(
    settings: Settings,
) -> None:
    production = settings.model_copy(update={"environment": Environment.PRODUCTION})
    auth = AuthSettings(api_keys=f"ops:admin:ops-key-000001,dev:admin:{DEVELOPMENT_API_KEY}")  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as caught:
        create_app(settings=production, auth_settings=auth)
    message = str(caught.value)
    assert message.startswith("invalid configuration: API_KEYS:")
    assert "entry 2" in message
    assert "ENVIRONMENT=production" in message
    assert "ops-key-000001" not in message


async def test_production_with_keys_of_its_own_starts(settings: Settings) -> None:
    production = settings.model_copy(update={"environment": Environment.PRODUCTION})
    async with client_for(production) as http:
        response = await http.get(JOBS, headers=headers("alice"))
        assert response.status_code == 200, response.text


async def test_development_with_the_development_key_starts(settings: Settings) -> None:
    auth = AuthSettings(api_keys=f"dev:admin:{DEVELOPMENT_API_KEY}")  # type: ignore[arg-type]
    development = settings.model_copy(update={"environment": Environment.DEVELOPMENT})
    async with client_for(development, auth_settings=auth) as http:
        response = await http.get(JOBS, headers={"X-API-Key": DEVELOPMENT_API_KEY})
        assert response.status_code == 200, response.text


def test_uvicorn_refuses_to_start_in_production_with_the_development_key(
    redis_url: str, database_url: str, tmp_path: Path
) -> None:
    """The real start: `uvicorn src.main:app` exits with the reason instead of serving."""
    env = {
        **os.environ,
        "ENVIRONMENT": "production",
        "API_KEYS": f"dev:admin:{DEVELOPMENT_API_KEY}",
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "PYTHONPATH": str(ROOT),
    }
    env.pop("JWT_SECRET", None)
    # From a directory without a `.env`, so only the variables above count.
    process = subprocess.run(
        [sys.executable, "-m", "uvicorn", "src.main:app", "--host", "127.0.0.1", "--port", "0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=45,  # under the per-test limit: the code before the fix served on, and failed here
    )
    assert process.returncode != 0
    assert "API_KEYS" in process.stderr
    assert "ENVIRONMENT=production" in process.stderr
    assert "Uvicorn running" not in process.stderr


# -- API_KEYS entries ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api_keys", "positions"),
    [
        ("alice:user:same-key-0001,bob:user:other-key-002,carol:admin:same-key-0001", "1 and 3"),
        ("alice:user:same-key-0001,alice:user:same-key-0001", "1 and 2"),  # listed twice
        ("alice:user:same-key-0001,,bob:admin:same-key-0001", "1 and 3"),  # empty entry counts
    ],
)
def test_a_key_listed_twice_is_refused(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, api_keys: str, positions: str
) -> None:
    monkeypatch.setenv("API_KEYS", api_keys)
    with pytest.raises(ConfigError) as caught:
        load(AuthSettings)
    message = str(caught.value)
    assert message.startswith("invalid configuration: API_KEYS:")
    assert f"entries {positions} have the same key" in message
    assert "same-key-0001" not in message
    assert "other-key-002" not in message


def test_one_owner_may_still_have_several_keys(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_KEYS", "alice:user:alice-laptop-1,alice:user:alice-server-2")
    configured = load(AuthSettings).keys()
    assert [key.owner for key in configured] == ["alice", "alice"]


@pytest.mark.parametrize("owner", ["system", "System", "SYSTEM"])
def test_a_reserved_owner_is_refused(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, owner: str
) -> None:
    monkeypatch.setenv("API_KEYS", f"alice:user:alice-key-0001,{owner}:admin:system-key-0001")
    with pytest.raises(ConfigError) as caught:
        load(AuthSettings)
    message = str(caught.value)
    assert message.startswith("invalid configuration: API_KEYS:")
    assert "entry 2 has the reserved owner" in message
    assert "system-key-0001" not in message


def test_reserved_owners_include_the_job_modules_own() -> None:
    from src.arq.service import SYSTEM

    assert SYSTEM.owner in RESERVED_OWNERS


def test_an_owner_longer_than_the_history_stores_is_refused(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_KEYS", f"{'o' * 100}:user:long-owner-01,{'o' * 101}:user:long-owner-02")
    with pytest.raises(ConfigError) as caught:
        load(AuthSettings)
    assert "API_KEYS: " in str(caught.value)
    assert "entry 2 has an owner longer than 100 characters" in str(caught.value)
    assert "long-owner-02" not in str(caught.value)


# -- JWT_MAX_TTL --------------------------------------------------------------------------------


def test_jwt_max_ttl_defaults_to_a_day(clean_env: None) -> None:
    assert load(AuthSettings).jwt_max_ttl == 86400


def test_jwt_max_ttl_from_the_environment(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_MAX_TTL", "3600")
    assert load(AuthSettings).jwt_max_ttl == 3600


@pytest.mark.parametrize("value", ["0", "-5", "abc", str(400 * 24 * 3600)])
def test_jwt_max_ttl_out_of_range_is_refused(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("JWT_MAX_TTL", value)
    with pytest.raises(ConfigError, match="JWT_MAX_TTL"):
        load(AuthSettings)
