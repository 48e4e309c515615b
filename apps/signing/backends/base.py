"""The key-backend interface and the secp256k1 arithmetic every backend shares.

A backend creates keys inside itself and signs 32-byte digests; what leaves it is a KeyRef (backend
name, opaque id, address) or a Signature. Low-s normalisation (EIP-2) and the recovery id (found by
recovering the public key for each candidate) happen here, once, for every backend.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from abc import ABC, abstractmethod
from dataclasses import dataclass

from coincurve import PublicKey

from apps.chain.abi import keccak256, to_checksum_address

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
HALF_N = SECP256K1_N // 2
KEY_ID_RE = re.compile(r"^[0-9a-f]{32}$")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyRef:
    """What the database stores about a key: never key material."""

    backend: str  # "pkcs11" | "vault" | "keystore"
    key_id: str  # opaque id inside the backend
    address: str  # EIP-55 address derived from the public key


@dataclass(frozen=True)
class Signature:
    v: int  # recovery id (y parity): 0 or 1
    r: int
    s: int  # always <= n/2 (EIP-2)


class KeyBackendError(Exception):
    """A backend could not do what was asked; the message says what to do and never holds a key."""


class KeyBackend(ABC):
    name: str

    @abstractmethod
    def create_key(self, *, label: str) -> KeyRef:
        """Generate a key inside the backend and return its reference."""

    @abstractmethod
    def sign_digest(self, *, key_id: str, digest: bytes) -> Signature:
        """Sign a 32-byte digest (ValueError for any other length); low-s, with the recovery id."""

    @abstractmethod
    def address_of(self, *, key_id: str) -> str:
        """The EIP-55 address of a key the backend holds."""


def new_key_id() -> str:
    """A random opaque key id (128 bits, lowercase hex): safe as a file name, a Vault path or CKA_ID."""
    return secrets.token_hex(16)


def check_key_id(key_id: str) -> str:
    # Key ids become file names and URL paths: only the shape new_key_id makes is accepted.
    if not isinstance(key_id, str) or not KEY_ID_RE.match(key_id):
        raise KeyBackendError(f"malformed key id {key_id!r}: expected 32 lowercase hex characters")
    return key_id


def check_digest(digest: bytes) -> bytes:
    if not isinstance(digest, bytes | bytearray | memoryview) or len(digest) != 32:
        raise ValueError("a digest is exactly 32 bytes")
    return bytes(digest)


def generate_private_key() -> bytearray:
    """A uniformly random valid secp256k1 secret in a bytearray the caller must wipe."""
    key = bytearray(32)
    while True:
        key[:] = secrets.token_bytes(32)
        if 0 < int.from_bytes(key, "big") < SECP256K1_N:
            return key


def wipe(buffer: bytearray) -> None:
    buffer[:] = bytes(len(buffer))


def log_key_held(*, backend: str, key_id: str, purpose: str) -> None:
    """Say which process held a loaded key: written by that process once its buffer is wiped.

    The line names the key by its id (never the key), what it was loaded for, and the process's
    and its parent's ids. In the signer the process is a pool child replaced after every task
    (docs/architecture.md, "Key custody"); tests/signing/test_key_lifetime.py reads these lines
    to prove that child is gone before the signer takes the next request.
    """
    logger.info(
        "%s key %s was held by process %d (parent %d) to %s",
        backend,
        key_id,
        os.getpid(),
        os.getppid(),
        purpose,
    )


def address_from_public_key(public_key: bytes) -> str:
    """EIP-55 address of a 65-byte uncompressed (04||X||Y) or 64-byte (X||Y) public key."""
    if len(public_key) == 65 and public_key[0] == 4:
        raw = public_key[1:]
    elif len(public_key) == 64:
        raw = public_key
    else:
        raise ValueError("a public key is 04||X||Y (65 bytes) or X||Y (64 bytes)")
    return to_checksum_address(keccak256(bytes(raw))[-20:])


def normalise_signature(
    *, digest: bytes, r: int, s: int, public_key: bytes, v_hint: int | None = None
) -> Signature:
    """The one place every backend's raw (r, s) becomes an Ethereum signature.

    s is folded into the low half (EIP-2: (r, n - s) is the same signature with the other parity),
    then v is the candidate whose recovered public key equals `public_key`. A backend that already
    knows the parity (coincurve) passes it as `v_hint` so the right candidate is tried first; it
    is still checked by recovery, so a wrong hint or a faulty signer cannot produce a bad signature.
    """
    if not (0 < r < SECP256K1_N and 0 < s < SECP256K1_N):
        raise KeyBackendError("the backend returned an out-of-range signature")
    if s > HALF_N:
        s = SECP256K1_N - s
        if v_hint is not None:
            v_hint ^= 1
    wanted = bytes(public_key) if len(public_key) == 65 else b"\x04" + bytes(public_key)
    rs = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    candidates = (v_hint, v_hint ^ 1) if v_hint in (0, 1) else (0, 1)
    for v in candidates:
        try:
            recovered = PublicKey.from_signature_and_message(rs + bytes([v]), digest, hasher=None)
        except Exception:  # noqa: S112 - libsecp256k1 rejects this candidate: try the other one
            continue
        if recovered.format(compressed=False) == wanted:
            return Signature(v=v, r=r, s=s)
    raise KeyBackendError("the signature does not recover to the key's public key: the signer is faulty")


def rs_from_bytes(raw: bytes) -> tuple[int, int]:
    """(r, s) from a 64-byte r||s (PKCS#11 ECDSA, coincurve compact) signature."""
    if len(raw) < 64:
        raise KeyBackendError(f"the backend returned a {len(raw)}-byte signature, expected r||s (64 bytes)")
    return int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:64], "big")


class KeyBackendUnavailable(KeyBackendError):
    """The key store cannot answer now but will (a sealed or unreachable Vault): the request is
    retried, never refused."""
