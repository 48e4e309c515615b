"""Step 2b of a run: what a due strategy does now, decided before any transaction from the strategy as
read and its price view. Pure: the run's transaction (run.py) carries the plan out only if the
strategy is still as it was read (its version).

Plans, in the order they are considered:
- complete: expired, or a cap reached (total, runs; a TWAP's last slice settled);
- refuse (made of a create by run.py, where trade_inputs_check runs before the transaction): the
  trade's inputs would not pass (an inactive wallet); the run is recorded refused and the strategy
  paused with the reason;
- skip: a price cannot be judged (a run is recorded when the problem starts or changes), or a
  recurring run's price bound says no (recorded every slot);
- watch: a price trigger judged its price and did not fire (no run; the high-water mark and the
  judgement are stored);
- create: a run and its trade.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings

from apps.strategies.engine.prices import PriceView
from apps.strategies.kinds import (
    cap_reached,
    judges_price,
    next_slot,
    price_condition,
    slice_amount,
    twap_interval,
)
from apps.strategies.models import PRICE_TRIGGERED, Strategy, StrategyKind

K = StrategyKind
CREATE, SKIP, WATCH, COMPLETE, REFUSE = "create", "skip", "watch", "complete", "refuse"


@dataclass(frozen=True)
class Plan:
    action: str
    reason: str = ""
    amount: int = 0
    snapshot: dict = field(default_factory=dict)
    next_run_at: datetime | None = None
    catch_up: bool = False
    record_run: bool = True  # a skip writes a run row (not every tick of a blind price trigger)
    # The judgement to store (price-judging kinds): None leaves the columns as they are.
    judged: bool | None = None
    problem: str = ""
    high_water_mark: Decimal | None = None


def _capped(strategy: Strategy, when: datetime) -> datetime:
    return min(when, strategy.expires_at) if strategy.expires_at is not None else when


def run_amount(strategy: Strategy) -> int:
    left = int(strategy.total_amount_in) - int(strategy.amount_committed)
    if strategy.kind == K.TWAP:
        return slice_amount(
            int(strategy.total_amount_in), int(strategy.params["slices"]), strategy.runs_settled
        )
    if strategy.kind == K.RECURRING:
        return min(int(strategy.params["amount_per_run"]), int(strategy.max_per_run), left)
    return min(int(strategy.max_per_run), left)


def plan_for(strategy: Strategy, *, now: datetime, view: PriceView | None) -> Plan:
    """What the due `strategy` does at `now`, given its price view (None: it judges no price)."""
    if strategy.expires_at is not None and strategy.expires_at <= now:
        what = "before its price was reached" if strategy.kind in PRICE_TRIGGERED else ""
        return Plan(COMPLETE, f"expired at {strategy.expires_at.isoformat()} {what}".rstrip())
    reached = cap_reached(strategy)
    if reached:
        return Plan(COMPLETE, f"caps reached: {reached}")
    after = _after_run(strategy, now)
    if not judges_price(strategy.kind, strategy.params):
        return Plan(CREATE, amount=run_amount(strategy), next_run_at=after.at, catch_up=after.catch_up)
    if view is None or not view.ok:
        view = view or PriceView(None, "no_price_view: the tick read no price for it")
        return _blind(strategy, now, view, after)
    high = strategy.high_water_mark
    if strategy.kind == K.TRAILING_STOP:
        high = view.price if high is None or view.price > high else high
    fires, why = price_condition(strategy.kind, strategy.params, view.price, high)
    snapshot = {**view.snapshot, "condition": why}
    if high is not None:
        snapshot["high_water_mark"] = f"{high.normalize():f}"
    judged = {"judged": True, "problem": "", "high_water_mark": high, "snapshot": snapshot}
    if strategy.kind in PRICE_TRIGGERED:
        if not fires:
            check = now + timedelta(seconds=settings.STRATEGY_PRICE_CHECK_SECONDS)
            return Plan(WATCH, why, next_run_at=_capped(strategy, check), **judged)
        return Plan(CREATE, why, amount=run_amount(strategy), next_run_at=None, **judged)
    # recurring with a price bound: this slot runs only within the bounds
    if not fires:
        return Plan(SKIP, why, next_run_at=after.at, catch_up=after.catch_up, **judged)
    return Plan(
        CREATE, why, amount=run_amount(strategy), next_run_at=after.at, catch_up=after.catch_up, **judged
    )


def _blind(strategy: Strategy, now: datetime, view: PriceView, after) -> Plan:
    code = view.problem.split(":", 1)[0]
    known = strategy.judge_problem.split(":", 1)[0] if strategy.judge_problem else ""
    if strategy.kind in PRICE_TRIGGERED:
        check = _capped(strategy, now + timedelta(seconds=settings.STRATEGY_PRICE_CHECK_SECONDS))
        # One run row when the problem starts or changes, not one per tick.
        return Plan(
            SKIP,
            view.problem,
            snapshot=view.snapshot,
            next_run_at=check,
            record_run=code != known,
            judged=False,
            problem=view.problem,
        )
    return Plan(
        SKIP,
        view.problem,
        snapshot=view.snapshot,
        next_run_at=after.at,
        catch_up=after.catch_up,
        judged=False,
        problem=view.problem,
    )


@dataclass(frozen=True)
class _After:
    at: datetime | None
    catch_up: bool


def _after_run(strategy: Strategy, now: datetime) -> _After:
    """When the strategy is next due after a run (or a skipped slot) now."""
    if strategy.kind == K.RECURRING:
        interval = int(strategy.params["interval_seconds"])
        if strategy.catch_up and strategy.next_run_at is not None:
            following = strategy.next_run_at + timedelta(seconds=interval)
            if following <= now:  # still behind: the next missed slot
                return _After(_capped(strategy, following), True)
        return _After(_capped(strategy, next_slot(strategy.anchor_at, interval, now)), False)
    if strategy.kind == K.TWAP:
        return _After(_capped(strategy, now + timedelta(seconds=twap_interval(strategy.params))), False)
    return _After(None, False)
