"""The Solidity ABI for the few types Custos builds and reads, Keccak-256 and EIP-55 addresses.

Two reasons for our own: the signer decodes every payload it is asked to sign, and a strict codec
for exactly these types is short enough to audit and several times faster than a general one; and
eth-abi and eth-utils import pydantic and more (~25 MiB in each process that imports them), which
the processes that never build a transaction (web, beat, watcher, market) must not pay for on a
1 GiB machine (docs/t3micro.md). tests/chain/test_abi.py holds this module to eth-abi and eth-utils.

Types: `uint256` and `address` (static, one 32-byte word each) and `address[]`, `uint256[]`,
`string`, `bytes`
(dynamic: an offset word in the head, then length and data in the tail, in argument order).
`encode` writes the canonical encoding. `decode` refuses a word or a tail outside the data, an
address word whose upper 12 bytes are not zero and a string that is not UTF-8; it does not refuse
trailing bytes or unusual offsets, so a caller that must see exactly one meaning (apps.chain.calldata)
re-encodes what it decoded and compares.
"""

from __future__ import annotations

import re
from functools import lru_cache

from Crypto.Hash import keccak as _keccak

WORD = 32
UINT256_MAX = 2**256 - 1
STATIC = frozenset({"uint256", "address"})
DYNAMIC = frozenset({"address[]", "uint256[]", "string", "bytes"})
_HEX40 = re.compile(r"(?:0[xX])?([0-9a-fA-F]{40})")


class AbiError(ValueError):
    """A value that cannot be encoded as its type, or data that does not decode as the types."""


def keccak256(data: bytes) -> bytes:
    return _keccak.new(digest_bits=256, data=bytes(data)).digest()


def selector(signature: str) -> bytes:
    """The 4-byte function selector of a canonical signature such as `approve(address,uint256)`."""
    return keccak256(signature.encode("ascii"))[:4]


# --- addresses (EIP-55) --------------------------------------------------------------------------


def _checksummed(lower_hex: str) -> str:
    digest = keccak256(lower_hex.encode("ascii")).hex()[:40]
    return "0x" + "".join(c.upper() if d in "89abcdef" else c for c, d in zip(lower_hex, digest, strict=True))


@lru_cache(maxsize=4096)  # the same few addresses (routers, tokens, wallets) come back all the time
def _checksum_of_hex(body: str) -> str:
    return _checksummed(body.lower())


def to_checksum_address(value: str | bytes) -> str:
    """EIP-55 form of a 20-byte address given as 40 hex digits (0x optional, any case) or bytes."""
    if isinstance(value, bytes | bytearray):
        if len(value) != 20:
            raise ValueError(f"an address is 20 bytes, not {len(value)}")
        return _checksum_of_hex(bytes(value).hex())
    if not isinstance(value, str):
        raise TypeError(f"an address is a hex string or 20 bytes, not {type(value).__name__}")
    match = _HEX40.fullmatch(value)
    if match is None:
        raise ValueError(f"not a 20-byte hex address: {value!r}")
    return _checksum_of_hex(match.group(1))


def is_checksum_address(value: object) -> bool:
    """True for a 0x-prefixed address in its EIP-55 form (mixed case matching its hash)."""
    if not isinstance(value, str) or not value.startswith("0x") or _HEX40.fullmatch(value) is None:
        return False
    return to_checksum_address(value) == value


@lru_cache(maxsize=4096)
def _address_bytes(value: str) -> bytes:
    match = _HEX40.fullmatch(value)
    if match is None:
        raise AbiError(f"address: not a 20-byte hex address: {value!r}")
    body = match.group(1)
    if body != body.lower() and body != body.upper() and _checksummed(body.lower())[2:] != body:
        raise AbiError(f"address: {value!r} is mixed-case but not its EIP-55 checksum")
    return bytes.fromhex(body)


# --- encoding ------------------------------------------------------------------------------------


def _uint_word(value: object, what: str = "uint256") -> bytes:
    if not isinstance(value, int) or isinstance(value, bool):
        raise AbiError(f"{what}: expected an integer, got {type(value).__name__}")
    if not 0 <= value <= UINT256_MAX:
        raise AbiError(f"{what}: {value} is outside 0 .. 2**256-1")
    return value.to_bytes(WORD, "big")


