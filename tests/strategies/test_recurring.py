"""A recurring strategy: runs on its schedule, each run an ordinary trade that settles; it stops at its
end; paused it creates nothing; resumed it continues at its next slot without catching up, unless
the owner asks for the catch-up."""

from __future__ import annotations

import pytest

from apps.strategies.models import StrategyEvent
from apps.strategies.services import strategy_pause, strategy_resume
from apps.trades.models import Trade
from tests.strategies.conftest import create, later, reload, runs, settle, tick

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.chain]

MINUTE = 60


def test_three_runs_three_settled_trades_and_no_fourth_after_the_end(scoped_wallet, deployed_devchain):
    strategy = create(
        scoped_wallet,
        "recurring",
        {"amount_per_run": "10", "interval_seconds": MINUTE},
        total="1000",
        max_runs=3,
    )
    for k in range(3):
        at = later(strategy, k * MINUTE + 1)
        assert tick(now=at).get("create") == 1
        assert tick(now=at).get("create") is None  # its trade is on its way: nothing more
        run = runs(strategy)[-1]
        assert (run.sequence, run.outcome) == (k + 1, "created")
        assert run.trade.idempotency_key == f"strategy:{strategy.pk}:{k + 1}"
        assert settle(deployed_devchain, run.trade).state == "SETTLED"
        tick(now=at)  # learns the end
        assert runs(strategy)[-1].outcome == "settled"

    strategy = reload(strategy)
    assert strategy.state == "COMPLETED"
    assert "max_runs reached (3 of 3)" in strategy.reason
    assert tick(now=later(strategy, 4 * MINUTE + 1)) == {"ended": 0}
    trades = Trade.objects.filter(strategy_run__strategy=strategy)
    assert sorted(trades.values_list("state", flat=True)) == ["SETTLED"] * 3
    assert {int(t.amount_in) for t in trades} == {10 * 10**6}
    assert (strategy.runs_created, strategy.runs_settled, int(strategy.amount_committed)) == (
        3,
        3,
        30 * 10**6,
    )
    kinds = list(StrategyEvent.objects.filter(strategy=strategy).values_list("kind", flat=True))
    assert kinds == ["created"] + ["run_created", "run_settled"] * 3 + ["complete"]


def test_paused_it_creates_nothing_and_resumed_it_continues_without_catching_up(
    scoped_wallet, deployed_devchain
):
    strategy = create(
        scoped_wallet, "recurring", {"amount_per_run": "5", "interval_seconds": MINUTE}, total="100"
    )
    assert tick(now=later(strategy, 1)).get("create") == 1
    settle(deployed_devchain, runs(strategy)[0].trade)
    tick(now=later(strategy, 2))

    strategy_pause(strategy=reload(strategy))
    for minutes in (1, 2, 3, 4):  # four slots go by while paused
        tick(now=later(strategy, minutes * MINUTE + 1))
    assert len(runs(strategy)) == 1

    resumed_at = later(strategy, 4 * MINUTE + 30)
    strategy = strategy_resume(strategy=reload(strategy), now=resumed_at)
    assert strategy.state == "ACTIVE"
    assert strategy.next_run_at == later(strategy, 5 * MINUTE)  # the next slot, not the missed ones
    assert tick(now=resumed_at).get("create") is None
    assert tick(now=later(strategy, 5 * MINUTE + 1)).get("create") == 1
    assert [r.sequence for r in runs(strategy)] == [1, 2]
    settle(deployed_devchain, runs(strategy)[-1].trade)
    tick(now=later(strategy, 5 * MINUTE + 2))
    assert tick(now=later(strategy, 5 * MINUTE + 3)).get("create") is None  # the 6th slot is not due yet
    assert len(runs(strategy)) == 2


def test_resumed_with_catch_up_runs_the_missed_slots_one_after_the_other(scoped_wallet, deployed_devchain):
    strategy = create(
        scoped_wallet, "recurring", {"amount_per_run": "5", "interval_seconds": MINUTE}, total="100"
    )
    tick(now=later(strategy, 1))
    settle(deployed_devchain, runs(strategy)[0].trade)
    strategy_pause(strategy=reload(strategy))
    resumed_at = later(strategy, 3 * MINUTE + 30)  # slots 1, 2 and 3 were missed
    strategy = strategy_resume(strategy=reload(strategy), catch_up=True, now=resumed_at)
    assert strategy.catch_up
    for expected in (2, 3, 4):
        assert tick(now=resumed_at).get("create") == 1
        assert runs(strategy)[-1].sequence == expected
        settle(deployed_devchain, runs(strategy)[-1].trade)
    tick(now=resumed_at)  # learns the last end: caught up, nothing more until slot 4
    assert tick(now=resumed_at).get("create") is None
    strategy = reload(strategy)
    assert not strategy.catch_up
    assert strategy.next_run_at == later(strategy, 4 * MINUTE)
