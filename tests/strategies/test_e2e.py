"""Strategies run by real workers (tests/e2e/conftest.py: each process as its own database role, so the
engine creates each run's trade through its row rule): with two execution workers and strategies.tick
sent twice as fast as beat would, a SIGKILL at each boundary of the run transaction leaves every run
with at most one trade and no sequence skipped; a trailing stop keeps its high-water mark across a
SIGKILL of the worker and fires at the right level afterwards."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from apps.strategies.models import Strategy, StrategyRun
from apps.trades.models import Trade
from celery_app import app
from tests.chain.node import node_restored
from tests.e2e.conftest import make_wallet, stack  # noqa: F401 - fixture
from tests.e2e.test_pipeline import assert_exactly_once
from tests.strategies.conftest import Pool, create, reload, runs

pytestmark = [pytest.mark.e2e, pytest.mark.chain, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BEAT_SECONDS = 1  # the workers' STRATEGY_TICK_SECONDS; the test ticks twice as often
WORKER_ENV = {"TRADE_STALL_SECONDS": "3", "STRATEGY_PRICE_CHECK_SECONDS": "0", "STRATEGY_TICK_SECONDS": "1"}


def _until(stack, done, *, timeout: float, on_tick=None, mine: bool = True) -> None:  # noqa: F811
    """Play beat twice as fast as it would: strategies.tick and trades.tick every half period, a block
    mined each time, until `done()`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return
        if on_tick:
            on_tick()
        app.send_task("strategies.tick")
        app.send_task("trades.tick")
        if mine:
            stack.mine(1)
        time.sleep(BEAT_SECONDS / 2)
    raise AssertionError(f"not done within {timeout}s\n{stack.log_tail()}")


@pytest.mark.parametrize(
    "point", ["strategies.run_inside_transaction", "strategies.run_committed_before_enqueue"]
)
def test_a_crash_at_each_boundary_of_the_run_transaction_doubles_and_skips_nothing(
    stack,  # noqa: F811
    point,
    tmp_path,
    settings,
):
    settings.STRATEGY_MIN_INTERVAL_SECONDS = 1
    wallet = make_wallet(stack)
    strategies = [
        create(
            wallet,
            "recurring",
            {"amount_per_run": "5", "interval_seconds": 1},
            total="10",
            key=f"{point}-{i}",
        )
        for i in range(3)
    ]
    marker = tmp_path / "crashed"
    env = {**WORKER_ENV, "CUSTOS_CRASH_AT": point, "CUSTOS_CRASH_MARKER": str(marker)}
    for name in ("execution-1", "execution-2"):
        stack.start(name, "execution", "custos_engine", **env)
    stack.start("signer", "signer", "custos_signer")
    restarts = []

    def supervise():
        for name in ("execution-1", "execution-2"):
            if not stack.alive(name):
                restarts.append(name)
                stack.start(name, "execution", "custos_engine", **env)

    def finished() -> bool:
        return all(s.state == "COMPLETED" for s in Strategy.objects.filter(pk__in=[s.pk for s in strategies]))

    _until(stack, finished, timeout=240, on_tick=supervise)
    assert marker.exists(), f"no worker reached {point}"
    assert len(restarts) == 1, restarts
    trade_ids = []
    for strategy in strategies:
        done = runs(strategy)
        assert [r.sequence for r in done] == [1, 2], "a sequence was skipped or doubled"
        assert all(r.outcome == "settled" and r.trade_id for r in done)
        assert [r.trade.idempotency_key for r in done] == [f"strategy:{strategy.pk}:{n}" for n in (1, 2)]
        trade_ids += [r.trade_id for r in done]
    trades = Trade.objects.filter(wallet=wallet)
    assert trades.count() == 6
    assert set(trades.values_list("state", flat=True)) == {"SETTLED"}
    assert StrategyRun.objects.filter(strategy__in=strategies).count() == 6
    assert_exactly_once(stack, wallet, trade_ids)


def test_a_trailing_stop_keeps_its_high_across_a_sigkill_and_fires_at_its_level(stack, settings):  # noqa: F811
    window = 20
    settings.STRATEGY_MIN_TWAP_WINDOW_SECONDS = 10
    wallet = make_wallet(stack)
    with node_restored(stack.hardhat_url):
        pool = Pool(stack.hardhat_url)
        pool.advance(window + 5)
        start = pool.spot()
        strategy = create(wallet, "trailing_stop", {"distance_bps": 300, "twap_window_seconds": window})
        stack.start("execution", "execution", "custos_engine", **WORKER_ENV)

        def judged_near(price: Decimal):
            def near() -> bool:
                high = reload(strategy).high_water_mark
                return high is not None and abs(high - price) < price * Decimal("0.0005")

            return near

        _until(stack, judged_near(start), timeout=60, mine=False)
        # The price rises ~10% and stays there a whole window: the high follows it.
        for _ in range(2):
            pool.sell_dai(25_000 * 10**18)
            pool.advance(window // 2)
        pool.advance(window + 1)
        high = pool.spot()
        assert high > start * Decimal("1.08")
        _until(stack, judged_near(high), timeout=60, mine=False)
        stored = reload(strategy).high_water_mark

        stack.kill("execution")  # SIGKILL, mid-whatever it was doing
        stack.start("execution", "execution", "custos_engine", **WORKER_ENV)
        # 4% under the high: below its 3% trailing level, though far above 3% under the start.
        pool.push_down("0.96")
        pool.advance(window + 1)
        _until(stack, lambda: StrategyRun.objects.filter(strategy=strategy).exists(), timeout=60, mine=False)

        (run,) = runs(strategy)
        assert run.outcome == "created"
        assert run.trade_id is not None
        assert Decimal(run.trigger["high_water_mark"]) == stored
        price = Decimal(run.trigger["price"])
        assert stored * Decimal("0.95") < price <= stored * Decimal("0.97")
        assert price > start * Decimal("0.97")  # a high forgotten at the restart would not have fired here
