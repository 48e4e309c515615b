"""The key backends on real parts: a SoftHSM token, V3 keystore files, and Vault's HTTP API (the local
fake, and `vault server -dev` whenever a `vault` binary is on PATH). Every backend's key signs an
EIP-1559 transfer that a Hardhat node mines from the backend's own address."""

from __future__ import annotations

import json
import logging
import secrets
import socket
import stat
import threading

import pytest
from coincurve import PrivateKey, PublicKey
from eth_account import Account
from eth_utils import keccak, to_checksum_address
from web3 import Web3

from apps.signing.backends import backend_from_settings
from apps.signing.backends import base as backend_base
from apps.signing.backends.base import (
    HALF_N,
    SECP256K1_N,
    KeyBackendError,
    KeyRef,
    address_from_public_key,
    normalise_signature,
)
from apps.signing.backends.keystore import KeystoreBackend
from apps.signing.backends.vault import (
    VaultBackend,
    VaultKeyNotFoundError,
    VaultPermissionError,
    VaultSealedError,
    VaultUnavailableError,
)
from apps.signing.txsign import sign_transaction
from tests.signing.conftest import KEYSTORE_PASSPHRASE, free_port

# --- helpers ------------------------------------------------------------------------------------------


def recovered_address(digest: bytes, signature) -> str:
    raw = signature.r.to_bytes(32, "big") + signature.s.to_bytes(32, "big") + bytes([signature.v])
    public = PublicKey.from_signature_and_message(raw, digest, hasher=None)
    return address_from_public_key(public.format(compressed=False))


def keystore_secret_hex(backend: KeystoreBackend, key_id: str) -> str:
    keyfile = json.loads((backend.directory / f"{key_id}.json").read_text())
    return bytes(Account.decrypt(keyfile, KEYSTORE_PASSPHRASE)).hex()


def vault_secret_hex(vault_env, key_id: str) -> str:
    return vault_env.secret(f"custos/keys/{key_id}")["private_key"]


def transfer_mined_from_backend(backend, hardhat_url: str, *, with_access_list: bool = True) -> KeyRef:
    """Create a key, fund its address, sign a transfer through txsign and have Hardhat mine it."""
    w3 = Web3(Web3.HTTPProvider(hardhat_url))
    ref = backend.create_key(label="transfer")
    assert ref.backend == backend.name
    assert ref.address == to_checksum_address(ref.address)
    assert backend.address_of(key_id=ref.key_id) == ref.address
    funding = w3.eth.send_transaction({"from": w3.eth.accounts[0], "to": ref.address, "value": 10**18})
    assert w3.eth.wait_for_transaction_receipt(funding)["status"] == 1
    recipient = Account.create().address
    base_fee = w3.eth.get_block("latest")["baseFeePerGas"]
    tx = {
        "type": 2,
        "chainId": w3.eth.chain_id,
        "nonce": w3.eth.get_transaction_count(ref.address),
        "to": recipient,
        "value": 123_456_789,
        "data": "0x",
        "gas": 21_000,
        "maxFeePerGas": 2 * base_fee + 10**9,
        "maxPriorityFeePerGas": 10**9,
    }
    if with_access_list:
        tx["accessList"] = []
    signed = sign_transaction(backend, ref.key_id, tx)
    assert signed.raw[0] == 2
    sent = w3.eth.send_raw_transaction(signed.raw)
    assert bytes(sent) == signed.tx_hash
    receipt = w3.eth.wait_for_transaction_receipt(sent, timeout=30)
    assert receipt["status"] == 1
    assert receipt["from"] == ref.address
    assert w3.eth.get_transaction(sent)["from"] == ref.address
    assert w3.eth.get_balance(recipient) == 123_456_789
    return ref


# --- every backend signs a transfer that Hardhat mines from its own address ------------------------------


@pytest.mark.hsm
@pytest.mark.chain
def test_pkcs11_key_signs_a_transfer_hardhat_mines(pkcs11_backend, hardhat_url):
    transfer_mined_from_backend(pkcs11_backend, hardhat_url)


