"""Per-token request throttling in the shared Redis cache: a fixed window counted with one atomic
INCR, so every web worker sees the same count."""

from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import cache
from rest_framework.exceptions import APIException
from rest_framework.throttling import BaseThrottle

from apps.gateway.models import ApiToken

PERIODS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


class ThrottleUnavailable(APIException):
    status_code = 503
    default_detail = "Request throttling is unavailable (cache unreachable); try again shortly."
    default_code = "throttle_unavailable"


def parse_rate(rate: str) -> tuple[int, int]:
    """'600/min' -> (600, 60)."""
    count, _, period = rate.partition("/")
    return int(count), PERIODS[period.strip().lower()]


class TokenRateThrottle(BaseThrottle):
    """API_THROTTLE_RATE per token (per client address before authentication succeeds)."""

    def allow_request(self, request, view) -> bool:
        limit, period = parse_rate(settings.API_THROTTLE_RATE)
        if isinstance(request.auth, ApiToken):
            ident = f"token:{request.auth.pk}"
        else:
            ident = f"addr:{self.get_ident(request)}"
        now = time.time()
        window = int(now // period)
        key = f"custos:throttle:{ident}:{window}"
        try:
            cache.add(key, 0, timeout=period + 1)
            count = cache.incr(key)
        except Exception as exc:  # noqa: BLE001 - closed, not open, when Redis is unreachable
            raise ThrottleUnavailable() from exc
        self._wait = (window + 1) * period - now
        return count <= limit

    def wait(self) -> float:
        return max(1.0, self._wait)
