"""PENDING: the owner's side of the path. A trade's inputs are checked and frozen, once per idempotency
key; and an owner may cancel a trade that has not reached SIGNING.

Submission runs in the web process, whose database role may only INSERT trades and their first audit
event (project/db_roles.py): the trade's id is taken from its sequence first, so the `submitted` event
and its hash exist before the row, which is inserted with that hash as its audit head. The cancel runs
in the engine (the web records an OwnerRequest: recovery.owner_requests_handle)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import connection
from django.utils import timezone

from apps.chain.models import Dex
from apps.trades.audit import AuditEntry, chain_events
from apps.trades.models import Trade, TradeState
from apps.wallets.models import Wallet
from project.db import serializable_attempts
from project.queues import TaskName, enqueue_on_commit

from .transition import end_trade

S = TradeState


class TradeInputError(ValueError):
    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


class IdempotencyConflict(Exception):
    """The owner's idempotency key was already used for a trade with other inputs: nothing is written."""

    def __init__(self, key: str):
        self.key = key
        super().__init__(f"idempotency key {key!r} was already used for a different trade")


@dataclass(frozen=True)
class Submitted:
    trade: Trade
    created: bool


def trade_submit(
    *,
    owner,
    wallet: Wallet,
    dex: Dex,
    path: list[str],
    amount_in: int,
    deadline: datetime,
    idempotency_key: str,
    slippage_bps: int | None = None,
    min_amount_out: int | None = None,
    native: str = "",
) -> Submitted:
    """Freeze a trade's inputs in PENDING and start it; the same idempotency key with the same inputs
    returns the same trade, with other inputs raises IdempotencyConflict.
    `native` "in" or "out" swaps native ETH at that end of the path, which then names the DEX's
    wrapped native token (the router wraps and unwraps)."""
    inputs = {
        "owner": owner,
        "wallet": wallet,
        "dex": dex,
        "path": path,
        "amount_in": amount_in,
        "deadline": deadline,
        "idempotency_key": idempotency_key,
        "slippage_bps": slippage_bps,
        "min_amount_out": min_amount_out,
        "native": native,
    }
    trade_inputs_check(**inputs)
    for attempt in serializable_attempts(label="trade_submit"):
        with attempt:
            submitted = trade_submit_in_transaction(**inputs)
    return submitted


def trade_inputs_check(
    *,
    owner,
    wallet: Wallet,
    dex: Dex,
    path: list[str],
    amount_in: int,
    deadline: datetime,
    slippage_bps: int | None = None,
    min_amount_out: int | None = None,
    native: str = "",
    **_rest,
) -> None:
    """Every check of a trade's inputs that needs no transaction: TradeInputError naming the field."""
    if wallet.owner_id != owner.pk:
        raise TradeInputError("wallet", "not one of your wallets")
    if wallet.status != Wallet.Status.ACTIVE or not wallet.active:
        raise TradeInputError("wallet", "wallet is not active")
    if amount_in <= 0:
        raise TradeInputError("amount_in", "must be positive")
    if (slippage_bps is None) == (min_amount_out is None):
        raise TradeInputError("slippage_bps", "give exactly one of slippage_bps and min_amount_out")
    if slippage_bps is not None and not 1 <= slippage_bps <= 5000:
        raise TradeInputError("slippage_bps", "must be between 1 and 5000")
    if len(path) != 2 or path[0] == path[1]:
        raise TradeInputError("path", "a direct pair of two different tokens")
    if deadline <= timezone.now():
        raise TradeInputError("deadline", "already passed")
    if native not in Trade.Native.values:
        raise TradeInputError("native", f"one of {', '.join(repr(v) for v in Trade.Native.values)}")
    if native:
        wrapped = dex.wrapped_native.address if dex.wrapped_native_id else None
        end = path[0] if native == Trade.Native.IN else path[-1]
        if wrapped is None or end != wrapped:
            raise TradeInputError(
                "path", f"native {native} needs the path's {native}put to be the DEX's wrapped native token"
            )


def trade_submit_in_transaction(
    *,
    owner,
    wallet: Wallet,
    dex: Dex,
    path: list[str],
    amount_in: int,
    deadline: datetime,
    idempotency_key: str,
    slippage_bps: int | None = None,
    min_amount_out: int | None = None,
    native: str = "",
) -> Submitted:
    """trade_submit's write, inside the caller's SERIALIZABLE transaction, for a caller whose own
    writes must commit with the trade or not at all (a strategy's run): inputs checked
    (trade_inputs_check) by the caller before its transaction."""
    existing = Trade.objects.filter(owner=owner, idempotency_key=idempotency_key).first()
    if existing is not None:
        same = (
            existing.wallet_id == wallet.pk
            and existing.dex_id == dex.pk
            and list(existing.path) == list(path)
            and int(existing.amount_in) == amount_in
            and existing.slippage_bps == slippage_bps
            and (None if existing.min_amount_out is None else int(existing.min_amount_out)) == min_amount_out
            and existing.deadline == deadline.replace(microsecond=0)
            and existing.native == native
        )
        if not same:
            raise IdempotencyConflict(idempotency_key)
        return Submitted(existing, False)
    # Insert-only: the id first, then the first event's hash, then the trade (its audit head
    # already that hash) and the event. Nothing is updated.
    trade = Trade(
        pk=_next_trade_id(),
        owner=owner,
        wallet=wallet,
        chain=dex.chain,
        dex=dex,
        path=path,
        amount_in=amount_in,
        slippage_bps=slippage_bps,
        min_amount_out=min_amount_out,
        deadline=deadline.replace(microsecond=0),
        idempotency_key=idempotency_key,
        native=native,
    )
    submitted = AuditEntry(
        trade=trade,
        kind="submitted",
        to_state=trade.state,
        data={
            "path": path,
            "amount_in": amount_in,
            "slippage_bps": slippage_bps,
            "min_amount_out": min_amount_out,
            "native": native,
            "deadline": trade.deadline,
        },
    )
    (event,) = chain_events([submitted], {})
    trade.audit_head = event.hash
    trade.save(force_insert=True)
    event.save(force_insert=True)
    enqueue_on_commit(TaskName.TRADES_SIMULATE, trade.pk)
    return Submitted(trade, True)


def _next_trade_id() -> int:
    """The next trade id, from the table's own sequence (a retried transaction leaves a gap, as any
    rolled-back INSERT does)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT nextval(pg_get_serial_sequence(%s, 'id'))", [Trade._meta.db_table])
        return cursor.fetchone()[0]


def trade_cancel(*, trade_id: int, reason: str = "cancelled by the owner") -> Trade | None:
    """Free before SIGNING; after that the trade needs a cancel replacement (not offered here yet)."""
    return end_trade(trade_id, "cancel", reason, expect={S.PENDING, S.SIMULATING, S.VALIDATING})
