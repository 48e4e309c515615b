"""Trade reads for the API: the owner's trades, a trade with its audit timeline and transaction
attempts, and the event feed the long-poll reads.

Every lookup filters by owner, so another owner's trade is indistinguishable from a missing one (404)."""

from __future__ import annotations

from django.db.models import Q
from django.shortcuts import get_object_or_404

from apps.chain.models import Token
from apps.strategies.selectors import latest_strategy_event_id, strategy_events_after
from apps.trades.models import ChainTransaction, Trade, TradeEvent
from apps.wallets.selectors import units_text

TX_FIELDS = (
    "id",
    "trade_id",
    "sequence",
    "kind",
    "attempt",
    "replaces_id",
    "nonce",
    "to",
    "gas",
    "max_fee_per_gas",
    "max_priority_fee_per_gas",
    "tx_hash",
    "status",
    "broadcast_at",
    "receipt_block_number",
    "receipt_block_hash",
)


def trades_of(
    owner,
    *,
    state: str | None = None,
    wallet_id: int | None = None,
    chain_id: int | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[Trade]:
    trades = Trade.objects.filter(owner=owner).select_related("chain").order_by("-id")
    if state:
        trades = trades.filter(state=state)
    if wallet_id:
        trades = trades.filter(wallet_id=wallet_id)
    if chain_id:
        trades = trades.filter(chain__chain_id=chain_id)
    if before_id:
        trades = trades.filter(pk__lt=before_id)
    return list(trades[:limit])


def trade_of(owner, trade_id: int) -> Trade:
    return get_object_or_404(Trade.objects.select_related("chain"), owner=owner, pk=trade_id)


def tokens_by_address(chain_pk: int, addresses) -> dict[str, Token]:
    return {t.address: t for t in Token.objects.filter(chain_id=chain_pk, address__in=list(addresses))}


def trade_summary(trade: Trade, tokens: dict[str, Token]) -> dict:
    token_in, token_out = tokens.get(trade.path[0]), tokens.get(trade.path[-1])
    dec_in = token_in.decimals if token_in else None
    dec_out = token_out.decimals if token_out else None
    return {
        "id": trade.pk,
        "state": trade.state,
        "wallet": trade.wallet_id,
        "chain_id": trade.chain.chain_id,
        "dex": trade.dex_id,
        "path": list(trade.path),
        "token_in": token_in.symbol if token_in else None,
        "token_out": token_out.symbol if token_out else None,
        "amount_in": units_text(trade.amount_in, dec_in),
        "slippage_bps": trade.slippage_bps,
        "min_amount_out": units_text(trade.min_amount_out, dec_out),
        "quoted_amount_out": units_text(trade.quoted_amount_out, dec_out),
        "amount_out_min": units_text(trade.amount_out_min, dec_out),
        "deadline": trade.deadline,
        "idempotency_key": trade.idempotency_key,
        "reason": trade.reason,
        "created_at": trade.created_at,
        "updated_at": trade.updated_at,
    }


def trade_list_view(trades: list[Trade]) -> list[dict]:
    by_chain: dict[int, set[str]] = {}
    for trade in trades:
        by_chain.setdefault(trade.chain_id, set()).update(trade.path)
    tokens: dict[str, Token] = {}
    if by_chain:
        query = Q()
        for chain_pk, addresses in by_chain.items():
            query |= Q(chain_id=chain_pk, address__in=list(addresses))
        tokens = {t.address: t for t in Token.objects.filter(query)}
    return [trade_summary(trade, tokens) for trade in trades]


def trade_detail_view(trade: Trade) -> dict:
    """The trade, its audit timeline and every transaction attempt (never raw signed bytes)."""
    out = trade_summary(trade, tokens_by_address(trade.chain_id, trade.path))
    out["events"] = [
        {
            "id": e.pk,
            "kind": e.kind,
            "from_state": e.from_state,
            "to_state": e.to_state,
            "data": e.data,
            "hash": e.hash,
            "created_at": e.created_at,
        }
        for e in TradeEvent.objects.filter(trade=trade).order_by("id")
    ]
    out["transactions"] = [
        {
            "sequence": tx.sequence,
            "kind": tx.kind,
            "attempt": tx.attempt,
            "replaces": tx.replaces_id,
            "nonce": tx.nonce,
            "to": tx.to,
            "gas": tx.gas,
            "max_fee_per_gas": str(int(tx.max_fee_per_gas)),
            "max_priority_fee_per_gas": str(int(tx.max_priority_fee_per_gas)),
            "tx_hash": tx.tx_hash,
            "status": tx.status,
            "broadcast_at": tx.broadcast_at,
            "receipt_block_number": tx.receipt_block_number,
            "receipt_block_hash": tx.receipt_block_hash,
        }
        for tx in ChainTransaction.objects.filter(trade=trade)
        .order_by("sequence", "attempt")
        .only(*TX_FIELDS)
    ]
    return out


def trade_events_after(owner, *, after_id: int, trade_id: int | None = None, limit: int = 200):
    """The owner's trade events after the cursor, and (added by apps.strategies) the owner's strategy
    events, merged in id order: both take their ids from the trade events' sequence, so one cursor
    serves both. A strategy event carries `strategy` and the kind `strategy.<kind>`."""
    events = TradeEvent.objects.filter(trade__owner=owner, pk__gt=after_id).select_related("trade")
    if trade_id:
        events = events.filter(trade_id=trade_id)
    trade_events = [
        {
            "id": e.pk,
            "trade": e.trade_id,
            "kind": e.kind,
            "from_state": e.from_state,
            "to_state": e.to_state,
            "state": e.trade.state,
            "created_at": e.created_at,
        }
        for e in events.order_by("id")[:limit]
    ]
    strategy_events = strategy_events_after(owner, after_id=after_id, trade_id=trade_id, limit=limit)
    return sorted(trade_events + strategy_events, key=lambda e: e["id"])[:limit]


def latest_event_id() -> int:
    latest = TradeEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
    return max(latest, latest_strategy_event_id())
