"""The beat tick's share of the path: one confirm pass over every CONFIRMING trade with something on the
wire, and the safety net that re-enqueues the step of a trade untouched for TRADE_STALL_SECONDS (a
dead worker, a flushed broker). Not part of the normal path: no trade should wait for it.

Also the engine's side of the owner's requests (OwnerRequest: cancel, retry), which the web process
records and cannot carry out itself (its database role may not move a trade): handled by the
`trades.owner_requests` task the web enqueues, and by every tick for any request still unhandled."""

from __future__ import annotations

import time
from datetime import timedelta

from django.conf import settings
from django.db.models import Exists, OuterRef
from django.utils import timezone

from apps.signing.models import SigningRecord, SigningRefusal
from apps.trades.audit import audit_append
from apps.trades.models import NON_TERMINAL, ChainTransaction, OwnerRequest, Trade, TradeState
from project import locks
from project.db import serializable_attempts
from project.queues import TaskName, enqueue_now

from .confirm import LOOKED_AT, trade_confirm
from .submit import trade_cancel

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
        _enqueue_step(trade)
        count += 1
    return count


def _enqueue_step(trade: Trade) -> None:
    """Send the task that runs `trade`'s current (non-terminal) step, after the enclosing transaction
    if one is open."""
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


# --- the owner's requests ------------------------------------------------------------------------


def owner_requests_handle(*, request_ids: list[int] | None = None) -> dict[int, str]:
    """Carry out the unhandled owner requests (those named, or all): each exactly once, its outcome
    recorded on the request and visible in the trade's audit trail. Returns request id -> outcome for
    the requests this call handled (one already handled by a concurrent call is left out).

    cancel: trade_cancel (free before SIGNING), with the request's reason; a trade past that point
      gets a `cancel_refused` audit event instead.
    retry: a trade still stalled (non-terminal, untouched for TRADE_STALL_SECONDS) gets a
      `retry_requested` audit event and its current step enqueued again, as the safety net would."""
    pending = OwnerRequest.objects.filter(handled_at__isnull=True)
    if request_ids is not None:
        pending = pending.filter(pk__in=request_ids)
    outcomes: dict[int, str] = {}
    for request in pending.select_related("requested_by").order_by("pk"):
        handle = _cancel_request if request.kind == OwnerRequest.Kind.CANCEL else _retry_request
        outcome = handle(request)
        if outcome:
            outcomes[request.pk] = outcome
    return outcomes


def _claimed(request: OwnerRequest, outcome: str) -> bool:
    """Mark the request handled, inside the caller's transaction; False if another call already did."""
    return (
        OwnerRequest.objects.filter(pk=request.pk, handled_at__isnull=True).update(
            handled_at=timezone.now(), outcome=outcome
        )
        == 1
    )


def _cancel_request(request: OwnerRequest) -> str | None:
    # Its own transaction, and idempotent: a crash before the request is marked below only means
    # the next call finds the trade already cancelled.
    trade_cancel(trade_id=request.trade_id, reason=request.reason or "cancelled by the owner")
    for attempt in serializable_attempts(label="owner_request cancel"):
        with attempt:
            trade = Trade.objects.get(pk=request.trade_id)
            cancelled = trade.state == S.CANCELLED
            outcome = OwnerRequest.Outcome.CANCELLED if cancelled else OwnerRequest.Outcome.NOT_CANCELLABLE
            if not _claimed(request, outcome):
                return None
            if not cancelled:
                audit_append(
                    trade=trade,
                    kind="cancel_refused",
                    data={
                        "request": request.pk,
                        "by": request.requested_by.get_username(),
                        "state": trade.state,
                    },
                )
    return outcome


def _retry_request(request: OwnerRequest) -> str | None:
    cutoff = timezone.now() - timedelta(seconds=settings.TRADE_STALL_SECONDS)
    for attempt in serializable_attempts(label="owner_request retry"):
        with attempt:
            trade = Trade.objects.get(pk=request.trade_id)
            stalled = trade.state in NON_TERMINAL and trade.updated_at < cutoff
            outcome = OwnerRequest.Outcome.RETRIED if stalled else OwnerRequest.Outcome.NOT_STALLED
            if not _claimed(request, outcome):
                return None
            if stalled:
                audit_append(
                    trade=trade,
                    kind="retry_requested",
                    data={"by": request.requested_by.get_username(), "state": trade.state},
                )
                _enqueue_step(trade)  # sent once this transaction commits
    return outcome
