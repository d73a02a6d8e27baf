"""Serving an ASGI app on a free loopback port inside the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn


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
