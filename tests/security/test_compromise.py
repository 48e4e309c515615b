"""Full compromise of the web side: connected as the web's database role, and separately with a
`manage` API token, the attacker does everything those grants allow; then the real pipeline runs
with real workers. Nothing is signed outside the scopes the owner signed with a key only the test
holds, and every refusal is recorded with its reason."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from apps.chain.abi import to_checksum_address
from apps.chain.models import Dex, Token
from apps.gateway.services import api_token_create
from apps.signing.models import SigningRecord
from apps.trades.models import ChainTransaction, Trade
from apps.trades.real_money_transaction_manager import trade_submit
from apps.wallets.models import PermissionScope
from apps.wallets.services import scope_propose
from celery_app import app
from tests.e2e.conftest import drive, make_wallet
from tests.factories import STRANGER_AUTHORITY_KEY, owner_signature
from tests.test_db_roles_narrowed import django_as

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e, pytest.mark.chain]

ATTACKER = to_checksum_address("0x" + "ad" * 20)  # the attacker's router and token, nobody's contract


def _as_web_sql():
    db = connection.settings_dict
    return psycopg.connect(
        host=db["HOST"], port=db["PORT"], dbname=db["NAME"], user="custos_api", autocommit=True
    )


def _submit(wallet, dex, path, key, amount=10 * 10**6):
    return trade_submit(
        owner=wallet.owner,
        wallet=wallet,
        dex=dex,
        path=path,
        amount_in=amount,
        slippage_bps=50,
        idempotency_key=key,
        deadline=timezone.now() + timedelta(minutes=20),
    ).trade


def test_a_compromised_web_side_gets_no_signature_outside_the_owner_signed_scopes(stack):
    wallet = make_wallet(stack, "victim")  # the owner signed a dUSDC -> dDAI scope on the dev DEX
    other = make_wallet(stack, "other")
    other.owner = wallet.owner
    other.save(update_fields=["owner"])
    signed_scope = PermissionScope.objects.get(wallet=wallet)
    dex, usdc, dai = Dex.objects.get(), Token.objects.get(symbol="dUSDC"), Token.objects.get(symbol="dDAI")
    stack.start("execution", "execution", "custos_engine")
    stack.start("signer", "signer", "custos_signer")

    # --- as the web's database role, running the web's own code -----------------------------------
    with django_as("custos_api"):
        # Registry rows are the web's to write: an attacker's router and token.
        evil_dex = Dex.objects.create(chain=dex.chain, name="evil", router=ATTACKER, factory=ATTACKER)
        evil_token = Token.objects.create(
            chain=dex.chain, address=ATTACKER, symbol="EVIL", name="evil", decimals=18
        )
        # A scope on them, "signed" by a key that is not the owner's authority key (attached behind the
        # service, which would refuse it).
        evil = scope_propose(
            wallet=wallet,
            dex=evil_dex,
            token_in=usdc,
            token_out=evil_token,
            max_amount_in=10**30,
            max_slippage_bps=5000,
            max_fee_per_gas=10**12,
            max_priority_fee_per_gas=10**11,
            valid_from=timezone.now() - timedelta(minutes=1),
            valid_until=timezone.now() + timedelta(days=9),
        )
        PermissionScope.objects.filter(pk=evil.pk).update(
            signature=owner_signature(evil, STRANGER_AUTHORITY_KEY)
        )
        # A valid owner signature from the other wallet's scope, replayed onto a new row of this wallet.
        source = PermissionScope.objects.get(wallet=other)
        replay = PermissionScope.objects.get(pk=source.pk)
        replay.pk, replay.wallet, replay.signature, replay.signed_by, replay.signed_at = (
            None,
            wallet,
            "",
            "",
            None,
        )
        replay.save()
        PermissionScope.objects.filter(pk=replay.pk).update(signature=source.signature)
        # Trades the attacker submits: through the evil DEX, into the evil token, and a large one.
        attacks = [
            _submit(wallet, evil_dex, [usdc.address, dai.address], "evil-router"),
            _submit(wallet, dex, [usdc.address, evil_token.address], "evil-token"),
            _submit(wallet, dex, [usdc.address, dai.address], "over-cap", amount=5_000 * 10**6),
        ]
        # And the owner's own ordinary trade, which must still go through.
        honest = _submit(wallet, dex, [usdc.address, dai.address], "honest")

    # The writes the web role may not do at all are refused by PostgreSQL.
    with _as_web_sql() as web:
        for sql, params in (
            ("UPDATE wallets_permissionscope SET max_amount_in = 1e30 WHERE id = %s", [signed_scope.pk]),
            ("UPDATE trades_trade SET state = 'SIGNING' WHERE id = %s", [honest.pk]),
            ("DELETE FROM trades_tradeevent WHERE trade_id = %s", [honest.pk]),
            ("UPDATE chain_rpcendpoint SET url = 'http://127.0.0.1:1'", []),
            (
                "INSERT INTO wallets_authoritykey (owner_id, address, label, created_at)"
                " VALUES (%s, %s, '', now())",
                [wallet.owner_id, ATTACKER],
            ),
        ):
            with pytest.raises(psycopg.Error):
                web.execute(sql, params)

    # --- with a manage-level API token -----------------------------------------------------------
    issued = api_token_create(user=wallet.owner, name="stolen", level="manage")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.raw}")
    with django_as("custos_api"):
        proposed = client.post(
            f"/api/v1/wallets/{wallet.pk}/scopes",
            {
                "chain_id": 31337,
                "dex": evil_dex.pk,
                "token_in": usdc.address,
                "token_out": evil_token.address,
                "max_amount_in": "1000000",
                "max_slippage_bps": 5000,
                "max_fee_per_gas_gwei": "1000",
                "max_priority_fee_per_gas_gwei": "100",
                "valid_from": timezone.now().isoformat(),
                "valid_until": (timezone.now() + timedelta(days=1)).isoformat(),
            },
            format="json",
        )
        assert proposed.status_code == 201, proposed.json()
        forged = client.post(
            f"/api/v1/scopes/{proposed.json()['id']}/signature",
            {
                "signature": owner_signature(
                    PermissionScope.objects.get(pk=proposed.json()["id"]), STRANGER_AUTHORITY_KEY
                )
            },
            format="json",
        )
        assert forged.status_code == 400
        assert "signature" in forged.json()["error"]["fields"]
    # A forged signing request put straight on the signer's queue, for every trade, first attempt.
    for trade in [*attacks, honest]:
        app.send_task("signing.sign", args=[trade.pk, 1])

    states = drive(stack, [t.pk for t in [*attacks, honest]], timeout=180)

    assert states[honest.pk] == "SETTLED", stack.log_tail()
    for trade in attacks:
        trade.refresh_from_db()
        assert trade.state in ("REJECTED", "FAILED"), (trade.pk, trade.state)
        assert trade.reason, trade.pk  # every refusal says why
    # Signatures exist only for the honest trade's transactions, each under the owner-signed scope.
    assert set(SigningRecord.objects.values_list("trade_id", flat=True)) == {honest.pk}
    for tx in ChainTransaction.objects.filter(trade=honest):
        assert tx.to in (signed_scope.router, usdc.address)
    reasons = {t.pk: Trade.objects.get(pk=t.pk).reason for t in attacks}
    assert "router_not_allowed" in reasons[attacks[0].pk] or "simulation" in reasons[attacks[0].pk]
    assert any(
        code in reasons[attacks[1].pk]
        for code in ("scope_signer_not_authority", "token_outside_pair", "simulation")
    )
    assert "amount_over_cap" in reasons[attacks[2].pk]
