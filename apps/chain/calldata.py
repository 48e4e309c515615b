"""Build and decode the calldata Custos signs: Uniswap V2 router swaps and ERC-20 `approve`.

The signer decodes every payload it is asked to sign with this module and refuses anything it does
not recognise, so only these shapes can ever be signed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from apps.chain.abi import AbiError, decode, encode, selector, to_checksum_address


@dataclass(frozen=True)
class Function:
    name: str
    signature: str
    args: tuple[str, ...]

    @cached_property  # a frozen dataclass still has a __dict__ for it
    def selector(self) -> str:
        return "0x" + selector(self.signature).hex()


SWAP_EXACT_TOKENS_FOR_TOKENS = Function(
    "swapExactTokensForTokens",
    "swapExactTokensForTokens(uint256,uint256,address[],address,uint256)",
    ("uint256", "uint256", "address[]", "address", "uint256"),
)
SWAP_EXACT_ETH_FOR_TOKENS = Function(
    "swapExactETHForTokens",
    "swapExactETHForTokens(uint256,address[],address,uint256)",
    ("uint256", "address[]", "address", "uint256"),
)
SWAP_EXACT_TOKENS_FOR_ETH = Function(
    "swapExactTokensForETH",
    "swapExactTokensForETH(uint256,uint256,address[],address,uint256)",
    ("uint256", "uint256", "address[]", "address", "uint256"),
)
APPROVE = Function("approve", "approve(address,uint256)", ("address", "uint256"))

SWAPS = {
    f.selector: f
    for f in (SWAP_EXACT_TOKENS_FOR_TOKENS, SWAP_EXACT_ETH_FOR_TOKENS, SWAP_EXACT_TOKENS_FOR_ETH)
}
BY_SELECTOR = {**SWAPS, APPROVE.selector: APPROVE}


class CalldataError(ValueError):
    """The payload is not one of the calls Custos signs, or does not decode."""


@dataclass(frozen=True)
class Swap:
    function: Function
    amount_in: int  # for swapExactETHForTokens: the transaction's value
    amount_out_min: int
    path: tuple[str, ...]
    recipient: str
    deadline: int


@dataclass(frozen=True)
class Approve:
    spender: str
    amount: int


def encode_call(function: Function, *values) -> str:
    return function.selector + encode(list(function.args), list(values)).hex()


def decode_call(data: str, *, value: int = 0) -> Swap | Approve:
    raw = bytes.fromhex(data[2:] if data.startswith("0x") else data)
    if len(raw) < 4:
        raise CalldataError("calldata shorter than a selector")
    selector = "0x" + raw[:4].hex()
    function = BY_SELECTOR.get(selector)
    if function is None:
        raise CalldataError(f"unknown function selector {selector}")
    try:
        args = decode(list(function.args), raw[4:])
    except AbiError as exc:
        raise CalldataError(f"{function.name}: arguments do not decode ({type(exc).__name__})") from exc
    if encode(list(function.args), list(args)) != raw[4:]:
        # Trailing or non-canonical bytes could hide a second meaning: refuse them.
        raise CalldataError(f"{function.name}: non-canonical encoding")
    if function is APPROVE:
        return Approve(spender=to_checksum_address(args[0]), amount=int(args[1]))
    if function is SWAP_EXACT_ETH_FOR_TOKENS:
        amount_out_min, path, recipient, deadline = args
        amount_in = value
    else:
        amount_in, amount_out_min, path, recipient, deadline = args
        if value:
            raise CalldataError(f"{function.name} carries ETH value {value}")
    return Swap(
        function=function,
        amount_in=int(amount_in),
        amount_out_min=int(amount_out_min),
        path=tuple(to_checksum_address(a) for a in path),
        recipient=to_checksum_address(recipient),
        deadline=int(deadline),
    )
