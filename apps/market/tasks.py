"""Market tasks (market queue: outbound HTTP to the free data APIs, never keys, never trades)."""

from __future__ import annotations

import logging

from apps.market.models import Candle
from apps.market.ratelimit import PREFIX, redis_client
from apps.market.services import candles_build, market_prune, market_refresh
from project.queues import Queue, TaskName, custos_task

logger = logging.getLogger(__name__)


@custos_task(name=TaskName.MARKET_REFRESH, queue=Queue.MARKET)
def refresh(self) -> dict:
    """Beat: prices of the tokens in active scopes from each due source, then this minute's candles;
    once an hour, retention. Source trouble is recorded on the source, never raised."""
    report = market_refresh()
    for interval in Candle.Interval.values:
        candles_build(interval=interval)
    if redis_client().set(f"{PREFIX}:prune", "1", nx=True, ex=3600):
        market_prune()
    if report.errors:
        logger.warning("market refresh had problems", extra={"errors": report.errors})
    return {"ticks": report.ticks, "errors": report.errors, "skipped": report.skipped}
