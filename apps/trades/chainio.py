"""The engine's chain reads and writes: quotes, simulation, balances, fees, nonces, broadcast, receipts.

Plain JSON-RPC through the chain's RPC pool (apps.chain.pool: rotation, failover, health), with
calldata built and results read by our own ABI codec (apps.chain.abi), and the reads of one step
sent as one batch. web3.py is not used here: its middleware, formatters and contract objects cost
~60 ms of CPU per simulated trade (17 HTTP requests, eight of them for the chain id), which made the
execution worker the pipeline's bottleneck (docs/critical-path.md, "Throughput").
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from apps.chain.abi import AbiError, decode, encode, keccak256, selector
from apps.chain.models import Chain
from apps.chain.pool import NoEndpointAvailable, RpcPool, pool_for
from apps.chain.rpc import RpcError

ERROR_STRING = bytes.fromhex("08c379a0")
PANIC = bytes.fromhex("4e487b71")
GET_AMOUNTS_OUT = selector("getAmountsOut(uint256,address[])")
ALLOWANCE = selector("allowance(address,address)")
BALANCE_OF = selector("balanceOf(address)")
GET_PAIR = selector("getPair(address,address)")
GET_RESERVES = selector("getReserves()")
ZERO_ADDRESS = "0x" + "00" * 20


class ChainUnavailable(Exception):
    """No endpoint of the chain answered: the step is retried later."""


class NonceNotYetValid(Exception):
    """The node refused a transaction whose nonce is above its next one (the lower one is still on
    its way); sending again shortly succeeds."""


class SimulationReverted(Exception):
    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


def _pool(chain: Chain) -> RpcPool:
    """The chain's pool (its endpoint list re-read at most every RPC_POOL_REFRESH_SECONDS)."""
    return pool_for(chain)


def _exchange(
    pool: RpcPool, calls: list[tuple[str, list]], *, url: str | None = None
) -> tuple[str, list[dict]]:
    try:
        return pool.exchange(calls, url=url)
    except NoEndpointAvailable as exc:
        raise ChainUnavailable(str(exc)) from exc


def _call(chain: Chain, method: str, params: list) -> Any:
    try:
        return _pool(chain).call(method, params)
    except (NoEndpointAvailable, RpcError) as exc:
        raise ChainUnavailable(str(exc)) from exc


def _eth_call(to: str, data: bytes, block: str, override: dict | None = None) -> tuple[str, list]:
    params: list = [{"to": to, "data": "0x" + data.hex()}, block]
    if override:
        params.append(override)
    return ("eth_call", params)


def _returned(answer: dict, types: list[str], what: str) -> tuple:
    """An eth_call's return data read as `types`; a node's error or undecodable data is the chain not
    answering as it should: the step is retried, never decided on."""
    if answer.get("error"):
        raise ChainUnavailable(f"{what}: {answer['error']}")
    if answer.get("result") == "0x" and types:
        # Empty return data to a call that returns values: no contract at that address. Asking
        # again gets the same answer (a DEX row pointing at nothing, for one).
        raise SimulationReverted(f"{what}: no contract answered at the address called")
    try:
        return decode(types, bytes.fromhex(str(answer.get("result") or "0x")[2:]))
    except (AbiError, ValueError) as exc:
        raise ChainUnavailable(f"{what}: {exc}") from exc


def endpoint_for(chain: Chain) -> str:
    """The pool's best endpoint now."""
    try:
        return _pool(chain).best_url()
    except NoEndpointAvailable as exc:
        raise ChainUnavailable(str(exc)) from exc


def block_number(chain: Chain) -> int:
    return int(_call(chain, "eth_blockNumber", []), 16)


def send_raw(chain: Chain, raw: bytes) -> str:
    """Broadcast the same signed bytes to every endpoint allowed to take them."""
    return _pool(chain).send_raw_transaction(raw)


def quorum_block_hashes(chain: Chain, numbers: list[int]) -> dict[int, str | None]:
    """The settlement gate's read for many heights: each one's block hash if a quorum of endpoints
    agree, each endpoint asked once for all of them."""
    return _pool(chain).quorum_block_hashes(numbers)


