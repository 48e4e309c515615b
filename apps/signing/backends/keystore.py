"""Ethereum V3 keystore files (scrypt) in a directory only the signer reads; the development default.

The passphrase is read from its file on each use and nothing key-related is cached. A signature
decrypts the key into a bytearray that is zeroed right after. The crypto libraries (scrypt, AES,
coincurve) take immutable bytes and make copies this code cannot wipe; that is why the signer signs
in a child process recycled after each task (docs/architecture.md, "Key custody").
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from coincurve import PrivateKey
from eth_account import Account

from apps.chain.abi import to_checksum_address
from apps.signing.backends.base import (
    KeyBackend,
    KeyBackendError,
    KeyRef,
    Signature,
    address_from_public_key,
    check_digest,
    check_key_id,
    generate_private_key,
    log_key_held,
    new_key_id,
    normalise_signature,
    rs_from_bytes,
    wipe,
)

# geth's standard scrypt cost; lower it only for tests and benchmarks.
DEFAULT_SCRYPT_N = 2**18


class KeystoreBackend(KeyBackend):
    name = "keystore"

    def __init__(
        self, *, directory: Path | str, passphrase_file: Path | str, scrypt_n: int = DEFAULT_SCRYPT_N
    ):
        if scrypt_n < 2 or scrypt_n & (scrypt_n - 1):
            raise KeyBackendError(f"scrypt n must be a power of two, not {scrypt_n}")
        self.directory = Path(directory)
        self.passphrase_file = Path(passphrase_file)
        self.scrypt_n = scrypt_n

    def _passphrase(self) -> str:
        try:
            passphrase = self.passphrase_file.read_text().strip()
        except OSError as exc:
            raise KeyBackendError(
                f"the keystore passphrase file {self.passphrase_file} is not readable: "
                "check KEYSTORE_PASSPHRASE_FILE and that only the signer's user can read it"
            ) from exc
        if not passphrase:
            raise KeyBackendError(f"the keystore passphrase file {self.passphrase_file} is empty")
        return passphrase

    def _path(self, key_id: str) -> Path:
        return self.directory / f"{check_key_id(key_id)}.json"

    def _ensure_directory(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = stat.S_IMODE(self.directory.stat().st_mode)
        if mode & 0o077:
            raise KeyBackendError(
                f"the keystore directory {self.directory} is open to other users (mode {mode:o}): "
                f"chmod 700 {self.directory}"
            )

    def create_key(self, *, label: str) -> KeyRef:
        self._ensure_directory()
        key = generate_private_key()
        key_id = new_key_id()
        try:
            keyfile = Account.encrypt(bytes(key), self._passphrase(), kdf="scrypt", iterations=self.scrypt_n)
            address = address_from_public_key(PrivateKey(bytes(key)).public_key.format(compressed=False))
        finally:
            wipe(key)
            log_key_held(backend=self.name, key_id=key_id, purpose="create it")
        keyfile["custos_label"] = label  # extra top-level fields are ignored by geth and eth-account
        final = self._path(key_id)
        partial = self.directory / f".{key_id}.json.partial"
        # Written whole to a private temporary file, then renamed: a crash never leaves half a keystore.
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "w") as handle:
                json.dump(keyfile, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.rename(partial, final)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return KeyRef(backend=self.name, key_id=key_id, address=address)

    def _keyfile(self, key_id: str) -> dict:
        path = self._path(key_id)
        try:
            return json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise KeyBackendError(
                f"no keystore file for key {key_id} in {self.directory}: check KEYSTORE_DIR"
            ) from exc
        except (OSError, ValueError) as exc:
            raise KeyBackendError(f"the keystore file {path} is unreadable or not JSON") from exc

    def address_of(self, *, key_id: str) -> str:
        # V3 keystores carry the address in clear: no decryption needed.
        address = self._keyfile(key_id).get("address")
        if not isinstance(address, str):
            raise KeyBackendError(f"the keystore file for key {key_id} has no address")
        return to_checksum_address(address if address.startswith("0x") else "0x" + address)

    def sign_digest(self, *, key_id: str, digest: bytes) -> Signature:
        digest = check_digest(digest)
        keyfile = self._keyfile(key_id)
        try:
            key = bytearray(Account.decrypt(keyfile, self._passphrase()))
        except (ValueError, KeyError, TypeError) as exc:
            raise KeyBackendError(
                f"the keystore for key {key_id} did not decrypt: wrong passphrase in "
                f"{self.passphrase_file} or a corrupt file"
            ) from exc
        try:
            private = PrivateKey(bytes(key))
            raw = private.sign_recoverable(digest, hasher=None)
            public = private.public_key.format(compressed=False)
        finally:
            wipe(key)
            log_key_held(backend=self.name, key_id=key_id, purpose="sign")
        r, s = rs_from_bytes(raw)
        return normalise_signature(digest=digest, r=r, s=s, public_key=public, v_hint=raw[64])
