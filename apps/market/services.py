"""Every write of market data: call accounting, ticks from the refresh, candles, retention."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import F
from django.utils import timezone

from apps.market import onchain, selectors
from apps.market.clients import MarketDataError, SourceClient, client_for
from apps.market.models import Candle, MarketSource, PriceTick
from apps.market.ratelimit import PREFIX, RateLimited, redis_client

logger = logging.getLogger(__name__)

ONCHAIN = "onchain"
ONCHAIN_TWAP = "onchain-twap"
REFRESH_SECONDS = {"coincap": "COINCAP_REFRESH_SECONDS", "coinlore": "COINLORE_REFRESH_SECONDS"}
INTERVALS = {Candle.Interval.MINUTE: 60, Candle.Interval.HOUR: 3600, Candle.Interval.DAY: 86400}


DEFAULT_SOURCES = (
    {"slug": "coincap", "name": "CoinCap", "kind": "api", "independent": True},
    {"slug": "coinlore", "name": "CoinLore", "kind": "api", "independent": True},
    {"slug": "onchain", "name": "On-chain (Uniswap V2 pools)", "kind": "onchain", "independent": False},
    {"slug": "onchain-twap", "name": "On-chain TWAP (Uniswap V2)", "kind": "onchain", "independent": False},
)


def sources_ensure() -> None:
    """The known sources exist (migration 0002 creates them; a flushed database has none)."""
    if MarketSource.objects.count() >= len(DEFAULT_SOURCES):
        return
    for row in DEFAULT_SOURCES:
        MarketSource.objects.get_or_create(slug=row["slug"], defaults=row)


def source_call_count(*, slug: str, now: datetime | None = None) -> None:
    """One HTTP request was sent to `slug`: counted against its monthly allowance."""
    now = now or timezone.now()
    month = now.date().replace(day=1)
    MarketSource.objects.filter(slug=slug, month_started=month).update(
        calls_total=F("calls_total") + 1, calls_month=F("calls_month") + 1
    ) or MarketSource.objects.filter(slug=slug).update(
        calls_total=F("calls_total") + 1, calls_month=1, month_started=month
    )


def source_record(
    *, source: MarketSource, succeeded: bool, error: str = "", now: datetime | None = None
) -> None:
    """A refresh's outcome on the source row (shown in the admin): a partial answer sets both."""
    now = now or timezone.now()
    fields = {}
    if succeeded:
        fields["last_success_at"] = now
    if error:
        fields.update(last_error=error[:300], last_error_at=now)
    if fields:
        MarketSource.objects.filter(pk=source.pk).update(**fields)


def _due(slug: str, seconds: int) -> bool:
    """True at most once per `seconds` for `slug`, across every worker (a Redis NX key)."""
    return bool(redis_client().set(f"{PREFIX}:due:{slug}", "1", nx=True, ex=max(int(seconds), 1)))


@dataclass
class RefreshReport:
    ticks: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def market_refresh(
    *, now: datetime | None = None, clients: dict[str, SourceClient] | None = None
) -> RefreshReport:
    """Fetch prices for the tokens of active scopes only, from each enabled source whose refresh
    interval has passed; store one tick per priced token. Problems are recorded on the source."""
    now = now or timezone.now()
    sources_ensure()
    report = RefreshReport()
    try:
        tokens = list(selectors.active_tokens(now=now))
    except DatabaseError as exc:
        # The market worker's role must be able to read scopes (project/db_roles.py): say so
        # rather than refresh everything or nothing silently.
        message = f"cannot read active scopes: {str(exc).strip()[:200]}"
        report.errors["scopes"] = message
        for source in MarketSource.objects.filter(enabled=True):
            source_record(source=source, succeeded=False, error=message, now=now)
        return report
    for source in MarketSource.objects.filter(enabled=True).order_by("slug"):
        if source.slug in (ONCHAIN, ONCHAIN_TWAP):
            _refresh_onchain(source, now, report)
            continue
        setting = REFRESH_SECONDS.get(source.slug)
        if setting is None:
            report.skipped.append(f"{source.slug}: no client")
            continue
        mappings = selectors.mappings_for(source=source, tokens=tokens)
        if not mappings:
            report.skipped.append(f"{source.slug}: no mapped token in an active scope")
            continue
        if not _due(source.slug, getattr(settings, setting)):
            report.skipped.append(f"{source.slug}: not due")
            continue
        given = (clients or {}).get(source.slug)
        client = given or client_for(
            source.slug, on_call=lambda slug=source.slug: source_call_count(slug=slug)
        )
        try:
            result = client.prices([m.external_id for m in mappings])
        except (MarketDataError, RateLimited) as exc:
            report.errors[source.slug] = str(exc)
            source_record(source=source, succeeded=False, error=str(exc), now=now)
            continue
        finally:
            if given is None:
                client.close()
        rows = []
        for mapping in mappings:
            quote = result.quotes.get(mapping.external_id)
            if quote is not None:
                rows.append(
                    PriceTick(
                        source=source,
                        token=mapping.token,
                        price=quote.price_usd,
                        observed_at=quote.observed_at,
                        fetched_at=now,
                    )
                )
        PriceTick.objects.bulk_create(rows)
        report.ticks[source.slug] = len(rows)
        problems = "; ".join(f"{k}: {v}" for k, v in sorted(result.problems.items()))
        if problems:
            report.errors[source.slug] = problems
        source_record(source=source, succeeded=bool(rows), error=problems, now=now)
    return report


