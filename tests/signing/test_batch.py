"""The signer's batch: many requests judged in one transaction, each exactly as on its own.

Real PostgreSQL and a real keystore key; no chain needed (nothing is broadcast here)."""

from __future__ import annotations

import psycopg
import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from web3 import Web3

from apps.signing import rows, services
from apps.signing.models import SigningRecord, SigningRefusal
from apps.trades.models import ChainTransaction, Trade
from apps.wallets.models import NonceCursor, Wallet
from project.locks import Advisory
from tests.factories import UserFactory, grant_scope, signing_trade
from tests.signing.test_service import keystore_settings  # noqa: F401 - fixture

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.chain]


@pytest.fixture
def wallet(deployed_devchain, keystore_settings) -> Wallet:  # noqa: F811
    from apps.wallets.services import wallet_create

    wallet = wallet_create(owner=UserFactory(), label="batch", key_backend="keystore")
    return services.wallet_key_create(wallet_id=wallet.pk)


@pytest.fixture
def hsm_wallet(deployed_devchain, pkcs11_backend, monkeypatch) -> Wallet:
    """A wallet whose key lives on the SoftHSM token: the only kind that signs in batches."""
    from apps.wallets.services import wallet_create

    original = services.backend

    def backend(name: str):
        return pkcs11_backend if name == "pkcs11" else original(name)

    backend.cache_clear = original.cache_clear
    monkeypatch.setattr(services, "backend", backend)
    wallet = wallet_create(owner=UserFactory(), label="batch-hsm", key_backend="pkcs11")
    return services.wallet_key_create(wallet_id=wallet.pk)


def _codes(trade) -> list[str]:
    return list(SigningRefusal.objects.filter(trade=trade).values_list("code", flat=True))


def test_a_batch_signs_the_good_requests_and_refuses_each_forged_one_with_its_reason(wallet):
    grant_scope(wallet)
    good = [signing_trade(wallet) for _ in range(3)]
    over_cap = signing_trade(wallet, amount_in=2_000 * 10**6)
    not_wallet = signing_trade(
        wallet, call_overrides={"recipient": Web3.to_checksum_address("0x" + "cd" * 20)}
    )
    not_signing = signing_trade(wallet, state="VALIDATING")
    requests = [(t.pk, 1) for t in (good[0], over_cap, good[1], not_wallet, not_signing, good[2])]

    outcomes = services.trade_sign_batch(requests)

    assert [outcomes[(t.pk, 1)].signed for t in good] == [True, True, True]
    for trade in good:
        records = SigningRecord.objects.filter(trade=trade).order_by("chain_transaction__sequence")
        assert [r.chain_transaction.kind for r in records] == ["approve", "swap"]
        assert tuple(r.pk for r in records) == outcomes[(trade.pk, 1)].records
        assert _codes(trade) == []
    for trade, code in ((over_cap, "amount_over_cap"), (not_wallet, "recipient_not_wallet")):
        assert not outcomes[(trade.pk, 1)].signed
        assert _codes(trade) == [code]
        assert not SigningRecord.objects.filter(trade=trade).exists()
    # A request for a trade not yet frozen for signing is answered with nothing: no refusal that the
    # trade's own answer would later be judged by (a request forged onto the queue, or very early).
    assert not outcomes[(not_signing.pk, 1)].signed
    assert "trade_not_in_state" in outcomes[(not_signing.pk, 1)].refusal
    assert _codes(not_signing) == []
    # The batch is idempotent as a whole, as each request is on its own.
    again = services.trade_sign_batch(requests)
    assert again[(good[1].pk, 1)].records == outcomes[(good[1].pk, 1)].records
    assert SigningRecord.objects.filter(trade__in=good).count() == 6


def test_the_batch_counts_its_own_signatures_against_the_24_hour_volume(wallet):
    # 100 USD per trade (dUSDC is a stablecoin) under a 250 USD daily cap: the third is over it even
    # though none of the three had a ledger entry when the batch began.
    grant_scope(wallet, daily_volume_usd=250)
    trades = [signing_trade(wallet) for _ in range(3)]

    outcomes = services.trade_sign_batch([(t.pk, 1) for t in trades])

    assert [outcomes[(t.pk, 1)].signed for t in trades] == [True, True, False]
    assert _codes(trades[2]) == ["daily_volume_over_cap"]
    assert "200" in SigningRefusal.objects.get(trade=trades[2]).detail  # 24h volume already spent


