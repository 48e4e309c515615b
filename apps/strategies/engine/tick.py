"""The beat tick (strategies.tick, every STRATEGY_TICK_SECONDS, on the execution queue): learn how
runs' trades ended, then run the due strategies, oldest due first, at most STRATEGY_TICK_BATCH.

Each due strategy: its price read first, outside any transaction (prices.py), the plan decided
(plan.py), then one SERIALIZABLE transaction carries it out (run.py). Ticks may overlap (a slow one,
a redelivered one, two workers): each strategy is claimed with SKIP LOCKED and at the version it
was planned from, so each due moment is acted on once; nothing needs a Redis lock, so a Redis
restart loses nothing either.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from apps.strategies.engine.ends import runs_learn_ends
from apps.strategies.engine.plan import plan_for
from apps.strategies.engine.prices import price_view
from apps.strategies.engine.run import strategy_run
from apps.strategies.kinds import judges_price
from apps.strategies.selectors import due_strategies
from apps.strategies.transition import StaleStrategy
from project.db import SerializationRetriesExhausted

logger = logging.getLogger(__name__)


def strategies_tick(*, now: datetime | None = None) -> dict:
    """One tick; returns counts of what happened (for the task's result and the logs)."""
    counts: Counter = Counter()
    counts["ended"] = runs_learn_ends(limit=settings.STRATEGY_TICK_BATCH)
    now = now or timezone.now()
    memo: dict = {}
    for strategy in due_strategies(now=now, limit=settings.STRATEGY_TICK_BATCH):
        try:
            view = (
                price_view(strategy, now=now, memo=memo)
                if judges_price(strategy.kind, strategy.params)
                else None
            )
            counts[strategy_run(strategy=strategy, plan=plan_for(strategy, now=now, view=view), now=now)] += 1
        except (SerializationRetriesExhausted, StaleStrategy) as exc:
            # Contention: the strategy is still due, and the next tick tries it again.
            logger.info("strategy run contended", extra={"strategy": strategy.pk, "error": repr(exc)})
            counts["contended"] += 1
    return dict(counts)
