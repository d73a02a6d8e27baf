"""The Redis pool the API uses: ARQ's client with the JSON serializer, connecting lazily."""

from __future__ import annotations

from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool

from src.arq.serialization import deserialize, serialize


def create_redis(
    url: str, *, queue_name: str, timeout: float = 3.0, max_connections: int = 200
) -> ArqRedis:
    """A pool that connects on first use and fails within `timeout` when Redis is away, and
    answers "too many connections" (a 503) past `max_connections` instead of queueing."""
    pool = ConnectionPool.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        max_connections=max_connections,
    )
    return ArqRedis(
        pool,
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name=queue_name,
    )
