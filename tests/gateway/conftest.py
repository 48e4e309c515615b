"""API test fixtures: a chain registry in the database, owners with per-device tokens, and wallets
whose keys the real signer service created in a throwaway keystore."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from apps.chain.models import Chain, Dex, Token
from apps.gateway.models import TokenLevel
from apps.gateway.services import api_token_create
from apps.signing import services as signer
from apps.trades.real_money_transaction_manager import trade_submit
from apps.wallets.services import wallet_create
from tests.factories import UserFactory

USDC = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
DAI = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
ROUTER = "0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0"
FACTORY = "0xCf7Ed3AccA5a467e9e704C703E8D87F634fB0Fc9"


@pytest.fixture
def registry(db):
    chain = Chain.objects.create(chain_id=31337, name="devchain", is_dev=True, confirmations_required=3)
    usdc = Token.objects.create(chain=chain, address=USDC, symbol="dUSDC", name="Dev USDC", decimals=6)
    dai = Token.objects.create(chain=chain, address=DAI, symbol="dDAI", name="Dev DAI", decimals=18)
    dex = Dex.objects.create(chain=chain, name="devswap", router=ROUTER, factory=FACTORY)
    return {"chain": chain, "usdc": usdc, "dai": dai, "dex": dex}


class Owner:
    """A user with one token (`manage` unless named: the tests act as the owner) and a client for it."""

    def __init__(self, username: str, level: str = TokenLevel.MANAGE):
        self.user = UserFactory(username=username)
        self.issued = api_token_create(user=self.user, name="phone", level=level)
        self.client = APIClient()
        self.client.credentials(HTTP_AUTHORIZATION=f"Bearer {self.issued.raw}")

    def client_of_level(self, level: str, name: str | None = None) -> APIClient:
        """A client with another token of this owner, of `level`."""
        issued = api_token_create(user=self.user, name=name or f"device-{level}", level=level)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.raw}")
        return client

    def active_wallet(self, label: str = "main"):
        """A wallet as the signer leaves it: key created in the keystore, address recorded, active."""
        wallet = wallet_create(owner=self.user, label=label, key_backend="keystore")
        return signer.wallet_key_create(wallet_id=wallet.pk)


@pytest.fixture
def alice(db, redis_client, keystore) -> Owner:
    return Owner("alice")


@pytest.fixture
def bob(db, redis_client, keystore) -> Owner:
    return Owner("bob")


def trade_body(registry, wallet, **overrides) -> dict:
    body = {
        "wallet": wallet.pk,
        "chain_id": 31337,
        "dex": registry["dex"].pk,
        "path": [USDC, DAI],
        "amount_in": "100.5",
        "slippage_bps": 50,
        "deadline": (timezone.now() + timedelta(minutes=20)).isoformat(),
    }
    body.update(overrides)
    return body


def submitted_trade(owner: Owner, registry, wallet, key: str = "trade-key-1"):
    """A PENDING trade created through the engine's own entry point."""
    return trade_submit(
        owner=owner.user,
        wallet=wallet,
        dex=registry["dex"],
        path=[USDC, DAI],
        amount_in=5 * 10**6,
        slippage_bps=50,
        idempotency_key=key,
        deadline=timezone.now() + timedelta(minutes=20),
    ).trade
