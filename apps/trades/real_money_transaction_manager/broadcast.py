"""CONFIRMING: the signer's answer persisted (signed.py), then the wallet's signed transactions sent, by
one broadcaster per wallet, in nonce order, the same bytes every time; a confirm is asked for what
was sent."""

from __future__ import annotations

import functools
import logging
from datetime import datetime

from django.db.models import Case, Exists, F, OuterRef, Value, When
from django.utils import timezone

from apps.trades import chainio
from apps.trades.audit import AuditEntry, audit_append_many
from apps.trades.models import ChainTransaction, Trade, TradeState
from project.db import queued_for, serializable_attempts
from project.faults import crash_point
from project.locks import Advisory
from project.queues import TaskName, enqueue_now

from .signed import persist_signer_answers
from .transition import audit_and_log, held_retrying

logger = logging.getLogger(__name__)
S = TradeState


ALREADY_KNOWN = ("already known", "known transaction", "already imported", "alreadyknown")


NONCE_TOO_HIGH = ("nonce too high",)


NONCE_TOO_LOW = ("nonce too low", "nonce has already been used", "nonce is too low")


# A node that executes what it is sent at once (Hardhat automine) mines a reverting transaction and
# then answers the send with the revert: sent, if our hash has a receipt (confirm fails the trade).
REVERTED_WHEN_MINED = ("vm exception while processing transaction", "transaction reverted")


def trade_after_signing(*, requests: list[tuple[int, int]]) -> None:
    """The signer's answer for one or more (trade, attempt): persisted (signed.py), then, in this same
    step, the wallets' unsent transactions broadcast. A redelivery redoes nothing that was done and
    broadcasts nothing already sent."""
    persist_signer_answers(requests)
    crash_point("after_signing.committed_before_enqueue")
    trade_broadcast(trade_ids=[trade_id for trade_id, _attempt in requests], unsent_only=True)


def trade_broadcast(*, trade_ids: list[int], unsent_only: bool = False) -> None:
    """Broadcast for the CONFIRMING trades among `trade_ids`, wallet by wallet, by one broadcaster per
    wallet at a time (_broadcast_wallet): every signed, never-sent transaction of the wallet goes out,
    chain by chain in nonce order, and one confirm is enqueued for the trades it sent.

    `unsent_only` (the signer's answer, the hot path): a broadcaster already at work on the wallet
    sends this step's transactions too (it looks again before it stops), so the step returns at
    once. Otherwise (the broadcast task: recovery, a re-org, the tests) the trades' latest signed
    attempts not yet mined or replaced are sent again even if sent before (the same bytes; an older
    attempt a replacement replaces is not re-sent: the node would refuse it as underpriced, though
    it may still be the one mined), after waiting in line for the wallet's broadcaster lock; a
    nonce the node cannot take yet raises NonceNotYetValid for the task to come back."""
    found = list(
        Trade.objects.filter(pk__in=trade_ids, state=S.CONFIRMING)
        .order_by("pk")
        .values_list("pk", "wallet_id")
    )
    wallets: dict[int, list[int]] = {}
    for trade_id, wallet_id in found:
        wallets.setdefault(wallet_id, []).append(trade_id)
    sent_for: set[int] = set() if unsent_only else {trade_id for trade_id, _wallet in found}
    for wallet_id, own in wallets.items():
        sent_for |= _broadcast_wallet(wallet_id, again=[] if unsent_only else own)
    if sent_for:
        enqueue_now(TaskName.TRADES_CONFIRM, sorted(sent_for))


