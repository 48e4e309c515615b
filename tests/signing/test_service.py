"""The signing service on real parts: the dev chain, PostgreSQL, and a keystore backend.

Every forged request names a real trade id, as a message forged into Redis would; the signer must
refuse each one, record why, and sign nothing."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone
from eth_account import Account
from web3 import Web3

from apps.chain import devchain
from apps.chain.models import Token
from apps.chain.txcodec import payload_hash
from apps.signing import services, tasks
from apps.signing.models import SigningRecord, SigningRefusal
from apps.trades.models import ChainTransaction
from apps.wallets.models import Wallet
from apps.wallets.services import scope_revoke, wallet_create
from tests.factories import GWEI, UserFactory, grant_scope, signing_trade

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.chain]
PASSPHRASE = "correct horse battery staple"


@pytest.fixture
def keystore_settings(settings, tmp_path):
    passphrase = tmp_path / "keystore.pass"
    passphrase.write_text(PASSPHRASE)
    settings.KEYSTORE_DIR = str(tmp_path / "keystore")
    settings.KEYSTORE_PASSPHRASE_FILE = str(passphrase)
    settings.KEYSTORE_SCRYPT_N = 2**10
    services.backend.cache_clear()
    yield settings
    services.backend.cache_clear()


@pytest.fixture
def wallet(deployed_devchain, keystore_settings) -> Wallet:
    wallet = wallet_create(owner=UserFactory(), label="main", key_backend="keystore")
    assert wallet.status == Wallet.Status.PROVISIONING
    wallet = services.wallet_key_create(wallet_id=wallet.pk)
    assert wallet.status == Wallet.Status.ACTIVE
    devchain.fund_address(url=deployed_devchain, address=wallet.address, eth=Decimal(5), token_units=10_000)
    return wallet


@pytest.fixture
def scope(wallet):
    return grant_scope(wallet)


def _private_key_hex(wallet: Wallet) -> str:
    path = next(
        p
        for p in __import__("pathlib").Path(services.backend("keystore").directory).glob("*.json")
        if wallet.key_id in p.name
    )
    return bytes(Account.decrypt(json.loads(path.read_text()), PASSPHRASE)).hex()


def test_a_signed_swap_is_mined_from_the_wallet(wallet, scope, deployed_devchain):
    trade = signing_trade(wallet)
    outcome = services.trade_sign(trade_id=trade.pk, attempt=1)
    assert outcome.signed, outcome.refusal
    records = list(SigningRecord.objects.filter(trade=trade).order_by("nonce"))
    assert [r.nonce for r in records] == [0, 1]

    w3 = Web3(Web3.HTTPProvider(deployed_devchain))
    dai = Token.objects.get(symbol="dDAI")
    erc20 = w3.eth.contract(address=dai.address, abi=devchain.load_artifact("DevToken")["abi"])
    before = erc20.functions.balanceOf(wallet.address).call()
    for record in records:
        sent = w3.eth.send_raw_transaction(bytes(record.raw_signed))
        assert "0x" + sent.hex().removeprefix("0x") == record.tx_hash
        receipt = w3.eth.wait_for_transaction_receipt(sent)
        assert receipt["status"] == 1
        assert receipt["from"] == wallet.address
    assert erc20.functions.balanceOf(wallet.address).call() - before >= int(trade.amount_out_min)


def test_signing_twice_is_idempotent(wallet, scope):
    trade = signing_trade(wallet)
    first = services.trade_sign(trade_id=trade.pk, attempt=1)
    second = services.trade_sign(trade_id=trade.pk, attempt=1)
    assert first.signed
    assert second.signed
    assert first.records == second.records
    assert SigningRecord.objects.filter(trade=trade).count() == 2


def _other_address() -> str:
    return Account.create().address


FORGERIES = {
    "trade_not_in_state": {"state": "CONFIRMING"},
    "router_not_allowed": {"tx_overrides": {"to": "0x" + "ab" * 20}},
    "recipient_not_wallet": {"call_overrides": {"recipient": "0x" + "cd" * 20}},
    "amount_over_cap": {"amount_in": 2_000 * 10**6},
    "fee_over_cap": {"tx_overrides": {"max_fee_per_gas": 500 * GWEI}},
    "priority_fee_over_cap": {"tx_overrides": {"max_priority_fee_per_gas": 50 * GWEI}},
    "slippage_over_cap": {"call_overrides": {"amount_out_min": 90 * 10**18}},
}


@pytest.mark.parametrize("expected", sorted(FORGERIES))
def test_forged_requests_are_refused_with_the_reason_recorded(wallet, scope, expected):
    forged = dict(FORGERIES[expected])
    if "tx_overrides" in forged and "to" in forged["tx_overrides"]:
        forged["tx_overrides"] = {"to": Web3.to_checksum_address(forged["tx_overrides"]["to"])}
    if "call_overrides" in forged and "recipient" in forged["call_overrides"]:
        forged["call_overrides"] = {
            "recipient": Web3.to_checksum_address(forged["call_overrides"]["recipient"])
        }
    trade = signing_trade(wallet, **forged)
    outcome = services.trade_sign(trade_id=trade.pk, attempt=1)
    assert not outcome.signed
    refusal = SigningRefusal.objects.get(trade=trade)
    assert refusal.code == expected, refusal.detail
    assert not SigningRecord.objects.filter(trade=trade).exists()


def test_a_token_outside_the_pair_is_refused(wallet, scope):
    weth = Token.objects.get(symbol="WETH")
    usdc = Token.objects.get(symbol="dUSDC")
    trade = signing_trade(wallet, path=[usdc.address, weth.address])
    assert not services.trade_sign(trade_id=trade.pk, attempt=1).signed
    assert SigningRefusal.objects.get(trade=trade).code == "token_outside_pair"


def test_revoked_and_expired_scopes_sign_nothing(wallet, scope):
    scope_revoke(scope=scope)
    trade = signing_trade(wallet)
    assert not services.trade_sign(trade_id=trade.pk, attempt=1).signed
    assert SigningRefusal.objects.get(trade=trade).code == "no_active_scope"

    now = timezone.now()
    grant_scope(wallet, valid_from=now - timedelta(days=2), valid_until=now - timedelta(days=1))
    trade = signing_trade(wallet)
    assert not services.trade_sign(trade_id=trade.pk, attempt=1).signed
    assert SigningRefusal.objects.get(trade=trade).code == "no_active_scope"


def test_tampered_frozen_fields_are_refused(wallet, scope):
    trade = signing_trade(wallet)
    ChainTransaction.objects.filter(trade=trade, kind="swap").update(gas=1_000_000)  # hash not updated
    assert not services.trade_sign(trade_id=trade.pk, attempt=1).signed
    assert SigningRefusal.objects.get(trade=trade).code == "payload_tampered"


def test_a_second_payload_for_a_used_nonce_is_refused(wallet, scope):
    first = signing_trade(wallet)
    assert services.trade_sign(trade_id=first.pk, attempt=1).signed
    used_nonce = first.transactions.get(kind="swap").nonce
    second = signing_trade(wallet, with_approve=False)
    tx = second.transactions.get()
    tx.nonce = used_nonce
    tx.unsigned_hash = payload_hash(tx.as_unsigned_dict())
    tx.save()
    assert not services.trade_sign(trade_id=second.pk, attempt=1).signed
    assert SigningRefusal.objects.get(trade=second).code == "nonce_reused"
    assert SigningRecord.objects.filter(nonce=used_nonce).count() == 1


def _replacement(trade, *, fee_bps: int, priority_bps: int) -> ChainTransaction:
    original = trade.transactions.get(kind="swap", attempt=1)
    tx = ChainTransaction.objects.get(pk=original.pk)
    tx.pk = None
    tx.attempt = 2
    tx.replaces = original
    tx.max_fee_per_gas = int(original.max_fee_per_gas) * (10_000 + fee_bps) // 10_000
    tx.max_priority_fee_per_gas = int(original.max_priority_fee_per_gas) * (10_000 + priority_bps) // 10_000
    tx.unsigned_hash = payload_hash(tx.as_unsigned_dict())
    tx.save()
    return tx


@pytest.mark.parametrize(("fee_bps", "priority_bps"), [(500, 1000), (1000, 500), (999, 2000)])
def test_a_replacement_needs_ten_percent_more_on_both_fees(wallet, scope, fee_bps, priority_bps):
    trade = signing_trade(wallet)
    assert services.trade_sign(trade_id=trade.pk, attempt=1).signed
    trade.start_confirming()
    trade.save()
    _replacement(trade, fee_bps=fee_bps, priority_bps=priority_bps)
    assert not services.trade_sign(trade_id=trade.pk, attempt=2).signed
    assert SigningRefusal.objects.get(trade=trade, attempt=2).code == "replacement_fee_too_low"


def test_a_replacement_with_bumped_fees_is_signed_and_recorded_as_replacing(wallet, scope):
    trade = signing_trade(wallet)
    assert services.trade_sign(trade_id=trade.pk, attempt=1).signed
    trade.start_confirming()
    trade.save()
    tx = _replacement(trade, fee_bps=1000, priority_bps=1250)
    outcome = services.trade_sign(trade_id=trade.pk, attempt=2)
    assert outcome.signed, outcome.refusal
    record = SigningRecord.objects.get(chain_transaction=tx)
    original = SigningRecord.objects.get(chain_transaction=tx.replaces)
    assert record.replaces == original
    assert record.nonce == original.nonce
    assert record.payload_hash != original.payload_hash


def test_a_key_the_backend_cannot_find_refuses_the_request(wallet, scope, tmp_path):
    trade = signing_trade(wallet)
    for path in __import__("pathlib").Path(services.backend("keystore").directory).glob("*.json"):
        path.unlink()
    outcome = services.trade_sign(trade_id=trade.pk, attempt=1)
    assert not outcome.signed
    refusal = SigningRefusal.objects.get(trade=trade)
    assert refusal.code == "key_unavailable"
    assert wallet.key_id in refusal.detail


def _key_for(address: str, text: str) -> str | None:
    """Any 64-hex run in `text` that is the private key of `address` (None when there is none)."""
    import re

    from coincurve import PrivateKey

    from apps.signing.backends.base import address_from_public_key

    for candidate in set(re.findall(r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])", text.lower())):
        try:
            public = PrivateKey(bytes.fromhex(candidate)).public_key.format(compressed=False)
        except ValueError:
            continue  # zero or above the curve order: not a key
        if address_from_public_key(public).lower() == address.lower():
            return candidate
    return None


def _database_text() -> str:
    dump = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT t::text FROM "{table}" t')  # noqa: S608 - names from introspection
            dump.extend(row[0] for row in cursor.fetchall())
    return "\n".join(dump)


@pytest.fixture(
    params=[pytest.param("pkcs11", marks=pytest.mark.hsm), "vault-fake", "vault-real", "keystore"]
)
def backend_wallet(request, deployed_devchain, keystore_settings, tmp_path, monkeypatch):
    """A wallet whose key was created by each backend in turn, and a way to read the key back where
    the backend allows it (None for the HSM: its key cannot leave the token)."""
    from tests.signing.conftest import vault_environment

    kind = request.param
    with __import__("contextlib").ExitStack() as stack:
        if kind == "pkcs11":
            chosen = request.getfixturevalue("pkcs11_backend")
        elif kind == "keystore":
            chosen = services.backend("keystore")
        else:
            env = stack.enter_context(vault_environment(kind.removeprefix("vault-"), tmp_path))
            chosen = env.backend()
        patch = stack.enter_context(monkeypatch.context())  # undone before keystore_settings' teardown
        patch.setattr(services, "backend", lambda _name: chosen)
        wallet = wallet_create(owner=UserFactory(), label=kind, key_backend=kind.split("-")[0])
        wallet = services.wallet_key_create(wallet_id=wallet.pk)

        def key_hex() -> str | None:
            if kind == "keystore":
                return _private_key_hex(wallet)
            if kind.startswith("vault"):
                return env.secret(f"custos/keys/{wallet.key_id}")["private_key"]
            return None

        yield wallet, key_hex


def test_after_signing_with_each_backend_no_key_is_in_the_database_logs_or_results(backend_wallet, caplog):
    wallet, key_hex = backend_wallet
    caplog.set_level(logging.DEBUG)
    grant_scope(wallet)
    trade = signing_trade(wallet)
    result = tasks.sign.run(trade.pk, 1)
    assert result["signed"] is True, result
    database = _database_text()
    for record in SigningRecord.objects.filter(trade=trade):  # signed by this backend's key
        assert Account.recover_transaction(bytes(record.raw_signed)) == wallet.address
    assert wallet.address.lower()[2:] in database.lower()  # the dump is real and holds the wallet
    known = key_hex()
    if known is not None:  # the backend lets the test read the key: look for it, both cases
        assert _key_for(wallet.address, known) == known.lower()  # the scanner finds a real key
        for needle in (known.lower(), known.upper()):
            assert needle not in database
            assert needle not in caplog.text
            assert needle not in json.dumps(result)
    for text in (database, caplog.text, json.dumps(result)):  # and no key of this wallet at all
        assert _key_for(wallet.address, text) is None
