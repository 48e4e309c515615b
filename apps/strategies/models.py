"""Strategies: trades the owner asks for ahead of time (recurring buys, TWAP slices, limit and stop
orders), run by the beat tick as ordinary trades (docs/strategies.md).

A strategy's state is a protected django-fsm-2 field moved only by the transitions below, each
persisted by one version-checked UPDATE (optimistic locking). Its caps are fixed at creation and only
ever lowered; its pair, kind and parameters never change (a trigger refuses it: migration 0002).
Each run has a sequence unique per strategy and creates at most one trade, whose idempotency key is
derived from (strategy, sequence).
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models.functions import Cast, Concat
from django_fsm import FSMField, FSMModelMixin, transition

UINT = {"max_digits": 78, "decimal_places": 0}  # uint256 base units fit in 78 digits
PRICE = {"max_digits": 48, "decimal_places": 18}


class StrategyKind(models.TextChoices):
    RECURRING = "recurring", "recurring: a fixed amount every interval"
    TWAP = "twap", "TWAP: the total in equal slices over a duration"
    LIMIT = "limit", "limit: swap when the price crosses a threshold, until expiry"
    STOP_LOSS = "stop_loss", "stop-loss: swap when the price falls to the stop"
    TAKE_PROFIT = "take_profit", "take-profit: swap when the price rises to the target"
    TRAILING_STOP = "trailing_stop", "trailing stop: swap when the price falls a distance below its high"


class StrategyState(models.TextChoices):
    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"


S = StrategyState
ENDED = frozenset({S.COMPLETED, S.CANCELLED, S.FAILED})
# Kinds that watch a price and fire once; they may share a one-cancels-other group.
PRICE_TRIGGERED = frozenset(
    {StrategyKind.LIMIT, StrategyKind.STOP_LOSS, StrategyKind.TAKE_PROFIT, StrategyKind.TRAILING_STOP}
)


class Strategy(FSMModelMixin, models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="strategies")
    wallet = models.ForeignKey("wallets.Wallet", on_delete=models.PROTECT, related_name="strategies")
    chain = models.ForeignKey("chain.Chain", on_delete=models.PROTECT)
    dex = models.ForeignKey("chain.Dex", on_delete=models.PROTECT)
    path = ArrayField(models.CharField(max_length=42), help_text="[token_in, token_out] addresses; frozen")
    kind = models.CharField(max_length=16, choices=StrategyKind.choices)
    params = models.JSONField(default=dict, help_text="validated per kind (apps/strategies/kinds.py); frozen")
    idempotency_key = models.CharField(max_length=128)
    state = FSMField(default=S.ACTIVE, choices=S.choices, protected=True)
    version = models.PositiveIntegerField(default=0)
    # Hard caps, fixed at creation and only ever lowered (the owner's edit; a trigger refuses more).
    total_amount_in = models.DecimalField(**UINT, help_text="base units of token_in, all runs together")
    max_per_run = models.DecimalField(**UINT, help_text="base units of token_in, one run")
    max_slippage_bps = models.PositiveIntegerField(help_text="each run's trade swaps with this slippage")
    max_runs = models.PositiveIntegerField(help_text="runs whose trade counts against the caps")
    expires_at = models.DateTimeField(null=True, blank=True)
    # Schedule: the tick runs an ACTIVE strategy with no trade in flight once next_run_at has come.
    anchor_at = models.DateTimeField(
        help_text="the recurring schedule's origin: runs at anchor + k x interval"
    )
    next_run_at = models.DateTimeField(null=True, blank=True)
    catch_up = models.BooleanField(default=False, help_text="run the slots missed while paused, one by one")
    awaiting_trade = models.BooleanField(default=False, help_text="a run's trade has not ended yet")
    # Counters. A run whose trade ends without swapping (rejected, reverted, cancelled) gives its run
    # and amount back: runs_created and amount_committed count what counts against the caps.
    last_sequence = models.PositiveIntegerField(default=0)
    runs_created = models.PositiveIntegerField(default=0)
    runs_settled = models.PositiveIntegerField(default=0)
    amount_committed = models.DecimalField(**UINT, default=0)
    # Price judgement (price-triggered kinds and recurring with a price bound).
    high_water_mark = models.DecimalField(
        **PRICE, null=True, blank=True, help_text="trailing stop: the highest price judged since activation"
    )
    last_judged_at = models.DateTimeField(null=True, blank=True)
    blind_since = models.DateTimeField(
        null=True,
        blank=True,
        help_text="since when the tick could not judge the price (stale or disagreeing)",
    )
    judge_problem = models.CharField(max_length=500, blank=True, default="")
    oco_group = models.CharField(
        max_length=64,
        blank=True,
        default="",
        help_text="one-cancels-other: when one fires, the others cancel",
    )
    reason = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "strategies"
        constraints = [
            models.UniqueConstraint(fields=["owner", "idempotency_key"], name="strategy_unique_idempotency"),
            models.CheckConstraint(condition=models.Q(total_amount_in__gt=0), name="strategy_total_positive"),
            models.CheckConstraint(
                condition=models.Q(max_per_run__gt=0), name="strategy_max_per_run_positive"
            ),
            models.CheckConstraint(
                condition=models.Q(max_slippage_bps__gte=1, max_slippage_bps__lte=5000),
                name="strategy_slippage_bounded",
            ),
            models.CheckConstraint(condition=models.Q(max_runs__gte=1), name="strategy_max_runs_positive"),
            models.CheckConstraint(
                condition=models.Q(amount_committed__gte=0), name="strategy_committed_sane"
            ),
        ]
        indexes = [
            # The tick's due query reads only what is due: its cost follows the number of strategies
            # due, not the number that exist (paused, ended or waiting for a trade are not in it).
            models.Index(
                fields=["next_run_at"],
                condition=models.Q(state="ACTIVE", awaiting_trade=False),
                name="strategy_due",
            ),
            models.Index(
                fields=["owner", "oco_group"], condition=~models.Q(oco_group=""), name="strategy_oco_group"
            ),
        ]

    def __str__(self) -> str:
        return f"strategy {self.pk} {self.kind} [{self.state}]"

    @property
    def token_in(self) -> str:
        return self.path[0]

    @property
    def token_out(self) -> str:
        return self.path[-1]

    # --- transitions (each persisted by apps.strategies.engine.transition.strategy_transition) ---
    @transition(field=state, source=S.ACTIVE, target=S.PAUSED)
    def pause(self) -> None: ...

    @transition(field=state, source=S.PAUSED, target=S.ACTIVE)
    def resume(self) -> None: ...

    @transition(field=state, source=[S.ACTIVE, S.PAUSED], target=S.COMPLETED)
    def complete(self) -> None: ...

    @transition(field=state, source=[S.ACTIVE, S.PAUSED], target=S.CANCELLED)
    def cancel(self) -> None: ...

    @transition(field=state, source=[S.ACTIVE, S.PAUSED], target=S.FAILED)
    def fail(self) -> None: ...


class RunOutcome(models.TextChoices):
    CREATED = "created", "its trade is on its way"
    SKIPPED = "skipped", "not run: the price condition or judgement said no"
    REFUSED = "refused", "refused: by the strategy's own checks or by the engine (REJECTED)"
    SETTLED = "settled", "its trade settled"
    FAILED = "failed", "its trade failed or was cancelled"


def run_idempotency_key(strategy_id: int, sequence: int) -> str:
    """The key of a run's trade: one (strategy, sequence), one trade, whatever crashes or repeats."""
    return f"strategy:{strategy_id}:{sequence}"


