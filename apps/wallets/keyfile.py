"""An authority key in a local V3 keystore file, for scripts and the development demo: create one, and
sign EIP-712 typed data with it. The key is the owner's, not the server's: it is decrypted only for
the moment of signing, in the command that asked, and never stored or logged."""

from __future__ import annotations

import getpass
import json
import os
from pathlib import Path

from apps.chain.abi import to_checksum_address


def keyfile_create(*, key_file: Path, password_file: Path) -> str:
    """A new random authority key, encrypted into `key_file` with a new passphrase written to
    `password_file` (both 0600). Returns its address."""
    import secrets

    from eth_account import Account

    passphrase = secrets.token_urlsafe(24)
    account = Account.create()
    for path, text in ((password_file, passphrase), (key_file, json.dumps(account.encrypt(passphrase)))):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
    return account.address


def keyfile_address(key_file: Path) -> str:
    """The address a keystore file holds (stored in it unencrypted)."""
    return to_checksum_address(json.loads(key_file.read_text())["address"])


def sign_typed_data_with_keyfile(document: dict, *, key_file: Path, password_file: Path | None) -> str:
    """The 0x-hex EIP-712 signature of `document` by the key in `key_file`."""
    from eth_account import Account
    from eth_account.messages import encode_typed_data

    passphrase = (
        password_file.read_text().strip() if password_file else getpass.getpass("keystore passphrase: ")
    )
    key = bytearray(Account.decrypt(json.loads(key_file.read_text()), passphrase))
    try:
        signed = Account.sign_message(encode_typed_data(full_message=document), bytes(key))
    finally:
        key[:] = bytes(len(key))
    return "0x" + signed.signature.hex().removeprefix("0x")
