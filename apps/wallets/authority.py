"""Owner authority: a permission scope as EIP-712 typed data, its digest, and who signed it.

The typed data is built from the scope row's own frozen fields (addresses, never row ids), so a
signature binds exactly what the signer will enforce: change any field after signing and the
recovered address is someone else. The digest is computed here (EIP-712: keccak256 of
0x1901 ‖ domainSeparator ‖ hashStruct(message)), held byte for byte to eth-account's
`encode_typed_data` by tests; the signer recovers the address with coincurve. Verification is cached
by (digest, signature): a scope is recovered once per process, not once per request.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from functools import lru_cache

from coincurve import PublicKey

from apps.chain.abi import keccak256, to_checksum_address

DOMAIN_NAME = "Custos"
DOMAIN_VERSION = "1"

DOMAIN_FIELDS = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
]
SCOPE_FIELDS = [
    {"name": "wallet", "type": "address"},
    {"name": "chainId", "type": "uint256"},
    {"name": "router", "type": "address"},
    {"name": "tokenIn", "type": "address"},
    {"name": "tokenOut", "type": "address"},
    {"name": "tokenInDecimals", "type": "uint8"},
    {"name": "tokenOutDecimals", "type": "uint8"},
    {"name": "tokenInUsdPegged", "type": "bool"},
    {"name": "tokenOutUsdPegged", "type": "bool"},
    {"name": "allowReverse", "type": "bool"},
    {"name": "functions", "type": "bytes4[]"},
    {"name": "maxAmountIn", "type": "uint256"},
    {"name": "maxNotionalUsdCents", "type": "uint256"},
    {"name": "dailyVolumeUsdCents", "type": "uint256"},
    {"name": "maxSlippageBps", "type": "uint32"},
    {"name": "allowOnchainOnlyPricing", "type": "bool"},
    {"name": "maxFeePerGas", "type": "uint256"},
    {"name": "maxPriorityFeePerGas", "type": "uint256"},
    {"name": "feeBudgetWei", "type": "uint256"},
    {"name": "validFrom", "type": "uint64"},
    {"name": "validUntil", "type": "uint64"},
    {"name": "revision", "type": "uint64"},
]
TYPES = {"EIP712Domain": DOMAIN_FIELDS, "Scope": SCOPE_FIELDS}


class SignatureError(ValueError):
    """Not a 65-byte secp256k1 signature (r ‖ s ‖ v), or one that recovers no key."""


def _cents(value: Decimal | None) -> int:
    """A USD cap in cents; 0 means no cap (a cap of zero would allow nothing and is refused earlier)."""
    return 0 if value is None else int((Decimal(value) * 100).to_integral_exact())


def _seconds(value: datetime) -> int:
    return int(value.timestamp())


def scope_message(scope) -> dict:
    """The Scope struct of a scope row, as a JSON-ready dict (uint256 values as decimal strings, so a
    browser wallet reads them without losing precision)."""
    return {
        "wallet": scope.wallet_address,
        "chainId": str(int(scope.chain_id_signed)),
        "router": scope.router,
        "tokenIn": scope.token_in_address,
        "tokenOut": scope.token_out_address,
        "tokenInDecimals": int(scope.token_in_decimals),
        "tokenOutDecimals": int(scope.token_out_decimals),
        "tokenInUsdPegged": bool(scope.token_in_usd_pegged),
        "tokenOutUsdPegged": bool(scope.token_out_usd_pegged),
        "allowReverse": bool(scope.allow_reverse),
        "functions": sorted(scope.allowed_selectors),
        "maxAmountIn": str(int(scope.max_amount_in)),
        "maxNotionalUsdCents": str(_cents(scope.max_notional_usd)),
        "dailyVolumeUsdCents": str(_cents(scope.daily_volume_usd)),
        "maxSlippageBps": int(scope.max_slippage_bps),
        "allowOnchainOnlyPricing": bool(scope.allow_onchain_only_pricing),
        "maxFeePerGas": str(int(scope.max_fee_per_gas)),
        "maxPriorityFeePerGas": str(int(scope.max_priority_fee_per_gas)),
        "feeBudgetWei": str(int(scope.fee_budget_wei)),
        "validFrom": str(_seconds(scope.valid_from)),
        "validUntil": str(_seconds(scope.valid_until)),
        "revision": str(int(scope.revision)),
    }


def scope_typed_data(scope) -> dict:
    """The whole EIP-712 document for `eth_signTypedData_v4`: types, primary type, domain, message."""
    return {
        "types": TYPES,
        "primaryType": "Scope",
        "domain": {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": str(int(scope.chain_id_signed)),
        },
        "message": scope_message(scope),
    }


# --- EIP-712 hashing ------------------------------------------------------------------------------


def _encode_type(primary: str, fields: list[dict]) -> bytes:
    members = ",".join(field["type"] + " " + field["name"] for field in fields)
    return f"{primary}({members})".encode()


def _word(kind: str, value) -> bytes:
    if kind == "address":
        return bytes(12) + bytes.fromhex(to_checksum_address(value)[2:])
    if kind == "bool":
        return int(bool(value)).to_bytes(32, "big")
    if kind.startswith("uint"):
        number, bits = int(value), int(kind[4:])
        if not 0 <= number < 2**bits:
            raise ValueError(f"{number} does not fit {kind}")
        return number.to_bytes(32, "big")
    if kind == "string":
        return keccak256(str(value).encode())
    if kind == "bytes4":
        raw = bytes.fromhex(str(value).removeprefix("0x"))
        if len(raw) != 4:
            raise ValueError(f"{value!r} is not 4 bytes")
        return raw + bytes(28)
    if kind.endswith("[]"):
        return keccak256(b"".join(_word(kind[:-2], item) for item in value))
    raise ValueError(f"unsupported EIP-712 type {kind}")


def _hash_struct(primary: str, fields: list[dict], data: dict) -> bytes:
    type_hash = keccak256(_encode_type(primary, fields))
    return keccak256(type_hash + b"".join(_word(f["type"], data[f["name"]]) for f in fields))


def typed_data_digest(document: dict) -> bytes:
    """The 32-byte digest an EIP-712 signer signs, for a document of this module's two types."""
    domain = _hash_struct("EIP712Domain", DOMAIN_FIELDS, document["domain"])
    message = _hash_struct("Scope", SCOPE_FIELDS, document["message"])
    return keccak256(b"\x19\x01" + domain + message)