@pytest.mark.chain
def test_keystore_key_signs_a_transfer_hardhat_mines(keystore_backend, hardhat_url):
    transfer_mined_from_backend(keystore_backend, hardhat_url, with_access_list=False)


@pytest.mark.chain
def test_vault_key_signs_a_transfer_hardhat_mines(vault_env, hardhat_url):
    transfer_mined_from_backend(vault_env.backend(), hardhat_url)


# --- signature arithmetic -------------------------------------------------------------------------------


def test_signatures_are_low_s_and_recover_to_the_address(any_backend):
    ref = any_backend.create_key(label="arith")
    digests = [bytes(32), b"\xff" * 32, SECP256K1_N.to_bytes(32, "big")]
    digests += [secrets.token_bytes(32) for _ in range(200 - len(digests))]
    for digest in digests:
        signature = any_backend.sign_digest(key_id=ref.key_id, digest=digest)
        assert signature.v in (0, 1)
        assert 0 < signature.r < SECP256K1_N
        assert 0 < signature.s <= HALF_N
        assert recovered_address(digest, signature) == ref.address


def test_a_high_s_signature_is_folded_low_with_the_other_parity():
    private = PrivateKey()
    digest = secrets.token_bytes(32)
    compact = private.sign_recoverable(digest, hasher=None)
    r, s, v = int.from_bytes(compact[:32], "big"), int.from_bytes(compact[32:64], "big"), compact[64]
    public = private.public_key.format(compressed=False)
    high = normalise_signature(digest=digest, r=r, s=SECP256K1_N - s, public_key=public)
    assert (high.v, high.r, high.s) == (v, r, s)
    # A wrong hint is corrected by recovery, never trusted.
    assert normalise_signature(digest=digest, r=r, s=s, public_key=public, v_hint=v ^ 1).v == v
    # 64-byte X||Y public keys are accepted as well.
    assert normalise_signature(digest=digest, r=r, s=s, public_key=public[1:]).v == v


def test_a_signature_from_another_key_is_refused():
    digest = secrets.token_bytes(32)
    compact = PrivateKey().sign_recoverable(digest, hasher=None)
    other = PrivateKey().public_key.format(compressed=False)
    with pytest.raises(KeyBackendError, match="does not recover"):
        normalise_signature(
            digest=digest,
            r=int.from_bytes(compact[:32], "big"),
            s=int.from_bytes(compact[32:64], "big"),
            public_key=other,
        )
    with pytest.raises(KeyBackendError, match="out-of-range"):
        normalise_signature(digest=digest, r=0, s=1, public_key=other)


@pytest.mark.parametrize("bad", [b"", b"\x01" * 31, b"\x01" * 33, "ab" * 16, None])
def test_a_digest_must_be_exactly_32_bytes(any_backend, bad):
    ref = any_backend.create_key(label="len")
    with pytest.raises(ValueError, match="32 bytes"):
        any_backend.sign_digest(key_id=ref.key_id, digest=bad)


# --- pkcs11 --------------------------------------------------------------------------------------------


@pytest.mark.hsm
def test_pkcs11_private_key_cannot_leave_the_token(pkcs11_backend, softhsm_token):
    from pkcs11 import Attribute
    from pkcs11.exceptions import AttributeSensitive

    from apps.signing.backends.pkcs11 import Pkcs11Backend

    ref = pkcs11_backend.create_key(label="sealed")
    key = pkcs11_backend.private_key(ref.key_id)
    assert key[Attribute.TOKEN] is True
    assert key[Attribute.SENSITIVE] is True
    assert key[Attribute.ALWAYS_SENSITIVE] is True
    assert key[Attribute.EXTRACTABLE] is False
    assert key[Attribute.NEVER_EXTRACTABLE] is True
    assert key[Attribute.ID] == bytes.fromhex(ref.key_id)
    assert key[Attribute.LABEL] == ref.key_id
    with pytest.raises(AttributeSensitive):
        key[Attribute.VALUE]  # noqa: B018 - reading it is the operation that must fail

    # The key is a token object: another session (a restarted signer) finds and uses it.
    other = Pkcs11Backend(
        module_path=softhsm_token.module,
        token_label=softhsm_token.label,
        pin=softhsm_token.pin,
        softhsm_conf=softhsm_token.conf,
    )
    try:
        assert other.address_of(key_id=ref.key_id) == ref.address
        digest = secrets.token_bytes(32)
        assert recovered_address(digest, other.sign_digest(key_id=ref.key_id, digest=digest)) == ref.address
    finally:
        other.close()


