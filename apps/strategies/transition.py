"""The one way a strategy row changes, for the owner's services and the tick alike: inside the
caller's SERIALIZABLE transaction, one UPDATE checked against the version the strategy was read with
(optimistic locking; changed meanwhile: StaleStrategy) moves the state through its django-fsm
transition, bumps the version and sets the other fields; and the strategy's event is appended."""

from __future__ import annotations

import logging

from django.db import connection
from django.utils import timezone

from apps.strategies.models import Strategy, StrategyEvent, StrategyRun
from apps.trades.models import TradeEvent

logger = logging.getLogger(__name__)


class StaleStrategy(Exception):
    """Another transaction changed the strategy since it was read: read it again and decide again."""


def event_append(
    strategy: Strategy,
    kind: str,
    *,
    from_state: str = "",
    to_state: str = "",
    data: dict | None = None,
    run: StrategyRun | None = None,
) -> StrategyEvent:
    """Append one event, in the caller's transaction. Its id is taken from the trade events' sequence,
    so one cursor orders the owner's trade and strategy events (the update feed)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT nextval(pg_get_serial_sequence(%s, 'id'))", [TradeEvent._meta.db_table])
        event_id = cursor.fetchone()[0]
    return StrategyEvent.objects.create(
        id=event_id,
        strategy=strategy,
        run=run,
        kind=kind,
        from_state=from_state,
        to_state=to_state,
        data=data or {},
        created_at=timezone.now(),
    )


def strategy_update(strategy: Strategy, **fields) -> Strategy:
    """Set `fields` on the strategy with a version check (no state change, no event)."""
    version = strategy.version
    updated = Strategy.objects.filter(pk=strategy.pk, version=version).update(
        version=version + 1, updated_at=timezone.now(), **fields
    )
    if updated != 1:
        raise StaleStrategy(f"strategy {strategy.pk} changed since it was read")
    for name, value in fields.items():
        if name != "state":  # protected: moved in memory by the transition itself
            setattr(strategy, name, value)
    strategy.version = version + 1
    return strategy


def strategy_transition(
    strategy: Strategy,
    method: str,
    *,
    reason: str,
    fields: dict | None = None,
    data: dict | None = None,
    run: StrategyRun | None = None,
    event: str | None = None,
) -> StrategyEvent:
    """Call the django-fsm transition `method` and persist it with `fields` and `reason` in one
    version-checked UPDATE; append the event (`event`, else the transition's name)."""
    from_state = strategy.state
    getattr(strategy, method)()
    strategy_update(strategy, state=strategy.state, reason=reason[:4000], **(fields or {}))
    strategy.reason = reason[:4000]
    logger.info(
        "strategy transition", extra={"strategy": strategy.pk, "from": from_state, "to": strategy.state}
    )
    return event_append(
        strategy,
        event or method,
        from_state=from_state,
        to_state=strategy.state,
        data={"reason": reason[:1000], **(data or {})},
        run=run,
    )
