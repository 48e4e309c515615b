"""Trade validation against the reference price, driven step by step on the dev chain."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from web3 import Web3

from apps.chain.models import Dex, Token
from apps.market.models import MarketSource, PriceTick
from apps.trades import real_money_transaction_manager as rmtm
from apps.trades.models import Trade
from apps.wallets.models import Wallet
from apps.wallets.services import scope_revoke
from tests.factories import UserFactory, grant_scope

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.chain]


@pytest.fixture
def wallet(deployed_devchain, market_sources):
    """Dev account 1: funded with dev tokens and ETH by the deployment; validation needs no key."""
    address = Web3(Web3.HTTPProvider(deployed_devchain)).eth.accounts[1]
    return Wallet.objects.create(
        owner=UserFactory(), label="validation", address=address, key_backend="keystore", status="active"
    )


def _tick(symbol: str, slug: str, price: str, age_seconds: int = 5) -> None:
    now = timezone.now()
    PriceTick.objects.create(
        source=MarketSource.objects.get(slug=slug),
        token=Token.objects.get(symbol=symbol),
        price=Decimal(price),
        observed_at=now - timedelta(seconds=age_seconds),
        fetched_at=now,
    )


def _validate(wallet, key: str, amount_in: int = 100 * 10**6) -> Trade:
    usdc, dai = Token.objects.get(symbol="dUSDC"), Token.objects.get(symbol="dDAI")
    trade = rmtm.trade_submit(
        owner=wallet.owner,
        wallet=wallet,
        dex=Dex.objects.get(),
        path=[usdc.address, dai.address],
        amount_in=amount_in,
        slippage_bps=50,
        idempotency_key=key,
        deadline=timezone.now() + timedelta(minutes=20),
    ).trade
    rmtm.trade_simulate(trade_id=trade.pk)
    rmtm.trade_validate(trade_id=trade.pk)
    return Trade.objects.get(pk=trade.pk)


def test_a_quote_within_the_reference_tolerance_passes(wallet):
    grant_scope(wallet, allow_onchain_only_pricing=False)
    _tick("dUSDC", "coincap", "1.0001")
    _tick("dDAI", "coinlore", "0.9999")
    trade = _validate(wallet, "within")
    assert trade.state == "SIGNING", trade.reason


def test_a_quote_beyond_the_tolerance_is_rejected_with_both_prices(wallet):
    grant_scope(wallet, allow_onchain_only_pricing=False)
    _tick("dUSDC", "coincap", "1.00")
    _tick("dDAI", "coincap", "0.95")  # the market says 100 dUSDC buy 105.26 dDAI; the pool gives ~99.7
    trade = _validate(wallet, "beyond")
    assert trade.state == "REJECTED"
    quoted = Decimal(int(trade.quoted_amount_out)) / Decimal(10**18)
    assert f"quote {quoted.quantize(Decimal('0.000001'))} dDAI" in trade.reason
    assert "reference 105.263158 dDAI" in trade.reason
    assert "over the scope's 100 bps" in trade.reason


def test_stale_sources_reject_the_trade(wallet, settings):
    settings.MARKET_MAX_PRICE_AGE_SECONDS = 300
    grant_scope(wallet, allow_onchain_only_pricing=False)
    _tick("dUSDC", "coincap", "1.00", age_seconds=301)
    _tick("dDAI", "coincap", "1.00")
    trade = _validate(wallet, "stale")
    assert trade.state == "REJECTED"
    assert "no independent price: dUSDC: every price is stale (coincap 30" in trade.reason


def test_divergent_sources_reject_the_trade_even_for_an_onchain_only_scope(wallet):
    grant_scope(wallet, allow_onchain_only_pricing=True)
    _tick("dUSDC", "coincap", "1.00")
    _tick("dDAI", "coincap", "1.00")
    _tick("dDAI", "coinlore", "1.10")
    trade = _validate(wallet, "diverge")
    assert trade.state == "REJECTED"
    assert "price_sources_diverge: dDAI: sources diverge by 952 bps" in trade.reason


def test_no_fresh_reference_is_rejected_unless_the_scope_allows_onchain_only(wallet):
    scope = grant_scope(wallet, allow_onchain_only_pricing=False)
    trade = _validate(wallet, "none")
    assert trade.state == "REJECTED"
    assert trade.reason.startswith("no independent price: dUSDC: no market source has a price")
    # The owner allows it: revoke that scope and sign one that accepts on-chain-only pricing.
    scope_revoke(scope=scope)
    grant_scope(wallet, allow_onchain_only_pricing=True)
    trade = _validate(wallet, "onchain-only")
    assert trade.state == "SIGNING", trade.reason