@pytest.mark.hsm
def test_pkcs11_one_session_signs_safely_from_many_threads(pkcs11_backend):
    ref = pkcs11_backend.create_key(label="threads")
    failures: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(40):
                digest = secrets.token_bytes(32)
                signature = pkcs11_backend.sign_digest(key_id=ref.key_id, digest=digest)
                assert recovered_address(digest, signature) == ref.address
        except BaseException as exc:  # noqa: BLE001 - collected and re-raised in the test thread
            failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


@pytest.mark.hsm
def test_pkcs11_wrong_pin_unknown_token_and_unknown_key_are_clear_errors(pkcs11_backend, softhsm_token):
    from apps.signing.backends.pkcs11 import Pkcs11Backend

    with pytest.raises(KeyBackendError, match="PIN") as wrong_pin:
        Pkcs11Backend(
            module_path=softhsm_token.module,
            token_label=softhsm_token.label,
            pin="0000",
            softhsm_conf=softhsm_token.conf,
        )
    assert softhsm_token.pin not in str(wrong_pin.value)
    with pytest.raises(KeyBackendError, match="PKCS11_TOKEN_LABEL"):
        Pkcs11Backend(
            module_path=softhsm_token.module,
            token_label="no-such-token",
            pin=softhsm_token.pin,
            softhsm_conf=softhsm_token.conf,
        )
    with pytest.raises(KeyBackendError, match="no key"):
        pkcs11_backend.sign_digest(key_id="ab" * 16, digest=bytes(32))
    with pytest.raises(KeyBackendError, match="malformed key id"):
        pkcs11_backend.address_of(key_id="not-hex")


# --- keystore ------------------------------------------------------------------------------------------


def test_keystore_signs_byte_for_byte_like_eth_account(keystore_backend):
    """coincurve and eth-account (through eth-keys' coincurve backend) both use RFC 6979 nonces."""
    ref = keystore_backend.create_key(label="compat")
    private = bytes.fromhex(keystore_secret_hex(keystore_backend, ref.key_id))
    assert Account.from_key(private).address == ref.address
    tx = {
        "type": 2,
        "chainId": 31337,
        "nonce": 7,
        "to": "0x" + "11" * 20,
        "value": 5 * 10**17,
        "data": "0xa9059cbb" + "00" * 64,
        "gas": 60_000,
        "maxFeePerGas": 3 * 10**9,
        "maxPriorityFeePerGas": 10**9,
        "accessList": [{"address": "0x" + "22" * 20, "storageKeys": ["0x" + "00" * 32]}],
    }
    ours = sign_transaction(keystore_backend, ref.key_id, tx)
    theirs = Account.sign_transaction(tx, private)
    assert ours.raw == bytes(theirs.raw_transaction)
    assert ours.tx_hash == bytes(theirs.hash) == keccak(ours.raw)
    assert Account.recover_transaction(ours.raw) == ref.address


def test_keystore_file_is_a_private_scrypt_v3_keystore(keystore_backend):
    ref = keystore_backend.create_key(label="my trading key")
    path = keystore_backend.directory / f"{ref.key_id}.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(keystore_backend.directory.stat().st_mode) == 0o700
    keyfile = json.loads(path.read_text())
    assert keyfile["version"] == 3
    assert keyfile["crypto"]["kdf"] == "scrypt"
    assert keyfile["crypto"]["kdfparams"]["n"] == keystore_backend.scrypt_n
    assert keyfile["custos_label"] == "my trading key"
    assert to_checksum_address("0x" + keyfile["address"].removeprefix("0x")) == ref.address
    assert keystore_secret_hex(keystore_backend, ref.key_id) not in path.read_text()
    assert [p.name for p in keystore_backend.directory.iterdir()] == [f"{ref.key_id}.json"]


