"""Bad input on every write endpoint: a 4xx naming the field, and nothing written."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.gateway.models import ApiToken
from apps.trades.models import Trade, TradeEvent
from apps.wallets.models import PermissionScope, Wallet
from tests.gateway.conftest import DAI, USDC, trade_body
from tests.gateway.test_wallets_api import scope_body

# Validation fails before any service opens a transaction: the faster rollback-per-test is enough.
pytestmark = pytest.mark.django_db

LOWERCASE_DAI = DAI.lower()
TYPO_DAI = DAI[:-1] + ("3" if DAI[-1] != "3" else "4")
FAR = (timezone.now() + timedelta(days=30)).isoformat()
PAST = (timezone.now() - timedelta(minutes=1)).isoformat()

TRADE_CASES = [
    ("amount_in", {"amount_in": 100.5}),  # a JSON number, not a decimal string
    ("amount_in", {"amount_in": "-1"}),
    ("amount_in", {"amount_in": "0"}),
    ("amount_in", {"amount_in": "1e6"}),
    ("amount_in", {"amount_in": "1.0000001"}),  # 7 decimals for a 6-decimal token
    ("amount_in", {"amount_in": "9" * 78}),  # >= 2**256 base units
    ("amount_in", {"amount_in": ""}),
    ("slippage_bps", {"slippage_bps": 0}),
    ("slippage_bps", {"slippage_bps": 5001}),
    ("slippage_bps", {"min_amount_out": "1"}),  # both given
    ("path", {"path": [USDC, LOWERCASE_DAI]}),
    ("path", {"path": [USDC, TYPO_DAI]}),
    ("path", {"path": [USDC]}),
    ("path", {"path": [USDC, USDC]}),
    ("path", {"path": [USDC, "0x" + "12" * 20]}),  # not a registered token (and not checksummed)
    ("chain_id", {"chain_id": 1}),
    ("chain_id", {"chain_id": "x"}),
    ("dex", {"dex": 424242}),
    ("wallet", {"wallet": 424242}),
    ("deadline", {"deadline": PAST}),
    ("deadline", {"deadline": FAR}),
    ("deadline", {"deadline": "tomorrow"}),
    ("min_amount_out", {"slippage_bps": None, "min_amount_out": "0.0000000000000000001"}),
]


def _counts():
    return (
        Trade.objects.count(),
        TradeEvent.objects.count(),
        Wallet.objects.count(),
        PermissionScope.objects.count(),
        ApiToken.objects.count(),
    )


@pytest.mark.parametrize(("field", "change"), TRADE_CASES)
def test_trade_create_bad_input(alice, registry, field, change):
    wallet = alice.active_wallet()
    body = {**trade_body(registry, wallet), **change}
    body = {k: v for k, v in body.items() if v is not None}
    before = _counts()
    response = alice.client.post("/api/v1/trades", body, format="json", HTTP_IDEMPOTENCY_KEY="bad-input-1")
    assert response.status_code == 400, response.content
    assert _names(field, response.json()["error"]["fields"]), response.json()
    assert _counts() == before


def _names(field: str, fields: dict) -> bool:
    """The error names `field` itself or one of its items ("path.1")."""
    return any(name == field or name.startswith(f"{field}.") for name in fields)


def test_trade_create_on_a_provisioning_wallet_names_the_wallet(alice, registry):
    wallet = Wallet.objects.create(owner=alice.user, label="new", key_backend="keystore")
    before = _counts()
    response = alice.client.post(
        "/api/v1/trades", trade_body(registry, wallet), format="json", HTTP_IDEMPOTENCY_KEY="provision-1"
    )
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"wallet": ["wallet is not active"]}
    assert _counts() == before


@pytest.mark.parametrize("key", [None, "short", "has space in it", "x" * 129, "ünïcode-key"])
def test_trade_create_bad_idempotency_key(alice, registry, key):
    wallet = alice.active_wallet()
    headers = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key}
    before = _counts()
    response = alice.client.post("/api/v1/trades", trade_body(registry, wallet), format="json", **headers)
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["error"]["fields"]
    assert _counts() == before


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("token_in", {"token_in": USDC.lower()}),
        ("token_out", {"token_out": "0x" + "ab" * 20}),
        ("max_amount_in", {"max_amount_in": "1.1234567"}),
        ("max_amount_in", {"max_amount_in": 5}),
        ("max_slippage_bps", {"max_slippage_bps": 9000}),
        ("max_fee_per_gas_gwei", {"max_fee_per_gas_gwei": "0.0000000001"}),
        ("max_notional_usd", {"max_notional_usd": "1.001"}),
        ("daily_volume_usd", {"daily_volume_usd": "1" + "0" * 30}),  # would overflow the column
        ("valid_until", {"valid_until": "2000-01-01T00:00:00Z"}),
        ("chain_id", {"chain_id": 99}),
        ("dex", {"dex": 31337}),
        ("token_out", {"token_out": USDC}),
    ],
)
def test_scope_grant_bad_input(alice, registry, field, change):
    wallet = alice.active_wallet()
    before = _counts()
    response = alice.client.post(
        f"/api/v1/wallets/{wallet.pk}/scopes", scope_body(registry, **change), format="json"
    )
    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["fields"], response.json()
    assert _counts() == before


@pytest.mark.parametrize(
    ("field", "body"),
    [
        ("label", {"label": ""}),
        ("label", {"label": "x" * 65}),
        ("label", {}),
        ("key_backend", {"label": "ok", "key_backend": "plaintext"}),
        ("non_field_errors", ["not", "an", "object"]),
    ],
)
def test_wallet_create_bad_input(alice, field, body):
    before = _counts()
    response = alice.client.post("/api/v1/wallets", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert _counts() == before


@pytest.mark.parametrize(("field", "body"), [("name", {"name": ""}), ("name", {"name": "n" * 65})])
def test_token_create_bad_input(alice, field, body):
    before = _counts()
    response = alice.client.post("/api/v1/auth/tokens", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert _counts() == before


@pytest.mark.parametrize(
    "url",
    ["/api/v1/trades/{trade}/cancel", "/api/v1/scopes/{scope}/revoke", "/api/v1/auth/tokens/{token}/revoke"],
)
def test_bodiless_actions_refuse_any_field(alice, registry, url):
    from tests.factories import grant_scope

    wallet = alice.active_wallet()
    # A PENDING trade row as trade_submit leaves it (trade_submit itself needs a transactional test).
    pending = Trade.objects.create(
        owner=alice.user,
        wallet=wallet,
        chain=registry["chain"],
        dex=registry["dex"],
        path=[USDC, DAI],
        amount_in=10**6,
        slippage_bps=50,
        deadline=timezone.now() + timedelta(minutes=20),
        idempotency_key="bodiless-1",
    )
    ids = {
        "trade": pending.pk,
        "scope": grant_scope(wallet).pk,
        "token": ApiToken.objects.get(user=alice.user).pk,
    }
    before = _counts()
    response = alice.client.post(url.format(**ids), {"reason": "because"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"reason": ["unknown field"]}
    assert _counts() == before
    assert Trade.objects.get(pk=ids["trade"]).state == "PENDING"
    assert PermissionScope.objects.get(pk=ids["scope"]).active


def test_malformed_json_is_a_400_in_the_error_shape(alice):
    response = alice.client.generic("POST", "/api/v1/wallets", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"
    assert Wallet.objects.count() == 0