def test_two_requests_for_one_nonce_in_one_batch_sign_only_the_first(wallet):
    grant_scope(wallet)
    first = signing_trade(wallet, with_approve=False)
    first_nonce = ChainTransaction.objects.get(trade=first).nonce
    second = signing_trade(wallet, with_approve=False, tx_overrides={"nonce": first_nonce})

    outcomes = services.trade_sign_batch([(first.pk, 1), (second.pk, 1)])

    assert outcomes[(first.pk, 1)].signed
    assert not outcomes[(second.pk, 1)].signed
    assert _codes(second) == ["nonce_reused"]
    assert SigningRecord.objects.filter(nonce=first_nonce).count() == 1


def _other_connection() -> psycopg.Connection:
    params = connection.settings_dict
    return psycopg.connect(
        dbname=params["NAME"],
        user=params["USER"],
        host=params["HOST"] or None,
        port=params["PORT"] or None,
        password=params["PASSWORD"] or None,
    )


@pytest.mark.hsm
def test_a_sign_request_takes_waiting_trades_along_but_not_refused_or_claimed_ones(hsm_wallet):
    wallet = hsm_wallet
    grant_scope(wallet)
    asked, waiting, refused, claimed = (signing_trade(wallet) for _ in range(4))
    SigningRefusal.objects.create(trade=refused, attempt=1, code="key_unavailable", detail="earlier refusal")
    other = _other_connection()
    try:
        with other.transaction():
            # Another signer is judging `claimed` right now.
            other.execute(
                "SELECT pg_advisory_xact_lock(%s, %s)", [int(Advisory.SIGNER_JUDGING), claimed.pk]
            )
            outcomes = services.trade_sign_batch([(asked.pk, 1)], companions=10)
    finally:
        other.close()

    assert set(outcomes) == {(asked.pk, 1), (waiting.pk, 1)}
    assert SigningRecord.objects.filter(trade=waiting).count() == 2
    assert not SigningRecord.objects.filter(trade__in=[refused, claimed]).exists()
    # `claimed`'s own request, once the other signer let go, signs it; `waiting`'s finds it done.
    assert services.trade_sign(trade_id=claimed.pk, attempt=1).signed
    assert services.trade_sign(trade_id=waiting.pk, attempt=1).records == outcomes[(waiting.pk, 1)].records


def test_a_request_whose_key_the_process_loads_takes_nothing_along(wallet, hsm_wallet):
    """Keystore (and Vault KV) keys enter the signing child: it signs its own request only, so the
    child that held the key is recycled before the next request; waiting HSM trades wait for theirs."""
    grant_scope(wallet)
    grant_scope(hsm_wallet)
    asked, hsm_waiting = signing_trade(wallet), signing_trade(hsm_wallet)
    outcomes = services.trade_sign_batch([(asked.pk, 1)], companions=10)
    assert set(outcomes) == {(asked.pk, 1)}
    assert not SigningRecord.objects.filter(trade=hsm_waiting).exists()
    # And an HSM request does not take a keystore trade along either.
    keystore_waiting = signing_trade(wallet)
    outcomes = services.trade_sign_batch([(hsm_waiting.pk, 1)], companions=10)
    assert set(outcomes) == {(hsm_waiting.pk, 1)}
    assert not SigningRecord.objects.filter(trade=keystore_waiting).exists()


@pytest.mark.hsm
def test_batch_size_one_takes_nothing_along(hsm_wallet, settings):
    wallet = hsm_wallet
    grant_scope(wallet)
    asked, waiting = signing_trade(wallet), signing_trade(wallet)
    settings.SIGNER_BATCH_SIZE = 1
    from apps.signing import tasks

    result = tasks.sign.apply(args=[asked.pk, 1]).get()
    assert result["signed"]
    assert not SigningRecord.objects.filter(trade=waiting).exists()
    settings.SIGNER_BATCH_SIZE = 4
    tasks.sign.apply(args=[asked.pk, 1]).get()
    assert SigningRecord.objects.filter(trade=waiting).count() == 2


