"""The engine's chain reads and writes: quotes, simulation, balances, fees, nonces, broadcast, receipts.

One Web3 instance per endpoint URL per process (its chain id cached), so a built transaction costs
no extra round trips. The RPC pool with health and quorum replaces `endpoint_for` in the chain-truth
work; everything here goes through that one function.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from django.conf import settings

from apps.chain.abi import decode, encode, keccak256, to_checksum_address
from apps.chain.models import Chain
from apps.chain.pool import NoEndpointAvailable, pool_for

if TYPE_CHECKING:
    from web3 import Web3

# web3 (with eth-account and aiohttp, ~55 MiB per process) is imported where a chain call is made,
# not here: the API and beat import this module through the transaction manager and never call
# the chain, and on a 1 GiB machine every process pays for what it imports (docs/t3micro.md).

ERC20_ABI = [
    {
        "name": "balanceOf",
        "type": "function",
        "stateMutability": "view",
        "inputs": [{"name": "a", "type": "address"}],
        "outputs": [{"name": "", "type": "uint256"}],
    },
    {
        "name": "allowance",
        "type": "function",
        "stateMutability": "view",
        "inputs": [{"name": "o", "type": "address"}, {"name": "s", "type": "address"}],
        "outputs": [{"name": "", "type": "uint256"}],
    },
]
ERROR_STRING = bytes.fromhex("08c379a0")
PANIC = bytes.fromhex("4e487b71")


class ChainUnavailable(Exception):
    """No endpoint of the chain answered: the step is retried later."""


class NonceNotYetValid(Exception):
    """The node refused a transaction whose nonce is above its next one (the lower one is still on
    its way); sending again shortly succeeds."""


class SimulationReverted(Exception):
    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


def endpoint_for(chain: Chain) -> str:
    """The pool's best endpoint now: for reads that must all come from one node (a pinned simulation)."""
    try:
        return pool_for(chain).best_url()
    except NoEndpointAvailable as exc:
        raise ChainUnavailable(str(exc)) from exc


@cache
def _web3(url: str) -> Web3:
    from web3 import Web3

    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": settings.RPC_TIMEOUT_SECONDS}))
    return w3


def web3_for(chain: Chain) -> Web3:
    """A Web3 whose every request goes through the chain's RPC pool (rotation and failover)."""
    from web3 import Web3

    from apps.chain.provider import PoolProvider

    pool = pool_for(chain)
    w3 = _pool_web3.get(chain.chain_id)
    if w3 is None or w3.provider.pool is not pool:
        w3 = _pool_web3[chain.chain_id] = Web3(PoolProvider(pool))
    return w3


_pool_web3: dict[int, Web3] = {}


def send_raw(chain: Chain, raw: bytes) -> str:
    """Broadcast the same signed bytes to every endpoint allowed to take them."""
    return pool_for(chain).send_raw_transaction(raw)


def quorum_block_hash(chain: Chain, number: int) -> str | None:
    """The settlement gate's read: the block hash at `number` if a quorum of endpoints agree."""
    return pool_for(chain).quorum_block_hash(number)


def pending_nonce(chain: Chain, owner: str) -> int:
    try:
        return pool_for(chain).pending_nonce(owner)
    except NoEndpointAvailable as exc:
        raise ChainUnavailable(str(exc)) from exc


def router_contract(w3: Web3, router: str):
    from apps.chain import devchain

    return w3.eth.contract(address=router, abi=devchain.load_artifact("UniswapV2Router02")["abi"])


def erc20(w3: Web3, token: str):
    return w3.eth.contract(address=token, abi=ERC20_ABI)


def decode_revert(data) -> str:
    raw = bytes.fromhex(data[2:]) if isinstance(data, str) and data.startswith("0x") else bytes(data or b"")
    if raw[:4] == ERROR_STRING:
        return decode(["string"], raw[4:])[0]
    if raw[:4] == PANIC:
        return f"panic 0x{decode(['uint256'], raw[4:])[0]:02x}"
    return "reverted without a reason" if not raw else f"reverted with data 0x{raw.hex()}"


def revert_reason(exc: Exception) -> str:
    message = getattr(exc, "message", None) or str(exc)
    data = getattr(exc, "data", None)
    if isinstance(data, str) and data.startswith("0x") and len(data) > 2:
        try:
            return decode_revert(data)
        except Exception:  # noqa: BLE001 - fall back to the node's message
            return message
    return message


@cache
def allowance_slot(url: str, token: str) -> int | None:
    """The storage slot of an ERC-20's allowance mapping, found by probing with state overrides."""
    w3 = _web3(url)
    owner, spender = "0x" + "a1" * 20, "0x" + "b2" * 20
    marker = 0xC057_05
    data = "0xdd62ed3e" + encode(["address", "address"], [owner, spender]).hex()
    for slot in range(12):
        inner = keccak256(encode(["address", "uint256"], [owner, slot]))
        key = "0x" + keccak256(encode(["address"], [spender]) + inner).hex()
        override = {token: {"stateDiff": {key: "0x" + marker.to_bytes(32, "big").hex()}}}
        result = w3.provider.make_request("eth_call", [{"to": token, "data": data}, "latest", override])
        if int(result.get("result", "0x0") or "0x0", 16) == marker:
            return slot
    return None