def _broadcast_wallet(wallet_id: int, *, again: list[int]) -> set[int]:
    """The wallet's broadcaster: holding its PostgreSQL advisory lock, send the wallet's unsent
    transactions on every chain (and the live ones of the trades in `again`, read once the lock is
    held: a replacement signed while this waited in line is what goes out, not its original),
    lowest nonce first per chain, and look for more until none is new; after letting go, look once
    more and hold the lock again if one arrived meanwhile (its own step found the lock held and
    left it to this one). Returns the ids of the trades sent for.

    One sender per wallet keeps the nonces in order on a node that refuses future ones (Hardhat
    automine): several workers sending at once had handed it gaps ("nonce too high"), and every
    such step was retried whole. A nonce the node cannot take yet stops the hot path's run on that
    chain at the gap (the lower trade's own step sends the rest, or catch-up has just persisted it:
    then it is new and sent at once); with `again` (a task asking for a re-send) it raises
    NonceNotYetValid."""
    tried: set[int] = set()
    sent_for: set[int] = set()
    while True:
        with queued_for(Advisory.WALLET_BROADCAST, wallet_id, wait=bool(again)) as held:
            if not held:
                return sent_for
            while held_retrying(
                functools.partial(_send_new, wallet_id, tried, sent_for, again),
                label="broadcast",
                wallet_id=wallet_id,
            ):
                again = []
        unsent = held_retrying(
            lambda: _unsent_of(wallet_id, ids_only=True), label="broadcast look", wallet_id=wallet_id
        )
        if tried.issuperset(unsent):
            return sent_for


def _send_new(wallet_id: int, tried: set[int], sent_for: set[int], again: list[int]) -> bool:
    """One look and run of the broadcaster: send the wallet's transactions not yet tried (and the
    live ones of `again`); False when there was nothing new. What was sent is recorded (and added
    to `sent_for`, `tried`) even when a later send fails; what was not is looked at again."""
    unsent = _unsent_of(wallet_id)
    resend = list(_sendable(trade_id__in=again)) if again else []
    if not resend and tried.issuperset(tx.pk for tx in unsent):
        return False
    sent_for |= _send_wallet_run([*unsent, *resend], strict=bool(again))
    tried.update(tx.pk for tx in unsent)
    return True


def _send_wallet_run(txs: list[ChainTransaction], *, strict: bool) -> set[int]:
    """One run over the wallet's transactions to send: chain by chain, lowest nonce first."""
    sent_for: set[int] = set()
    by_chain: dict[int, dict[int, ChainTransaction]] = {}
    for tx in txs:
        by_chain.setdefault(tx.trade.chain_id, {})[tx.pk] = tx
    for chain_txs in by_chain.values():
        ordered = sorted(chain_txs.values(), key=lambda t: (int(t.nonce), t.attempt))
        sent_for |= _send_in_nonce_order(ordered, strict=strict)
    return sent_for


def _unsent_of(wallet_id: int, *, ids_only: bool = False) -> list:
    """The wallet's sendable transactions never sent, on every chain."""
    rows = _sendable(trade__wallet_id=wallet_id, broadcast_at__isnull=True)
    return list(rows.values_list("pk", flat=True)) if ids_only else list(rows)


def _sendable(**filters):
    """Signed transactions of CONFIRMING trades not yet mined or replaced (of a transaction a signed
    replacement replaces, only the replacement), narrowed by `filters`."""
    return (
        ChainTransaction.objects.filter(
            trade__state=S.CONFIRMING,
            status__in=[ChainTransaction.Status.SIGNED, ChainTransaction.Status.BROADCAST],
            **filters,
        )
        .exclude(
            Exists(
                ChainTransaction.objects.filter(
                    trade_id=OuterRef("trade_id"),
                    sequence=OuterRef("sequence"),
                    attempt__gt=OuterRef("attempt"),
                    raw_signed__isnull=False,
                )
            )
        )
        .select_related("trade__chain")
        .order_by("nonce", "attempt")
    )


def _send_in_nonce_order(txs: list[ChainTransaction], *, strict: bool) -> set[int]:
    """Send `txs` (one wallet's on one chain, nonce order); record the sends, also when a later one
    fails. A nonce the node cannot take yet ends the run (raised when `strict`). Returns the trades
    sent for."""
    head = chainio.block_number(txs[0].trade.chain)
    sent: dict[ChainTransaction, datetime] = {}  # each with the moment the node took it
    try:
        for tx in txs:
            try:
                if _send(tx):
                    sent[tx] = timezone.now()
            except chainio.NonceNotYetValid:
                if strict:
                    raise
                break
            crash_point("broadcast.after_send")
    finally:
        # Retried in place: a serialization failure here once ended the task with the trade's later
        # transactions unsent, and on a node that refuses nonce gaps the whole wallet then waited
        # for recover_stalled_trades.
        if sent:
            for attempt in serializable_attempts(label="broadcast.record"):
                with attempt:
                    _record_broadcasts(sent, head)
    return {tx.trade_id for tx in sent}