def test_keystore_refuses_a_directory_other_users_can_read(tmp_path):
    (tmp_path / "open").mkdir(mode=0o755)
    (tmp_path / "open").chmod(0o755)
    (tmp_path / "pass").write_text("x")
    backend = KeystoreBackend(directory=tmp_path / "open", passphrase_file=tmp_path / "pass", scrypt_n=2**4)
    with pytest.raises(KeyBackendError, match="chmod 700"):
        backend.create_key(label="x")


def test_keystore_wrong_passphrase_and_missing_files_are_clear_errors(keystore_backend):
    ref = keystore_backend.create_key(label="pw")
    key_hex = keystore_secret_hex(keystore_backend, ref.key_id)
    keystore_backend.passphrase_file.write_text("not the passphrase")
    with pytest.raises(KeyBackendError, match="wrong passphrase") as wrong:
        keystore_backend.sign_digest(key_id=ref.key_id, digest=bytes(32))
    assert key_hex not in str(wrong.value)
    keystore_backend.passphrase_file.unlink()
    with pytest.raises(KeyBackendError, match="KEYSTORE_PASSPHRASE_FILE"):
        keystore_backend.sign_digest(key_id=ref.key_id, digest=bytes(32))
    with pytest.raises(KeyBackendError, match="no keystore file"):
        keystore_backend.address_of(key_id="cd" * 16)
    with pytest.raises(KeyBackendError, match="malformed key id"):
        keystore_backend.address_of(key_id="../../etc/passwd")


def test_keystore_reads_the_passphrase_file_on_each_use(keystore_backend):
    ref = keystore_backend.create_key(label="rotate")
    assert not any(KEYSTORE_PASSPHRASE in repr(v) for v in vars(keystore_backend).values())
    keystore_backend.passphrase_file.write_text("rotated away")
    with pytest.raises(KeyBackendError):
        keystore_backend.sign_digest(key_id=ref.key_id, digest=bytes(32))
    keystore_backend.passphrase_file.write_text(KEYSTORE_PASSPHRASE)
    keystore_backend.sign_digest(key_id=ref.key_id, digest=bytes(32))


# --- key buffers are wiped ----------------------------------------------------------------------------


def _watch_wipes(monkeypatch, module) -> list[tuple[bytes, bytearray]]:
    """Record each buffer `module` wipes: (its content just before the wipe, the buffer itself)."""
    seen: list[tuple[bytes, bytearray]] = []
    real_wipe = backend_base.wipe

    def recording_wipe(buffer: bytearray) -> None:
        seen.append((bytes(buffer), buffer))
        real_wipe(buffer)

    monkeypatch.setattr(module, "wipe", recording_wipe)
    return seen


def _assert_key_buffer_wiped(seen, key_hex: str) -> None:
    key_buffers = [buffer for before, buffer in seen if before.hex() == key_hex]
    assert key_buffers, "the key was never held in a buffer that was wiped"
    assert all(buffer == bytearray(32) for buffer in key_buffers)


def test_keystore_wipes_the_key_after_signing_even_when_signing_fails(keystore_backend, monkeypatch):
    from apps.signing.backends import keystore as keystore_module

    ref = keystore_backend.create_key(label="wipe")
    key_hex = keystore_secret_hex(keystore_backend, ref.key_id)
    seen = _watch_wipes(monkeypatch, keystore_module)
    keystore_backend.sign_digest(key_id=ref.key_id, digest=bytes(32))
    _assert_key_buffer_wiped(seen, key_hex)

    seen.clear()

    def broken(_secret):
        raise RuntimeError("signing library failure")

    monkeypatch.setattr(keystore_module, "PrivateKey", broken)
    with pytest.raises(RuntimeError):
        keystore_backend.sign_digest(key_id=ref.key_id, digest=bytes(32))
    _assert_key_buffer_wiped(seen, key_hex)


