"""The market read views (routed by the gateway), called directly with an authenticated request."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.utils import timezone
from rest_framework.test import APIRequestFactory, force_authenticate

from apps.market.api.views import MarketHistoryView, MarketPriceView
from apps.market.models import MarketSource, PriceTick
from apps.market.services import candles_build


def _get(view, world, **params):
    request = APIRequestFactory().get("/", params)
    force_authenticate(request, user=world.wallet.owner)
    return view.as_view()(request)


def test_price_shows_the_reference_and_its_sources(market_world):
    now = timezone.now()
    for slug, price in [("coincap", "0.9990"), ("coinlore", "1.0010")]:
        PriceTick.objects.create(
            source=MarketSource.objects.get(slug=slug),
            token=market_world.usdc,
            price=Decimal(price),
            observed_at=now - timedelta(seconds=3),
            fetched_at=now,
        )
    response = _get(
        MarketPriceView, market_world, chain_id=market_world.chain.chain_id, token=market_world.usdc.address
    )
    assert response.status_code == 200, response.data
    assert Decimal(response.data["reference_usd"]) == Decimal("1.0000")
    assert response.data["is_stablecoin"] is True
    assert {row["source"] for row in response.data["fresh"]} == {"coincap", "coinlore"}


def test_price_of_an_unpriced_token_says_why(market_world):
    response = _get(
        MarketPriceView, market_world, chain_id=market_world.chain.chain_id, token=market_world.dai.address
    )
    assert response.status_code == 200
    assert response.data["reference_usd"] is None
    assert "no market source" in response.data["problem"]


def test_bad_input_names_the_field(market_world):
    response = _get(MarketPriceView, market_world, chain_id=market_world.chain.chain_id, token="0x12")
    assert response.status_code == 400
    assert "token" in str(response.data)
    response = _get(MarketHistoryView, market_world, chain_id=1, token=market_world.usdc.address)
    assert response.status_code == 404
    assert "chain_id" in str(response.data)
    response = _get(
        MarketHistoryView,
        market_world,
        chain_id=market_world.chain.chain_id,
        token=market_world.usdc.address,
        interval="5m",
    )
    assert response.status_code == 400
    assert "interval" in str(response.data)


def test_history_returns_ticks_and_candles(market_world):
    now = timezone.now()
    source = MarketSource.objects.get(slug="coinlore")
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)  # both ticks in today's candle
    for seconds, price in [(1, "1.01"), (2, "0.99")]:
        PriceTick.objects.create(
            source=source,
            token=market_world.usdc,
            price=Decimal(price),
            observed_at=day + timedelta(seconds=seconds),
            fetched_at=now,
        )
    candles_build(interval="1d", now=now)
    params = {"chain_id": market_world.chain.chain_id, "token": market_world.usdc.address}
    ticks = _get(MarketHistoryView, market_world, interval="tick", **params)
    assert [Decimal(r["price"]) for r in ticks.data] == [Decimal("1.01"), Decimal("0.99")]
    assert ticks.data[0]["quote"] == "USD"
    daily = _get(MarketHistoryView, market_world, interval="1d", **params)
    (candle,) = daily.data
    assert (Decimal(candle["high"]), Decimal(candle["low"]), candle["ticks"]) == (
        Decimal("1.01"),
        Decimal("0.99"),
        2,
    )
