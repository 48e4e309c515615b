"""Sign an EIP-1559 (type 2) transaction through any key backend.

apps.chain.txcodec computes the signing hash of the typed transaction; the backend signs that
digest; the signed transaction is encoded with (y-parity, r, s). Nothing here ever sees key material.
"""

from __future__ import annotations

from dataclasses import dataclass

from apps.chain.abi import keccak256, to_checksum_address
from apps.chain.txcodec import encode_signed, signing_hash
from apps.signing.backends.base import KeyBackend


@dataclass(frozen=True)
class SignedTx:
    raw: bytes  # 0x02 || rlp([...signed fields])
    tx_hash: bytes  # keccak256(raw): the hash the chain will know it by


def sign_transaction(backend: KeyBackend, key_id: str, tx: dict) -> SignedTx:
    """Sign an EIP-1559 transaction dict (chainId, nonce, to, value, data, gas, maxFeePerGas,
    maxPriorityFeePerGas, optional accessList) with the backend's key `key_id`.

    A `from` field, when present, must be the key's address.
    """
    # apps.chain.txcodec refuses what it cannot encode faithfully (missing or unknown fields such as a
    # stray gasPrice, another transaction type), naming the field.
    unsigned = {name: value for name, value in tx.items() if name != "from"}
    if "from" in tx and to_checksum_address(tx["from"]) != backend.address_of(key_id=key_id):
        raise ValueError("the transaction's `from` is not the address of the signing key")
    signature = backend.sign_digest(key_id=key_id, digest=signing_hash(unsigned))
    raw = encode_signed(unsigned, y_parity=signature.v, r=signature.r, s=signature.s)
    return SignedTx(raw=raw, tx_hash=keccak256(raw))
