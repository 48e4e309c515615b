"""Candles built from ticks, retention, and the market_budget command."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

from django.core.management import call_command

from apps.market.models import AssetMapping, Candle, MarketSource, PriceTick
from apps.market.services import candles_build, market_prune


def _tick(world, price, at):
    return PriceTick.objects.create(
        source=MarketSource.objects.get(slug="coinlore"),
        token=world.usdc,
        price=Decimal(price),
        observed_at=at,
        fetched_at=at,
    )


def test_candles_are_ohlc_of_the_ticks_in_each_bucket(market_world):
    now = datetime(2026, 11, 24, 12, 0, 30, tzinfo=UTC)
    for second, price in [(0, "1.00"), (10, "1.03"), (20, "0.97"), (30, "1.01")]:
        _tick(market_world, price, now.replace(second=0) + timedelta(seconds=second))
    _tick(market_world, "2.00", now - timedelta(minutes=1))  # the previous minute
    assert candles_build(interval="1m", now=now) == 2
    candle = Candle.objects.get(interval="1m", start=now.replace(second=0))
    assert (candle.open, candle.high, candle.low, candle.close, candle.ticks) == (
        Decimal("1.00"),
        Decimal("1.03"),
        Decimal("0.97"),
        Decimal("1.01"),
        4,
    )
    _tick(market_world, "1.10", now.replace(second=45))
    candles_build(interval="1m", now=now)  # idempotent rebuild picks up the new tick
    candle.refresh_from_db()
    assert (candle.high, candle.close, candle.ticks) == (Decimal("1.10"), Decimal("1.10"), 5)
    candles_build(interval="1h", now=now)
    assert Candle.objects.get(interval="1h", start=now.replace(minute=0, second=0)).ticks == 5


def test_retention_deletes_only_old_rows(market_world, settings):
    settings.MARKET_TICK_RETENTION_DAYS = 30
    now = datetime(2026, 11, 24, tzinfo=UTC)
    old = _tick(market_world, "1.00", now - timedelta(days=31))
    kept = _tick(market_world, "1.00", now - timedelta(days=29))
    assert market_prune(now=now) == (1, 0)
    assert list(PriceTick.objects.values_list("pk", flat=True)) == [kept.pk]
    assert not PriceTick.objects.filter(pk=old.pk).exists()


def test_market_budget_prints_calls_per_source_against_the_allowance(market_world, settings):
    settings.COINCAP_REFRESH_SECONDS = 60
    settings.COINCAP_FREE_CALLS_PER_MONTH = 2500
    coincap = MarketSource.objects.get(slug="coincap")
    AssetMapping.objects.create(source=coincap, token=market_world.usdc, external_id="usd-coin")
    AssetMapping.objects.create(
        source=coincap, token=market_world.weth, external_id="ethereum"
    )  # no active scope
    out = StringIO()
    call_command("market_budget", stdout=out)
    text = out.getvalue()
    assert "coincap: 1 asset(s) -> 1 request(s) every 60s = 60.0/hour, 43,200/month" in text
    assert "free allowance 2,500/month" in text
    assert "OVER the monthly allowance" in text
    assert "coinlore: 0 asset(s) -> 0 request(s)" in text
    settings.COINCAP_REFRESH_SECONDS = 1200
    out = StringIO()
    call_command("market_budget", "--assets", "120", stdout=out)
    assert "coincap: 120 asset(s) -> 3 request(s) every 1200s = 9.0/hour, 6,480/month" in out.getvalue()