def _pending_nonce(pool: RpcPool, owner: str) -> int:
    try:
        return pool.pending_nonce(owner)
    except NoEndpointAvailable as exc:
        raise ChainUnavailable(str(exc)) from exc


@dataclass(frozen=True)
class Receipt:
    status: int
    block_number: int
    block_hash: str  # 0x-prefixed, lowercase
    gas_used: int


def receipts(chain: Chain, tx_hashes: list[str]) -> list[Receipt | None]:
    """The receipt of each transaction (None: not mined, or unknown to the endpoint), in one request."""
    if not tx_hashes:
        return []
    _url, answers = _exchange(_pool(chain), [("eth_getTransactionReceipt", [h]) for h in tx_hashes])
    found: list[Receipt | None] = []
    for answer in answers:
        raw = answer.get("result")
        if not isinstance(raw, dict) or raw.get("blockNumber") is None:
            found.append(None)
            continue
        found.append(
            Receipt(
                status=int(raw["status"], 16),
                block_number=int(raw["blockNumber"], 16),
                block_hash=str(raw["blockHash"]).lower(),
                gas_used=int(raw["gasUsed"], 16),
            )
        )
    return found


def receipt(chain: Chain, tx_hash: str) -> Receipt | None:
    return receipts(chain, [tx_hash])[0]


def replayed_revert_reason(
    chain: Chain, *, sender: str, to: str, data: str, value: int, gas: int, block_number: int
) -> str:
    """Why a mined transaction reverted, as far as replaying it tells: the same call on the state of
    its block's parent (exact where a block holds one transaction, as on an automining dev chain;
    elsewhere the block's earlier transactions are missing from that state). '' when the replay
    does not revert or the node does not answer: the verdict stands on the receipt either way."""
    call = {"from": sender, "to": to, "data": data, "value": hex(value), "gas": hex(gas)}
    try:
        _url, (answer,) = _exchange(_pool(chain), [("eth_call", [call, hex(block_number - 1)])])
    except ChainUnavailable:
        return ""
    error = answer.get("error")
    return _rpc_error_reason(error) if error and _is_revert(error) else ""


def decode_revert(data) -> str:
    raw = bytes.fromhex(data[2:]) if isinstance(data, str) and data.startswith("0x") else bytes(data or b"")
    if raw[:4] == ERROR_STRING:
        return decode(["string"], raw[4:])[0]
    if raw[:4] == PANIC:
        return f"panic 0x{decode(['uint256'], raw[4:])[0]:02x}"
    return "reverted without a reason" if not raw else f"reverted with data 0x{raw.hex()}"


def _revert_data(error: dict) -> str:
    """The revert data a JSON-RPC error carries (nodes nest it differently), '' when none."""
    data = error.get("data")
    if isinstance(data, dict):
        data = data.get("data")
    return data if isinstance(data, str) and data.startswith("0x") and len(data) > 2 else ""


def _rpc_error_reason(error: dict) -> str:
    if data := _revert_data(error):
        try:
            return decode_revert(data)
        except Exception:  # noqa: BLE001, S110 - undecodable data: the node's message says more
            pass
    return str(error.get("message", error))


def _is_revert(error: dict) -> bool:
    """A JSON-RPC error that is the contract's answer (it reverted), not the node failing to give one."""
    return (
        bool(_revert_data(error))
        or error.get("code") == 3
        or "revert" in str(error.get("message", "")).lower()
    )


def _failure(error: dict, what: str = "") -> Exception:
    """The exception for an item's JSON-RPC error: the contract's answer (a revert) ends the trade;
    anything else is the node failing to answer, which heals (the step is retried)."""
    if _is_revert(error):
        return SimulationReverted(f"{what}{_rpc_error_reason(error)}")
    return ChainUnavailable(f"{what}{error.get('message', error)}")


# --- simulation ----------------------------------------------------------------------------------

_lock = threading.Lock()
_allowance_slots: dict[tuple[str, str], int | None] = {}
_pairs: dict[tuple[int, str, str, str], str] = {}


def _allowance_key(owner: str, spender: str, slot: int) -> str:
    inner = keccak256(encode(["address", "uint256"], [owner, slot]))
    return "0x" + keccak256(encode(["address"], [spender]) + inner).hex()


