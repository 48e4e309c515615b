"""Pure builders of what a trade sends: the swap and approve calldata, the minimum out, gas limits with
their margin, and replacement attempts (a fee bump or a cancel) at a transaction's nonce."""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

from django.conf import settings

from apps.chain.calldata import (
    APPROVE,
    SWAP_EXACT_ETH_FOR_TOKENS,
    SWAP_EXACT_TOKENS_FOR_ETH,
    SWAP_EXACT_TOKENS_FOR_TOKENS,
    encode_call,
)
from apps.chain.txcodec import payload_hash
from apps.trades.models import ChainTransaction, Trade


def min_out_of(trade: Trade, quoted: int) -> int:
    if trade.min_amount_out is not None:
        return int(trade.min_amount_out)
    floor = Decimal(quoted) * (10_000 - trade.slippage_bps) / 10_000
    return int(floor.to_integral_value(rounding=ROUND_CEILING))


def swap_calldata(trade: Trade, amount_out_min: int) -> str:
    """The router call for the trade: ETH in carries the amount as the transaction's value."""
    path, to, deadline = list(trade.path), trade.wallet.address, int(trade.deadline.timestamp())
    if trade.native == Trade.Native.IN:
        return encode_call(SWAP_EXACT_ETH_FOR_TOKENS, amount_out_min, path, to, deadline)
    function = SWAP_EXACT_TOKENS_FOR_ETH if trade.native == Trade.Native.OUT else SWAP_EXACT_TOKENS_FOR_TOKENS
    return encode_call(function, int(trade.amount_in), amount_out_min, path, to, deadline)


def swap_value(trade: Trade) -> int:
    return int(trade.amount_in) if trade.native == Trade.Native.IN else 0


def approve_calldata(trade: Trade) -> str:
    return encode_call(APPROVE, trade.dex.router, int(trade.amount_in))


def with_margin(gas: int, kind: str = "") -> int:
    limit = gas * (100 + settings.GAS_LIMIT_MARGIN_PERCENT) // 100
    if kind == ChainTransaction.Kind.SWAP:
        # Estimated at the pinned block, mined in a later one: the pair then also updates its price
        # accumulators (first writes cost 20,000 gas each) that the estimate did not include, and an
        # out-of-gas inside the pair surfaces as a revert without a reason.
        limit += settings.SWAP_GAS_HEADROOM
    return limit


def replacement_of(
    old: ChainTransaction, *, attempt: int, cancel: bool, fee: int | None = None, tip: int | None = None
) -> ChainTransaction:
    """The next attempt at `old`'s nonce, replacing it: the same call, or (`cancel`) a zero-value
    self-transfer; at `fee`/`tip`, by default `old`'s (unsaved, its payload hash set)."""
    tx = ChainTransaction(
        trade=old.trade,
        sequence=old.sequence,
        attempt=attempt,
        replaces=old,
        kind=ChainTransaction.Kind.CANCEL if cancel else old.kind,
        chain_id=old.chain_id,
        sender=old.sender,
        nonce=old.nonce,
        to=old.sender if cancel else old.to,
        value=0 if cancel else old.value,
        data="0x" if cancel else old.data,
        gas=21_000 if cancel else old.gas,
        max_fee_per_gas=old.max_fee_per_gas if fee is None else fee,
        max_priority_fee_per_gas=old.max_priority_fee_per_gas if tip is None else tip,
    )
    tx.unsigned_hash = payload_hash(tx.as_unsigned_dict())
    return tx


def bumped(value: int, cap: int | None) -> int:
    bumped = (value * (10_000 + settings.REPLACEMENT_BUMP_BPS) + 9_999) // 10_000
    return min(bumped, cap) if cap is not None else bumped