def allowance_override(url: str, token: str, owner: str, spender: str, amount: int) -> dict:
    slot = allowance_slot(url, token)
    if slot is None:
        return {}
    inner = keccak256(encode(["address", "uint256"], [owner, slot]))
    key = "0x" + keccak256(encode(["address"], [spender]) + inner).hex()
    return {token: {"stateDiff": {key: "0x" + amount.to_bytes(32, "big").hex()}}}


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
    block. A swap paying `value` in native ETH needs no allowance."""
    from web3.exceptions import ContractLogicError, Web3RPCError

    url = endpoint_for(chain)
    w3 = _web3(url)
    try:
        block = w3.eth.get_block("latest")
        number = block["number"]
        router_c = router_contract(w3, router)
        amounts = router_c.functions.getAmountsOut(amount_in, path).call(block_identifier=number)
        out = int(amounts[-1])
        allowance = (
            amount_in
            if value
            else erc20(w3, path[0]).functions.allowance(sender, router).call(block_identifier=number)
        )
        reserves_in, reserves_out = pool_reserves(w3, factory, path[0], path[-1], number)
    except ContractLogicError as exc:
        raise SimulationReverted(f"quote: {revert_reason(exc)}") from exc
    except (Web3RPCError, OSError) as exc:
        raise ChainUnavailable(str(exc)) from exc
    approve_gas = 0
    override = {}
    if allowance < amount_in:
        approve_tx = {"from": sender, "to": path[0], "data": build_approve()}
        approve_gas = _estimate(w3, approve_tx, number, {})
        override = allowance_override(url, path[0], sender, router, amount_in)
    swap_tx = {"from": sender, "to": router, "data": build_swap(out, int(block["timestamp"]))}
    if value:
        swap_tx["value"] = hex(value)
    swap_gas = _estimate(w3, swap_tx, number, override)
    return Simulation(
        block=number,
        amounts_out=out,
        swap_gas=swap_gas,
        approve_gas=approve_gas,
        allowance=allowance,
        reserves_in=reserves_in,
        reserves_out=reserves_out,
        timestamp=int(block["timestamp"]),
    )


def _estimate(w3: Web3, tx: dict, block: int, override: dict) -> int:
    """eth_call proves the call succeeds at the pinned block (with the approval's effect as a state
    override when the allowance is short); eth_estimateGas sizes it. Nodes that take no override in
    eth_estimateGas (Hardhat) get the call checked and a fixed, generous limit instead."""
    params = [dict(tx), hex(block)] + ([override] if override else [])
    result = w3.provider.make_request("eth_call", params)
    if "error" in result:
        raise SimulationReverted(_rpc_error_reason(result["error"]))
    result = w3.provider.make_request("eth_estimateGas", params)
    if "error" in result:
        if override and result["error"].get("code") == -32602:
            return settings.SWAP_GAS_WITHOUT_ESTIMATE
        raise SimulationReverted(_rpc_error_reason(result["error"]))
    return int(result["result"], 16)


def _rpc_error_reason(error: dict) -> str:
    data = error.get("data")
    if isinstance(data, dict):
        data = data.get("data")
    if isinstance(data, str) and data.startswith("0x") and len(data) > 2:
        try:
            return decode_revert(data)
        except Exception:  # noqa: BLE001, S110 - undecodable data: the node's message says more
            pass
    return str(error.get("message", error))


def pool_reserves(w3: Web3, factory: str, token_in: str, token_out: str, block) -> tuple[int, int]:
    from apps.chain import devchain

    pair_abi = devchain.load_artifact("UniswapV2Pair")["abi"]
    factory_abi = devchain.load_artifact("UniswapV2Factory")["abi"]
    pair = (
        w3.eth.contract(address=factory, abi=factory_abi)
        .functions.getPair(token_in, token_out)
        .call(block_identifier=block)
    )
    r0, r1, _ = (
        w3.eth.contract(address=pair, abi=pair_abi).functions.getReserves().call(block_identifier=block)
    )
    token0 = sorted([token_in, token_out], key=lambda a: int(a, 16))[0]
    return (r0, r1) if to_checksum_address(token_in) == to_checksum_address(token0) else (r1, r0)


@dataclass(frozen=True)
class WalletState:
    token_balance: int
    eth_balance: int
    pending_nonce: int
    base_fee: int
    priority_fee: int


def wallet_state(*, chain: Chain, token: str, owner: str) -> WalletState:
    from web3.exceptions import Web3RPCError

    w3 = web3_for(chain)
    try:
        history = w3.eth.fee_history(4, "latest", [50])
        base = int(history["baseFeePerGas"][-1])
        rewards = [int(r[0]) for r in history.get("reward", []) if r]
        priority = max(sorted(rewards)[len(rewards) // 2] if rewards else 0, 10**9)
        return WalletState(
            token_balance=erc20(w3, token).functions.balanceOf(owner).call(),
            eth_balance=w3.eth.get_balance(owner),
            # The highest any endpoint reports: a lagging one cannot hand out a used nonce.
            pending_nonce=pending_nonce(chain, owner),
            base_fee=base,
            priority_fee=priority,
        )
    except (Web3RPCError, OSError) as exc:
        raise ChainUnavailable(str(exc)) from exc
