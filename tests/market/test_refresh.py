"""The refresh pays API calls only for tokens of active scopes, and never beyond the rate limiter."""

from __future__ import annotations

from decimal import Decimal

import pytest

from apps.market import tasks
from apps.market.clients import CoinCapClient, CoinLoreClient
from apps.market.models import AssetMapping, Candle, MarketSource, PriceTick
from apps.market.ratelimit import PREFIX, Rate
from apps.market.services import market_refresh
from tests.market.conftest import Reply
from tests.market.samples import coincap_asset, coincap_assets, coinlore_ticker, coinlore_tickers

IDS = {
    "coincap": {"USDC": "usd-coin", "DAI": "multi-collateral-dai", "WETH": "ethereum"},
    "coinlore": {"USDC": "33285", "DAI": "2396", "WETH": "80"},
}


@pytest.fixture
def mapped(market_world):
    for slug, ids in IDS.items():
        source = MarketSource.objects.get(slug=slug)
        for token in (market_world.usdc, market_world.dai, market_world.weth):
            AssetMapping.objects.create(source=source, token=token, external_id=ids[token.symbol])
    return market_world


def script(server):
    server.on(
        "/v3/assets",
        Reply(
            200,
            coincap_assets(
                coincap_asset("usd-coin", "USDC", "0.9998000000000000"),
                coincap_asset("multi-collateral-dai", "DAI", "1.0002000000000000"),
            ),
        ),
    )
    server.on(
        "/api/ticker/",
        Reply(
            200,
            coinlore_tickers(
                coinlore_ticker("33285", "USDC", "1.00"), coinlore_ticker("2396", "DAI", "0.999")
            ),
        ),
    )


def clients(server, rate: Rate | None = None):
    rate = rate or Rate(100, 60)
    return {
        "coincap": CoinCapClient(
            base_url=server.url + "/v3", api_key="k", rate=rate, cache_ttl=0, backoff=0.01
        ),
        "coinlore": CoinLoreClient(base_url=server.url + "/api", rate=rate, cache_ttl=0, backoff=0.01),
    }


def test_refresh_asks_only_for_tokens_in_active_scopes(mapped, api_server):
    script(api_server)
    report = market_refresh(clients=clients(api_server))
    assert report.ticks == {"coincap": 2, "coinlore": 2, "onchain": 0, "onchain-twap": 0}
    (coincap_call,) = api_server.calls("/v3/assets")
    assert set(coincap_call.query["ids"][0].split(",")) == {"usd-coin", "multi-collateral-dai"}
    (coinlore_call,) = api_server.calls("/api/ticker/")
    assert set(coinlore_call.query["id"][0].split(",")) == {"33285", "2396"}  # not WETH's "80"
    prices = {
        (t.source.slug, t.token.symbol): t.price for t in PriceTick.objects.select_related("source", "token")
    }
    assert prices == {
        ("coincap", "USDC"): Decimal("0.9998"),
        ("coincap", "DAI"): Decimal("1.0002"),
        ("coinlore", "USDC"): Decimal("1.00"),
        ("coinlore", "DAI"): Decimal("0.999"),
    }
    assert MarketSource.objects.get(slug="coincap").last_success_at is not None


def test_refresh_waits_for_each_sources_interval(mapped, api_server):
    script(api_server)
    market_refresh(clients=clients(api_server))
    report = market_refresh(clients=clients(api_server))
    assert "coincap: not due" in report.skipped
    assert "coinlore: not due" in report.skipped
    assert len(api_server.calls()) == 2


def test_refresh_never_calls_beyond_the_rate_limiter(mapped, api_server, redis_client):
    script(api_server)
    tight = Rate(1, 3600)
    market_refresh(clients=clients(api_server, tight))
    for key in redis_client.scan_iter(f"{PREFIX}:due:*"):
        redis_client.delete(key)  # the intervals passed, but the hourly limit did not reset
    report = market_refresh(clients=clients(api_server, Rate(1, 3600)))
    assert "1 calls per 3600s used" in report.errors["coincap"]
    assert len(api_server.calls("/v3/assets")) == 1
    assert len(api_server.calls("/api/ticker/")) == 1
    assert "rate limited" in MarketSource.objects.get(slug="coinlore").last_error


def test_refresh_records_source_errors_and_partial_answers(mapped, api_server):
    api_server.on("/v3/assets", Reply(200, coincap_assets(coincap_asset("usd-coin", "USDC", None))))
    api_server.on("/api/ticker/", Reply(200, "not json"))
    report = market_refresh(clients=clients(api_server))
    assert report.ticks.get("coincap") == 0
    coincap = MarketSource.objects.get(slug="coincap")
    assert "usd-coin: no price: price is null" in coincap.last_error
    assert "multi-collateral-dai: unknown asset" in coincap.last_error
    assert "not JSON" in MarketSource.objects.get(slug="coinlore").last_error
    assert not PriceTick.objects.exists()


def test_refresh_task_with_settings_counts_calls_and_builds_candles(mapped, api_server, settings):
    script(api_server)
    settings.COINCAP_BASE_URL = api_server.url
    settings.COINCAP_API_VERSION = "v3"
    settings.COINCAP_API_KEY = "owner-key"
    settings.COINLORE_BASE_URL = api_server.url + "/api"
    result = tasks.refresh()
    assert result["ticks"]["coincap"] == 2
    assert api_server.calls("/v3/assets")[0].headers["Authorization"] == "Bearer owner-key"
    coincap = MarketSource.objects.get(slug="coincap")
    assert (coincap.calls_total, coincap.calls_month) == (1, 1)
    minute = Candle.objects.get(source=coincap, token=mapped.usdc, interval="1m")
    assert minute.open == minute.close == Decimal("0.9998")
    assert minute.ticks == 1
