"""The worker process' runtime: uvloop when it is installed (it is, with `uvicorn[standard]`), and
a garbage collector that leaves what start-up loaded alone."""

from __future__ import annotations

import asyncio
import gc
import signal
from typing import Any


def use_uvloop(worker: Any) -> None:
    """Give an ARQ worker that is about to `run()` (the `arq` CLI's way in) a uvloop loop of
    its own instead of the standard one ARQ made, its signal handlers moved along. Not for a
    worker awaited on a running loop (tests, `async_run`): that loop is the caller's."""
    try:
        import uvloop
    except ImportError:  # the standard loop works, only slower
        return
    previous: asyncio.AbstractEventLoop = worker.loop
    if isinstance(previous, uvloop.Loop) or previous.is_running():
        return
    worker.loop = uvloop.new_event_loop()
    asyncio.set_event_loop(worker.loop)
    if worker._handle_signals:
        handler = (
            worker.handle_sig_wait_for_completion
            if worker._job_completion_wait
            else worker.handle_sig
        )
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous.remove_signal_handler(signum)
            worker._add_signal_handler(signum, handler)
    previous.close()


# The youngest generation's collection threshold in a worker's own process (Python's is 700).
GC_THRESHOLD = 10_000


def settle_garbage_collector() -> None:
    """In a worker's own process, once it has started: what start-up loaded (the app, the
    language dictionaries, the database and Redis clients) moves out of the collector's sight
    (`gc.freeze`) and the youngest generation is collected less often, so the collections the
    jobs' short-lived objects cause look at those objects only (a fifth of a no-op job's CPU
    time without it)."""
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