def _refresh_onchain(source: MarketSource, now: datetime, report: RefreshReport) -> None:
    """Spot price (or the TWAP over MARKET_TWAP_WINDOW_SECONDS) of each active scope's pair, as
    token_in in token_out, with its block."""
    rows, errors = [], []
    for pair, base in selectors.active_pairs(now=now):
        try:
            if source.slug == ONCHAIN_TWAP:
                spot = onchain.twap_price(
                    pair=pair, base=base, window_seconds=settings.MARKET_TWAP_WINDOW_SECONDS
                )
            else:
                spot = onchain.spot_price(pair=pair, base=base)
        except (
            onchain.OnchainPriceError,
            onchain.web3_errors(),
            ConnectionError,
            OSError,
            DatabaseError,
        ) as exc:
            errors.append(f"{pair.address}: {exc}")
            continue
        rows.append(
            PriceTick(
                source=source,
                token=spot.base,
                quote_token=spot.quote,
                price=spot.price,
                observed_at=datetime.fromtimestamp(spot.timestamp, tz=now.tzinfo),
                fetched_at=now,
                block_number=spot.block,
            )
        )
    PriceTick.objects.bulk_create(rows)
    report.ticks[source.slug] = len(rows)
    if errors:
        report.errors[source.slug] = "; ".join(errors)
    source_record(source=source, succeeded=bool(rows), error="; ".join(errors), now=now)


def _bucket(moment: datetime, seconds: int) -> datetime:
    epoch = int(moment.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, tz=moment.tzinfo)


def candles_build(*, interval: str, now: datetime | None = None, lookback: int = 2) -> int:
    """(Re)build the last `lookback` candles of `interval` for every (source, token, quote) from
    their ticks; idempotent. Returns the number of candles written."""
    now = now or timezone.now()
    seconds = INTERVALS[interval]
    since = _bucket(now, seconds) - timedelta(seconds=seconds * (lookback - 1))
    groups: dict[tuple, list[PriceTick]] = defaultdict(list)
    for tick in PriceTick.objects.filter(observed_at__gte=since).order_by("observed_at", "id"):
        key = (tick.source_id, tick.token_id, tick.quote_token_id, _bucket(tick.observed_at, seconds))
        groups[key].append(tick)
    with transaction.atomic():
        for (source_id, token_id, quote_id, start), ticks in groups.items():
            prices = [t.price for t in ticks]
            Candle.objects.update_or_create(
                source_id=source_id,
                token_id=token_id,
                quote_token_id=quote_id,
                interval=interval,
                start=start,
                defaults={
                    "open": prices[0],
                    "high": max(prices),
                    "low": min(prices),
                    "close": prices[-1],
                    "ticks": len(prices),
                },
            )
    return len(groups)


def market_prune(*, now: datetime | None = None) -> tuple[int, int]:
    """Delete ticks and candles past their retention; returns (ticks, candles) deleted."""
    now = now or timezone.now()
    ticks, _ = PriceTick.objects.filter(
        observed_at__lt=now - timedelta(days=settings.MARKET_TICK_RETENTION_DAYS)
    ).delete()
    candles, _ = Candle.objects.filter(
        start__lt=now - timedelta(days=settings.MARKET_CANDLE_RETENTION_DAYS)
    ).delete()
    return ticks, candles
