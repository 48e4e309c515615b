"""CONFIRMING → SETTLED (or FAILED, or CANCELLED when a cancel won the nonce): receipts, confirmation
depth and the settlement gate, for many trades per chain read; a transaction stuck unmined gets a
replacement with bumped fees (a cancel once the deadline passed)."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass

from django.conf import settings
from django.db import OperationalError
from django.utils import timezone

from apps.trades import chainio
from apps.trades.audit import AuditEntry, audit_append, audit_append_many
from apps.trades.models import ChainTransaction, Trade, TradeState
from apps.wallets.scope import FROM_DATABASE, active_scopes, owner_signed
from project import locks
from project.db import SerializationRetriesExhausted, is_retryable, serializable_attempts
from project.queues import TaskName, enqueue_on_commit

from .payloads import bumped, replacement_of
from .transition import StaleTrade, attempts_reusing, end_trade, load, trade_rows, transition

logger = logging.getLogger(__name__)
S = TradeState


class _ChainView:
    """One look at a chain for many confirms: the head, the receipts of every live transaction's hash
    (read in one request when the view is made), the settlement gate's block hash once per height."""

    def __init__(self, chain, tx_hashes: list[str]):
        self.chain = chain
        self.head = chainio.block_number(chain)
        unique = list(dict.fromkeys(tx_hashes))
        self._receipts = dict(zip(unique, chainio.receipts(chain, unique), strict=True))
        self._quorum: dict[int, str | None] = {}

    def receipts(self, tx_hashes: list[str]) -> list:
        return [self._receipts[h] for h in tx_hashes]

    def ask_gate(self, numbers: list[int]) -> None:
        """The settlement gate's reads for these heights, in one batch per endpoint. Asked only after
        the receipts at them are recorded: a reorg the watcher handles before that read changes the
        answer, one it handles after finds the recorded receipts and clears them."""
        missing = [n for n in dict.fromkeys(numbers) if n not in self._quorum]
        if missing:
            self._quorum.update(chainio.quorum_block_hashes(self.chain, missing))

    def quorum_block_hash(self, number: int) -> str | None:
        self.ask_gate([number])
        return self._quorum[number]


def _live_transactions(trade_ids: list[int]) -> dict[int, list[ChainTransaction]]:
    # Every transaction of the trade counts, recorded as sent or not: a trade must never settle on
    # its approval while its swap is still on the way.
    live: dict[int, list[ChainTransaction]] = {trade_id: [] for trade_id in trade_ids}
    for tx in (
        ChainTransaction.objects.filter(trade_id__in=trade_ids)
        .exclude(status=ChainTransaction.Status.REPLACED)
        .order_by("trade_id", "sequence", "-attempt")
    ):
        live[tx.trade_id].append(tx)
    return live


LOOKED_AT = "custos:trades:confirm:looked"  # Redis sorted set: trade id -> when a confirm batch looked


def trade_confirm(*, trade_ids: list[int], mark_looked: bool = False) -> int:
    """Read receipts of each CONFIRMING trade among `trade_ids`: FAILED on status 0; SETTLED at the
    chain's confirmation depth on a canonical block; CANCELLED when a cancel won the nonce. A
    transaction unmined for REPLACE_AFTER_BLOCKS gets a replacement with both fees raised (capped by
    the scope); once the deadline has passed, a cancel. One head read, one receipts
    request and one settlement-gate read (after every new receipt is recorded) per chain for all of
    them. One trade's contention does not cost the others their check: the next tick (or confirm)
    looks at it again. Returns how many were looked at. `mark_looked`
    (a confirm batch right after a broadcast): the beat tick leaves these trades for the next tick
    rather than look at them again straight away (under a burst that was most of a tick's work)."""
    trades = list(trade_rows().filter(pk__in=trade_ids, state=S.CONFIRMING).order_by("pk"))
    live = _live_transactions([t.pk for t in trades])
    views: dict[int, _ChainView] = {}
    looked: list[_Looked] = []
    for trade in trades:
        if trade.chain_id not in views:
            hashes = [
                tx.tx_hash for t in trades if t.chain_id == trade.chain_id for tx in live[t.pk] if tx.tx_hash
            ]
            views[trade.chain_id] = _ChainView(trade.chain, hashes)
        with _contention_skips(trade):
            if (found := _look_and_record(trade, views[trade.chain_id], live[trade.pk])) is not None:
                looked.append(found)
    for chain_id, view in views.items():
        view.ask_gate([n for item in looked if item.trade.chain_id == chain_id for n in item.gate_heights()])
    for item in looked:
        with _contention_skips(item.trade):
            _settle_or_replace(item, views[item.trade.chain_id])
    if mark_looked and trades:
        now = time.time()
        pipe = locks.client().pipeline()
        pipe.zadd(LOOKED_AT, {str(t.pk): now for t in trades})
        pipe.zremrangebyscore(LOOKED_AT, "-inf", now - max(60, settings.TRADE_TICK_SECONDS))
        pipe.execute()
    return len(trades)


