"""reference_check: median of fresh independent sources, staleness, divergence, on-chain-only."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from apps.market.models import MarketSource, PriceTick
from apps.market.reference import OK, asset_reference, reference_check

USDC, DAI = 10**6, 10**18


def tick(token, slug, price, age_seconds=10, quote_token=None):
    now = timezone.now()
    return PriceTick.objects.create(
        source=MarketSource.objects.get(slug=slug),
        token=token,
        quote_token=quote_token,
        price=Decimal(price),
        observed_at=now - timedelta(seconds=age_seconds),
        fetched_at=now,
    )


def check(world, *, quoted_out, amount_in=1_000 * USDC, tolerance=100, onchain_only=False, reserves=None):
    return reference_check(
        chain=world.chain,
        token_in=world.usdc.address.lower(),
        token_out=world.dai.address,
        amount_in=amount_in,
        quoted_out=quoted_out,
        tolerance_bps=tolerance,
        allow_onchain_only=onchain_only,
        pool_reserves=reserves,
    )


def test_reference_is_the_median_of_fresh_sources(market_world, settings):
    settings.MARKET_MAX_DIVERGENCE_BPS = 500
    # Three fresh sources would need a third API; the on-chain source is not independent and must
    # not move the median even though it is fresh.
    tick(market_world.dai, "coincap", "1.0000")
    tick(market_world.dai, "coinlore", "1.0100")
    tick(market_world.dai, "onchain", "5.0", quote_token=market_world.usdc)
    tick(market_world.usdc, "coincap", "0.9990")
    ref = asset_reference(market_world.dai)
    assert ref.price_usd == Decimal("1.0050")
    assert {s.source for s in ref.fresh} == {"coincap", "coinlore"}
    assert asset_reference(market_world.usdc).price_usd == Decimal("0.9990")


def test_latest_tick_per_source_wins(market_world):
    tick(market_world.usdc, "coincap", "0.5", age_seconds=100)
    tick(market_world.usdc, "coincap", "1.0", age_seconds=5)
    assert asset_reference(market_world.usdc).price_usd == Decimal("1.0")


def test_quote_within_tolerance_passes(market_world):
    tick(market_world.usdc, "coincap", "1.00")
    tick(market_world.dai, "coincap", "1.00")
    result = check(market_world, quoted_out=995 * DAI)  # 50 bps under, tolerance 100
    assert result.ok
    assert result.reason == OK
    assert result.basis == "independent"
    assert result.reference_out == Decimal(1_000 * DAI)


def test_quote_beyond_tolerance_is_rejected_with_both_prices(market_world):
    tick(market_world.usdc, "coincap", "1.00")
    tick(market_world.dai, "coinlore", "0.98")  # 1 USDC = 1.020408 DAI
    result = check(market_world, quoted_out=1_000 * DAI)
    assert not result.ok
    assert result.reason.startswith("price_deviation:")
    assert "quote 1000.000000 DAI" in result.reason
    assert "reference 1020.408163 DAI" in result.reason
    assert "200 bps off, over the scope's 100 bps" in result.reason


def test_a_quote_far_better_than_the_market_is_rejected_too(market_world):
    tick(market_world.usdc, "coincap", "1.00")
    tick(market_world.dai, "coincap", "1.00")
    result = check(market_world, quoted_out=1_100 * DAI)
    assert not result.ok
    assert "1000 bps off" in result.reason


def test_stale_sources_are_rejected_with_their_age(market_world, settings):
    settings.MARKET_MAX_PRICE_AGE_SECONDS = 300
    tick(market_world.usdc, "coincap", "1.00", age_seconds=900)
    tick(market_world.usdc, "coinlore", "1.00", age_seconds=1200)
    tick(market_world.dai, "coincap", "1.00")
    result = check(market_world, quoted_out=1_000 * DAI)
    assert not result.ok
    assert result.reason.startswith("no independent price: USDC: every price is stale")
    assert "coincap 9" in result.reason
    assert "coinlore 1" in result.reason
    assert "max 300s" in result.reason


def test_divergent_sources_are_rejected_even_for_onchain_only_scopes(market_world, settings):
    settings.MARKET_MAX_DIVERGENCE_BPS = 200
    tick(market_world.usdc, "coincap", "1.00")
    tick(market_world.usdc, "coinlore", "1.05")
    tick(market_world.dai, "coincap", "1.00")
    result = check(market_world, quoted_out=1_000 * DAI, onchain_only=True, reserves=(10**12, 10**24))
    assert not result.ok
    assert result.reason.startswith("price_sources_diverge: USDC: sources diverge by 487 bps")
    assert "coincap 1" in result.reason
    assert "coinlore 1.05" in result.reason


def test_no_reference_is_rejected_unless_the_scope_allows_onchain_only(market_world):
    result = check(market_world, quoted_out=995 * DAI)
    assert not result.ok
    assert result.reason.startswith("no independent price: USDC: no market source has a price")
    # The same quote against a 1:1 pool passes when the scope accepts on-chain-only pricing...
    reserves = (1_000_000 * USDC, 1_000_000 * DAI)
    passed = check(market_world, quoted_out=995 * DAI, onchain_only=True, reserves=reserves)
    assert passed.ok
    assert passed.basis == "onchain-only"
    # ...and the pool still bounds the quote.
    failed = check(market_world, quoted_out=950 * DAI, onchain_only=True, reserves=reserves)
    assert not failed.ok
    assert "on-chain pool price 1000.000000 DAI" in failed.reason
    empty = check(market_world, quoted_out=950 * DAI, onchain_only=True, reserves=(0, 0))
    assert not empty.ok
    assert "pool is empty" in empty.reason


def test_too_few_fresh_sources(market_world, settings):
    settings.MARKET_MIN_FRESH_SOURCES = 2
    tick(market_world.usdc, "coincap", "1.00")
    tick(market_world.dai, "coincap", "1.00")
    tick(market_world.dai, "coinlore", "1.00")
    result = check(market_world, quoted_out=1_000 * DAI)
    assert not result.ok
    assert "USDC: 1 fresh source(s), 2 required" in result.reason


@pytest.mark.parametrize("disabled", ["coincap"])
def test_disabled_sources_do_not_count(market_world, disabled):
    tick(market_world.usdc, disabled, "1.00")
    tick(market_world.dai, disabled, "1.00")
    MarketSource.objects.filter(slug=disabled).update(enabled=False)
    assert not check(market_world, quoted_out=1_000 * DAI).ok


def test_onchain_only_also_checks_a_fresh_twap_of_the_pair(market_world):
    reserves = (1_000_000 * USDC, 1_000_000 * DAI)  # spot 1:1 at the quote block...
    tick(market_world.usdc, "onchain-twap", "1.10", quote_token=market_world.dai)  # ...TWAP 1.10
    result = check(market_world, quoted_out=995 * DAI, onchain_only=True, reserves=reserves)
    assert not result.ok
    assert "vs on-chain TWAP 1100.000000 DAI is 954 bps off" in result.reason
    # Stated the other way round (DAI in USDC) it is the same pair.
    PriceTick.objects.all().delete()
    tick(market_world.dai, "onchain-twap", "0.999", quote_token=market_world.usdc)
    assert check(market_world, quoted_out=995 * DAI, onchain_only=True, reserves=reserves).ok
    # A stale TWAP is ignored (the spot check alone applies).
    PriceTick.objects.all().delete()
    tick(market_world.usdc, "onchain-twap", "1.10", age_seconds=10_000, quote_token=market_world.dai)
    assert check(market_world, quoted_out=995 * DAI, onchain_only=True, reserves=reserves).ok
