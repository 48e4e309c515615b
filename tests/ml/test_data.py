"""The adapter over apps.market's stored history: one source per series, candles then ticks, Decimal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from apps.market.models import Candle, MarketSource, PriceTick
from apps.ml import data

pytestmark = pytest.mark.django_db(transaction=True)
T0 = datetime(2026, 5, 1, tzinfo=UTC)


def _tick(source, token, at, price, quote=None):
    return PriceTick.objects.create(
        source=source, token=token, quote_token=quote, price=Decimal(price), observed_at=at, fetched_at=at
    )


def test_price_series_reads_one_source_oldest_first_as_decimal(world):
    busy, other = world["source"], MarketSource.objects.create(slug="other", name="Other", kind="api")
    weth = world["weth"]
    for i in range(3):
        _tick(busy, weth, T0 + timedelta(minutes=10 * i), f"{100 + i}.5")
    _tick(other, weth, T0 + timedelta(minutes=5), "999")  # another source's view is not mixed in
    _tick(busy, weth, T0 + timedelta(minutes=7), "1", quote=world["usdc"])  # another pair
    points = data.price_series(token_id=weth.pk, start=T0, end=T0 + timedelta(hours=1))
    assert [(p.at, p.price, p.volume) for p in points] == [
        (T0, Decimal("100.5"), None),
        (T0 + timedelta(minutes=10), Decimal("101.5"), None),
        (T0 + timedelta(minutes=20), Decimal("102.5"), None),
    ]
    assert all(isinstance(p.price, Decimal) for p in points)
    quoted = data.price_series(
        token_id=weth.pk, quote_token_id=world["usdc"].pk, start=T0, end=T0 + timedelta(hours=1)
    )
    assert [p.price for p in quoted] == [Decimal("1")]
    # A disabled source is not used.
    busy.enabled = False
    busy.save(update_fields=["enabled"])
    assert [p.price for p in data.price_series(token_id=weth.pk, start=T0, end=T0 + timedelta(hours=1))] == [
        Decimal("999")
    ]


def test_hourly_candles_first_then_the_ticks_after_them(world):
    source, weth = world["source"], world["weth"]
    for i, close in enumerate(["10", "11"]):
        Candle.objects.create(
            source=source,
            token=weth,
            interval="1h",
            start=T0 + timedelta(hours=i),
            open=Decimal(close),
            high=Decimal(close),
            low=Decimal(close),
            close=Decimal(close),
            ticks=60,
        )
    _tick(source, weth, T0 + timedelta(hours=1, minutes=30), "10.9")  # inside the last candle: covered by it
    _tick(source, weth, T0 + timedelta(hours=2, minutes=15), "12")
    points = data.price_series(token_id=weth.pk, start=T0, end=T0 + timedelta(hours=3), bar_seconds=3600)
    assert [(p.at, p.price) for p in points] == [
        (T0 + timedelta(hours=1), Decimal("10")),  # a candle's close is the price at its end
        (T0 + timedelta(hours=2), Decimal("11")),
        (T0 + timedelta(hours=2, minutes=15), Decimal("12")),
    ]


def test_pairs_with_prices_and_latest_observation(world):
    source = world["source"]
    _tick(source, world["weth"], T0, "1")
    _tick(source, world["weth"], T0 + timedelta(hours=1), "2", quote=world["usdc"])
    _tick(source, world["dai"], T0 - timedelta(days=30), "1")
    assert data.pairs_with_prices(since=T0 - timedelta(days=1)) == [
        (world["weth"].pk, None),
        (world["weth"].pk, world["usdc"].pk),
    ]
    assert data.latest_observation(token_id=world["weth"].pk, quote_token_id=None) == T0
