"""The owner's own flow, end to end with real workers: an authority key held only by the test (as the
owner's phone holds it) signs a scope proposed through the API; trades settle under it; the owner
revokes it from the API and the next trade is refused."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from apps.chain import devchain
from apps.chain.models import Dex, Token
from apps.gateway.services import api_token_create
from apps.signing import services as signer
from apps.signing.models import SigningRecord
from apps.trades.models import Trade
from apps.wallets.services import authority_add, wallet_create
from tests.e2e.conftest import drive
from tests.factories import UserFactory, authority_address, eth_sign_typed_data
from tests.test_db_roles_narrowed import django_as

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e, pytest.mark.chain]


def test_an_owner_signs_a_scope_on_the_phone_trades_under_it_then_revokes_it(stack):
    owner = UserFactory(username="owner-phone")
    wallet = signer.wallet_key_create(
        wallet_id=wallet_create(owner=owner, label="phone", key_backend="keystore").pk
    )
    devchain.fund_address(url=stack.hardhat_url, address=wallet.address, eth=Decimal(20), token_units=100_000)
    authority_add(owner=owner, address=authority_address())  # on the signer's host
    dex, usdc, dai = Dex.objects.get(), Token.objects.get(symbol="dUSDC"), Token.objects.get(symbol="dDAI")
    phone = APIClient()
    phone.credentials(
        HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=owner, name='phone', level='manage').raw}"
    )
    stack.start("execution", "execution", "custos_engine")
    stack.start("signer", "signer", "custos_signer")

    def trade(key: str) -> int:
        body = {
            "wallet": wallet.pk,
            "chain_id": 31337,
            "dex": dex.pk,
            "path": [usdc.address, dai.address],
            "amount_in": "25",
            "slippage_bps": 50,
            "deadline": (timezone.now() + timedelta(minutes=20)).isoformat(),
        }
        with django_as("custos_api"):
            created = phone.post("/api/v1/trades", body, format="json", HTTP_IDEMPOTENCY_KEY=key)
        assert created.status_code == 201, created.json()
        return created.json()["id"]

    now = timezone.now()
    with django_as("custos_api"):
        proposed = phone.post(
            f"/api/v1/wallets/{wallet.pk}/scopes",
            {
                "chain_id": 31337,
                "dex": dex.pk,
                "token_in": usdc.address,
                "token_out": dai.address,
                "allow_onchain_only_pricing": True,  # the dev tokens have no market listing
                "max_amount_in": "100",
                "max_slippage_bps": 100,
                "max_fee_per_gas_gwei": "100",
                "max_priority_fee_per_gas_gwei": "5",
                "valid_from": (now - timedelta(minutes=1)).isoformat(),
                "valid_until": (now + timedelta(days=1)).isoformat(),
            },
            format="json",
        )
        assert proposed.status_code == 201, proposed.json()
        scope = proposed.json()
        # Before it is signed, a trade is refused: the scope allows nothing yet.
    unsigned = trade("before-signing")
    assert drive(stack, [unsigned])[unsigned] == "REJECTED"
    assert "scope_unsigned" in Trade.objects.get(pk=unsigned).reason

    # The phone shows the typed data, the owner signs it with a key the server never sees.
    with django_as("custos_api"):
        signed = phone.post(
            f"/api/v1/scopes/{scope['id']}/signature",
            {"signature": eth_sign_typed_data(scope["typed_data"])},
            format="json",
        )
    assert signed.status_code == 200, signed.json()
    assert signed.json()["status"] == "active"

    settled = [trade("under-scope-1"), trade("under-scope-2")]
    assert set(drive(stack, settled, timeout=180).values()) == {"SETTLED"}, stack.log_tail()
    assert SigningRecord.objects.filter(trade_id__in=settled).count() >= 2

    with django_as("custos_api"):
        revoked = phone.post(f"/api/v1/scopes/{scope['id']}/revoke", format="json")
    assert revoked.status_code == 200, revoked.json()
    after = trade("after-revoke")
    assert drive(stack, [after])[after] == "REJECTED"
    assert "no_active_scope" in Trade.objects.get(pk=after).reason
    assert not SigningRecord.objects.filter(trade_id__in=[unsigned, after]).exists()