@contextmanager
def _contention_skips(trade: Trade):
    """One trade's contention does not cost the others of a confirm batch their check: the next tick
    (or confirm) looks at it again."""
    try:
        yield
    except StaleTrade:
        logger.info("confirm skipped this time: the trade changed meanwhile", extra={"trade": trade.pk})
    except (SerializationRetriesExhausted, OperationalError) as exc:
        if isinstance(exc, OperationalError) and not is_retryable(exc):
            raise
        logger.info("confirm skipped this time: contention", extra={"trade": trade.pk})


@dataclass(frozen=True)
class _Mined:
    tx: ChainTransaction  # the candidate the receipt is for
    receipt: chainio.Receipt
    candidates: list[ChainTransaction]  # every live attempt at its nonce, tx among them


@dataclass
class _Looked:
    """What a confirm saw of one trade, its new receipts already recorded."""

    trade: Trade
    found: list[_Mined]  # the mined attempt at each nonce that has one
    stuck: list[ChainTransaction]
    complete: bool  # every transaction of the trade has a receipt
    head: int

    def gate_heights(self) -> list[int]:
        depth = self.trade.chain.confirmations_required
        return [m.receipt.block_number for m in self.found if self.head - m.receipt.block_number + 1 >= depth]


def _look_and_record(trade: Trade, view: _ChainView, live: list[ChainTransaction]) -> _Looked | None:
    """The receipts of the trade's live transactions, the new ones recorded (one transaction for all
    of the trade's), before the settlement gate is asked: a watcher that orphans their block
    meanwhile clears them and the settle sees it. A reverted one ends the trade (FAILED): None."""
    by_sequence: dict[int, list[ChainTransaction]] = {}
    for tx in live:
        by_sequence.setdefault(tx.sequence, []).append(tx)
    complete = bool(by_sequence)
    stuck: list[ChainTransaction] = []
    found: list[_Mined] = []
    for _sequence, candidates in sorted(by_sequence.items()):
        mined = _first_mined(view, candidates)
        if mined is None:
            complete = False
            latest = candidates[0]
            if latest.broadcast_block is not None and all(c.tx_hash for c in candidates):
                stuck.append(latest)
            continue
        found.append(_Mined(*mined, candidates))
    # Record each receipt, and retire every sibling still live: a replacement frozen by a confirm
    # that raced this one may have been created after the original was mined.
    _record_mined(
        trade, [m for m in found if m.tx.receipt_block_hash != m.receipt.block_hash or len(m.candidates) > 1]
    )
    for item in found:
        if item.receipt.status != 1:
            shared = any(m.receipt.block_number == item.receipt.block_number for m in found if m is not item)
            why = _reverted_on_chain(trade, item.tx, item.receipt, replay=not shared)
            end_trade(trade.pk, "fail", why, expect={S.CONFIRMING})
            return None
    return _Looked(trade=trade, found=found, stuck=stuck, complete=complete, head=view.head)


