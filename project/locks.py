"""A single-run lock in Redis: at most one holder of a key at a time, released only by its holder,
and expiring on its own if the holder dies (so a crashed run cannot block the next one forever)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from django.conf import settings

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end
"""


def client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5)


@contextmanager
def single_run(key: str, *, ttl_seconds: int, using: redis.Redis | None = None) -> Iterator[bool]:
    """Yields True if this caller holds `key` (for at most `ttl_seconds`), False if someone else does."""
    using = using or client()
    token = uuid.uuid4().hex
    held = bool(using.set(key, token, nx=True, ex=ttl_seconds))
    try:
        yield held
    finally:
        if held:
            using.eval(_RELEASE, 1, key, token)
