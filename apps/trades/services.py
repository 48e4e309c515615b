"""Trade writes from the admin console: cancel and retry, each through the engine and recorded in the
trade's hash-chained audit trail. The owner's own writes (submit, cancel) are the engine's services,
apps.trades.real_money_transaction_manager."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from apps.trades.audit import audit_append
from apps.trades.models import NON_TERMINAL, Trade
from apps.trades.real_money_transaction_manager import recover_stalled_trades, trade_cancel
from project.db import serializable_attempts


def admin_trade_cancel(*, trade_id: int, staff_username: str) -> Trade | None:
    """Cancel as the engine allows (before SIGNING); the reason, naming the staff member, goes into
    the trade's hash-chained audit trail with the transition."""
    return trade_cancel(trade_id=trade_id, reason=f"cancelled by staff {staff_username} in the admin console")


def admin_trades_retry(*, trade_ids: list[int], staff_username: str) -> list[int]:
    """Record a retry request on each selected trade that is stalled (non-terminal and untouched for
    TRADE_STALL_SECONDS), then let the engine re-enqueue the step of every stalled trade (each step is
    idempotent, so a duplicate does nothing). Returns the ids of the selected trades retried."""
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