def _send(tx: ChainTransaction) -> bool:
    """Send the signed bytes; True when the node has them (or had them: 'already known'), False when
    the nonce was consumed by another transaction. Other errors are classified and raised."""
    try:
        # To every usable private endpoint (public ones only where the chain allows it).
        chainio.send_raw(tx.trade.chain, bytes(tx.raw_signed))
    except Exception as exc:  # noqa: BLE001 - classified below
        message = str(exc).lower()
        if any(m in message for m in ALREADY_KNOWN):
            return True
        if any(m in message for m in NONCE_TOO_LOW):
            if chainio.receipt(tx.trade.chain, tx.tx_hash) is None:
                audit_and_log(tx.trade, "broadcast_nonce_consumed", {"tx": tx.tx_hash, "error": str(exc)})
                return False
            return True
        if any(m in message for m in REVERTED_WHEN_MINED) and chainio.receipt(tx.trade.chain, tx.tx_hash):
            return True
        if any(m in message for m in NONCE_TOO_HIGH):
            # Nodes that do not queue future nonces (Hardhat automine): the lower one is coming,
            # unless its trade is signed but its signer's message was lost: catch it up.
            _catch_up_signed_below(tx.trade, int(tx.nonce))
            raise chainio.NonceNotYetValid(str(exc)) from exc
        if isinstance(exc, OSError):
            raise chainio.ChainUnavailable(str(exc)) from exc
        raise
    return True


def _record_broadcasts(sent: dict[ChainTransaction, datetime], head: int) -> None:
    # Only a SIGNED row becomes BROADCAST: a concurrent confirm may already have marked it
    # REPLACED (its sibling was mined), and that verdict must not be overwritten. Only a first
    # send is recorded (and audited), with its own send time (a broadcaster's run sends many).
    first = set(
        ChainTransaction.objects.filter(pk__in=[tx.pk for tx in sent], broadcast_at__isnull=True).values_list(
            "pk", flat=True
        )
    )
    if not first:
        return
    ChainTransaction.objects.filter(pk__in=first, broadcast_at__isnull=True).update(
        broadcast_at=Case(*(When(pk=tx.pk, then=Value(at)) for tx, at in sent.items() if tx.pk in first)),
        broadcast_block=head,
        status=Case(
            When(status=ChainTransaction.Status.SIGNED, then=Value(ChainTransaction.Status.BROADCAST)),
            default=F("status"),
        ),
    )
    audit_append_many(
        [
            AuditEntry(
                trade=tx.trade,
                kind="broadcast",
                data={"tx": tx.tx_hash, "nonce": int(tx.nonce), "attempt": tx.attempt},
            )
            for tx in sent
            if tx.pk in first
        ]
    )


def _catch_up_signed_below(trade: Trade, nonce: int) -> None:
    """The wallet's trades still in SIGNING below `nonce` whose every frozen transaction the signer
    has signed: persist their answer now (idempotent), for the retried step to send. A lost or
    delayed signer message otherwise jammed every later trade of the wallet behind a nonce gap until
    recover_stalled_trades (TRADE_STALL_SECONDS) noticed."""
    unsigned = ChainTransaction.objects.filter(
        trade_id=OuterRef("pk"), attempt=1, signing_record__isnull=True
    )
    below = (
        Trade.objects.filter(
            wallet_id=trade.wallet_id,
            chain_id=trade.chain_id,
            state=S.SIGNING,
            transactions__nonce__lt=nonce,
            transactions__signing_record__isnull=False,
        )
        .exclude(Exists(unsigned))
        .exclude(pk=trade.pk)
        .values_list("pk", flat=True)
        .distinct()
    )
    # Persisted only: the step that found the gap comes back in a moment and sends them first (an
    # enqueued broadcast per caught-up trade re-sent the same bytes again, ~100 per burst).
    persist_signer_answers([(trade_id, 1) for trade_id in sorted(below)])
