"""Every lock's name in one place: PostgreSQL advisory-lock namespaces and Redis single-run keys; and
the Redis single-run lock (at most one holder of a key at a time, released only by its holder, and
expiring on its own if the holder dies, so a crashed run cannot block the next one forever)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum

import redis
from django.conf import settings

from project.redis import redis_client

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end
"""


class Advisory(IntEnum):
    """PostgreSQL advisory-lock namespaces: the first of pg_advisory_lock's two int4 keys."""

    WALLET_NONCES = 1  # one validator of a wallet at a time (project.db.queued_for)
    WALLET_BROADCAST = 2  # one broadcaster of a wallet at a time
    # "a signer is judging this trade" (the signer role may not lock trade rows: FOR UPDATE needs
    # UPDATE privilege, which it must not have)
    SIGNER_JUDGING = 0x5167


# Redis single-run keys.
TRADES_TICK = "custos:trades:tick"


def watcher_tick(chain_id: int) -> str:
    return f"custos:watcher:tick:{chain_id}"


def client() -> redis.Redis:
    return redis_client(settings.REDIS_URL, timeout=5)


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