def allowance_slot(pool: RpcPool, url: str, token: str) -> int | None:
    """The storage slot of an ERC-20's allowance mapping, found once per endpoint and token by
    probing every candidate slot with a state override in one batch."""
    key = (url, token.lower())
    if key in _allowance_slots:
        return _allowance_slots[key]
    owner, spender = "0x" + "a1" * 20, "0x" + "b2" * 20
    marker = 0xC057_05
    data = ALLOWANCE + encode(["address", "address"], [owner, spender])
    probes = [
        _eth_call(
            token,
            data,
            "latest",
            {
                token: {
                    "stateDiff": {
                        _allowance_key(owner, spender, slot): "0x" + marker.to_bytes(32, "big").hex()
                    }
                }
            },
        )
        for slot in range(12)
    ]
    _url, answers = _exchange(pool, probes, url=url)
    found = next(
        (slot for slot, answer in enumerate(answers) if int(answer.get("result") or "0x0", 16) == marker),
        None,
    )
    with _lock:
        _allowance_slots[key] = found
    return found


def allowance_override(pool: RpcPool, url: str, token: str, owner: str, spender: str, amount: int) -> dict:
    slot = allowance_slot(pool, url, token)
    if slot is None:
        return {}
    return {
        token: {"stateDiff": {_allowance_key(owner, spender, slot): "0x" + amount.to_bytes(32, "big").hex()}}
    }


def _pair_of(pool: RpcPool, url: str, factory: str, token_in: str, token_out: str) -> str:
    """The pair contract of two tokens: a pair, once created, never moves, so it is asked for once."""
    # Dev chains (and CREATE2 deployments) repeat addresses across chains: the chain is in the key.
    key = (pool.chain_id, factory.lower(), *sorted([token_in.lower(), token_out.lower()]))
    pair = _pairs.get(key)
    if pair is None:
        _url, (answer,) = _exchange(
            pool,
            [_eth_call(factory, GET_PAIR + encode(["address", "address"], [token_in, token_out]), "latest")],
            url=url,
        )
        if answer.get("error"):
            raise _failure(answer["error"], "quote: ")
        (pair,) = _returned(answer, ["address"], "getPair")
        if pair == ZERO_ADDRESS:
            raise SimulationReverted(f"quote: no pool for {token_in}/{token_out}")
        with _lock:
            _pairs[key] = pair
    return pair


@dataclass(frozen=True)
class Simulation:
    block: int
    amounts_out: int
    swap_gas: int
    approve_gas: int
    allowance: int
    reserves_in: int
    reserves_out: int
    timestamp: int


def simulate(
    *,
    chain: Chain,
    router: str,
    factory: str,
    sender: str,
    path: list[str],
    amount_in: int,
    build_swap,
    build_approve,
    value: int = 0,
) -> Simulation:
    """Quote, then eth_call and eth_estimateGas the approval (if needed) and the swap at one pinned
    block, all from one endpoint: the block, then the quote, allowance and reserves in one batch,
    then the calls and estimates in another. A swap paying `value` in native ETH needs no allowance."""
    pool = _pool(chain)
    url, (head,) = _exchange(pool, [("eth_getBlockByNumber", ["latest", False])])
    if not isinstance(head.get("result"), dict):
        raise ChainUnavailable(f"latest block: {head.get('error') or 'no block'}")
    number = int(head["result"]["number"], 16)
    timestamp = int(head["result"]["timestamp"], 16)
    pinned = hex(number)
    pair = _pair_of(pool, url, factory, path[0], path[-1])
    reads = [
        _eth_call(router, GET_AMOUNTS_OUT + encode(["uint256", "address[]"], [amount_in, path]), pinned),
        _eth_call(pair, GET_RESERVES, pinned),
    ]
    if not value:
        reads.append(_eth_call(path[0], ALLOWANCE + encode(["address", "address"], [sender, router]), pinned))
    _url, answers = _exchange(pool, reads, url=url)
    for answer in answers:
        if answer.get("error") and _is_revert(answer["error"]):
            raise _failure(answer["error"], "quote: ")
    (amounts,) = _returned(answers[0], ["uint256[]"], "getAmountsOut")
    if len(amounts) != len(path):
        raise ChainUnavailable(f"getAmountsOut: {len(amounts)} amounts for a path of {len(path)}")
    out = int(amounts[-1])
    r0, r1, _ts = _returned(answers[1], ["uint256", "uint256", "uint256"], "getReserves")
    token0 = min(path[0].lower(), path[-1].lower())
    reserves_in, reserves_out = (r0, r1) if path[0].lower() == token0 else (r1, r0)
    allowance = amount_in if value else _returned(answers[2], ["uint256"], "allowance")[0]

    checks: list[tuple[dict, dict]] = []  # (transaction, state override)
    override: dict = {}
    if allowance < amount_in:
        checks.append(({"from": sender, "to": path[0], "data": build_approve()}, {}))
        override = allowance_override(pool, url, path[0], sender, router, amount_in)
    swap_tx = {"from": sender, "to": router, "data": build_swap(out, timestamp)}
    if value:
        swap_tx["value"] = hex(value)
    checks.append((swap_tx, override))
    gas = _call_and_estimate(pool, url, checks, pinned)
    return Simulation(
        block=number,
        amounts_out=out,
        swap_gas=gas[-1],
        approve_gas=gas[0] if len(gas) > 1 else 0,
        allowance=allowance,
        reserves_in=reserves_in,
        reserves_out=reserves_out,
        timestamp=timestamp,
    )


