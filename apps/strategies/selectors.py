"""Strategy reads: the owner's strategies and runs (owner-filtered: another owner's is a 404), the
scopes that cover a strategy's pair, what the tick finds due or waiting, what health shows, the
strategy events of the owner's update feed, and the API's views of it all."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import Q, QuerySet
from django.shortcuts import get_object_or_404

from apps.chain.models import Dex, Pair, Token
from apps.strategies.kinds import judges_price, params_view, twap_window
from apps.strategies.models import RunOutcome, Strategy, StrategyEvent, StrategyRun, StrategyState
from apps.trades.models import TERMINAL
from apps.wallets.models import PermissionScope, Wallet
from apps.wallets.scope import FROM_DATABASE, active_scopes, owner_signed
from apps.wallets.selectors import units_text

S = StrategyState


# --- the owner's ---------------------------------------------------------------------------------------


def strategies_of(
    owner, *, state: str | None = None, before_id: int | None = None, limit: int = 50
) -> list[Strategy]:
    strategies = Strategy.objects.filter(owner=owner).select_related("chain").order_by("-id")
    if state:
        strategies = strategies.filter(state=state)
    if before_id:
        strategies = strategies.filter(pk__lt=before_id)
    return list(strategies[:limit])


def strategy_of(owner, strategy_id: int) -> Strategy:
    return get_object_or_404(Strategy.objects.select_related("chain"), owner=owner, pk=strategy_id)


def runs_of(strategy: Strategy, *, before: int | None = None, limit: int = 50) -> list[StrategyRun]:
    runs = StrategyRun.objects.filter(strategy=strategy).select_related("trade").order_by("-sequence")
    if before:
        runs = runs.filter(sequence__lt=before)
    return list(runs[:limit])


# --- what the strategy may trade and judge ---------------------------------------------------------------


def covering_scopes(*, wallet: Wallet, dex: Dex, path: list[str], now: datetime) -> list[PermissionScope]:
    """The wallet's active scopes its owner signed that cover swapping path[0] for path[1] on `dex`'s
    router (either way round when the scope allows the reverse)."""
    signed = owner_signed(
        active_scopes(wallet=wallet, chain=dex.chain, now=now),
        wallet=wallet,
        chain_id=dex.chain.chain_id,
        state=FROM_DATABASE,
    )
    token_in, token_out = (address.lower() for address in path)
    covering = []
    for scope in signed:
        if scope.router.lower() != dex.router.lower():
            continue
        pair = (scope.token_in_address.lower(), scope.token_out_address.lower())
        if pair == (token_in, token_out) or (scope.allow_reverse and pair == (token_out, token_in)):
            covering.append(scope)
    return covering


def tokens_of(chain_pk: int, path: list[str]) -> tuple[Token | None, Token | None]:
    found = {t.address: t for t in Token.objects.filter(chain_id=chain_pk, address__in=list(path))}
    return found.get(path[0]), found.get(path[-1])


def pair_of(*, dex: Dex, token_in: Token, token_out: Token) -> Pair | None:
    return (
        Pair.objects.filter(dex=dex)
        .filter(Q(token0=token_in, token1=token_out) | Q(token0=token_out, token1=token_in))
        .select_related("dex__chain", "token0", "token1")
        .first()
    )


# --- the tick ------------------------------------------------------------------------------------------


def strategy_rows() -> QuerySet[Strategy]:
    return Strategy.objects.select_related("owner", "wallet", "chain", "dex")


def due_query(now: datetime) -> Q:
    """Due: ACTIVE, no trade in flight, its time come (the partial index strategy_due covers it)."""
    return Q(state=S.ACTIVE, awaiting_trade=False, next_run_at__lte=now)


def due_strategies(*, now: datetime, limit: int) -> list[Strategy]:
    """The oldest-due first, at most `limit`: read without a lock (the run takes its own)."""
    return list(strategy_rows().filter(due_query(now)).order_by("next_run_at", "pk")[:limit])


def runs_ended(*, limit: int) -> list[tuple[int, int]]:
    """(run, strategy) of runs still marked in flight whose trade has reached a terminal state: the
    partial index strategyrun_in_flight keeps this to the runs in flight."""
    return list(
        StrategyRun.objects.filter(outcome=RunOutcome.CREATED, trade__state__in=TERMINAL)
        .order_by("pk")
        .values_list("pk", "strategy_id")[:limit]
    )


# --- health ----------------------------------------------------------------------------------------------


def strategies_blind(*, now: datetime) -> list[dict]:
    """ACTIVE strategies that have not been able to judge their price for longer than their TWAP
    window (stale or disagreeing prices, an unreadable pool)."""
    blind = []
    for strategy in Strategy.objects.filter(state=S.ACTIVE, blind_since__isnull=False).order_by(
        "blind_since"
    ):
        if not judges_price(strategy.kind, strategy.params):
            continue
        window = twap_window(strategy.params)
        if strategy.blind_since <= now - timedelta(seconds=window):
            blind.append(
                {
                    "id": strategy.pk,
                    "kind": strategy.kind,
                    "blind_since": strategy.blind_since.isoformat(),
                    "window_seconds": window,
                    # The code only: health answers without a token, and the detail names prices.
                    "problem": strategy.judge_problem.split(":", 1)[0],
                }
            )
    return blind


# --- the owner's update feed -------------------------------------------------------------------------------


def strategy_events_after(
    owner, *, after_id: int, trade_id: int | None = None, limit: int = 200
) -> list[dict]:
    """The owner's strategy events after a feed cursor, as the trade feed shows events: `trade` is the
    run's trade (or None), `state` the strategy's state now."""
    events = StrategyEvent.objects.filter(strategy__owner=owner, pk__gt=after_id).select_related(
        "strategy", "run"
    )
    if trade_id:
        events = events.filter(run__trade_id=trade_id)
    return [
        {
            "id": e.pk,
            "trade": e.run.trade_id if e.run_id else None,
            "strategy": e.strategy_id,
            "kind": f"strategy.{e.kind}",
            "from_state": e.from_state,
            "to_state": e.to_state,
            "state": e.strategy.state,
            "created_at": e.created_at,
        }
        for e in events.order_by("id")[:limit]
    ]


def latest_strategy_event_id() -> int:
    return StrategyEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0


# --- views ---------------------------------------------------------------------------------------------


def strategy_view(strategy: Strategy) -> dict:
    token_in, token_out = tokens_of(strategy.chain_id, list(strategy.path))
    dec_in = token_in.decimals if token_in else None
    return {
        "id": strategy.pk,
        "state": strategy.state,
        "kind": strategy.kind,
        "wallet": strategy.wallet_id,
        "chain_id": strategy.chain.chain_id,
        "dex": strategy.dex_id,
        "path": list(strategy.path),
        "token_in": token_in.symbol if token_in else None,
        "token_out": token_out.symbol if token_out else None,
        "params": params_view(strategy.params, dec_in),
        "total_amount_in": units_text(strategy.total_amount_in, dec_in),
        "max_per_run": units_text(strategy.max_per_run, dec_in),
        "max_slippage_bps": strategy.max_slippage_bps,
        "max_runs": strategy.max_runs,
        "expires_at": strategy.expires_at,
        "next_run_at": strategy.next_run_at,
        "catch_up": strategy.catch_up,
        "awaiting_trade": strategy.awaiting_trade,
        "runs_created": strategy.runs_created,
        "runs_settled": strategy.runs_settled,
        "amount_committed": units_text(strategy.amount_committed, dec_in),
        "high_water_mark": None
        if strategy.high_water_mark is None
        else f"{strategy.high_water_mark.normalize():f}",
        "last_judged_at": strategy.last_judged_at,
        "blind_since": strategy.blind_since,
        "judge_problem": strategy.judge_problem,
        "oco_group": strategy.oco_group,
        "reason": strategy.reason,
        "version": strategy.version,
        "created_at": strategy.created_at,
        "updated_at": strategy.updated_at,
    }


def run_view(run: StrategyRun, decimals_in: int | None) -> dict:
    return {
        "sequence": run.sequence,
        "outcome": run.outcome,
        "reason": run.reason,
        "trade": run.trade_id,
        "trade_state": run.trade.state if run.trade_id else None,
        "amount_in": units_text(run.amount_in, decimals_in),
        "trigger": run.trigger,
        "created_at": run.created_at,
        "ended_at": run.ended_at,
    }


def runs_view(strategy: Strategy, runs: list[StrategyRun]) -> list[dict]:
    token_in, _ = tokens_of(strategy.chain_id, list(strategy.path))
    return [run_view(run, token_in.decimals if token_in else None) for run in runs]


def strategy_detail_view(strategy: Strategy) -> dict:
    out = strategy_view(strategy)
    out["runs"] = runs_view(strategy, runs_of(strategy, limit=20))
    return out


def oco_siblings(strategy: Strategy) -> QuerySet[Strategy]:
    """The other live strategies of the strategy's one-cancels-other group, in primary-key order."""
    return (
        Strategy.objects.filter(owner_id=strategy.owner_id, oco_group=strategy.oco_group)
        .exclude(pk=strategy.pk)
        .filter(state__in=[S.ACTIVE, S.PAUSED])
        .order_by("pk")
    )
