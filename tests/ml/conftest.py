"""Fixtures for the ML tests: a small chain world with stored prices, and tiny, fast training."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from apps.chain.models import Chain, Dex, Token
from apps.market.models import MarketSource, PriceTick
from apps.ml.data import PricePoint
from apps.trades.models import Trade
from apps.wallets.models import Wallet
from apps.wallets.services import scope_propose
from tests.factories import model_version_row, walk_to

ML_DISABLED = "ML_ENABLED=0: this test needs PyTorch (requirements-ml.txt), which ML_ENABLED=0 leaves out"
# What stays in use with ML_ENABLED=0 and needs no torch, numpy or matplotlib: the owner's advisory gate
# (the engine consults it), the advice API and the price-history reads.
WITHOUT_TORCH = {"test_api.py", "test_data.py", "test_gate.py"}


class _SkippedWithoutML(pytest.Module):
    """A test module that needs PyTorch, under ML_ENABLED=0 (the t3.micro profile, where make installs
    no PyTorch): reported as skipped without being imported. Plain `make test` runs them all."""

    def collect(self):
        pytest.skip(ML_DISABLED, allow_module_level=True)


def pytest_pycollect_makemodule(module_path, parent):
    if not settings.ML_ENABLED and module_path.name not in WITHOUT_TORCH:
        return _SkippedWithoutML.from_parent(parent, path=module_path)
    return None


GWEI = 10**9
WETH = "0x00000000000000000000000000000000000000A1"
USDC = "0x00000000000000000000000000000000000000B2"
DAI = "0x00000000000000000000000000000000000000C3"


@pytest.fixture(autouse=True)
def _ml_settings(settings, tmp_path):
    settings.ML_MODEL_DIR = str(tmp_path / "models")
    settings.ML_BACKTEST_DIR = str(tmp_path / "backtests")
    settings.ML_TORCH_THREADS = 1
    settings.ML_DEVICE = "cpu"
    settings.ML_BAR_SECONDS = 3600


@pytest.fixture
def world(db):
    chain = Chain.objects.create(chain_id=31999, name="ml-test")
    weth = Token.objects.create(chain=chain, address=WETH, symbol="tWETH", name="Wrapped", decimals=18)
    usdc = Token.objects.create(
        chain=chain, address=USDC, symbol="tUSDC", name="USD", decimals=6, is_stablecoin=True
    )
    dai = Token.objects.create(
        chain=chain, address=DAI, symbol="tDAI", name="DAI", decimals=18, is_stablecoin=True
    )
    dex = Dex.objects.create(
        chain=chain, name="v2", router="0x00000000000000000000000000000000000000D4", factory="0x" + "e5" * 20
    )
    owner = get_user_model().objects.create(username="ml-owner")
    wallet = Wallet.objects.create(
        owner=owner,
        label="w",
        key_backend="keystore",
        address="0x00000000000000000000000000000000000000F6",
        status="active",
    )
    source, _ = MarketSource.objects.get_or_create(
        slug="coincap", defaults={"name": "CoinCap", "kind": "api", "independent": True}
    )
    return {
        "chain": chain,
        "weth": weth,
        "usdc": usdc,
        "dai": dai,
        "dex": dex,
        "owner": owner,
        "wallet": wallet,
        "source": source,
    }


@pytest.fixture
def version(db):
    # Gate tests need a model version row only (the gate never loads weights).
    return model_version_row()


def store_prices(points: list[PricePoint], *, token: Token, source: MarketSource, quote: Token | None = None):
    PriceTick.objects.bulk_create(
        PriceTick(
            source=source,
            token=token,
            quote_token=quote,
            price=p.price,
            observed_at=p.at,
            fetched_at=p.at,
        )
        for p in points
    )


def shifted(points: list[PricePoint], *, end) -> list[PricePoint]:
    """The same series moved in time so that its last point lies at `end`."""
    delta = end - points[-1].at
    return [PricePoint(p.at + delta, p.price, p.volume) for p in points]


def make_scope(world, *, token_in: Token, token_out: Token):
    now = timezone.now()
    return scope_propose(
        wallet=world["wallet"],
        dex=world["dex"],
        token_in=token_in,
        token_out=token_out,
        max_amount_in=10**24,
        max_slippage_bps=100,
        max_fee_per_gas=100 * GWEI,
        max_priority_fee_per_gas=5 * GWEI,
        valid_from=now - timedelta(minutes=1),
        valid_until=now + timedelta(days=1),
    )


def make_trade(world, *, token_in: Token, token_out: Token, amount_in: int = 10**6) -> Trade:
    trade = Trade.objects.create(
        owner=world["owner"],
        wallet=world["wallet"],
        chain=world["chain"],
        dex=world["dex"],
        path=[token_in.address, token_out.address],
        amount_in=amount_in,
        slippage_bps=50,
        deadline=timezone.now() + timedelta(minutes=20),
        idempotency_key=f"ml-{token_in.symbol}-{token_out.symbol}-{amount_in}",
        quoted_amount_out=Decimal(10**18),
    )
    return walk_to(trade, "VALIDATING")