class StrategyRun(models.Model):
    strategy = models.ForeignKey(Strategy, on_delete=models.PROTECT, related_name="runs")
    sequence = models.PositiveIntegerField()
    idempotency_key = models.CharField(max_length=128)
    trade = models.OneToOneField(
        "trades.Trade", on_delete=models.PROTECT, null=True, blank=True, related_name="strategy_run"
    )
    amount_in = models.DecimalField(**UINT, null=True, blank=True)
    trigger = models.JSONField(
        default=dict,
        encoder=DjangoJSONEncoder,
        help_text="what was judged: prices, their sources and ages, block",
    )
    outcome = models.CharField(max_length=16, choices=RunOutcome.choices)
    reason = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["strategy_id", "sequence"]
        constraints = [
            models.UniqueConstraint(fields=["strategy", "sequence"], name="strategyrun_unique_sequence"),
            models.CheckConstraint(
                condition=models.Q(
                    idempotency_key=Concat(
                        models.Value("strategy:"),
                        Cast("strategy_id", models.CharField()),
                        models.Value(":"),
                        Cast("sequence", models.CharField()),
                        output_field=models.CharField(),
                    )
                ),
                name="strategyrun_key_derived",
            ),
        ]
        indexes = [
            # The tick's "which runs' trades have ended": only runs still waiting are in it.
            models.Index(
                fields=["trade"], condition=models.Q(outcome="created"), name="strategyrun_in_flight"
            ),
        ]

    def __str__(self) -> str:
        return f"run {self.sequence} of strategy {self.strategy_id} [{self.outcome}]"


class StrategyEvent(models.Model):
    """What happened to a strategy, in order; append-only (migration 0002). Its id comes from the trade
    events' sequence, so the owner's one update feed (apps.trades.selectors.trade_events_after) orders
    trade and strategy events with one cursor."""

    id = models.BigIntegerField(primary_key=True)
    strategy = models.ForeignKey(Strategy, on_delete=models.PROTECT, related_name="events")
    run = models.ForeignKey(StrategyRun, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    kind = models.CharField(max_length=32)
    from_state = models.CharField(max_length=16, blank=True, default="")
    to_state = models.CharField(max_length=16, blank=True, default="")
    data = models.JSONField(default=dict, encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.kind} of strategy {self.strategy_id}"
