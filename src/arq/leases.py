"""The leases of the jobs one worker runs, renewed from a thread of their own.

A running job holds an in-progress key that lapses after `ARQ_LEASE` seconds unless renewed.
The renewal runs in a thread with its own Redis connection, so a job that holds the worker's
event loop (CPU work, a blocking call) cannot let its lease lapse and be started a second time.

A job that has ended is `held` until the history has recorded its ending: should Redis lose the
ending meanwhile (an empty restart), the renewal takes the lease again, so the reconciliation
sees the job as running, not lost, and does not run it again.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis as sync_redis
from arq.connections import ArqRedis
from redis.exceptions import RedisError

from src.arq import keys
from src.arq.scripts import RENEW_SCRIPT

logger = logging.getLogger("src.arq.worker")


class LeaseRenewer:
    """Every third of a lease, extend the leases of the jobs `taken` and not `given_back`."""

    def __init__(self, *, lease_seconds: float) -> None:
        self.lease_seconds = lease_seconds
        self._leased: set[str] = set()
        self._held: dict[str, float] = {}  # job id -> until when (time.monotonic())
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self, pool: ArqRedis) -> None:
        """Renew from now on, on a connection to the server `pool` talks to (if not yet)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, args=(pool,), name="arq-lease-renewer", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def taken(self, job_id: str) -> None:
        with self._lock:
            self._leased.add(job_id)

    def given_back(self, job_id: str) -> None:
        with self._lock:
            self._leased.discard(job_id)

    def hold(self, job_id: str, *, seconds: float) -> None:
        """Keep the lease of an ended job whose ending is not recorded yet (at most `seconds`:
        past that the reconciliation takes over)."""
        with self._lock:
            self._held[job_id] = time.monotonic() + seconds

    def release(self, job_id: str) -> None:
        """The job's ending is recorded (or left to the reconciliation): let its lease go."""
        with self._lock:
            self._held.pop(job_id, None)

    def renewed(self) -> list[str]:
        """The jobs whose leases the next round renews."""
        now = time.monotonic()
        with self._lock:
            for job_id in [job_id for job_id, until in self._held.items() if until <= now]:
                del self._held[job_id]
            return list(self._leased.union(self._held))

    def _run(self, pool: ArqRedis) -> None:
        connections = pool.connection_pool
        given = connections.connection_kwargs
        options: dict[str, Any] = {
            name: given[name]
            for name in ("host", "port", "db", "username", "password")
            if name in given
        }
        if "path" in given:
            options["unix_socket_path"] = given["path"]
        client = sync_redis.Redis(
            **options,
            ssl="SSL" in connections.connection_class.__name__,
            socket_timeout=max(1.0, self.lease_seconds / 6),
            socket_connect_timeout=max(1.0, self.lease_seconds / 6),
        )
        script = client.register_script(RENEW_SCRIPT)
        lease_ms = int(self.lease_seconds * 1000)
        prefixes = [keys.result_key_prefix, keys.in_progress_key_prefix]
        try:
            while not self._stop.wait(self.lease_seconds / 3):
                job_ids = self.renewed()
                if not job_ids:
                    continue
                try:
                    script(args=[lease_ms, *prefixes, *job_ids])
                except (RedisError, OSError):
                    logger.warning("could not renew the leases of %d job(s)", len(job_ids))
        finally:
            client.close()