def test_vault_wipes_the_key_after_signing(vault_env, monkeypatch):
    from apps.signing.backends import vault as vault_module

    backend = vault_env.backend()
    ref = backend.create_key(label="wipe")
    seen = _watch_wipes(monkeypatch, vault_module)
    backend.sign_digest(key_id=ref.key_id, digest=bytes(32))
    _assert_key_buffer_wiped(seen, vault_secret_hex(vault_env, ref.key_id))


# --- key material never reaches the logs -------------------------------------------------------------


def _assert_not_logged(caplog, key_hex: str) -> None:
    text = caplog.text.lower()
    assert caplog.records, "nothing was captured: the check would be empty"
    assert key_hex.lower() not in text
    for record in caplog.records:
        assert key_hex.lower() not in repr(vars(record)).lower()


def test_keystore_never_logs_the_key(keystore_backend, caplog):
    caplog.set_level(logging.DEBUG)
    logging.getLogger("custos.test").debug("capture started")
    ref = keystore_backend.create_key(label="quiet")
    keystore_backend.sign_digest(key_id=ref.key_id, digest=bytes(32))
    with pytest.raises(KeyBackendError):
        keystore_backend.sign_digest(key_id="ef" * 16, digest=bytes(32))
    _assert_not_logged(caplog, keystore_secret_hex(keystore_backend, ref.key_id))


def test_vault_never_logs_the_key(vault_env, caplog):
    caplog.set_level(logging.DEBUG)  # includes urllib3's request lines and the backend's own logs
    backend = vault_env.backend()
    ref = backend.create_key(label="quiet")
    backend.sign_digest(key_id=ref.key_id, digest=bytes(32))
    backend.address_of(key_id=ref.key_id)
    _assert_not_logged(caplog, vault_secret_hex(vault_env, ref.key_id))


# --- vault: where keys live, and every way it can fail -------------------------------------------------


def test_vault_key_lives_in_kv_v2_and_is_never_overwritten(vault_env, monkeypatch):
    backend = vault_env.backend()
    ref = backend.create_key(label="placed")
    stored = vault_env.secret(f"custos/keys/{ref.key_id}")
    assert stored["label"] == "placed"
    assert Account.from_key(bytes.fromhex(stored["private_key"])).address == ref.address

    # The same id generated again (it cannot happen by chance: 128 random bits) is refused by cas=0.
    from apps.signing.backends import vault as vault_module

    monkeypatch.setattr(vault_module, "new_key_id", lambda: ref.key_id)
    with pytest.raises(KeyBackendError, match="check-and-set"):
        backend.create_key(label="again")
    assert vault_env.secret(f"custos/keys/{ref.key_id}")["private_key"] == stored["private_key"]
    assert backend.address_of(key_id=ref.key_id) == ref.address


def test_only_a_vault_that_cannot_answer_now_is_retried_by_the_signer():
    """Sealed or unreachable: the signing task retries. Refused credentials or a missing key: the
    request is refused with the reason (retrying would not change the answer)."""
    from apps.signing.services import TRANSIENT_KEY_ERRORS

    for heals in (VaultSealedError, VaultUnavailableError):
        assert issubclass(heals, TRANSIENT_KEY_ERRORS)
    for final in (VaultPermissionError, VaultKeyNotFoundError):
        assert not issubclass(final, TRANSIENT_KEY_ERRORS)


def test_vault_sealed_says_unseal(vault_env):
    backend = vault_env.backend()
    ref = backend.create_key(label="sealed")
    vault_env.seal()
    with pytest.raises(VaultSealedError, match="unseal") as sealed:
        backend.sign_digest(key_id=ref.key_id, digest=bytes(32))
    assert "sealed" in str(sealed.value)