def scope_digest(scope) -> bytes:
    return typed_data_digest(scope_typed_data(scope))


# --- recovery ------------------------------------------------------------------------------------

_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def signature_bytes(signature: str) -> bytes:
    """A 0x-hex 65-byte signature, checked for shape (v 27/28 or 0/1, s in the low half: EIP-2)."""
    try:
        raw = bytes.fromhex(signature.removeprefix("0x"))
    except (ValueError, AttributeError) as exc:
        raise SignatureError("not hex") from exc
    if len(raw) != 65:
        raise SignatureError(f"a signature is 65 bytes, not {len(raw)}")
    v = raw[64]
    if v not in (0, 1, 27, 28):
        raise SignatureError(f"v is {v}, not 27 or 28")
    s = int.from_bytes(raw[32:64], "big")
    if not 0 < s <= _SECP256K1_N // 2 or not 0 < int.from_bytes(raw[:32], "big") < _SECP256K1_N:
        raise SignatureError("r or s out of range (s must be in the low half)")
    return raw[:64] + bytes([v - 27 if v >= 27 else v])


@lru_cache(maxsize=4096)
def recover_address(digest: bytes, signature: str) -> str:
    """The EIP-55 address whose key made `signature` over `digest`; SignatureError if none."""
    try:
        public = PublicKey.from_signature_and_message(signature_bytes(signature), digest, hasher=None)
    except SignatureError:
        raise
    except Exception as exc:  # noqa: BLE001 - coincurve raises plain exceptions for bad input
        raise SignatureError(f"recovers no key: {exc}") from exc
    return to_checksum_address(keccak256(public.format(compressed=False)[1:])[-20:])


def scope_signer(scope) -> str:
    """The address that signed the scope row's own fields (SignatureError when unsigned or bad).
    Remembered on the instance for exactly the fields it was recovered from: a row read once (a
    signer's batch, a validation round) is judged for many transactions, and hashing the typed data
    (about 140 us) is most of the check's cost; reading the fields again is about 12 us."""
    if not scope.signature:
        raise SignatureError("unsigned")
    fields = (scope.signature, repr(scope_message(scope)))
    memo = scope.__dict__.get("_custos_signer")
    if memo is None or memo[0] != fields:
        document = scope_typed_data(scope)
        memo = (fields, recover_address(typed_data_digest(document), scope.signature))
        scope.__dict__["_custos_signer"] = memo
    return memo[1]
