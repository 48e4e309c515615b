"""The one Redis client factory: a client (and its connection pool) per URL and socket timeout, shared
by everything in the process that talks to that Redis."""

from __future__ import annotations

from functools import cache

import redis


@cache
def redis_client(url: str, *, timeout: float | None) -> redis.Redis:
    """`timeout` bounds connecting and every command, in seconds (None: wait as long as it takes).
    The pool survives a fork: redis-py opens fresh connections in the child."""
    return redis.Redis.from_url(url, socket_timeout=timeout)