def test_the_batch_judges_exactly_the_rows_the_orm_reads(wallet):
    # The batch reads its trades and transactions with one raw query, in binary: each instance must
    # equal the ORM's, field by field and type by type, or the scope check would judge other facts.
    grant_scope(wallet)
    trades = [signing_trade(wallet), signing_trade(wallet, with_approve=False, state="VALIDATING")]
    requests = [(t.pk, 1) for t in trades] + [(trades[0].pk, 2), (10**9, 1)]

    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        loaded = rows.load_requests(requests)
    assert len(queries) == 1

    assert set(loaded.trades) == {t.pk for t in trades}  # the unknown trade is absent
    assert loaded.transactions[(trades[0].pk, 2)] == []  # no such attempt
    for trade in trades:
        expected = Trade.objects.select_related("wallet", "chain").get(pk=trade.pk)
        got = loaded.trades[trade.pk]
        pairs = [(expected, got), (expected.wallet, got.wallet), (expected.chain, got.chain)]
        txs = ChainTransaction.objects.filter(trade=trade, attempt=1).order_by("sequence")
        assert [tx.pk for tx in loaded.transactions[(trade.pk, 1)]] == [tx.pk for tx in txs]
        pairs += zip(txs, loaded.transactions[(trade.pk, 1)], strict=True)
        for orm, raw in pairs:
            for field in type(orm)._meta.concrete_fields:
                theirs, ours = getattr(orm, field.attname), getattr(raw, field.attname)
                assert (type(ours), ours) == (type(theirs), theirs), field
        for created in (got.created_at, got.wallet.created_at):
            assert created.tzinfo is expected.created_at.tzinfo
    assert loaded.next_nonces == {(wallet.pk, trades[0].chain_id): NonceCursor.objects.get().next_nonce}


def test_the_database_refuses_a_second_payload_for_a_nonce_the_batch_did_not_see(wallet, monkeypatch):
    # A concurrent signer commits a payload for the nonce after the batch read the nonce's records:
    # the unique constraint refuses the batch's INSERT, and the request is refused with the reason.
    grant_scope(wallet)
    first = signing_trade(wallet, with_approve=False)
    nonce = ChainTransaction.objects.get(trade=first).nonce
    second = signing_trade(wallet, with_approve=False, tx_overrides={"nonce": nonce})
    assert services.trade_sign(trade_id=first.pk, attempt=1).signed
    monkeypatch.setattr(services._NonceUse, "check", lambda self, *, trade, tx: None)

    outcomes = services.trade_sign_batch([(second.pk, 1), (signing_trade(wallet).pk, 1)])

    assert not outcomes[(second.pk, 1)].signed
    assert _codes(second) == ["nonce_reused"]
    assert SigningRecord.objects.filter(nonce=nonce).count() == 1
    assert sum(o.signed for o in outcomes.values()) == 1  # the other request of the batch is signed


def test_a_premature_sign_request_leaves_nothing_that_could_later_reject_the_trade(wallet):
    grant_scope(wallet)
    trade = signing_trade(wallet, state="VALIDATING")
    assert not services.trade_sign(trade_id=trade.pk, attempt=1).signed  # forged: too early
    assert _codes(trade) == []
    Trade.objects.filter(pk=trade.pk).update(state="SIGNING")  # the engine froze it meanwhile
    assert services.trade_sign(trade_id=trade.pk, attempt=1).signed


def test_a_nonce_signed_for_a_replaced_dev_chain_carries_a_new_payload_once_retired(wallet):
    """`devchain up` found a new dev chain and retired what was signed for the old one: the new
    chain counts nonces from 0 again, and a payload signed there no longer holds its nonce."""
    grant_scope(wallet)
    old = signing_trade(wallet, with_approve=False)
    assert services.trade_sign(trade_id=old.pk, attempt=1).signed
    NonceCursor.objects.filter(wallet=wallet).update(next_nonce=0)  # the new chain's count
    new = signing_trade(wallet, with_approve=False)
    assert not services.trade_sign(trade_id=new.pk, attempt=1).signed
    assert _codes(new) == ["nonce_reused"]
    SigningRefusal.objects.filter(trade=new).delete()
    SigningRecord.objects.filter(trade=old).update(retired=True)  # as devchain up does, as the owner
    assert services.trade_sign(trade_id=new.pk, attempt=1).signed
