"""Step 3 of a run: one SERIALIZABLE transaction carries out a due strategy's plan.

The strategy is claimed with SELECT ... FOR UPDATE SKIP LOCKED, still due and at the version it was
planned from (another tick holding it, or a change since, and this tick leaves it). For a plan that
creates a trade: the next sequence, the run, the trade (trade_submit_in_transaction, its
idempotency key derived from (strategy, sequence), the engine's first step enqueued on commit), the
strategy's counters, and the cancel of every one-cancels-other sibling, all committed together or
not at all. The unique (strategy, sequence) and the trade's unique (owner, idempotency key) make a
second trade for a run impossible, whichever ticks run at once or again.

Crash points (project/faults.py) at the transaction's boundaries: `strategies.run_inside_transaction`
(after every write, before COMMIT: nothing is committed) and `strategies.run_committed_before_enqueue`
(after COMMIT, before the trade's first step is sent: trades.tick's recovery sends it).
"""

from __future__ import annotations

import functools
import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction

from apps.strategies.engine.plan import COMPLETE, CREATE, REFUSE, SKIP, WATCH, Plan
from apps.strategies.models import RunOutcome, Strategy, StrategyRun, run_idempotency_key
from apps.strategies.selectors import due_query, oco_siblings
from apps.strategies.transition import event_append, strategy_transition, strategy_update
from apps.trades.real_money_transaction_manager import IdempotencyConflict, TradeInputError
from apps.trades.real_money_transaction_manager.submit import trade_inputs_check, trade_submit_in_transaction
from project.db import serializable_attempts
from project.faults import crash_point

logger = logging.getLogger(__name__)
BUSY = "busy"


def trade_deadline(now: datetime) -> datetime:
    seconds = min(settings.STRATEGY_TRADE_DEADLINE_SECONDS, settings.MAX_TRADE_DEADLINE_SECONDS)
    return now + timedelta(seconds=seconds)


def strategy_run(*, strategy: Strategy, plan: Plan, now: datetime) -> str:
    """Carry out `plan` for `strategy` as read when it was planned; returns what happened (the plan's
    action, or "busy": another tick has it, or it changed meanwhile)."""
    inputs = None
    if plan.action == CREATE:
        inputs = {
            "owner": strategy.owner,
            "wallet": strategy.wallet,
            "dex": strategy.dex,
            "path": list(strategy.path),
            "amount_in": plan.amount,
            "deadline": trade_deadline(now),
            "slippage_bps": strategy.max_slippage_bps,
        }
        try:
            trade_inputs_check(**inputs)
        except TradeInputError as exc:
            plan = Plan(REFUSE, f"the trade's inputs were refused: {exc}", snapshot=plan.snapshot)
    for attempt in serializable_attempts(label="strategy_run"):
        with attempt:
            locked = (
                Strategy.objects.select_for_update(skip_locked=True)
                .filter(due_query(now), pk=strategy.pk, version=strategy.version)
                .first()
            )
            if locked is None:
                return BUSY
            locked.owner, locked.wallet, locked.dex = strategy.owner, strategy.wallet, strategy.dex
            _carry_out(locked, plan, now, inputs)
    return plan.action


def _judgement(strategy: Strategy, plan: Plan, now: datetime) -> dict:
    if plan.judged is None:
        return {}
    if plan.judged:
        fields = {"last_judged_at": now, "blind_since": None, "judge_problem": ""}
        if plan.high_water_mark is not None:
            fields["high_water_mark"] = plan.high_water_mark
        return fields
    return {"blind_since": strategy.blind_since or now, "judge_problem": plan.problem[:500]}


