"""Gateway writes: API tokens (create, authenticate, revoke) and worker heartbeats (used by health)."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

import redis
from django.conf import settings
from django.db import IntegrityError, OperationalError, transaction
from django.utils import timezone

from apps.gateway.models import ApiToken
from project.db import is_retryable

HEARTBEAT_PREFIX = "custos:worker:"
TOKEN_PREFIX = "cst_"  # noqa: S105 - a public marker, not a secret


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


# --- API tokens ----------------------------------------------------------------------------------


class TokenNameTaken(ValueError):
    field = "name"


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    raw: str  # shown to the owner once, never stored


def token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def api_token_create(*, user, name: str) -> IssuedToken:
    """Issue a token for one device; the raw value exists only in the return value."""
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    try:
        with transaction.atomic():
            token = ApiToken.objects.create(
                user=user, name=name, prefix=raw[: len(TOKEN_PREFIX) + 6], key_hash=token_hash(raw)
            )
    except IntegrityError as exc:
        raise TokenNameTaken(f"a live token named {name!r} already exists") from exc
    return IssuedToken(token=token, raw=raw)


def api_token_revoke(*, token: ApiToken) -> ApiToken:
    """Effective for the next request: authentication only accepts unrevoked tokens."""
    ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    token.refresh_from_db()
    return token


def api_token_authenticate(*, raw: str) -> ApiToken | None:
    """The live token `raw` stands for (its user active), recording its use; None otherwise."""
    if not raw.startswith(TOKEN_PREFIX) or len(raw) > 128:
        return None
    token = (
        ApiToken.objects.select_related("user")
        .filter(key_hash=token_hash(raw), revoked_at__isnull=True)
        .first()
    )
    if token is None or not token.user.is_active:
        return None
    now = timezone.now()
    # One write per token per resolution window, not one per request.
    resolution = timedelta(seconds=settings.API_TOKEN_LAST_USED_RESOLUTION_SECONDS)
    if token.last_used_at is None or now - token.last_used_at >= resolution:
        try:
            with transaction.atomic():
                ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
            token.last_used_at = now
        except OperationalError as exc:
            # A concurrent request of the same token recorded the use first (SERIALIZABLE makes
            # the second update fail): that is the same fact, so the request goes on.
            if not is_retryable(exc):
                raise
    return token


# --- admin console actions (through the engine's services, each recorded in the audit trail) ------


def admin_trade_cancel(*, trade_id: int, staff_username: str):
    """Cancel as the engine allows (before SIGNING); the reason, naming the staff member, goes into
    the trade's hash-chained audit trail with the transition."""
    from apps.trades.real_money_transaction_manager import trade_cancel

    return trade_cancel(trade_id=trade_id, reason=f"cancelled by staff {staff_username} in the admin console")


def admin_trades_retry(*, trade_ids: list[int], staff_username: str) -> list[int]:
    """Record a retry request on each selected trade that is stalled (non-terminal and untouched for
    TRADE_STALL_SECONDS), then let the engine re-enqueue the step of every stalled trade (each step is
    idempotent, so a duplicate does nothing). Returns the ids of the selected trades retried."""
    from apps.trades.audit import audit_append
    from apps.trades.models import NON_TERMINAL, Trade
    from apps.trades.real_money_transaction_manager import recover_stalled_trades
    from project.db import serializable_attempts

    cutoff = timezone.now() - timedelta(seconds=settings.TRADE_STALL_SECONDS)
    stalled: list[int] = []
    for attempt in serializable_attempts(label="admin_trades_retry"):
        with attempt:
            stalled = []
            trades = Trade.objects.filter(pk__in=trade_ids, state__in=NON_TERMINAL, updated_at__lt=cutoff)
            for trade in trades.order_by("pk"):
                audit_append(
                    trade=trade,
                    kind="retry_requested",
                    data={"by": staff_username, "state": trade.state},
                )
                stalled.append(trade.pk)
    if stalled:
        recover_stalled_trades()
    return stalled