def _address_word(value: object) -> bytes:
    if isinstance(value, bytes | bytearray):
        if len(value) != 20:
            raise AbiError(f"address: 20 bytes expected, got {len(value)}")
        return bytes(12) + bytes(value)
    if not isinstance(value, str):
        raise AbiError(f"address: expected a hex string or 20 bytes, got {type(value).__name__}")
    return bytes(12) + _address_bytes(value)


def _padded(data: bytes) -> bytes:
    return len(data).to_bytes(WORD, "big") + data + bytes(-len(data) % WORD)


def _encode_static(kind: str, value: object) -> bytes:
    return _uint_word(value) if kind == "uint256" else _address_word(value)


def _encode_dynamic(kind: str, value: object) -> bytes:
    if kind in ("address[]", "uint256[]"):
        if not isinstance(value, list | tuple):
            raise AbiError(f"{kind}: expected a list, got {type(value).__name__}")
        word = _address_word if kind == "address[]" else _uint_word
        return len(value).to_bytes(WORD, "big") + b"".join(word(v) for v in value)
    if kind == "string":
        if not isinstance(value, str):
            raise AbiError(f"string: expected str, got {type(value).__name__}")
        return _padded(value.encode("utf-8"))
    if not isinstance(value, bytes | bytearray):
        raise AbiError(f"bytes: expected bytes, got {type(value).__name__}")
    return _padded(bytes(value))


def _check_types(types) -> None:
    for kind in types:
        if kind not in STATIC and kind not in DYNAMIC:
            raise AbiError(f"unsupported ABI type {kind!r}")


def encode(types, values) -> bytes:
    """The canonical ABI encoding of `values` as the tuple `types`."""
    _check_types(types)
    if len(types) != len(values):
        raise AbiError(f"{len(types)} types but {len(values)} values")
    heads, tails = [], []
    offset = WORD * len(types)
    for kind, value in zip(types, values, strict=True):
        if kind in DYNAMIC:
            tail = _encode_dynamic(kind, value)
            heads.append(offset.to_bytes(WORD, "big"))
            tails.append(tail)
            offset += len(tail)
        else:
            heads.append(_encode_static(kind, value))
    return b"".join(heads) + b"".join(tails)


# --- decoding ------------------------------------------------------------------------------------


def _word_at(data: bytes, at: int, what: str) -> bytes:
    if at < 0 or at + WORD > len(data):
        raise AbiError(f"{what}: word at byte {at} is outside the {len(data)}-byte data")
    return data[at : at + WORD]


def _decode_address(word: bytes) -> str:
    if any(word[:12]):
        raise AbiError("address: non-zero padding in the upper 12 bytes")
    return "0x" + word[12:].hex()


def _decode_dynamic(kind: str, data: bytes, offset: int) -> object:
    length = int.from_bytes(_word_at(data, offset, f"{kind} length"), "big")
    start = offset + WORD
    room = len(data) - start
    if kind in ("address[]", "uint256[]"):
        if length > room // WORD:
            raise AbiError(f"{kind}: {length} elements do not fit in the data")
        words = (data[start + WORD * i : start + WORD * (i + 1)] for i in range(length))
        if kind == "uint256[]":
            return tuple(int.from_bytes(w, "big") for w in words)
        return tuple(_decode_address(w) for w in words)
    if length > room:
        raise AbiError(f"{kind}: {length} bytes do not fit in the data")
    raw = data[start : start + length]
    if kind == "bytes":
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AbiError("string: not UTF-8") from exc


def decode(types, data: bytes) -> tuple:
    """`data` read as the tuple `types`: ints, lowercase 0x addresses, tuples of them, str, bytes."""
    _check_types(types)
    data = bytes(data)
    values = []
    for index, kind in enumerate(types):
        word = _word_at(data, WORD * index, f"argument {index} ({kind})")
        if kind == "uint256":
            values.append(int.from_bytes(word, "big"))
        elif kind == "address":
            values.append(_decode_address(word))
        else:
            values.append(_decode_dynamic(kind, data, int.from_bytes(word, "big")))
    return tuple(values)
