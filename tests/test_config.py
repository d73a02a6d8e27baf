"""Settings: documented defaults, env and `.env` overrides, and errors naming the variable."""

from __future__ import annotations

import traceback
from pathlib import Path, PurePosixPath

import pytest
from pydantic_settings import BaseSettings
from sqlalchemy import make_url

from src.arq.config import ArqSettings
from src.auth.config import AuthSettings
from src.auth.schemas import Role
from src.config import DEFAULT_SQLITE_URL, ConfigError, Environment, Settings, load
from src.maintenance.config import MaintenanceSettings

SETTINGS_CLASSES: tuple[type[BaseSettings], ...] = (
    Settings,
    ArqSettings,
    MaintenanceSettings,
    AuthSettings,
)


def env_names(settings_cls: type[BaseSettings]) -> list[str]:
    prefix = str(settings_cls.model_config.get("env_prefix", ""))
    return [(prefix + name).upper() for name in settings_cls.model_fields]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No variable of ours from the caller's environment, and a cwd without a `.env`."""
    for settings_cls in SETTINGS_CLASSES:
        for name in env_names(settings_cls):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def config_error(settings_cls: type[BaseSettings]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(settings_cls)
    return info.value


# -- defaults -------------------------------------------------------------------------------


def test_arq_defaults_match_the_documented_ones() -> None:
    arq = load(ArqSettings)
    assert arq.max_jobs == 10
    assert arq.job_timeout == 300
    assert arq.max_tries == 3
    assert arq.poll_delay == 0.5
    assert arq.queue_name == "arq:queue"
    assert arq.burst_mode is False
    assert arq.keep_result == 3600


def test_env_example_documents_the_actual_arq_defaults() -> None:
    example = Path(__file__).resolve().parent.parent / ".env.example"
    documented = dict(
        line.split("=", 1)
        for line in example.read_text().splitlines()
        if line.startswith("ARQ_") and "=" in line
    )
    # The schedules' switches share the ARQ_ prefix but are the maintenance package's settings.
    arq, maintenance = load(ArqSettings), load(MaintenanceSettings)
    assert documented, ".env.example documents no ARQ_ setting"
    for name, value in documented.items():
        field = name.removeprefix("ARQ_").lower()
        owner = arq if field in ArqSettings.model_fields else maintenance
        assert field in type(owner).model_fields, f"{name} is not a setting"
        actual = getattr(owner, field)
        if isinstance(actual, bool):
            assert value.lower() == str(actual).lower(), name
        elif isinstance(actual, int | float):
            assert float(value) == actual, name
        else:
            assert value == actual, name


def test_database_url_defaults_to_a_sqlite_file_under_var() -> None:
    settings = load(Settings)
    assert settings.database_url == DEFAULT_SQLITE_URL
    url = make_url(settings.database_url)
    assert url.drivername == "sqlite+aiosqlite"
    assert url.database is not None
    path = PurePosixPath(url.database)
    assert path.parent == PurePosixPath("var")
    assert path.suffix == ".db"


def test_app_defaults() -> None:
    settings = load(Settings)
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.environment is Environment.DEVELOPMENT
    assert settings.redis_timeout > 0
    assert settings.database_timeout > 0


def test_auth_defaults_have_no_keys_and_no_jwt() -> None:
    auth = load(AuthSettings)
    assert auth.keys() == []
    assert auth.jwt_secret is None


# -- overrides from the environment ---------------------------------------------------------


def test_arq_env_vars_override_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARQ_MAX_JOBS", "25")
    monkeypatch.setenv("ARQ_JOB_TIMEOUT", "12.5")
    monkeypatch.setenv("ARQ_MAX_TRIES", "7")
    monkeypatch.setenv("ARQ_POLL_DELAY", "0.2")
    monkeypatch.setenv("ARQ_QUEUE_NAME", "custom:queue")
    monkeypatch.setenv("ARQ_BURST_MODE", "true")
    monkeypatch.setenv("ARQ_KEEP_RESULT", "60")
    arq = load(ArqSettings)
    assert arq.max_jobs == 25
    assert arq.job_timeout == 12.5
    assert arq.max_tries == 7
    assert arq.poll_delay == 0.2
    assert arq.queue_name == "custom:queue"
    assert arq.burst_mode is True
    assert arq.keep_result == 60


def test_unprefixed_names_do_not_configure_arq(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_JOBS", "99")
    monkeypatch.setenv("QUEUE_NAME", "other")
    arq = load(ArqSettings)
    assert arq.max_jobs == 10
    assert arq.queue_name == "arq:queue"


def test_app_env_vars_override_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "rediss://cache.example:6380/2")
    monkeypatch.setenv("DATABASE_URL", "sqlite+aiosqlite:////data/app.db")
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    settings = load(Settings)
    assert settings.redis_url == "rediss://cache.example:6380/2"
    assert settings.database_url == "sqlite+aiosqlite:////data/app.db"
    assert settings.environment is Environment.PRODUCTION
    assert settings.log_level == "DEBUG"


def test_api_keys_and_jwt_secret_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "s" * 40
    monkeypatch.setenv("API_KEYS", "alice:user:alice-key-0001, root:admin:root-key-00003")
    monkeypatch.setenv("JWT_SECRET", secret)
    auth = load(AuthSettings)
    keys = auth.keys()
    assert [(k.owner, k.role, k.key) for k in keys] == [
        ("alice", Role.USER, "alice-key-0001"),
        ("root", Role.ADMIN, "root-key-00003"),
    ]
    assert auth.jwt_secret is not None
    assert auth.jwt_secret.get_secret_value() == secret
    # Secrets are not shown by repr.
    assert "alice-key-0001" not in repr(auth)
    assert secret not in repr(auth)
    assert "alice-key-0001" not in repr(keys)


def test_empty_jwt_secret_disables_jwt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_SECRET", "")
    assert load(AuthSettings).jwt_secret is None


def test_api_key_may_contain_colons(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEYS", "carol:user:part1:part2:part3")
    [key] = load(AuthSettings).keys()
    assert (key.owner, key.role, key.key) == ("carol", Role.USER, "part1:part2:part3")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@db.example:5432/app", "postgresql+asyncpg://u:p@db.example:5432/app"),
        ("postgres://u:p@db.example:5432/app", "postgresql+asyncpg://u:p@db.example:5432/app"),
        (
            "postgresql+asyncpg://u:p@db.example:5432/app",
            "postgresql+asyncpg://u:p@db.example:5432/app",
        ),
        ("sqlite:///./var/other.db", "sqlite+aiosqlite:///./var/other.db"),
    ],
)
def test_database_url_is_normalised_to_an_async_driver(
    monkeypatch: pytest.MonkeyPatch, given: str, expected: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", given)
    assert load(Settings).database_url == expected


# -- the `.env` file ------------------------------------------------------------------------


def test_dotenv_in_cwd_is_read(clean_env: Path) -> None:
    (clean_env / ".env").write_text(
        "ARQ_MAX_JOBS=7\n"
        "ARQ_QUEUE_NAME=from-dotenv\n"
        "DATABASE_URL=postgresql://u@db.example/app\n"
        "REDIS_URL=redis://dotenv.example:6379/3\n"
        "API_KEYS=dave:admin:dave-key-000001\n"
        "UNRELATED_SETTING=ignored\n"
    )
    arq = load(ArqSettings)
    settings = load(Settings)
    auth = load(AuthSettings)
    assert arq.max_jobs == 7
    assert arq.queue_name == "from-dotenv"
    assert settings.database_url == "postgresql+asyncpg://u@db.example/app"
    assert settings.redis_url == "redis://dotenv.example:6379/3"
    api_keys = auth.keys()
    assert [(k.owner, k.role) for k in api_keys] == [("dave", Role.ADMIN)]


def test_env_var_wins_over_dotenv(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (clean_env / ".env").write_text("ARQ_MAX_JOBS=7\n")
    monkeypatch.setenv("ARQ_MAX_JOBS", "3")
    assert load(ArqSettings).max_jobs == 3


def test_invalid_value_in_dotenv_names_the_variable(clean_env: Path) -> None:
    (clean_env / ".env").write_text("ARQ_MAX_TRIES=0\n")
    assert "ARQ_MAX_TRIES" in str(config_error(ArqSettings))


# -- invalid values -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "settings_cls"),
    [
        ("ARQ_MAX_JOBS", "0", ArqSettings),
        ("ARQ_MAX_JOBS", "ten", ArqSettings),
        ("ARQ_POLL_DELAY", "abc", ArqSettings),
        ("ARQ_POLL_DELAY", "0", ArqSettings),
        ("ARQ_JOB_TIMEOUT", "-1", ArqSettings),
        ("ARQ_MAX_TRIES", "0", ArqSettings),
        ("ARQ_BURST_MODE", "maybe", ArqSettings),
        ("ARQ_QUEUE_NAME", "", ArqSettings),
        ("ARQ_KEEP_RESULT", "0", ArqSettings),
        ("DATABASE_URL", "mysql://x", Settings),
        ("DATABASE_URL", "postgresql+psycopg2://u@h/db", Settings),
        ("REDIS_URL", "http://x", Settings),
        ("ENVIRONMENT", "staging", Settings),
        ("JWT_SECRET", "too-short", AuthSettings),
    ],
)
def test_invalid_value_gives_config_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, settings_cls: type[BaseSettings]
) -> None:
    monkeypatch.setenv(name, value)
    message = str(config_error(settings_cls))
    assert name in message


