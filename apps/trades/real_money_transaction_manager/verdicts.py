"""The watcher's verdicts on a trade: a reorg orphaned a CONFIRMING trade's receipts (CONFIRMING →
CONFIRMING, the same bytes broadcast again), or a SETTLED trade's block left the chain (→
FINALITY_VIOLATED, an alarm)."""

from __future__ import annotations

import logging

from apps.trades.models import ChainTransaction, Trade, TradeState
from project.db import serializable_attempts
from project.queues import TaskName

from .transition import load, transition

logger = logging.getLogger(__name__)
S = TradeState


def trade_receipts_orphaned(*, trade_id: int, orphaned: dict[int, str], reorg: dict) -> Trade | None:
    """A reorg took the block of some of a CONFIRMING trade's receipts (`orphaned`: transaction id →
    the orphaned block hash): clear those receipts, CONFIRMING → CONFIRMING, and broadcast the same
    raw bytes again (harmless if the transaction was re-included: 'already known' / nonce used)."""
    for attempt in serializable_attempts(label="receipts_orphaned"):
        with attempt:
            trade = load(trade_id)
            if trade is None or trade.state != S.CONFIRMING:
                return trade
            cleared = []
            for tx in ChainTransaction.objects.filter(trade=trade, pk__in=list(orphaned)).order_by("pk"):
                if not tx.receipt_block_hash or tx.receipt_block_hash != orphaned[tx.pk]:
                    continue  # no receipt, or already re-recorded on the new chain
                cleared.append(
                    {"tx": tx.tx_hash, "block": tx.receipt_block_number, "hash": tx.receipt_block_hash}
                )
                ChainTransaction.objects.filter(pk=tx.pk).update(
                    receipt_block_number=None,
                    receipt_block_hash="",
                    status=ChainTransaction.Status.BROADCAST,
                )
            if not cleared:
                return trade
            transition(
                trade,
                "reconfirm",
                data={"reorg": reorg, "orphaned_receipts": cleared},
                next_task=(TaskName.TRADES_BROADCAST, trade.pk),
            )
    logger.warning("receipt orphaned by a reorg", extra={"trade": trade_id, "reorg": reorg})
    return trade


def trade_finality_violate(*, trade_id: int, orphaned: dict[int, str], reorg: dict) -> Trade | None:
    """A SETTLED trade's inclusion block left the canonical chain: SETTLED → FINALITY_VIOLATED, an
    alarm for the owner (logged at critical, in the audit trail the API reports)."""
    for attempt in serializable_attempts(label="finality_violated"):
        with attempt:
            trade = load(trade_id)
            if trade is None or trade.state != S.SETTLED:
                return trade
            txs = ChainTransaction.objects.filter(trade=trade, pk__in=list(orphaned))
            blocks = [
                {"tx": tx.tx_hash, "block": tx.receipt_block_number, "hash": tx.receipt_block_hash}
                for tx in txs
            ]
            reason = f"finality violated: settled inclusion block(s) left the canonical chain ({reorg})"
            transition(
                trade,
                "violate_finality",
                data={"reorg": reorg, "orphaned_receipts": blocks},
                fields={"reason": reason[:4000]},
            )
    logger.critical("FINALITY VIOLATED: a settled trade's block left the chain", extra={"trade": trade_id})
    return trade
