"""Trade writes from the web process (the API's cancel, the admin console's cancel and retry): each is
recorded as an OwnerRequest for the engine to carry out. The web's database role may insert a request
but may not move a trade or append to a trade's audit trail beyond its first event
(project/db_roles.py); the engine handles the request (the `trades.owner_requests` task, enqueued on
commit, and every beat tick for any request still unhandled) and records the outcome in the trade's
hash-chained audit trail: apps.trades.real_money_transaction_manager.recovery.owner_requests_handle."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from apps.trades.models import CANCELLABLE, NON_TERMINAL, OwnerRequest, Trade
from project.db import serializable_attempts
from project.queues import TaskName, enqueue_on_commit


def owner_request_create(*, trade: Trade, kind: str, requested_by, reason: str = "") -> OwnerRequest:
    """Record a cancel or retry of `trade` for the engine and enqueue its handling once committed. An
    unhandled request of the same kind for the trade is returned instead of a second one."""
    for attempt in serializable_attempts(label="owner_request_create"):
        with attempt:
            request = OwnerRequest.objects.filter(trade=trade, kind=kind, handled_at__isnull=True).first()
            if request is None:
                request = OwnerRequest.objects.create(
                    trade=trade, kind=kind, requested_by=requested_by, reason=reason[:4000]
                )
                enqueue_on_commit(TaskName.TRADES_OWNER_REQUESTS, [request.pk])
    return request


def admin_trade_cancel(*, trade: Trade, staff) -> OwnerRequest | None:
    """Ask the engine to cancel `trade` (as the owner may: before SIGNING); the reason, naming the staff
    member, goes into the trade's audit trail with the transition. None, and nothing recorded, for a
    trade already past that point when read here."""
    if trade.state not in CANCELLABLE:
        return None
    return owner_request_create(
        trade=trade,
        kind=OwnerRequest.Kind.CANCEL,
        requested_by=staff,
        reason=f"cancelled by staff {staff.get_username()} in the admin console",
    )


def admin_trades_retry(*, trade_ids: list[int], staff) -> list[int]:
    """Ask the engine to re-enqueue the step of each selected trade that is stalled (non-terminal and
    untouched for TRADE_STALL_SECONDS); the engine checks again, records a `retry_requested` event
    naming the staff member and sends the step (each step is idempotent, so a duplicate does nothing).
    Returns the ids of the selected trades a retry was requested for."""
    cutoff = timezone.now() - timedelta(seconds=settings.TRADE_STALL_SECONDS)
    stalled = Trade.objects.filter(pk__in=trade_ids, state__in=NON_TERMINAL, updated_at__lt=cutoff)
    requested = []
    for trade in stalled.order_by("pk"):
        owner_request_create(trade=trade, kind=OwnerRequest.Kind.RETRY, requested_by=staff)
        requested.append(trade.pk)
    return requested
