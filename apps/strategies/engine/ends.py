"""Step 1 of a tick: learn how runs' trades ended. A cheap query finds the runs still marked in
flight whose trade has reached a terminal state (apps.strategies.selectors.runs_ended); each is
recorded in its own SERIALIZABLE transaction with its strategy locked (SKIP LOCKED: a strategy
another tick holds is learned next tick). No signal or hook in the engine: the tick asks.

- SETTLED: the run is settled; a price trigger has done its job (COMPLETED), a recurring strategy or
  TWAP whose caps are now reached completes, any other waits for its next run.
- REJECTED, FAILED, CANCELLED (nothing swapped; a refusal signed nothing): the run is refused or
  failed with the trade's reason, its run and amount no longer count against the caps, and an ACTIVE
  strategy is PAUSED with the reason rather than trying again and piling up refusals. The owner
  resumes it (after fixing the scope, the balance...) or cancels it.
- FINALITY_VIOLATED before the tick saw it settle: failed and paused, its amount still counted (the
  swap may have happened on the chain that won).
"""

from __future__ import annotations

import logging

from django.utils import timezone

from apps.strategies.kinds import cap_reached
from apps.strategies.models import PRICE_TRIGGERED, RunOutcome, Strategy, StrategyRun, StrategyState
from apps.strategies.selectors import runs_ended, strategy_rows
from apps.strategies.transition import event_append, strategy_transition, strategy_update
from apps.trades.models import TradeState
from project.db import serializable_attempts

logger = logging.getLogger(__name__)
T = TradeState


def runs_learn_ends(*, limit: int) -> int:
    """Record the end of every run whose trade has ended (at most `limit`); returns how many."""
    learned = 0
    for run_id, strategy_id in runs_ended(limit=limit):
        for attempt in serializable_attempts(label="strategy_run_end"):
            with attempt:
                strategy = (
                    strategy_rows()
                    .select_for_update(skip_locked=True, of=("self",))
                    .filter(pk=strategy_id)
                    .first()
                )
                run = StrategyRun.objects.select_related("trade").get(pk=run_id)
                if strategy is not None and run.outcome == RunOutcome.CREATED:
                    _learn(strategy, run)
                    learned += 1
    return learned


def _learn(strategy: Strategy, run: StrategyRun) -> None:
    trade = run.trade
    now = timezone.now()
    if trade.state == T.SETTLED:
        run.outcome, run.ended_at = RunOutcome.SETTLED, now
        run.save(update_fields=["outcome", "ended_at"])
        strategy_update(strategy, awaiting_trade=False, runs_settled=strategy.runs_settled + 1)
        event_append(strategy, "run_settled", data={"sequence": run.sequence, "trade": trade.pk}, run=run)
        if strategy.state not in (StrategyState.ACTIVE, StrategyState.PAUSED):
            return
        if strategy.kind in PRICE_TRIGGERED:
            done = f"fired and settled: run {run.sequence}, trade {trade.pk}"
        else:
            done = cap_reached(strategy)
        if done:
            strategy_transition(strategy, "complete", reason=done, fields={"next_run_at": None}, run=run)
        return
    given_back = trade.state != T.FINALITY_VIOLATED
    outcome = RunOutcome.REFUSED if trade.state == T.REJECTED else RunOutcome.FAILED
    why = f"trade {trade.pk} ended {trade.state}: {trade.reason or 'no reason recorded'}"
    run.outcome, run.reason, run.ended_at = outcome, why[:4000], now
    run.save(update_fields=["outcome", "reason", "ended_at"])
    fields = {"awaiting_trade": False}
    if given_back:
        fields["runs_created"] = max(0, strategy.runs_created - 1)
        fields["amount_committed"] = max(0, int(strategy.amount_committed) - int(run.amount_in or 0))
    event = "run_refused" if outcome == RunOutcome.REFUSED else "run_failed"
    if strategy.state == StrategyState.ACTIVE:
        strategy_transition(
            strategy,
            "pause",
            reason=f"run {run.sequence}: {why}"[:4000],
            fields=fields,
            data={"sequence": run.sequence, "trade": trade.pk, "trade_state": trade.state},
            run=run,
            event=event,
        )
    else:
        strategy_update(strategy, **fields)
        event_append(strategy, event, data={"sequence": run.sequence, "reason": why[:1000]}, run=run)
    logger.info("strategy run ended", extra={"strategy": strategy.pk, "run": run.sequence, "trade": trade.pk})
