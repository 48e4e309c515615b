"""A Uniswap V2 pool's time-weighted average price over a window, read through the chain's RPC pool
(apps.chain.pool: failover, health) with our own ABI codec, not web3: the tick runs in the execution
worker, which never imports web3 (docs/t3micro.md).

The same arithmetic as apps.market.onchain.twap_price (whose module docstring explains it): the
pair's price accumulator read at the head and at the last block at or before head - window, each
extended to its block's timestamp with that block's reserves, their difference over the elapsed
time. The window's first block is found by a search that asks for up to SEARCH_WIDTH headers per
request; the block found is remembered per (chain, pair, window) as the next search's lower bound,
since it only moves forward. A single block that pushes the pool's spot price moves this average by
that block's share of the window only.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from decimal import Decimal

from apps.chain.abi import AbiError, decode, selector
from apps.chain.models import Pair, Token
from apps.chain.pool import NoEndpointAvailable, RpcPool, pool_for
from apps.chain.rpc import RpcError
from apps.market.onchain import Q112, UINT32, UINT256, OnchainPriceError, spot_from_reserves

GET_RESERVES = "0x" + selector("getReserves()").hex()
PRICE0_CUMULATIVE = "0x" + selector("price0CumulativeLast()").hex()
PRICE1_CUMULATIVE = "0x" + selector("price1CumulativeLast()").hex()
SEARCH_WIDTH = 16
_starts: dict[tuple[int, str, int], int] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class PoolTwap:
    """Prices are whole units of `quote` per whole unit of `base`."""

    twap: Decimal
    spot: Decimal
    block: int
    timestamp: int
    start_block: int
    start_timestamp: int


@dataclass(frozen=True)
class _PairState:
    reserve0: int
    reserve1: int
    last: int
    cumulative: int
    has_code: bool


def _hex(number: int) -> str:
    return hex(number)


def _header(answer: dict) -> tuple[int, int]:
    block = answer.get("result")
    if answer.get("error") or not isinstance(block, dict):
        raise OnchainPriceError(f"block header unavailable: {answer.get('error') or 'no such block'}")
    return int(block["number"], 16), int(block["timestamp"], 16)


def _headers(pool: RpcPool, url: str, numbers: list[int]) -> list[int]:
    """The timestamps of blocks `numbers`, from the endpoint at `url`."""
    _url, answers = pool.exchange([("eth_getBlockByNumber", [_hex(n), False]) for n in numbers], url=url)
    return [_header(answer)[1] for answer in answers]


def _state_at(pool: RpcPool, url: str, pair: Pair, is0: bool, number: int) -> _PairState:
    tag = _hex(number)
    cumulative = PRICE0_CUMULATIVE if is0 else PRICE1_CUMULATIVE
    _url, (code, reserves, accumulated) = pool.exchange(
        [
            ("eth_getCode", [pair.address, tag]),
            ("eth_call", [{"to": pair.address, "data": GET_RESERVES}, tag]),
            ("eth_call", [{"to": pair.address, "data": cumulative}, tag]),
        ],
        url=url,
    )
    for answer in (code, reserves, accumulated):
        if answer.get("error"):
            raise OnchainPriceError(f"pair {pair.address} at block {number}: {answer['error']}")
    if str(code.get("result") or "0x") in ("0x", "0x0"):
        return _PairState(0, 0, 0, 0, has_code=False)
    try:
        r0, r1, last = decode(["uint256", "uint256", "uint256"], bytes.fromhex(reserves["result"][2:]))
        (value,) = decode(["uint256"], bytes.fromhex(accumulated["result"][2:]))
    except (AbiError, ValueError, TypeError) as exc:
        raise OnchainPriceError(f"pair {pair.address} at block {number}: unreadable answer ({exc})") from exc
    return _PairState(r0, r1, last, value, has_code=True)


def _extended(state: _PairState, is0: bool, timestamp: int) -> int:
    """The accumulator as the pair would show it at `timestamp` (UQ112x112 arithmetic, as the pair's)."""
    elapsed = (timestamp - state.last) % UINT32
    if not elapsed:
        return state.cumulative
    mean = (state.reserve1 * Q112) // state.reserve0 if is0 else (state.reserve0 * Q112) // state.reserve1
    return (state.cumulative + mean * elapsed) % UINT256


def _block_at_or_before(pool: RpcPool, url: str, target: int, low: int, high: int) -> tuple[int, int]:
    """The last block at or before `target` (a timestamp) in [low, high]: SEARCH_WIDTH headers per
    request. `low` is a guess; when its block is already later than the target the search starts at
    the chain's first block."""
    (low_time,) = _headers(pool, url, [low])
    if low_time > target:
        if low == 0:
            raise OnchainPriceError("the window starts before the chain's first block")
        return _block_at_or_before(pool, url, target, 0, high)
    while low < high:
        span = high - low
        step = max(1, span // (SEARCH_WIDTH + 1))
        probes = list(range(low + step, high + 1, step))[:SEARCH_WIDTH]
        if span <= SEARCH_WIDTH:
            probes = list(range(low + 1, high + 1))
        times = _headers(pool, url, probes)
        below = [(n, t) for n, t in zip(probes, times, strict=True) if t <= target]
        above = [n for n, t in zip(probes, times, strict=True) if t > target]
        if below:
            low, low_time = max(below)
        if above:
            high = min(above) - 1
        elif not below:  # cannot happen: every probe is either side
            break
    return low, low_time


def pool_twap(*, pair: Pair, base: Token, window_seconds: int) -> PoolTwap:
    """The pool's TWAP of `base` over at least the last `window_seconds` up to the head, and its spot
    at the head (shown, never judged on). OnchainPriceError when there is no trustworthy answer."""
    if base.pk == pair.token0_id:
        is0, quote = True, pair.token1
    elif base.pk == pair.token1_id:
        is0, quote = False, pair.token0
    else:
        raise OnchainPriceError(f"{base.symbol} is not in pair {pair.address}")
    chain = pair.dex.chain
    pool = pool_for(chain)
    try:
        url, (head,) = pool.exchange([("eth_getBlockByNumber", ["latest", False])])
        end_number, end_time = _header(head)
        key = (chain.chain_id, pair.address.lower(), int(window_seconds))
        with _lock:
            remembered = _starts.get(key)
        # Block timestamps rise by at least a second a block on most chains: the block `window`
        # blocks back is then at or before the window's start (checked, not assumed).
        guess = remembered if remembered is not None and remembered <= end_number else None
        low = guess if guess is not None else max(0, end_number - int(window_seconds))
        start_number, start_time = _block_at_or_before(
            pool, url, end_time - int(window_seconds), low, end_number
        )
        with _lock:
            _starts[key] = start_number
        end = _state_at(pool, url, pair, is0, end_number)
        start = _state_at(pool, url, pair, is0, start_number)
    except (NoEndpointAvailable, RpcError) as exc:
        raise OnchainPriceError(f"chain unavailable: {exc}") from exc
    if not start.has_code:
        raise OnchainPriceError(f"pair {pair.address} has no code at block {start_number}: window too long")
    if 0 in (start.reserve0, start.reserve1, end.reserve0, end.reserve1):
        raise OnchainPriceError(f"pair {pair.address} was empty within the window")
    if end_time <= start_time:
        raise OnchainPriceError("the window holds no elapsed time")
    c_end = _extended(end, is0, end_time)
    c_start = _extended(start, is0, start_time)
    scale = Decimal(10) ** (base.decimals - quote.decimals)
    twap = Decimal((c_end - c_start) % UINT256) / Decimal(end_time - start_time) / Decimal(Q112) * scale
    if twap <= 0:
        raise OnchainPriceError("the TWAP is zero")
    r_base, r_quote = (end.reserve0, end.reserve1) if is0 else (end.reserve1, end.reserve0)
    spot = spot_from_reserves(r_base, r_quote, base, quote)
    return PoolTwap(twap, spot, end_number, end_time, start_number, start_time)
