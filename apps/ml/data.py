"""The one adapter between apps.market's stored history and the ML code.

`price_series` returns (timestamp, Decimal price, volume or None) oldest first, from one source:
hourly candles (kept for years) where the bar is an hour, then the raw ticks after the last candle.
apps.market stores no volume yet, so volume is None for stored data.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import NamedTuple

from django.db.models import Count, F, Max

from apps.market.models import Candle, PriceTick

CANDLE_INTERVALS = {60: Candle.Interval.MINUTE, 3600: Candle.Interval.HOUR, 86400: Candle.Interval.DAY}


class PricePoint(NamedTuple):
    at: datetime
    price: Decimal
    volume: Decimal | None


def _pair(qs, token_id: int, quote_token_id: int | None):
    qs = qs.filter(token_id=token_id, source__enabled=True)
    if quote_token_id is None:
        return qs.filter(quote_token__isnull=True)
    return qs.filter(quote_token_id=quote_token_id)


def _busiest_source(token_id: int, quote_token_id: int | None, start: datetime, end: datetime) -> int | None:
    # One source per series: mixing sources would turn their small disagreements into fake returns.
    row = (
        _pair(PriceTick.objects, token_id, quote_token_id)
        .filter(observed_at__gte=start, observed_at__lte=end)
        .values("source_id")
        .annotate(n=Count("id"))
        .order_by("-n", "source_id")
        .first()
    )
    if row is None:
        row = (
            _pair(Candle.objects, token_id, quote_token_id)
            .filter(start__gte=start, start__lte=end)
            .values("source_id")
            .annotate(n=Count("id"))
            .order_by("-n", "source_id")
            .first()
        )
    return row["source_id"] if row else None


def price_series(
    *,
    token_id: int,
    quote_token_id: int | None = None,
    start: datetime,
    end: datetime,
    bar_seconds: int = 3600,
    source_id: int | None = None,
) -> list[PricePoint]:
    """Prices of `token` in USD (quote None) or in `quote_token`, in [start, end], oldest first."""
    if source_id is None:
        source_id = _busiest_source(token_id, quote_token_id, start, end)
        if source_id is None:
            return []
    points: list[PricePoint] = []
    interval = CANDLE_INTERVALS.get(bar_seconds)
    ticks_from = start
    if interval is not None:
        step = timedelta(seconds=bar_seconds)
        candles = (
            _pair(Candle.objects, token_id, quote_token_id)
            .filter(source_id=source_id, interval=interval, start__gte=start - step, start__lte=end - step)
            .order_by("start")
            .values_list("start", "close")
        )
        # A candle's close is the price at its end.
        points = [PricePoint(at=begin + step, price=close, volume=None) for begin, close in candles]
        if points:
            ticks_from = max(start, points[-1].at)
    ticks = _pair(PriceTick.objects, token_id, quote_token_id).filter(
        source_id=source_id, observed_at__lte=end
    )
    ticks = ticks.filter(observed_at__gt=ticks_from) if points else ticks.filter(observed_at__gte=start)
    ticks = ticks.order_by("observed_at", "id").values_list("observed_at", "price")
    points.extend(PricePoint(at=at, price=price, volume=None) for at, price in ticks)
    return points


def pairs_with_prices(*, since: datetime) -> list[tuple[int, int | None]]:
    """(token_id, quote_token_id) of every pair an enabled source priced since `since`."""
    rows = (
        PriceTick.objects.filter(observed_at__gte=since, source__enabled=True)
        .values_list("token_id", "quote_token_id")
        .distinct()
        .order_by("token_id", F("quote_token_id").asc(nulls_first=True))
    )
    return list(rows)


def latest_observation(*, token_id: int, quote_token_id: int | None) -> datetime | None:
    return _pair(PriceTick.objects, token_id, quote_token_id).aggregate(at=Max("observed_at"))["at"]