def _reverted_on_chain(trade: Trade, tx: ChainTransaction, receipt: chainio.Receipt, *, replay: bool) -> str:
    """The FAILED reason of a receipt with status 0: the revert reason its replay gives, or that it
    used all its gas. Not replayed (`replay` false) when another transaction of the trade is in the
    same block: the parent's state lacks it (the trade's own approve) and the replay would blame
    the allowance."""
    why = ""
    if replay:
        why = chainio.replayed_revert_reason(
            trade.chain,
            sender=tx.sender,
            to=tx.to,
            data=tx.data,
            value=int(tx.value),
            gas=int(tx.gas),
            block_number=receipt.block_number,
        )
    if not why and receipt.gas_used >= int(tx.gas):
        why = f"out of gas (used all {int(tx.gas)})"
    where = f"transaction {tx.tx_hash} ({tx.kind}) reverted on chain in block {receipt.block_number}"
    return f"{where}: {why}" if why else where


def _settle_or_replace(looked: _Looked, view: _ChainView) -> Trade | None:
    """SETTLED (or CANCELLED when a cancel won) once every transaction is deep enough on a block the
    gate confirms; otherwise a stuck transaction gets its replacement when due."""
    trade, head = looked.trade, looked.head
    final = looked.complete
    cancelled = False
    observed: dict[int, str] = {}  # transaction id -> the inclusion block hash the gate checked
    for item in looked.found:
        tx, receipt = item.tx, item.receipt
        cancelled = cancelled or tx.kind == ChainTransaction.Kind.CANCEL
        observed[tx.pk] = receipt.block_hash
        if head - receipt.block_number + 1 < trade.chain.confirmations_required:
            final = False
        elif view.quorum_block_hash(receipt.block_number) != receipt.block_hash:
            # The settlement gate: k endpoints must agree the inclusion block is this one.
            final = False
    if not final:
        if looked.stuck:
            _replace_stuck(trade, looked.stuck, head)
        return trade
    for attempt, current in attempts_reusing(trade, label="settle"):
        with attempt:
            trade = current()
            if trade is None or trade.state != S.CONFIRMING:
                return trade
            recorded = dict(
                ChainTransaction.objects.filter(pk__in=list(observed)).values_list("pk", "receipt_block_hash")
            )
            if recorded != observed:
                return trade  # the watcher cleared a receipt meanwhile (a reorg): look again
            if cancelled:
                reason = "deadline passed while unmined: cancelled by a zero-value self-transfer"
                filled = trade.events.filter(kind="signer_refused_nonces_filled").order_by("-id").first()
                if filled is not None:
                    reason = (
                        f"signer refused: {filled.data['code']}: {filled.data['detail']}; its nonces "
                        f"{filled.data['nonces']} were filled by zero-value self-transfers"
                    )[:4000]
                transition(trade, "cancel", data={"head": head, "reason": reason}, fields={"reason": reason})
            else:
                transition(trade, "settle", data={"head": head})
    return trade


def _first_mined(view: _ChainView, candidates: list[ChainTransaction]):
    """The first candidate (latest attempt first) with a receipt."""
    sent = [tx for tx in candidates if tx.tx_hash]
    for tx, receipt in zip(sent, view.receipts([tx.tx_hash for tx in sent]), strict=True):
        if receipt is not None:
            return tx, receipt
    return None


def _record_mined(trade: Trade, mined: list[_Mined]) -> None:
    if mined:
        for attempt in serializable_attempts(label="confirm.record_mined"):
            with attempt:
                _record_mined_now(trade, mined)


