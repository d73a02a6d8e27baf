"""Serving an ASGI app on a free loopback port inside the test's event loop; the app with its
lifespan running; the API and a worker as processes, as operators start them."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import uvicorn

if TYPE_CHECKING:
    from fastapi import FastAPI


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Leave SIGINT/SIGTERM to pytest.
        yield


@contextlib.asynccontextmanager
async def serve_app(app: Any, **config: Any) -> AsyncIterator[int]:
    """Serve `app` on 127.0.0.1 for the duration (extra uvicorn `config` allowed); yields the
    port. The socket is bound before the server starts, so no one else can take the port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    server = _Server(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            http="h11",
            ws="none",
            timeout_graceful_shutdown=2,
            **config,
        )
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the test server stopped at start")
            await asyncio.sleep(0.005)
        yield port
    finally:
        server.should_exit = True
        await task
        sock.close()


@contextlib.asynccontextmanager
async def started_app(**kwargs: Any) -> AsyncIterator[FastAPI]:
    """`create_app(**kwargs)` with its lifespan running (startup before, shutdown after)."""
    # Imported here: bench/chaos.py imports this module, and importing src.main builds its app.
    from src.main import create_app

    application = create_app(**kwargs)
    async with application.router.lifespan_context(application):
        yield application


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a graceful stop), SIGKILL if it is still running 15 s later."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@contextlib.contextmanager
def api_and_worker(
    directory: Path, env: dict[str, str], *, api: Sequence[str], worker: Sequence[str]
) -> Iterator[str]:
    """The API (`python -m uvicorn` with the arguments `api`, on a free port) and a worker (the
    command `worker`) as processes with the environment `env`, in `directory / "cwd"` (no
    developer's ./.env reaches them), their output in `directory`'s api.log and worker.log.
    Yields the API's URL once it answers and counts the worker as alive; both stopped after."""
    scratch = directory / "cwd"
    scratch.mkdir()
    api_log = directory / "api.log"
    worker_log = directory / "worker.log"
    with api_log.open("wb") as api_out, worker_log.open("wb") as worker_out:
        api_process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", *api, "--host", "127.0.0.1", "--port", "0"],
            cwd=scratch,
            env=env,
            stdout=api_out,
            stderr=subprocess.STDOUT,
        )
        worker_process = subprocess.Popen(
            list(worker), cwd=scratch, env=env, stdout=worker_out, stderr=subprocess.STDOUT
        )
    try:
        yield _wait_until_serving(api_process, api_log, worker_process, worker_log)
    finally:
        stop(api_process)
        stop(worker_process)


def _wait_until_serving(
    api: subprocess.Popen[bytes],
    api_log: Path,
    worker: subprocess.Popen[bytes],
    worker_log: Path,
) -> str:
    """The API's URL, once it answers and counts the worker as alive."""
    deadline = time.monotonic() + 120
    url = None
    while time.monotonic() < deadline:
        assert api.poll() is None, f"the API exited: {api_log.read_text()[-3000:]}"
        assert worker.poll() is None, f"the worker exited: {worker_log.read_text()[-3000:]}"
        if url is None:
            found = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", api_log.read_text())
            url = found.group(1) if found else None
        if url is not None:
            try:
                health = httpx.get(f"{url}/api/v1/arq/health", timeout=5).json()
            except (httpx.HTTPError, ValueError):
                health = {}
            if (health.get("details") or {}).get("workers"):
                return url
        time.sleep(0.2)
    raise AssertionError(
        f"the stack never came up\nAPI: {api_log.read_text()[-2000:]}\n"
        f"worker: {worker_log.read_text()[-2000:]}"
    )
