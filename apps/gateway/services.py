"""Gateway writes: worker heartbeats (used by health)."""

from __future__ import annotations

import time

import redis
from django.conf import settings

HEARTBEAT_PREFIX = "custos:worker:"


def redis_client(*, timeout: float = 1.0) -> redis.Redis:
    return redis.Redis.from_url(
        settings.CELERY_BROKER_URL, socket_timeout=timeout, socket_connect_timeout=timeout
    )


def worker_heartbeat_write(*, hostname: str, queues: list[str]) -> None:
    """Mark `hostname` as consuming `queues` for the next WORKER_HEARTBEAT_TTL_SECONDS."""
    client = redis_client()
    pipe = client.pipeline()
    for queue in queues:
        pipe.set(
            f"{HEARTBEAT_PREFIX}{queue}:{hostname}",
            str(time.time()),
            ex=settings.WORKER_HEARTBEAT_TTL_SECONDS,
        )
    pipe.execute()