def test_vault_bad_token_is_a_permission_error(vault_env):
    backend = VaultBackend(addr=vault_env.addr, auth_method="token", token="hvs.not-a-token", timeout=5.0)
    with pytest.raises(VaultPermissionError, match="issue a new token"):
        backend.create_key(label="nope")


def test_vault_path_outside_the_policy_says_fix_the_policy(vault_env):
    backend = vault_env.backend(kv_prefix="elsewhere/keys")
    with pytest.raises(VaultPermissionError, match="policy") as denied:
        backend.create_key(label="nope")
    assert "403" in str(denied.value)
    assert backend.logins == 1  # a valid token is not logged in again for a policy problem


def test_vault_wrong_approle_secret_is_a_permission_error(vault_env):
    role_id, _secret = vault_env.roles["custos"]
    backend = VaultBackend(addr=vault_env.addr, role_id=role_id, secret_id="wrong-secret-id", timeout=5.0)
    with pytest.raises(VaultPermissionError, match="VAULT_SECRET_ID_FILE"):
        backend.create_key(label="nope")


def test_vault_missing_key_is_not_found(vault_env):
    backend = vault_env.backend()
    with pytest.raises(VaultKeyNotFoundError, match="no key") as missing:
        backend.sign_digest(key_id="ab" * 16, digest=bytes(32))
    assert "secret/data/custos/keys/" + "ab" * 16 in str(missing.value)


def test_vault_token_auth_signs(vault_env):
    backend = VaultBackend(addr=vault_env.addr, auth_method="token", token=vault_env.root_token, timeout=5.0)
    ref = backend.create_key(label="token-auth")
    digest = secrets.token_bytes(32)
    assert recovered_address(digest, backend.sign_digest(key_id=ref.key_id, digest=digest)) == ref.address


def test_vault_connection_refused_is_unavailable():
    backend = VaultBackend(
        addr=f"http://127.0.0.1:{free_port()}", role_id="role", secret_id="secret", timeout=2.0
    )
    with pytest.raises(VaultUnavailableError, match="unreachable"):
        backend.create_key(label="down")


def test_vault_that_never_answers_is_unavailable_after_the_timeout():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # connections complete in the backlog; nothing ever answers
        port = listener.getsockname()[1]
        backend = VaultBackend(
            addr=f"http://127.0.0.1:{port}", role_id="role", secret_id="secret", timeout=0.5
        )
        with pytest.raises(VaultUnavailableError, match="Timeout"):
            backend.sign_digest(key_id="ab" * 16, digest=bytes(32))


def test_vault_token_is_renewed_when_its_ttl_runs_low(vault_env):
    backend = vault_env.backend("short", renew_below_seconds=300)  # 60 s tokens: always "low"
    ref = backend.create_key(label="renew")
    backend.sign_digest(key_id=ref.key_id, digest=bytes(32))
    assert backend.logins == 1
    assert backend.renewals >= 1
    if vault_env.fake is not None:
        assert ("POST", "/v1/auth/token/renew-self") in vault_env.fake.requests


def test_vault_token_is_not_renewed_while_its_ttl_is_high(vault_env):
    backend = vault_env.backend("custos", renew_below_seconds=300)  # 1 h tokens
    ref = backend.create_key(label="no-renew")
    backend.sign_digest(key_id=ref.key_id, digest=bytes(32))
    assert (backend.logins, backend.renewals) == (1, 0)


def test_vault_approle_logs_in_again_after_the_token_expires(vault_env):
    backend = vault_env.backend()
    ref = backend.create_key(label="relogin")
    first = backend.client.token
    vault_env.revoke(first)  # to the client an expired and a revoked token look the same: 403
    digest = secrets.token_bytes(32)
    assert recovered_address(digest, backend.sign_digest(key_id=ref.key_id, digest=digest)) == ref.address
    assert backend.logins == 2
    assert backend.client.token != first