def _carry_out(strategy: Strategy, plan: Plan, now: datetime, inputs: dict | None) -> None:
    judged = _judgement(strategy, plan, now)
    if plan.action == COMPLETE:
        strategy_transition(strategy, "complete", reason=plan.reason, fields={"next_run_at": None, **judged})
    elif plan.action == WATCH:
        strategy_update(strategy, next_run_at=plan.next_run_at, **judged)
    elif plan.action == SKIP:
        _skip(strategy, plan, now, judged)
    elif plan.action == REFUSE:
        run = _run(strategy, plan, RunOutcome.REFUSED, ended_at=now)
        strategy_transition(
            strategy,
            "pause",
            reason=f"run {run.sequence} refused: {plan.reason}",
            fields={"last_sequence": run.sequence},
            data={"sequence": run.sequence},
            run=run,
        )
    else:
        _create(strategy, plan, now, inputs, judged)


def _run(strategy: Strategy, plan: Plan, outcome: str, **fields) -> StrategyRun:
    sequence = strategy.last_sequence + 1
    return StrategyRun.objects.create(
        strategy=strategy,
        sequence=sequence,
        idempotency_key=run_idempotency_key(strategy.pk, sequence),
        trigger=plan.snapshot,
        outcome=outcome,
        reason=plan.reason[:4000],
        **fields,
    )


def _skip(strategy: Strategy, plan: Plan, now: datetime, judged: dict) -> None:
    fields = {"next_run_at": plan.next_run_at, "catch_up": plan.catch_up, **judged}
    if not plan.record_run:
        strategy_update(strategy, **fields)
        return
    run = _run(strategy, plan, RunOutcome.SKIPPED, ended_at=now)
    strategy_update(strategy, last_sequence=run.sequence, **fields)
    event_append(
        strategy, "run_skipped", data={"sequence": run.sequence, "reason": plan.reason[:1000]}, run=run
    )


def _create(strategy: Strategy, plan: Plan, now: datetime, inputs: dict, judged: dict) -> None:
    sequence = strategy.last_sequence + 1
    key = run_idempotency_key(strategy.pk, sequence)
    # Registered before the trade's own enqueue, so it runs after COMMIT and before that send.
    transaction.on_commit(functools.partial(crash_point, "strategies.run_committed_before_enqueue"))
    try:
        submitted = trade_submit_in_transaction(idempotency_key=key, **inputs)
    except IdempotencyConflict:
        # A trade with this run's key and other inputs: not one this engine made. Stop.
        strategy_transition(
            strategy,
            "fail",
            reason=f"a trade with run {sequence}'s key {key} exists with other inputs: stopped",
            fields={"next_run_at": None},
        )
        return
    trade = submitted.trade
    run = StrategyRun.objects.create(
        strategy=strategy,
        sequence=sequence,
        idempotency_key=key,
        trade=trade,
        amount_in=plan.amount,
        trigger=plan.snapshot,
        outcome=RunOutcome.CREATED,
        reason=plan.reason[:4000],
    )
    strategy_update(
        strategy,
        last_sequence=sequence,
        runs_created=strategy.runs_created + 1,
        amount_committed=int(strategy.amount_committed) + plan.amount,
        awaiting_trade=True,
        next_run_at=plan.next_run_at,
        catch_up=plan.catch_up,
        **judged,
    )
    event_append(
        strategy,
        "run_created",
        data={
            "sequence": sequence,
            "trade": trade.pk,
            "amount_in": str(plan.amount),
            "reason": plan.reason[:1000],
        },
        run=run,
    )
    if strategy.oco_group:
        for sibling in oco_siblings(strategy).select_for_update():
            strategy_transition(
                sibling,
                "cancel",
                reason=f"one-cancels-other: strategy {strategy.pk} of group {strategy.oco_group!r} fired "
                f"(run {sequence}, trade {trade.pk})",
                fields={"next_run_at": None},
                data={"fired": strategy.pk, "trade": trade.pk},
                event="oco_cancelled",
            )
    logger.info(
        "strategy run created", extra={"strategy": strategy.pk, "sequence": sequence, "trade": trade.pk}
    )
    crash_point("strategies.run_inside_transaction")
