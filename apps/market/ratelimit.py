"""Per-source rate limiting and response caching in Redis, shared by every market worker process."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import redis
from django.conf import settings

from project.redis import redis_client as shared_redis_client

PREFIX = "custos:market"
UNITS = {"s": 1, "sec": 1, "min": 60, "hour": 3600}


@dataclass(frozen=True)
class Rate:
    calls: int
    seconds: int

    @classmethod
    def parse(cls, text: str) -> Rate:
        """ "<n>/<s|min|hour>" (the API gateway's format)."""
        count, _, unit = text.partition("/")
        if unit not in UNITS or not count.strip().isdigit() or int(count) <= 0:
            raise ValueError(f"rate {text!r} is not '<n>/<s|min|hour>'")
        return cls(calls=int(count), seconds=UNITS[unit])

    @property
    def per_hour(self) -> float:
        return self.calls * 3600 / self.seconds


class RateLimited(Exception):
    """The source may not be called now; `retry_after` seconds until it may."""

    def __init__(self, source: str, retry_after: float, why: str):
        self.source = source
        self.retry_after = max(retry_after, 0.0)
        super().__init__(f"{source}: rate limited ({why}); retry in {self.retry_after:.1f}s")


def redis_client() -> redis.Redis:
    return shared_redis_client(settings.REDIS_URL, timeout=None)


class RateLimiter:
    """A fixed window counter per source plus a "blocked until" mark that a 429 sets.

    Fixed windows can let 2n calls through around a boundary; each window still holds at most n,
    which is how the free tiers state their limits."""

    def __init__(self, source: str, rate: Rate, client: redis.Redis | None = None):
        self.source = source
        self.rate = rate
        self.redis = client or redis_client()

    def _blocked_key(self) -> str:
        return f"{PREFIX}:rl:{self.source}:blocked"

    def blocked_for(self) -> float:
        ttl_ms = self.redis.pttl(self._blocked_key())
        return ttl_ms / 1000 if ttl_ms and ttl_ms > 0 else 0.0

    def block(self, seconds: float) -> None:
        """The source said "not before `seconds`": nobody calls it until then."""
        if seconds > 0:
            self.redis.set(self._blocked_key(), "1", px=max(int(seconds * 1000), 1))

    def acquire(self) -> None:
        """Take one call from the current window, or raise RateLimited."""
        blocked = self.blocked_for()
        if blocked > 0:
            raise RateLimited(self.source, blocked, "the source asked us to wait")
        now = time.time()
        window = int(now // self.rate.seconds)
        key = f"{PREFIX}:rl:{self.source}:{self.rate.seconds}:{window}"
        pipe = self.redis.pipeline()
        pipe.incr(key)
        pipe.expire(key, self.rate.seconds + 1)
        used, _ = pipe.execute()
        if used > self.rate.calls:
            retry = (window + 1) * self.rate.seconds - now
            raise RateLimited(self.source, retry, f"{self.rate.calls} calls per {self.rate.seconds}s used")

    def acquire_waiting(self, max_wait: float) -> None:
        """acquire(), sleeping through a wait no longer than `max_wait` seconds."""
        deadline = time.monotonic() + max_wait
        while True:
            try:
                self.acquire()
                return
            except RateLimited as limited:
                if time.monotonic() + limited.retry_after > deadline:
                    raise
                time.sleep(limited.retry_after + 0.01)


def retry_after_seconds(value: str | None, default: float) -> float:
    """A Retry-After header: delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return default
    value = value.strip()
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return max(math.ceil(when.timestamp() - time.time()), 0)


class ResponseCache:
    """Response bodies (text, parsed again on read) by request, kept for a TTL."""

    def __init__(self, source: str, ttl: int, client: redis.Redis | None = None):
        self.source = source
        self.ttl = ttl
        self.redis = client or redis_client()

    def _key(self, path: str, params: dict) -> str:
        query = "&".join(f"{k}={params[k]}" for k in sorted(params))
        return f"{PREFIX}:cache:{self.source}:{path}?{query}"

    def get(self, path: str, params: dict) -> str | None:
        if self.ttl <= 0:
            return None
        raw = self.redis.get(self._key(path, params))
        return None if raw is None else raw.decode()

    def put(self, path: str, params: dict, body: str) -> None:
        if self.ttl > 0:
            self.redis.set(self._key(path, params), body, ex=self.ttl)
