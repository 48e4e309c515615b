"""SIGNING → CONFIRMING (or REJECTED): the signer's answers persisted onto the trades' transactions (the
raw bytes and hash before any broadcast), or its refusal recorded; a refused first attempt below
other nonces is filled with zero-value self-transfers."""

from __future__ import annotations

from apps.signing.models import SigningRecord, SigningRefusal
from apps.trades.audit import audit_append
from apps.trades.models import ChainTransaction, Trade, TradeState
from apps.wallets.models import NonceCursor
from project.db import serializable_attempts
from project.queues import TaskName, enqueue_on_commit

from .payloads import replacement_of
from .transition import StaleTrade, release_unbroadcast_nonces, trade_rows, transition

S = TradeState


def persist_signer_answers(requests: list[tuple[int, int]]) -> None:
    """The signer's answer for one or more (trade, attempt): read once for all of them, each persisted
    in its own short SERIALIZABLE transaction (one for the whole answer collided with every
    concurrent step's writes and started over whole: 130 retries per 200-swap burst). A redelivery
    redoes nothing that was done."""
    answers = _answers_of(requests)
    for trade_id, attempt in requests:
        answer = answers[(trade_id, attempt)]
        try:
            for tx_attempt in serializable_attempts(label="after_signing"):
                with tx_attempt:
                    _persist_answer(trade_id, attempt, answer)
                answer = None  # a failed attempt may have moved the objects along: read afresh
        except StaleTrade:
            # Changed since the read above (a broadcaster's catch-up persisted it): judged afresh.
            for tx_attempt in serializable_attempts(label="after_signing"):
                with tx_attempt:
                    _persist_answer(trade_id, attempt)


def _answers_of(requests: list[tuple[int, int]]) -> dict[tuple[int, int], tuple]:
    """For each (trade, attempt): the trade, the attempt's transactions in sequence order and their
    signing records by transaction id; three queries for all of them."""
    trades = trade_rows().in_bulk([trade_id for trade_id, _attempt in requests])
    # One IN list and the attempts picked here: an OR of (trade, attempt) pairs cost more to build
    # and compile in the ORM than the query took to run.
    own: dict[tuple[int, int], list[ChainTransaction]] = {request: [] for request in requests}
    for tx in ChainTransaction.objects.filter(trade_id__in=list(trades)).order_by("trade_id", "sequence"):
        if (tx.trade_id, tx.attempt) in own:
            own[(tx.trade_id, tx.attempt)].append(tx)
    txs = [tx for group in own.values() for tx in group]
    records = {r.chain_transaction_id: r for r in SigningRecord.objects.filter(chain_transaction__in=txs)}
    return {
        (trade_id, attempt): (
            trades.get(trade_id),
            group,
            {tx.pk: records[tx.pk] for tx in group if tx.pk in records},
        )
        for (trade_id, attempt), group in own.items()
    }


def _persist_answer(trade_id: int, attempt: int, answer: tuple | None = None) -> tuple[Trade | None, bool]:
    """Inside the caller's transaction: the attempt's records onto its transactions and the trade to
    CONFIRMING (or CONFIRMING again for a replacement), or the signer's refusal recorded. Returns the
    trade and whether it now has transactions to broadcast. `answer`: what _answers_of read for it
    (read here when not given)."""
    trade, txs, records = answer or _answers_of([(trade_id, attempt)])[(trade_id, attempt)]
    if trade is None:
        return None, False
    if txs and len(records) == len(txs):
        pending = [tx for tx in txs if not tx.raw_signed]
        for tx in pending:
            record = records[tx.pk]
            ChainTransaction.objects.filter(pk=tx.pk).update(
                raw_signed=record.raw_signed, tx_hash=record.tx_hash, status=ChainTransaction.Status.SIGNED
            )
        if trade.state == S.SIGNING:
            transition(
                trade,
                "start_confirming",
                data={"attempt": attempt, "tx_hashes": [records[t.pk].tx_hash for t in txs]},
            )
            return trade, True
        if trade.state == S.CONFIRMING and pending:
            transition(trade, "reconfirm", data={"attempt": attempt, "replacement": True})
            return trade, True
        return trade, False
    refusal = SigningRefusal.objects.filter(trade=trade, attempt=attempt).order_by("-id").first()
    if refusal is None:
        return trade, False  # the signer has not answered yet
    if trade.state == S.SIGNING and attempt == 1 and _fill_with_cancels(trade, refusal):
        return trade, False
    if trade.state == S.SIGNING:
        transition(
            trade,
            "reject",
            data={"signer_refused": refusal.code, "detail": refusal.detail},
            fields={"reason": f"signer refused: {refusal.code}: {refusal.detail}"[:4000]},
        )
        release_unbroadcast_nonces(trade)
    else:
        audit_append(
            trade=trade,
            kind="signer_refused",
            data={"attempt": attempt, "code": refusal.code, "detail": refusal.detail},
        )
    return trade, False


def _fill_with_cancels(trade: Trade, refusal: SigningRefusal) -> bool:
    """Inside the caller's transaction, for a first attempt the signer refused: when the trade's
    nonces lie below others already allocated (handing them back would leave a gap that holds every
    later transaction of the wallet until some next trade takes them), freeze a zero-value
    self-transfer at each of them instead (attempt 2, each replacing the refused, never-signed
    transaction) and ask the signer for those; the trade then ends CANCELLED once they are mined.
    When handing them back would rewind the cursor over all of them (nothing allocated above them
    but other handed-back nonces), nothing is filled (False). The refused transactions are marked
    REPLACED: the cancels are the trade's live transactions (a stuck one is bumped like any other),
    and the signer refuses to sign a replaced one (a redelivered request for the refused attempt)."""
    if trade.transactions.filter(attempt__gt=1).exists():
        return True  # filled already (a redelivered answer)
    refused = list(trade.transactions.filter(attempt=1).order_by("sequence"))
    if not refused or any(tx.raw_signed for tx in refused):
        return False
    nonces = {int(tx.nonce) for tx in refused}
    cursor = NonceCursor.objects.filter(wallet_id=trade.wallet_id, chain_id=trade.chain_id).first()
    if cursor is None or set(range(min(nonces), int(cursor.next_nonce))) <= nonces | set(cursor.released):
        return False
    planned = []
    for old in refused:
        tx = replacement_of(old, attempt=2, cancel=True)
        tx.save()
        planned.append(int(tx.nonce))
    ChainTransaction.objects.filter(pk__in=[tx.pk for tx in refused]).update(
        status=ChainTransaction.Status.REPLACED
    )
    audit_append(
        trade=trade,
        kind="signer_refused_nonces_filled",
        data={"code": refusal.code, "detail": refusal.detail, "attempt": 2, "nonces": planned},
    )
    enqueue_on_commit(TaskName.SIGNING_SIGN, trade.pk, 2)
    return True
