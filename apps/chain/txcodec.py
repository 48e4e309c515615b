"""EIP-1559 (type 2) transactions: the unsigned payload's signing hash, which identifies a payload
everywhere in Custos, and the signed encoding that is broadcast.

    signing hash = keccak256(0x02 || rlp([chainId, nonce, maxPriorityFeePerGas, maxFeePerGas, gas,
                                           to, value, data, accessList]))
    signed       = 0x02 || rlp([...the same nine..., yParity, r, s])

(EIP-1559 and EIP-2718.) Written out here rather than through eth-account's TypedTransaction
because that one re-validates and re-formats every field through several layers on each call, which
was most of the signer's time per signature; tests/chain/test_txcodec.py checks these bytes against
eth-account's for generated transactions. A `to` address is required: Custos never creates contracts.
"""

from __future__ import annotations

import re
from functools import lru_cache

from apps.chain.abi import keccak256, to_checksum_address

TYPE = 2
UINT256 = 2**256
UINT_FIELDS = ("chainId", "nonce", "maxPriorityFeePerGas", "maxFeePerGas", "gas", "value")
FIELDS = frozenset(("type", *UINT_FIELDS, "to", "data", "accessList"))
ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


class TxCodecError(ValueError):
    """The transaction dict is not an EIP-1559 transaction Custos can sign."""


def _rlp_length(length: int, offset: int) -> bytes:
    if length < 56:
        return bytes([offset + length])
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([offset + 55 + len(encoded)]) + encoded


def _rlp_bytes(value: bytes) -> bytes:
    if len(value) == 1 and value[0] < 0x80:
        return value
    return _rlp_length(len(value), 0x80) + value


def _rlp_uint(value: int) -> bytes:
    return _rlp_bytes(value.to_bytes((value.bit_length() + 7) // 8, "big"))  # 0 is the empty string


def _rlp_list(items: list[bytes]) -> bytes:
    body = b"".join(items)
    return _rlp_length(len(body), 0xC0) + body


@lru_cache(maxsize=4096)
def _address_bytes(address: str, name: str = "to") -> bytes:
    if not isinstance(address, str) or not ADDRESS.fullmatch(address):
        raise TxCodecError(f"`{name}` must be a 0x-prefixed 20-byte address, not {address!r}")
    if to_checksum_address(address) != address:
        raise TxCodecError(f"`{name}` {address} is not a checksummed address")
    return bytes.fromhex(address[2:])


def _access_list(entries) -> bytes:
    """[[address, [storage key, ...]], ...] from [{"address": ..., "storageKeys": [...]}, ...]."""
    if not isinstance(entries, list | tuple):
        raise TxCodecError("`accessList` must be a list")
    items = []
    for entry in entries:
        if not isinstance(entry, dict) or set(entry) != {"address", "storageKeys"}:
            raise TxCodecError("an `accessList` entry is {address, storageKeys}")
        keys = []
        for key in entry["storageKeys"]:
            raw = _data(key) if isinstance(key, str | bytes | bytearray) else b""
            if len(raw) != 32:
                raise TxCodecError(f"storage key {key!r} is not 32 bytes")
            keys.append(_rlp_bytes(raw))
        address = _address_bytes(entry["address"], "accessList address")
        items.append(_rlp_list([_rlp_bytes(address), _rlp_list(keys)]))
    return _rlp_list(items)


def _uint(tx: dict, name: str) -> int:
    value = tx[name]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < UINT256:
        raise TxCodecError(f"`{name}` must be an integer in [0, 2**256), not {value!r}")
    return value


def _data(value) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        text = value[2:] if value.startswith(("0x", "0X")) else value
        try:
            return bytes.fromhex(text)
        except ValueError as exc:
            raise TxCodecError("`data` is not hex") from exc
    raise TxCodecError(f"`data` must be hex or bytes, not {type(value).__name__}")


def _unsigned_items(tx: dict) -> list[bytes]:
    missing = sorted(set(FIELDS) - {"type", "accessList"} - set(tx))
    if missing:
        raise TxCodecError(f"EIP-1559 transaction is missing {', '.join(missing)}")
    unknown = sorted(set(tx) - FIELDS)
    if unknown:
        raise TxCodecError(f"EIP-1559 transaction has fields it cannot carry: {', '.join(unknown)}")
    kind = tx.get("type", TYPE)
    if (int(kind, 16) if isinstance(kind, str) else kind) != TYPE:
        raise TxCodecError(f"only type 2 (EIP-1559) transactions, not type {kind!r}")
    return [
        _rlp_uint(_uint(tx, "chainId")),
        _rlp_uint(_uint(tx, "nonce")),
        _rlp_uint(_uint(tx, "maxPriorityFeePerGas")),
        _rlp_uint(_uint(tx, "maxFeePerGas")),
        _rlp_uint(_uint(tx, "gas")),
        _rlp_bytes(_address_bytes(tx["to"])),
        _rlp_uint(_uint(tx, "value")),
        _rlp_bytes(_data(tx["data"])),
        _access_list(tx.get("accessList", [])),
    ]


def signing_hash(tx: dict) -> bytes:
    """keccak256(0x02 || rlp(unsigned fields)): the digest a key signs for this transaction."""
    return keccak256(bytes([TYPE]) + _rlp_list(_unsigned_items(tx)))


def payload_hash(tx: dict) -> str:
    return "0x" + signing_hash(tx).hex()


def encode_signed(tx: dict, *, y_parity: int, r: int, s: int) -> bytes:
    """The raw signed transaction: 0x02 || rlp([...unsigned fields, yParity, r, s])."""
    if y_parity not in (0, 1):
        raise TxCodecError(f"y parity must be 0 or 1, not {y_parity!r}")
    signature = [_rlp_uint(y_parity), _rlp_uint(r), _rlp_uint(s)]
    return bytes([TYPE]) + _rlp_list(_unsigned_items(tx) + signature)
