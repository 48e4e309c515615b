"""On-chain prices from a Uniswap V2 pair, through the chain's RPC pool: spot from the reserves and a
time-weighted average (TWAP) from the pair's cumulative prices.

Uniswap V2 (v2-core UniswapV2Pair._update) adds `reserve1 / reserve0` as a UQ112x112 fixed-point
number times the seconds elapsed to `price0CumulativeLast` (and the inverse to price1) on the first
interaction of each block, so the mean price between two moments is the difference of the
cumulatives over the difference of the timestamps. A cumulative that was not updated in the read
block is extended to the block's timestamp with the current reserves (the "counterfactual" the
Uniswap oracle examples use). The window's start is read at a past block: that needs a node that
keeps state that far back (Hardhat does; on mainnet an archive node or a window within the node's
state history).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from apps.chain.models import Chain, Pair, Token
from apps.chain.pool import pool_for

if TYPE_CHECKING:
    from web3 import Web3

# web3 is imported when a price is read, not with this module: every worker imports every task
# module, and only the market worker reads prices (docs/t3micro.md).

Q112 = 2**112
UINT256 = 2**256
UINT32 = 2**32

PAIR_ABI = [
    {
        "name": "getReserves",
        "type": "function",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [
            {"name": "reserve0", "type": "uint112"},
            {"name": "reserve1", "type": "uint112"},
            {"name": "blockTimestampLast", "type": "uint32"},
        ],
    },
    {
        "name": "price0CumulativeLast",
        "type": "function",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "uint256"}],
    },
    {
        "name": "price1CumulativeLast",
        "type": "function",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "uint256"}],
    },
]


def web3_errors() -> type[Exception]:
    from web3.exceptions import Web3Exception

    return Web3Exception


def web3_for(chain: Chain) -> Web3:
    """Every read through the chain's RPC pool (rotation, health, failover)."""
    from web3 import Web3

    from apps.chain.provider import PoolProvider

    return Web3(PoolProvider(pool_for(chain)))


class OnchainPriceError(Exception):
    """No trustworthy on-chain price: an empty pool, a pair younger than the window, a wrong token."""


@dataclass(frozen=True)
class OnchainPrice:
    """`price` is whole units of `quote` per whole unit of `base`."""

    base: Token
    quote: Token
    price: Decimal
    block: int
    timestamp: int
    start_block: int | None = None
    start_timestamp: int | None = None


def _sides(pair: Pair, base: Token) -> tuple[bool, Token]:
    """(base is token0, the quote token)."""
    if base.pk == pair.token0_id:
        return True, pair.token1
    if base.pk == pair.token1_id:
        return False, pair.token0
    raise OnchainPriceError(f"{base.symbol} is not in pair {pair.address}")


def _scale(base: Token, quote: Token) -> Decimal:
    return Decimal(10) ** (base.decimals - quote.decimals)


def _contract(w3: Web3, pair: Pair):
    return w3.eth.contract(address=w3.to_checksum_address(pair.address), abi=PAIR_ABI)


def spot_from_reserves(reserve_base: int, reserve_quote: int, base: Token, quote: Token) -> Decimal:
    if reserve_base <= 0 or reserve_quote <= 0:
        raise OnchainPriceError("the pool is empty")
    return Decimal(reserve_quote) / Decimal(reserve_base) * _scale(base, quote)


def spot_price(*, pair: Pair, base: Token, block: int | str = "latest") -> OnchainPrice:
    """The pool's marginal price of `base` at `block` (before fees and price impact)."""
    w3 = web3_for(pair.dex.chain)
    is0, quote = _sides(pair, base)
    header = w3.eth.get_block(block)
    number = int(header["number"])
    r0, r1, _ = _contract(w3, pair).functions.getReserves().call(block_identifier=number)
    r_base, r_quote = (r0, r1) if is0 else (r1, r0)
    price = spot_from_reserves(r_base, r_quote, base, quote)
    return OnchainPrice(base, quote, price, number, int(header["timestamp"]))


def _cumulative(w3: Web3, pair: Pair, is0: bool, number: int, timestamp: int) -> int:
    contract = _contract(w3, pair)
    if len(w3.eth.get_code(contract.address, block_identifier=number)) == 0:
        raise OnchainPriceError(f"pair {pair.address} has no code at block {number}: window too long")
    r0, r1, last = contract.functions.getReserves().call(block_identifier=number)
    if r0 == 0 or r1 == 0:
        raise OnchainPriceError(f"pair {pair.address} was empty at block {number}")
    fn = contract.functions.price0CumulativeLast if is0 else contract.functions.price1CumulativeLast
    cumulative = int(fn().call(block_identifier=number))
    elapsed = (timestamp - last) % UINT32
    if elapsed:
        # Same integer arithmetic as UQ112x112.encode(r).uqdiv(r'), so the result matches the pair's.
        mean = (r1 * Q112) // r0 if is0 else (r0 * Q112) // r1
        cumulative = (cumulative + mean * elapsed) % UINT256
    return cumulative


def _block_at_or_before(w3: Web3, timestamp: int, high: int) -> dict:
    """The last block whose timestamp is <= `timestamp` (binary search: ~log2(height) reads)."""
    low = 0
    if int(w3.eth.get_block(low)["timestamp"]) > timestamp:
        raise OnchainPriceError("the window starts before the chain's first block")
    while low < high:
        middle = (low + high + 1) // 2
        if int(w3.eth.get_block(middle)["timestamp"]) <= timestamp:
            low = middle
        else:
            high = middle - 1
    return w3.eth.get_block(low)


def twap_price(*, pair: Pair, base: Token, window_seconds: int, block: int | str = "latest") -> OnchainPrice:
    """The time-weighted mean price of `base` over (at least) the last `window_seconds` up to `block`."""
    if window_seconds <= 0:
        raise OnchainPriceError("the TWAP window must be positive")
    w3 = web3_for(pair.dex.chain)
    is0, quote = _sides(pair, base)
    end = w3.eth.get_block(block)
    end_number, end_time = int(end["number"]), int(end["timestamp"])
    start = _block_at_or_before(w3, end_time - window_seconds, end_number)
    start_number, start_time = int(start["number"]), int(start["timestamp"])
    if end_time <= start_time:
        raise OnchainPriceError("the window holds no elapsed time")
    c_end = _cumulative(w3, pair, is0, end_number, end_time)
    c_start = _cumulative(w3, pair, is0, start_number, start_time)
    raw = Decimal((c_end - c_start) % UINT256) / Decimal(end_time - start_time) / Decimal(Q112)
    price = raw * _scale(base, quote)
    if price <= 0:
        raise OnchainPriceError("the TWAP is zero")
    return OnchainPrice(base, quote, price, end_number, end_time, start_number, start_time)
