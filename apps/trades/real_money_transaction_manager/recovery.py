"""The beat tick's share of the path: one confirm pass over every CONFIRMING trade with something on the
wire, and the safety net that re-enqueues the step of a trade untouched for TRADE_STALL_SECONDS (a
dead worker, a flushed broker). Not part of the normal path: no trade should wait for it."""

from __future__ import annotations

import time
from datetime import timedelta

from django.conf import settings
from django.db.models import Exists, OuterRef
from django.utils import timezone

from apps.signing.models import SigningRecord, SigningRefusal
from apps.trades.models import ChainTransaction, Trade, TradeState
from project import locks
from project.queues import TaskName, enqueue_now

from .confirm import LOOKED_AT, trade_confirm

S = TradeState


STEP_FOR_STATE = {
    S.PENDING: TaskName.TRADES_SIMULATE,
    S.SIMULATING: TaskName.TRADES_SIMULATE,
    S.VALIDATING: TaskName.TRADES_VALIDATE,
    S.CONFIRMING: TaskName.TRADES_BROADCAST,
}


def recover_stalled_trades(*, older_than: timedelta | None = None) -> int:
    """Re-enqueue the step of every non-terminal trade untouched for a while. Safe at any moment:
    every step is idempotent, so a duplicate does nothing."""
    window = older_than or timedelta(seconds=settings.TRADE_STALL_SECONDS)
    cutoff = timezone.now() - window
    marks = locks.client()
    count = 0
    for trade in (
        Trade.objects.filter(updated_at__lt=cutoff)
        .exclude(
            state__in=[
                S.SETTLED,
                S.REJECTED,
                S.FAILED,
                S.CANCELLED,
                S.FINALITY_VIOLATED,
            ]
        )
        .only("pk", "state")
    ):
        # At most one re-enqueue per trade and state per window: a trade waiting behind a burst is
        # queued, not lost, and re-sending its step on every tick filled the queue with duplicates
        # (each harmless, all of them together the burst's bottleneck).
        if not marks.set(
            f"custos:recover:{trade.pk}:{trade.state}", "1", nx=True, ex=max(1, int(window.total_seconds()))
        ):
            continue
        if trade.state == S.SIGNING:
            latest = ChainTransaction.objects.filter(trade=trade).order_by("-attempt").first()
            attempt = latest.attempt if latest else 1
            if (
                SigningRecord.objects.filter(trade=trade, attempt=attempt).exists()
                or SigningRefusal.objects.filter(trade=trade, attempt=attempt).exists()
            ):
                enqueue_now(TaskName.TRADES_AFTER_SIGNING, [[trade.pk, attempt]])
            else:
                enqueue_now(TaskName.SIGNING_SIGN, trade.pk, attempt)
        else:
            enqueue_now(STEP_FOR_STATE[trade.state], trade.pk)
        count += 1
    return count


def confirm_all() -> int:
    """One pass over every CONFIRMING trade with something on the wire (beat). A trade none of whose
    transactions has been broadcast yet has nothing to mine: its broadcast step, queued behind
    others in a burst, enqueues its confirm; if that step was lost, recover_stalled_trades
    re-enqueues it (and a send that crashed before recording itself is found by that broadcast:
    "already known" or our hash mined). Asking the node for receipts of never-sent transactions
    was most of a tick's work under a burst."""
    sent = ChainTransaction.objects.filter(trade_id=OuterRef("pk"), broadcast_at__isnull=False)
    ids = list(Trade.objects.filter(state=S.CONFIRMING).filter(Exists(sent)).values_list("pk", flat=True))
    # Trades a confirm batch looked at within the last tick interval wait for the next tick.
    recent = locks.client().zrangebyscore(LOOKED_AT, time.time() - settings.TRADE_TICK_SECONDS, "+inf")
    skip = {int(pk) for pk in recent}
    return trade_confirm(trade_ids=[pk for pk in ids if pk not in skip])