def _record_mined_now(trade: Trade, mined: list[_Mined]) -> None:
    """Inside the caller's transaction: each receipt on its transaction, its siblings REPLACED, and one
    `mined` event per receipt not recorded before."""
    events = []
    for item in mined:
        tx, receipt, block_hash = item.tx, item.receipt, item.receipt.block_hash
        others = [c.pk for c in item.candidates if c.pk != tx.pk]
        if others:
            ChainTransaction.objects.filter(pk__in=others).update(status=ChainTransaction.Status.REPLACED)
        if tx.receipt_block_hash == block_hash:
            continue  # receipt already recorded; only late siblings needed retiring
        status = ChainTransaction.Status.MINED if receipt.status == 1 else ChainTransaction.Status.REVERTED
        # Conditional, so a concurrent confirm that recorded the same receipt first leaves one event.
        if (
            ChainTransaction.objects.filter(pk=tx.pk)
            .exclude(receipt_block_hash=block_hash)
            .update(receipt_block_number=receipt.block_number, receipt_block_hash=block_hash, status=status)
        ):
            data = {
                "tx": tx.tx_hash,
                "kind": tx.kind,
                "block": receipt.block_number,
                "block_hash": block_hash,
                "status": receipt.status,
                "gas_used": receipt.gas_used,
            }
            events.append(AuditEntry(trade=trade, kind="mined", data=data))
    audit_append_many(events)


def _replace_stuck(trade: Trade, stuck: list[ChainTransaction], head: int) -> None:
    """Freeze the next attempt for every stuck transaction (a cancel once the deadline passed) and
    ask the signer; the signer checks the bump and the cap again."""
    deadline_passed = timezone.now() >= trade.deadline
    due = [
        tx
        for tx in stuck
        if (deadline_passed and tx.kind != ChainTransaction.Kind.CANCEL)
        or head - int(tx.broadcast_block) >= settings.REPLACE_AFTER_BLOCKS
    ]
    if not due:
        return
    for attempt_ in serializable_attempts(label="replace"):
        with attempt_:
            fresh = load(trade.pk)
            if fresh is None or fresh.state != S.CONFIRMING:
                return
            newest = ChainTransaction.objects.filter(trade=fresh).order_by("-attempt").first()
            if newest is not None and newest.attempt > max(tx.attempt for tx in due):
                return  # a newer attempt is already on its way
            attempt = newest.attempt + 1
            caps = _fee_caps(fresh)
            planned = []
            for old in due:
                # Within the fee budget too: gas limit x max fee per gas.
                fee_cap = caps[0] if caps[2] is None else min(caps[0], caps[2] // int(old.gas))
                fee = bumped(int(old.max_fee_per_gas), fee_cap)
                tip = bumped(int(old.max_priority_fee_per_gas), caps[1])
                minimum = 10_000 + settings.REPLACEMENT_MIN_BUMP_BPS
                if (
                    fee * 10_000 < int(old.max_fee_per_gas) * minimum
                    or tip * 10_000 < int(old.max_priority_fee_per_gas) * minimum
                ):
                    audit_append(
                        trade=fresh,
                        kind="replacement_capped",
                        data={"tx": old.tx_hash, "fee_cap": caps[0], "tip_cap": caps[1]},
                    )
                    continue
                tx = replacement_of(old, attempt=attempt, cancel=deadline_passed, fee=fee, tip=tip)
                tx.save()
                planned.append(
                    {
                        "nonce": int(tx.nonce),
                        "kind": tx.kind,
                        "replaces": old.tx_hash,
                        "max_fee_per_gas": fee,
                        "max_priority_fee_per_gas": tip,
                    }
                )
            if planned:
                audit_append(
                    trade=fresh, kind="replacement_planned", data={"attempt": attempt, "txs": planned}
                )
                enqueue_on_commit(TaskName.SIGNING_SIGN, fresh.pk, attempt)


def _fee_caps(trade: Trade) -> tuple[int | None, int | None, int | None]:
    """The highest fee caps and fee budget among the wallet's active owner-signed scopes on this
    chain (None: no scope left): a replacement beyond them would only be refused by the signer."""
    scopes = owner_signed(
        active_scopes(wallet=trade.wallet, chain=trade.chain, now=timezone.now()),
        wallet=trade.wallet,
        chain_id=trade.chain.chain_id,
        state=FROM_DATABASE,
    )
    if not scopes:
        return None, None, None
    return (
        max(int(s.max_fee_per_gas) for s in scopes),
        max(int(s.max_priority_fee_per_gas) for s in scopes),
        max(int(s.fee_budget_wei) for s in scopes),
    )
