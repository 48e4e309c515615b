"""Worker heartbeats in the broker's Redis: every worker marks the queues it consumes with a key that
expires, so health can tell which queues have a live consumer without a broadcast round trip."""

from __future__ import annotations

import time

import redis
from django.conf import settings

from project.redis import redis_client

HEARTBEAT_PREFIX = "custos:worker:"
BROKER_TIMEOUT_SECONDS = 1.0


def _broker() -> redis.Redis:
    return redis_client(settings.CELERY_BROKER_URL, timeout=BROKER_TIMEOUT_SECONDS)


def worker_heartbeat_write(*, hostname: str, queues: list[str]) -> None:
    """Mark `hostname` as consuming `queues` for the next WORKER_HEARTBEAT_TTL_SECONDS."""
    pipe = _broker().pipeline()
    for queue in queues:
        pipe.set(
            f"{HEARTBEAT_PREFIX}{queue}:{hostname}",
            str(time.time()),
            ex=settings.WORKER_HEARTBEAT_TTL_SECONDS,
        )
    pipe.execute()


def worker_heartbeats_read() -> dict[str, list[str]]:
    """The hostnames with a live heartbeat, by queue; raises redis.RedisError if the broker does not
    answer."""
    client = _broker()
    client.ping()
    live: dict[str, list[str]] = {}
    for key in client.scan_iter(match=f"{HEARTBEAT_PREFIX}*", count=500):
        queue, hostname = key.decode()[len(HEARTBEAT_PREFIX) :].split(":", 1)
        live.setdefault(queue, []).append(hostname)
    return live
