"""The FastAPI app ("VK Comments Parser"): app factory, lifespan and the one error handler."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from src.arq.config import ArqSettings
from src.arq.pool import create_redis
from src.arq.registry import TaskRegistry
from src.arq.router import build_router
from src.arq.service import ArqService
from src.arq.streams import StreamHub
from src.arq.tasks import registry as default_registry
from src.auth.config import DEVELOPMENT_API_KEY, AuthSettings
from src.auth.service import Authenticator
from src.comments.router import router as comments_router
from src.config import Settings, configure_logging, get_settings, load
from src.dashboard.config import DashboardSettings
from src.dashboard.router import install as install_dashboard
from src.dashboard.signin import PREFIX as DASHBOARD_PREFIX
from src.database import create_engine, create_sessionmaker
from src.exceptions import AppError, error_body
from src.http_limits import PUBLIC_PATHS, RequestGuard
from src.maintenance.router import router as maintenance_router
from src.monitoring.config import MetricsSettings
from src.monitoring.http import HttpMetrics
from src.monitoring.router import router as monitoring_router
from src.openapi import install as install_openapi
from src.reports.router import router as reports_router
from src.request_log import RequestIdMiddleware, request_id_header

logger = logging.getLogger("src.main")


def create_app(
    *,
    settings: Settings | None = None,
    arq_settings: ArqSettings | None = None,
    auth_settings: AuthSettings | None = None,
    registry: TaskRegistry | None = None,
    metrics_settings: MetricsSettings | None = None,
    dashboard_settings: DashboardSettings | None = None,
) -> FastAPI:
    """Build the app; every setting comes from the environment unless given."""
    settings = settings or get_settings()
    arq_settings = arq_settings or load(ArqSettings)
    auth_settings = auth_settings or load(AuthSettings)
    # Refuse to start in production with the development key (a ConfigError naming API_KEYS).
    auth_settings.check_environment(settings.environment)
    registry = registry or default_registry
    configure_logging(settings.log_level, settings.log_format)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(
            settings.database_url,
            timeout=settings.database_timeout,
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
        )
        redis = create_redis(
            settings.redis_url,
            queue_name=arq_settings.queue_name,
            timeout=settings.redis_timeout,
            max_connections=settings.redis_max_connections,
        )
        authenticator = Authenticator(auth_settings)
        if authenticator.uses_key(DEVELOPMENT_API_KEY):
            # Never in production: `create_app` refused that (`AuthSettings.check_environment`).
            logger.warning(
                "the development API key from .env.example is enabled: "
                "set your own API_KEYS before exposing this service",
            )
        if not auth_settings.keys() and auth_settings.jwt_secret is None:
            logger.warning("neither API_KEYS nor JWT_SECRET is set: every request will get 401")
        app.state.authenticator = authenticator
        app.state.sessionmaker = sessionmaker = create_sessionmaker(engine)
        app.state.arq_service = ArqService(
            redis=redis,
            sessionmaker=sessionmaker,
            registry=registry,
            settings=arq_settings,
        )
        # One Redis subscription feeds every live status stream of this process.
        app.state.stream_hub = stream_hub = StreamHub(app.state.arq_service, settings=arq_settings)
        await stream_hub.start()
        try:
            yield
        finally:
            await stream_hub.stop()
            await redis.aclose(close_connection_pool=True)
            await engine.dispose()

    app = FastAPI(
        title=settings.app_name,
        version="0.1.0",
        description="VK community comments: parsing, analysis and reports, run as background jobs.",
        lifespan=lifespan,
    )
    app.include_router(build_router(registry, batch_limit=arq_settings.batch_limit))
    # Before the comments router: its `/{comment_ref}` would match `/reports` and `/stats`.
    app.include_router(reports_router)
    app.include_router(maintenance_router)
    app.include_router(comments_router)
    app.include_router(monitoring_router)
    # The web dashboard checks its own callers (a session cookie), not the API's headers.
    dashboard = install_dashboard(
        app,
        dashboard_settings or load(DashboardSettings),
        keys=auth_settings.keys(),
        environment=settings.environment,
    )
    app.state.metrics_settings = metrics_settings or load(MetricsSettings)
    install_openapi(app, registry, batch_limit=arq_settings.batch_max_jobs)
    _add_error_handlers(app)
    # 401 before the body is read, then 413 while it is read: before FastAPI parses it.
    # `/metrics` checks its own callers: an allow-listed network needs no credential.
    app.add_middleware(
        RequestGuard,
        max_body_bytes=settings.api_max_body_bytes,
        public_paths=PUBLIC_PATHS | {"/metrics"} | ({DASHBOARD_PREFIX} if dashboard else set()),
        public_prefixes=(f"{DASHBOARD_PREFIX}/",) if dashboard else (),
    )
    # Around the guard: every answer is counted, those of the guard included.
    app.add_middleware(HttpMetrics, routes=app.routes)
    # Outside them all: every answer carries its X-Request-ID and has its access line.
    app.add_middleware(RequestIdMiddleware)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def app_error(request: Request, exc: AppError) -> JSONResponse:
        return JSONResponse(
            status_code=exc.status_code,
            content=error_body(type(exc).__name__, exc.detail, **exc.extra),
            headers=exc.headers,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        name = HTTPStatus(exc.status_code).phrase.title().replace(" ", "").replace("-", "")
        return JSONResponse(
            status_code=exc.status_code,
            content=error_body(name, str(exc.detail)),
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type")}
            for err in exc.errors()
        ]
        detail = (
            "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
            or "invalid request"
        )
        return JSONResponse(
            status_code=422, content=error_body("ValidationError", detail, errors=errors)
        )

    @app.exception_handler(RedisError)
    async def redis_down(request: Request, exc: RedisError) -> JSONResponse:
        logger.warning("Redis error on %s: %s", request.url.path, type(exc).__name__)
        return JSONResponse(
            status_code=503,
            content=error_body("ServiceUnavailable", "Redis is unreachable; try again shortly"),
            headers={"Retry-After": "5"},
        )

    async def database_down(request: Request, exc: Exception) -> JSONResponse:
        logger.warning("database error on %s: %s", request.url.path, type(exc).__name__)
        return JSONResponse(
            status_code=503,
            content=error_body(
                "ServiceUnavailable", "the database is unreachable; try again shortly"
            ),
            headers={"Retry-After": "5"},
        )

    for exc_type in (OperationalError, DBAPIError, PoolTimeoutError, OSError, TimeoutError):
        app.add_exception_handler(exc_type, database_down)

    @app.exception_handler(DataError)
    async def unstorable(request: Request, exc: DataError) -> JSONResponse:
        # The database refused a value the edge let through: the request's fault, not an
        # outage (and the statement, which may carry data, is not repeated to the client).
        logger.warning("the database refused a value on %s: %s", request.url.path, exc.orig)
        return JSONResponse(
            status_code=422,
            content=error_body("InvalidValue", "a value in the request cannot be stored"),
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            status_code=500,
            content=error_body("InternalError", "an unexpected error occurred"),
            headers=request_id_header(),
        )


app = create_app()