def _call_and_estimate(pool: RpcPool, url: str, checks: list[tuple[dict, dict]], block: str) -> list[int]:
    """eth_call proves each call succeeds at the pinned block (with the approval's effect as a state
    override when the allowance is short); eth_estimateGas sizes it; all in one batch. Nodes that take
    no override in eth_estimateGas (Hardhat) get the call checked and a fixed, generous limit."""
    calls = []
    for tx, override in checks:
        params = [dict(tx), block] + ([override] if override else [])
        calls += [("eth_call", params), ("eth_estimateGas", params)]
    _url, answers = _exchange(pool, calls, url=url)
    gas = []
    for index, (_tx, override) in enumerate(checks):
        called, estimated = answers[2 * index], answers[2 * index + 1]
        if called.get("error"):
            raise _failure(called["error"])
        error = estimated.get("error")
        if error:
            if override and error.get("code") == -32602:
                gas.append(settings.SWAP_GAS_WITHOUT_ESTIMATE)
                continue
            raise _failure(error)
        gas.append(int(estimated["result"], 16))
    return gas


# --- validation ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WalletState:
    token_balance: int
    eth_balance: int
    pending_nonce: int
    base_fee: int
    priority_fee: int
    allowances: dict[str, int] = field(default_factory=dict)  # spender -> input token units


def wallet_state(*, chain: Chain, token: str, owner: str, spenders: Sequence[str] = ()) -> WalletState:
    """Fees, the input token's balance, its allowance to each of `spenders` and the gas balance in
    one batch, then the pending nonce."""
    pool = _pool(chain)
    spenders = list(dict.fromkeys(spenders))
    try:
        history, balance, eth_balance, *allowed = pool.batch(
            [
                ("eth_feeHistory", [4, "latest", [50]]),
                _eth_call(token, BALANCE_OF + encode(["address"], [owner]), "latest"),
                ("eth_getBalance", [owner, "latest"]),
                *(
                    _eth_call(token, ALLOWANCE + encode(["address", "address"], [owner, spender]), "latest")
                    for spender in spenders
                ),
            ]
        )
    except NoEndpointAvailable as exc:
        raise ChainUnavailable(str(exc)) from exc
    base = int(history["baseFeePerGas"][-1], 16)
    rewards = [int(r[0], 16) for r in history.get("reward") or [] if r]
    priority = max(sorted(rewards)[len(rewards) // 2] if rewards else 0, 10**9)
    return WalletState(
        token_balance=_returned({"result": balance}, ["uint256"], "balanceOf")[0],
        eth_balance=int(eth_balance, 16),
        # The highest any endpoint reports: a lagging one cannot hand out a used nonce.
        pending_nonce=_pending_nonce(pool, owner),
        base_fee=base,
        priority_fee=priority,
        allowances={
            spender: _returned({"result": raw}, ["uint256"], "allowance")[0]
            for spender, raw in zip(spenders, allowed, strict=True)
        },
    )
