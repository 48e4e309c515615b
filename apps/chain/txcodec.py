"""The unsigned EIP-1559 transaction's signing hash: what identifies a payload everywhere in Custos."""

from __future__ import annotations

from eth_account.typed_transactions import TypedTransaction


def signing_hash(tx: dict) -> bytes:
    """keccak256(0x02 || rlp(unsigned fields)): the digest a key signs for this transaction."""
    return bytes(TypedTransaction.from_dict(tx).hash())


def payload_hash(tx: dict) -> str:
    return "0x" + signing_hash(tx).hex()