@pytest.mark.slow
def test_vault_approle_logs_in_again_when_renewal_hits_the_max_ttl(vault_env):
    import time

    backend = vault_env.backend("capped", renew_below_seconds=300)  # ttl 60 s = max ttl 60 s
    ref = backend.create_key(label="capped")
    time.sleep(1.2)  # the token's max TTL now caps any renewal below its issued TTL
    backend.sign_digest(key_id=ref.key_id, digest=bytes(32))
    assert backend.logins == 2


# --- txsign refuses what it cannot sign faithfully ------------------------------------------------------


def _tx(**changes) -> dict:
    tx = {
        "type": 2,
        "chainId": 31337,
        "nonce": 0,
        "to": "0x" + "11" * 20,
        "value": 1,
        "data": "0x",
        "gas": 21_000,
        "maxFeePerGas": 2 * 10**9,
        "maxPriorityFeePerGas": 10**9,
    }
    tx.update(changes)
    return {k: v for k, v in tx.items() if v is not None}


@pytest.mark.parametrize(
    ("tx", "message"),
    [
        (_tx(type=0), "only type 2"),
        (_tx(type="0x1"), "only type 2"),
        (_tx(gasPrice=10**9), "gasPrice"),
        (_tx(maxFeePerGas=None), "missing maxFeePerGas"),
        (_tx(**{"from": "0x" + "33" * 20}), "not the address"),
    ],
)
def test_txsign_refuses_transactions_it_cannot_sign_faithfully(keystore_backend, tx, message):
    ref = keystore_backend.create_key(label="refuse")
    with pytest.raises(ValueError, match=message):
        sign_transaction(keystore_backend, ref.key_id, tx)


def test_txsign_accepts_its_own_from_address(keystore_backend):
    ref = keystore_backend.create_key(label="from")
    signed = sign_transaction(keystore_backend, ref.key_id, _tx(**{"from": ref.address.lower()}))
    assert Account.recover_transaction(signed.raw) == ref.address


# --- backend_from_settings -----------------------------------------------------------------------------


@pytest.mark.hsm
def test_backends_are_built_from_settings(settings, tmp_path, softhsm_token, pkcs11_backend, vault_env):
    (tmp_path / "keystore.pass").write_text(KEYSTORE_PASSPHRASE)
    settings.KEYSTORE_DIR = str(tmp_path / "keys")
    settings.KEYSTORE_PASSPHRASE_FILE = str(tmp_path / "keystore.pass")
    settings.KEYSTORE_SCRYPT_N = 2**10
    keystore = backend_from_settings("keystore")
    assert isinstance(keystore, KeystoreBackend)
    assert keystore.scrypt_n == 2**10

    (tmp_path / "hsm.pin").write_text(softhsm_token.pin + "\n")
    settings.PKCS11_MODULE = softhsm_token.module
    settings.PKCS11_TOKEN_LABEL = softhsm_token.label
    settings.PKCS11_PIN_FILE = str(tmp_path / "hsm.pin")
    settings.SOFTHSM2_CONF = softhsm_token.conf
    hsm = backend_from_settings("pkcs11")
    try:
        ref = pkcs11_backend.create_key(label="settings")
        assert hsm.address_of(key_id=ref.key_id) == ref.address
    finally:
        hsm.close()

    role_id, secret_id = vault_env.roles["custos"]
    (tmp_path / "secret-id").write_text(secret_id + "\n")
    settings.VAULT_ADDR = vault_env.addr
    settings.VAULT_AUTH_METHOD = "approle"
    settings.VAULT_ROLE_ID = role_id
    settings.VAULT_SECRET_ID_FILE = str(tmp_path / "secret-id")
    vault = backend_from_settings("vault")
    assert vault.create_key(label="settings").backend == "vault"

    settings.VAULT_SECRET_ID_FILE = ""
    with pytest.raises(KeyBackendError, match="VAULT_SECRET_ID_FILE"):
        backend_from_settings("vault")
    with pytest.raises(KeyBackendError, match="unknown key backend"):
        backend_from_settings("paper")
