"""Wallets (create is accepted with 202 and provisions until the signer made the key) and scopes
(grant, list, revoke effective at once)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.signing import services as signer
from apps.signing.models import SigningRefusal
from apps.wallets.models import PermissionScope, Wallet
from apps.wallets.services import authority_add
from tests.factories import STRANGER_AUTHORITY_KEY, authority_address, eth_sign_typed_data
from tests.gateway.conftest import DAI, ROUTER, USDC

pytestmark = pytest.mark.django_db(transaction=True)


def scope_body(registry, **overrides) -> dict:
    now = timezone.now()
    body = {
        "chain_id": 31337,
        "dex": registry["dex"].pk,
        "token_in": USDC,
        "token_out": DAI,
        "max_amount_in": "1000.25",
        "max_slippage_bps": 100,
        "max_fee_per_gas_gwei": "100",
        "max_priority_fee_per_gas_gwei": "1.5",
        "valid_from": now.isoformat(),
        "valid_until": (now + timedelta(days=1)).isoformat(),
    }
    body.update(overrides)
    return body


def test_create_is_accepted_and_provisioning_until_the_signer_makes_the_key(alice, redis_client):
    response = alice.client.post("/api/v1/wallets", {"label": "trading"}, format="json")
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["status"] == "provisioning"
    assert body["address"] is None
    assert body["key_backend"] == "keystore"
    # The key is the signer's job: the request was put on its queue.
    queued = [k for k in redis_client.keys("*") if b"signer" in k]
    assert queued, "no signer task was enqueued"
    signer.wallet_key_create(wallet_id=body["id"])
    after = alice.client.get(f"/api/v1/wallets/{body['id']}").json()
    assert after["status"] == "active"
    assert after["address"].startswith("0x")
    assert "key_id" not in after


def test_list_shows_only_own_wallets(alice, bob):
    alice.active_wallet("a")
    bob.active_wallet("b")
    assert [w["label"] for w in alice.client.get("/api/v1/wallets").json()] == ["a"]


def test_grant_list_and_revoke_a_scope(alice, registry):
    wallet = alice.active_wallet()
    response = alice.client.post(f"/api/v1/wallets/{wallet.pk}/scopes", scope_body(registry), format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    scope = PermissionScope.objects.get(pk=body["id"])
    assert scope.max_amount_in == 1_000_250_000
    assert scope.max_priority_fee_per_gas == 1_500_000_000
    assert scope.router == registry["dex"].router
    assert body["max_amount_in"] == "1000.25"
    listed = alice.client.get(f"/api/v1/wallets/{wallet.pk}/scopes").json()
    assert [s["id"] for s in listed] == [scope.pk]
    revoked = alice.client.post(f"/api/v1/scopes/{scope.pk}/revoke", format="json")
    assert revoked.status_code == 200
    assert revoked.json()["active"] is False
    scope.refresh_from_db()
    assert scope.active is False
    assert scope.revoked_at is not None


def test_on_chain_only_pricing_is_off_unless_the_owner_grants_it(alice, registry):
    wallet = alice.active_wallet()
    default = alice.client.post(f"/api/v1/wallets/{wallet.pk}/scopes", scope_body(registry), format="json")
    granted = alice.client.post(
        f"/api/v1/wallets/{wallet.pk}/scopes",
        scope_body(registry, allow_onchain_only_pricing=True),
        format="json",
    )
    assert (default.status_code, granted.status_code) == (201, 201)
    assert default.json()["allow_onchain_only_pricing"] is False
    assert granted.json()["allow_onchain_only_pricing"] is True
    assert PermissionScope.objects.get(pk=granted.json()["id"]).allow_onchain_only_pricing is True
    assert PermissionScope.objects.get(pk=default.json()["id"]).allow_onchain_only_pricing is False


def test_a_revoked_scope_stops_a_trade_that_is_not_signed_yet(alice, registry):
    from apps.trades.models import Trade
    from tests.factories import signing_trade

    wallet = alice.active_wallet()
    scope_id = alice.client.post(
        f"/api/v1/wallets/{wallet.pk}/scopes", scope_body(registry), format="json"
    ).json()["id"]
    trade = signing_trade(wallet, state="SIGNING")
    alice.client.post(f"/api/v1/scopes/{scope_id}/revoke", format="json")
    outcome = signer.trade_sign(trade_id=trade.pk, attempt=1)
    assert outcome.signed is False
    assert SigningRefusal.objects.get(trade=trade).code == "no_active_scope"
    assert Trade.objects.get(pk=trade.pk).state == "SIGNING"


def test_wallet_count_unchanged_by_a_refused_create(alice):
    response = alice.client.post("/api/v1/wallets", {"label": "x", "key_backend": "paper"}, format="json")
    assert response.status_code == 400
    assert "key_backend" in response.json()["error"]["fields"]
    assert Wallet.objects.count() == 0


# --- owner authority: propose, sign with a key only the test holds, attach --------------------------


def test_a_proposed_scope_returns_what_to_sign_and_becomes_active_only_with_the_owners_signature(
    alice, registry
):
    authority_add(owner=alice.user, address=authority_address())  # on the signer's host
    wallet = alice.active_wallet()
    proposed = alice.client.post(f"/api/v1/wallets/{wallet.pk}/scopes", scope_body(registry), format="json")
    assert proposed.status_code == 201, proposed.json()
    scope = proposed.json()
    assert scope["status"] == "proposed"
    document = scope["typed_data"]
    assert document["primaryType"] == "Scope"
    assert document["message"]["wallet"] == wallet.address
    assert document["message"]["router"] == ROUTER
    assert document["message"]["maxAmountIn"] == "1000250000"  # exact base units of dUSDC

    # A signature by a key that is not the owner's: 400 naming the field, still proposed.
    wrong = alice.client.post(
        f"/api/v1/scopes/{scope['id']}/signature",
        {"signature": eth_sign_typed_data(document, STRANGER_AUTHORITY_KEY)},
        format="json",
    )
    assert wrong.status_code == 400
    assert list(wrong.json()["error"]["fields"]) == ["signature"]
    assert alice.client.get(f"/api/v1/wallets/{wallet.pk}/scopes").json()[0]["status"] == "proposed"

    # The owner's phone signs exactly the typed data it was shown.
    signed = alice.client.post(
        f"/api/v1/scopes/{scope['id']}/signature",
        {"signature": eth_sign_typed_data(document)},
        format="json",
    )
    assert signed.status_code == 200, signed.json()
    assert signed.json()["status"] == "active"
    assert signed.json()["signed_by"] == authority_address()


def test_a_malformed_signature_is_a_400_naming_the_field(alice, registry):
    wallet = alice.active_wallet()
    scope = alice.client.post(
        f"/api/v1/wallets/{wallet.pk}/scopes", scope_body(registry), format="json"
    ).json()
    for bad in ("0x12", 12, "0x" + "zz" * 65):
        response = alice.client.post(
            f"/api/v1/scopes/{scope['id']}/signature", {"signature": bad}, format="json"
        )
        assert response.status_code == 400
        assert list(response.json()["error"]["fields"]) == ["signature"]
