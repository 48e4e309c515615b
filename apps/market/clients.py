"""HTTP clients for the free market data APIs: CoinCap (keyed) and CoinLore (no key), USD prices only.

What the documentation says, and where (checked 2026-11; no network here, so from stored copies):

CoinCap, https://pro.coincap.io/api-docs (API 3.0). The v2 API at api.coincap.io/v2 was deprecated
on 2025-03-31 (its own deprecation message, quoted in github.com/x-cmd/x-cmd/issues/217); v3 lives at
https://rest.coincap.io/v3 and needs an API key, sent as `Authorization: Bearer <key>` or `?apiKey=`
(github.com/shapeshift/web/issues/9374, github.com/QuantGeekDev/coincap-mcp/pull/11).
`GET /assets?ids=a,b` and `GET /assets/{id}` answer `{"data": ..., "timestamp": <ms>}`; an asset has
`id`, `rank`, `symbol`, `name`, `supply`, `maxSupply`, `marketCapUsd`, `volumeUsd24Hr`, `priceUsd`,
`changePercent24Hr`, `vwap24Hr`, numbers as decimal strings (coincapapi.mintlify.app
api-reference/endpoint/asset/assets). Status codes: 400, 401 (bad key), 404, 429 (rate limit),
500, 503 (coincapapi.mintlify.app api-reference/codes-and-Error-Responses).
NOT confirmed: the v3 free plan's per-minute limit and monthly credits, and whether `ids=` costs
one credit regardless of how many ids. The v2 docs said 200 requests/min without a key and 500 with
one. COINCAP_RATE_LIMIT and COINCAP_FREE_CALLS_PER_MONTH default to conservative guesses (60/min,
2,500/month): set them from your CoinCap dashboard.

CoinLore, https://www.coinlore.com/cryptocurrency-data-api: no key, no registration.
`GET https://api.coinlore.net/api/ticker/?id=90,80` answers a JSON array of tickers with `id`,
`symbol`, `name`, `nameid`, `rank`, `price_usd`, `percent_change_24h`, `percent_change_1h`,
`percent_change_7d`, `price_btc`, `market_cap_usd`, `volume24`, `volume24a`, `csupply`, `tsupply`,
`msupply`; prices are decimal strings. NOT confirmed: an official rate limit (it is commonly cited as
"no hard limit, about one request per second recommended": COINLORE_RATE_LIMIT defaults to 1/s), a
per-ticker timestamp (none is used: a CoinLore price is as old as its fetch), and what an unknown id
returns (an empty body or an empty array are both read as "unknown asset").

Every failure is an exception or a per-asset problem string; no path returns a price it did not parse
from a positive decimal.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

import httpx
from django.conf import settings

from apps.market.ratelimit import Rate, RateLimited, RateLimiter, ResponseCache, retry_after_seconds

logger = logging.getLogger(__name__)

__all__ = [
    "CoinCapClient",
    "CoinLoreClient",
    "FetchResult",
    "MalformedResponse",
    "MarketDataError",
    "NoPrice",
    "Quote",
    "RateLimited",
    "SourceUnavailable",
    "UnknownAsset",
]


class MarketDataError(Exception):
    """A source gave no usable answer."""


class SourceUnavailable(MarketDataError):
    """Network errors, timeouts or 5xx after every retry, or a 4xx that retrying cannot fix."""


class MalformedResponse(MarketDataError):
    """The body is not the JSON shape the documentation shows."""


class UnknownAsset(MarketDataError):
    """The source does not know this id."""


class NoPrice(MarketDataError):
    """The source knows the asset but gave no usable price (missing, null, zero, not a number)."""


@dataclass(frozen=True)
class Quote:
    external_id: str
    price_usd: Decimal
    observed_at: datetime


@dataclass
class FetchResult:
    quotes: dict[str, Quote] = field(default_factory=dict)
    # external id -> why it has no price
    problems: dict[str, str] = field(default_factory=dict)


def parse_price(value) -> Decimal:
    """A positive, finite decimal from a documented decimal string (or a JSON number)."""
    if value is None:
        raise NoPrice("price is null")
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise NoPrice(f"price {value!r} is not a decimal")
    try:
        price = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation as exc:
        raise NoPrice(f"price {value!r} is not a decimal") from exc
    if not price.is_finite() or price <= 0:
        raise NoPrice(f"price {value!r} is not positive")
    return price


class SourceClient:
    slug = ""

    def __init__(
        self,
        *,
        base_url: str,
        rate: Rate,
        timeout: float | None = None,
        retries: int | None = None,
        backoff: float | None = None,
        max_wait: float | None = None,
        cache_ttl: int | None = None,
        on_call: Callable[[], None] | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.timeout = settings.MARKET_HTTP_TIMEOUT_SECONDS if timeout is None else timeout
        self.retries = settings.MARKET_HTTP_RETRIES if retries is None else retries
        self.backoff = settings.MARKET_HTTP_BACKOFF_SECONDS if backoff is None else backoff
        self.max_wait = settings.MARKET_RETRY_AFTER_MAX_WAIT_SECONDS if max_wait is None else max_wait
        self.limiter = RateLimiter(self.slug, rate)
        self.cache = ResponseCache(
            self.slug, settings.MARKET_CACHE_TTL_SECONDS if cache_ttl is None else cache_ttl
        )
        self.on_call = on_call
        self.http = httpx.Client(timeout=self.timeout, headers={"Accept": "application/json"})

    def headers(self) -> dict[str, str]:
        return {}

    def close(self) -> None:
        self.http.close()

    def get_json(self, path: str, params: dict) -> tuple[object, datetime]:
        """The parsed body (decimals as Decimal) and when it was fetched; from the cache if fresh."""
        cached = self.cache.get(path, params)
        if cached is not None:
            body = json.loads(cached)
            return self._parse(body["text"]), datetime.fromtimestamp(body["at"], UTC)
        text, fetched = self._fetch(path, params)
        parsed = self._parse(text)
        self.cache.put(path, params, json.dumps({"text": text, "at": fetched.timestamp()}))
        return parsed, fetched

    def _parse(self, text: str):
        try:
            return json.loads(text, parse_float=Decimal) if text.strip() else None
        except ValueError as exc:
            raise MalformedResponse(f"{self.slug}: body is not JSON ({text[:80]!r})") from exc

    def _fetch(self, path: str, params: dict) -> tuple[str, datetime]:
        url = f"{self.base_url}{path}"
        last = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            self.limiter.acquire_waiting(self.max_wait)
            if self.on_call is not None:
                self.on_call()
            try:
                response = self.http.get(url, params=params, headers=self.headers())
            except httpx.TimeoutException:
                last = f"timed out after {self.timeout}s"
                continue
            except httpx.TransportError as exc:
                last = f"network error: {exc.__class__.__name__}: {exc}"
                continue
            status = response.status_code
            if status == 429:
                wait = retry_after_seconds(response.headers.get("Retry-After"), default=self.backoff)
                self.limiter.block(wait)
                if wait > self.max_wait:
                    raise RateLimited(self.slug, wait, "HTTP 429 with a long Retry-After")
                last = f"HTTP 429, Retry-After {wait:.0f}s"
                continue  # acquire_waiting sleeps out the block before the next attempt
            if status >= 500:
                last = f"HTTP {status}"
                continue
            if status >= 400:
                raise SourceUnavailable(f"{self.slug}: HTTP {status} for {path}: {response.text[:120]!r}")
            return response.text, datetime.now(UTC)
        raise SourceUnavailable(f"{self.slug}: {path} failed after {self.retries + 1} attempts: {last}")

    def prices(self, ids: list[str]) -> FetchResult:
        """USD prices for `ids`; ids the source does not price are in `problems`, never guessed."""
        result = FetchResult()
        wanted = list(dict.fromkeys(str(i) for i in ids))
        size = max(settings.MARKET_IDS_PER_REQUEST, 1)
        for start in range(0, len(wanted), size):
            batch = wanted[start : start + size]
            self._fetch_batch(batch, result)
        return result

    def price(self, external_id: str) -> Quote:
        result = self.prices([external_id])
        if external_id in result.quotes:
            return result.quotes[external_id]
        problem = result.problems.get(external_id, "unknown asset")
        if problem.startswith("unknown asset"):
            raise UnknownAsset(f"{self.slug}: {external_id}: {problem}")
        raise NoPrice(f"{self.slug}: {external_id}: {problem}")

    def _fetch_batch(self, batch: list[str], result: FetchResult) -> None:
        raise NotImplementedError


class CoinCapClient(SourceClient):
    slug = "coincap"

    def __init__(self, *, api_key: str, **kwargs):
        super().__init__(**kwargs)
        self.api_key = api_key

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def _fetch_batch(self, batch: list[str], result: FetchResult) -> None:
        if not self.api_key:
            raise SourceUnavailable("coincap: COINCAP_API_KEY is empty (v3 needs a key)")
        body, fetched = self.get_json("/assets", {"ids": ",".join(batch)})
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            detail = body.get("error") or body.get("data") if isinstance(body, dict) else body
            raise MalformedResponse(f"coincap: expected {{'data': [...]}}, got {str(detail)[:120]!r}")
        observed = fetched
        stamp = body.get("timestamp")
        if isinstance(stamp, int | Decimal) and not isinstance(stamp, bool) and stamp > 0:
            observed = min(datetime.fromtimestamp(int(stamp) / 1000, UTC), fetched)
        rows = {str(row.get("id")): row for row in body["data"] if isinstance(row, dict)}
        for asset in batch:
            row = rows.get(asset)
            if row is None:
                result.problems[asset] = "unknown asset: not in CoinCap's answer"
            elif "priceUsd" not in row:
                result.problems[asset] = "no price: priceUsd missing"
            else:
                try:
                    result.quotes[asset] = Quote(asset, parse_price(row["priceUsd"]), observed)
                except NoPrice as exc:
                    result.problems[asset] = f"no price: {exc}"


class CoinLoreClient(SourceClient):
    slug = "coinlore"

    def _fetch_batch(self, batch: list[str], result: FetchResult) -> None:
        body, fetched = self.get_json("/ticker/", {"id": ",".join(batch)})
        if body is None or body == []:
            for asset in batch:
                result.problems[asset] = "unknown asset: CoinLore returned no ticker"
            return
        if not isinstance(body, list):
            raise MalformedResponse(f"coinlore: expected a list of tickers, got {str(body)[:120]!r}")
        rows = {str(row.get("id")): row for row in body if isinstance(row, dict)}
        for asset in batch:
            row = rows.get(asset)
            if row is None:
                result.problems[asset] = "unknown asset: not in CoinLore's answer"
            elif "price_usd" not in row:
                result.problems[asset] = "no price: price_usd missing"
            else:
                try:
                    result.quotes[asset] = Quote(asset, parse_price(row["price_usd"]), fetched)
                except NoPrice as exc:
                    result.problems[asset] = f"no price: {exc}"


def coincap_client(**overrides) -> CoinCapClient:
    params = {
        "base_url": f"{settings.COINCAP_BASE_URL.rstrip('/')}/{settings.COINCAP_API_VERSION}",
        "api_key": settings.COINCAP_API_KEY,
        "rate": Rate.parse(settings.COINCAP_RATE_LIMIT),
    }
    params.update(overrides)
    return CoinCapClient(**params)


def coinlore_client(**overrides) -> CoinLoreClient:
    params = {"base_url": settings.COINLORE_BASE_URL, "rate": Rate.parse(settings.COINLORE_RATE_LIMIT)}
    params.update(overrides)
    return CoinLoreClient(**params)


def client_for(slug: str, **overrides) -> SourceClient:
    factories = {"coincap": coincap_client, "coinlore": coinlore_client}
    if slug not in factories:
        raise KeyError(f"no HTTP client for market source {slug!r}")
    return factories[slug](**overrides)
