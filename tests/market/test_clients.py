"""CoinCap and CoinLore clients against a local server replaying documented responses."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from apps.market.clients import (
    CoinCapClient,
    CoinLoreClient,
    MalformedResponse,
    NoPrice,
    RateLimited,
    SourceUnavailable,
    UnknownAsset,
)
from apps.market.ratelimit import Rate
from tests.market.conftest import Reply
from tests.market.samples import coincap_asset, coincap_assets, coinlore_ticker, coinlore_tickers

BTC = "96243.8957644504882220"
ETH = "3521.1200000000000000"


def coincap(server, **kwargs) -> CoinCapClient:
    params = {
        "base_url": server.url + "/v3",
        "api_key": "test-key",
        "rate": Rate(100, 60),
        "timeout": 2.0,
        "retries": 3,
        "backoff": 0.01,
        "max_wait": 3.0,
        "cache_ttl": 0,
    }
    params.update(kwargs)
    return CoinCapClient(**params)


def coinlore(server, **kwargs) -> CoinLoreClient:
    params = {"base_url": server.url + "/api", "rate": Rate(100, 60), "backoff": 0.01, "cache_ttl": 0}
    params.update(kwargs)
    return CoinLoreClient(**params)


def ok_assets(**kwargs) -> Reply:
    return Reply(
        200,
        coincap_assets(coincap_asset("bitcoin", "BTC", BTC), coincap_asset("ethereum", "ETH", ETH), **kwargs),
    )


def test_coincap_success_parses_decimal_prices_with_the_sources_timestamp(api_server):
    stamp = int(time.time() * 1000) - 5_000
    api_server.on("/v3/assets", ok_assets(timestamp_ms=stamp))
    result = coincap(api_server).prices(["bitcoin", "ethereum"])
    assert result.quotes["bitcoin"].price_usd == Decimal(BTC)
    assert result.quotes["ethereum"].price_usd == Decimal(ETH)
    assert result.quotes["bitcoin"].observed_at == datetime.fromtimestamp(stamp / 1000, UTC)
    assert result.problems == {}
    (seen,) = api_server.calls("/v3/assets")
    assert seen.query == {"ids": ["bitcoin,ethereum"]}
    assert seen.headers["Authorization"] == "Bearer test-key"


def test_coincap_429_with_retry_after_is_waited_out_then_succeeds(api_server):
    api_server.on("/v3/assets", Reply(429, '{"error": "rate limited"}', {"Retry-After": "1"}), ok_assets())
    started = time.monotonic()
    quote = coincap(api_server).price("bitcoin")
    assert quote.price_usd == Decimal(BTC)
    assert time.monotonic() - started >= 0.95
    assert len(api_server.calls("/v3/assets")) == 2


def test_coincap_429_with_a_long_retry_after_blocks_the_source_without_calling_again(api_server):
    api_server.on("/v3/assets", Reply(429, '{"error": "rate limited"}', {"Retry-After": "120"}))
    client = coincap(api_server)
    with pytest.raises(RateLimited) as first:
        client.price("bitcoin")
    assert 100 < first.value.retry_after <= 120
    with pytest.raises(RateLimited, match="asked us to wait"):
        coincap(api_server).price("bitcoin")  # another client (process) honours it too
    assert len(api_server.calls("/v3/assets")) == 1


def test_coincap_5xx_then_success_retries(api_server):
    api_server.on("/v3/assets", Reply(503, "Service Unavailable"), Reply(500, "oops"), ok_assets())
    assert coincap(api_server).price("ethereum").price_usd == Decimal(ETH)
    assert len(api_server.calls("/v3/assets")) == 3


def test_coincap_5xx_every_time_is_a_clear_error_after_the_retries(api_server):
    api_server.on("/v3/assets", Reply(502, "bad gateway"))
    with pytest.raises(SourceUnavailable, match="after 3 attempts: HTTP 502"):
        coincap(api_server, retries=2).price("bitcoin")
    assert len(api_server.calls("/v3/assets")) == 3


def test_coincap_4xx_is_not_retried(api_server):
    api_server.on("/v3/assets", Reply(401, '{"error": "invalid api key"}'))
    with pytest.raises(SourceUnavailable, match="HTTP 401"):
        coincap(api_server).price("bitcoin")
    assert len(api_server.calls("/v3/assets")) == 1


def test_coincap_malformed_json_is_a_clear_error(api_server):
    api_server.on("/v3/assets", Reply(200, '{"data": [{"id": "bitcoin", "priceUsd": "9624'))
    with pytest.raises(MalformedResponse, match="not JSON"):
        coincap(api_server).price("bitcoin")


def test_coincap_unexpected_shape_is_a_clear_error(api_server):
    deprecated = '{"data": {"message": "We are deprecating this version"}, "timestamp": 1744796832910}'
    api_server.on("/v3/assets", Reply(200, deprecated))
    with pytest.raises(MalformedResponse, match="deprecating"):
        coincap(api_server).price("bitcoin")


def test_coincap_timeout_is_retried_then_a_clear_error(api_server):
    api_server.on("/v3/assets", Reply(200, coincap_assets(), delay=1.0))
    started = time.monotonic()
    with pytest.raises(SourceUnavailable, match=r"timed out after 0.2s"):
        coincap(api_server, timeout=0.2, retries=1).price("bitcoin")
    assert len(api_server.calls("/v3/assets")) == 2
    assert time.monotonic() - started < 2


def test_coincap_partial_data_prices_only_what_is_valid(api_server):
    rows = [
        coincap_asset("bitcoin", "BTC", BTC),
        coincap_asset("ethereum", "ETH", None),
        coincap_asset("tether", "USDT", ""),
        coincap_asset("dogecoin", "DOGE", "0"),
        coincap_asset("solana", "SOL", "abc"),
    ]
    missing = coincap_asset("cardano", "ADA", "1")
    del missing["priceUsd"]
    api_server.on("/v3/assets", Reply(200, coincap_assets(*rows, missing)))
    ids = ["bitcoin", "ethereum", "tether", "dogecoin", "solana", "cardano"]
    result = coincap(api_server).prices(ids)
    assert set(result.quotes) == {"bitcoin"}
    assert result.problems["ethereum"] == "no price: price is null"
    assert "not a decimal" in result.problems["tether"]
    assert "not positive" in result.problems["dogecoin"]
    assert "not a decimal" in result.problems["solana"]
    assert result.problems["cardano"] == "no price: priceUsd missing"
    with pytest.raises(NoPrice, match="null"):
        coincap(api_server).price("ethereum")


def test_coincap_unknown_asset_is_a_clear_error(api_server):
    api_server.on("/v3/assets", Reply(200, coincap_assets()))
    with pytest.raises(UnknownAsset, match="not-a-coin"):
        coincap(api_server).price("not-a-coin")


def test_coincap_without_a_key_does_not_call(api_server):
    with pytest.raises(SourceUnavailable, match="COINCAP_API_KEY"):
        coincap(api_server, api_key="").price("bitcoin")
    assert api_server.calls() == []


def test_responses_are_cached_for_the_ttl(api_server):
    api_server.on("/v3/assets", ok_assets())
    client = coincap(api_server, cache_ttl=30)
    first = client.price("bitcoin")
    second = coincap(api_server, cache_ttl=30).price("bitcoin")
    assert first == second
    assert len(api_server.calls("/v3/assets")) == 1


def test_the_rate_limiter_never_lets_more_calls_through_than_the_limit(api_server):
    api_server.on("/v3/assets", ok_assets())
    client = coincap(api_server, rate=Rate(2, 60), max_wait=0)
    client.price("bitcoin")
    client.price("ethereum")
    with pytest.raises(RateLimited, match="2 calls per 60s"):
        client.price("bitcoin")
    assert len(api_server.calls("/v3/assets")) == 2


def test_coinlore_success(api_server):
    body = coinlore_tickers(coinlore_ticker("90", "BTC", "96243.89"), coinlore_ticker("80", "ETH", "3521.12"))
    api_server.on("/api/ticker/", Reply(200, body))
    result = coinlore(api_server).prices(["90", "80"])
    assert result.quotes["90"].price_usd == Decimal("96243.89")
    assert result.quotes["80"].price_usd == Decimal("3521.12")
    assert api_server.calls("/api/ticker/")[0].query == {"id": ["90,80"]}


def test_coinlore_5xx_then_success_and_429(api_server):
    body = coinlore_tickers(coinlore_ticker("90", "BTC", "96243.89"))
    api_server.on("/api/ticker/", Reply(500, ""), Reply(429, "", {"Retry-After": "1"}), Reply(200, body))
    assert coinlore(api_server).price("90").price_usd == Decimal("96243.89")
    assert len(api_server.calls("/api/ticker/")) == 3


def test_coinlore_unknown_asset_empty_answer(api_server):
    api_server.on("/api/ticker/", Reply(200, ""))
    with pytest.raises(UnknownAsset, match="no ticker"):
        coinlore(api_server).price("999999999")
    api_server.on("/api/ticker/", Reply(200, "[]"))
    with pytest.raises(UnknownAsset):
        coinlore(api_server).price("999999998")


def test_coinlore_partial_and_malformed(api_server):
    body = coinlore_tickers(coinlore_ticker("90", "BTC", None), coinlore_ticker("80", "ETH", "3521.12"))
    api_server.on("/api/ticker/", Reply(200, body))
    result = coinlore(api_server).prices(["90", "80", "1"])
    assert set(result.quotes) == {"80"}
    assert result.problems["90"] == "no price: price is null"
    assert result.problems["1"].startswith("unknown asset")
    api_server.on("/api/ticker/", Reply(200, '{"error": "something"}'))
    with pytest.raises(MalformedResponse, match="list of tickers"):
        coinlore(api_server).price("90")


def test_retry_after_takes_seconds_or_an_http_date():
    from email.utils import format_datetime

    from apps.market.ratelimit import retry_after_seconds

    assert retry_after_seconds("7", default=1) == 7
    later = datetime.fromtimestamp(time.time() + 30, UTC)
    assert 28 <= retry_after_seconds(format_datetime(later, usegmt=True), default=1) <= 31
    assert retry_after_seconds("soon", default=2.5) == 2.5
    assert retry_after_seconds(None, default=2.5) == 2.5
    with pytest.raises(ValueError, match="not '<n>/<s|min|hour>'"):
        Rate.parse("10/fortnight")