def test_config_error_names_every_invalid_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARQ_MAX_JOBS", "0")
    monkeypatch.setenv("ARQ_POLL_DELAY", "abc")
    message = str(config_error(ArqSettings))
    assert "ARQ_MAX_JOBS" in message
    assert "ARQ_POLL_DELAY" in message
    assert "ARQ_MAX_TRIES" not in message


@pytest.mark.parametrize(
    ("value", "secret", "expected"),
    [
        ("alice:superuser:alice-secret-key-1", "alice-secret-key-1", "role 'superuser'"),
        ("alice:user:sh0rt", "sh0rt", "shorter than 8"),
        ("alice-secret-key-1", "alice-secret-key-1", "owner:role:key"),
        ("alice:user", "alice:user", "owner:role:key"),
        (":user:alice-secret-key-1", "alice-secret-key-1", "owner:role:key"),
        ("alice::alice-secret-key-1", "alice-secret-key-1", "owner:role:key"),
        (
            "bob:user:bob-secret-key-22,alice:root:alice-secret-key-1",
            "alice-secret-key-1",
            "entry 2",
        ),
    ],
)
def test_bad_api_keys_name_the_variable_but_not_the_key(
    monkeypatch: pytest.MonkeyPatch, value: str, secret: str, expected: str
) -> None:
    monkeypatch.setenv("API_KEYS", value)
    error = config_error(AuthSettings)
    message = str(error)
    assert "API_KEYS" in message
    assert expected in message
    assert secret not in message
    # Nor does the key leak through the traceback someone would see in the logs.
    printed = "".join(traceback.format_exception(error))
    assert secret not in printed
    assert "bob-secret-key-22" not in printed


def test_short_jwt_secret_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_SECRET", "my-short-secret")
    error = config_error(AuthSettings)
    assert "JWT_SECRET" in str(error)
    assert "my-short-secret" not in "".join(traceback.format_exception(error))


@pytest.mark.parametrize("name", ["ARQ_CLEANUP_RETENTION_DAYS", "CLEANUP_RETENTION_DAYS"])
def test_cleanup_retention_is_read_under_both_names(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, "90")
    assert load(MaintenanceSettings).cleanup_retention_days == 90
    monkeypatch.setenv(name, "0")
    with pytest.raises(ConfigError, match="CLEANUP_RETENTION_DAYS"):
        load(MaintenanceSettings)
