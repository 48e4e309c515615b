"""Price triggers judge the pool's TWAP over the strategy's window, vouched for by the independent
reference, never the spot price alone: a stop-loss fires when another account really pushes the pool
down over several blocks, not when one block pushes the spot and the next pushes it back; a trailing
stop follows its high; one-cancels-other cancels the sibling in the same transaction; nothing fires on
stale or disagreeing prices, the run is skipped with the reason and health shows a strategy blind for
longer than its window.

The dev tokens are listed by no market API: the test scope allows on-chain-only pricing, so the TWAP
alone is judged, except in the test of a scope that does not allow it."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from apps.gateway.selectors import health_report
from apps.market.services import sources_ensure
from apps.strategies.models import Strategy, StrategyEvent
from tests.chain.node import node_restored
from tests.factories import grant_scope
from tests.strategies.conftest import Pool, create, price_tick, reload, runs, settle, tick, tokens

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.chain]

WINDOW = 30


def _price(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.000001")))


def test_a_stop_loss_fires_on_a_real_fall_and_not_on_a_one_block_push(scoped_wallet, deployed_devchain):
    with node_restored(deployed_devchain):
        pool = Pool(deployed_devchain)
        pool.advance(WINDOW + 5)  # a quiet window: the TWAP is the spot
        stop = pool.spot() * Decimal("0.95")
        strategy = create(
            scoped_wallet, "stop_loss", {"stop_price": _price(stop), "twap_window_seconds": WINDOW}
        )
        assert tick() == {"ended": 0, "watch": 1}
        judged = reload(strategy)
        assert judged.last_judged_at is not None
        assert judged.blind_since is None

        # One block pushes the spot price far under the stop...
        received = pool.sell_usdc(300_000)
        assert pool.spot() < stop * Decimal("0.7")
        assert tick() == {"ended": 0, "watch": 1}
        # ...and the next block pushes it back.
        pool.sell_dai(received)
        assert pool.spot() > stop
        assert tick() == {"ended": 0, "watch": 1}
        assert runs(strategy) == []

        # A real fall: another account sells into the pool over several blocks while time passes.
        for _ in range(4):
            pool.sell_usdc(30_000)
            pool.advance(WINDOW // 3)
        assert tick().get("create") == 1
        (run,) = runs(strategy)
        assert Decimal(run.trigger["twap"]) <= stop < Decimal(run.trigger["twap"]) * Decimal("1.2")
        assert run.trigger["basis"].startswith("pool TWAP only")
        assert run.trigger["window"][0] < run.trigger["window"][2]  # read at two blocks
        assert "at or below the stop" in run.reason
        assert settle(deployed_devchain, run.trade).state == "SETTLED"
        tick()
        strategy = reload(strategy)
        assert strategy.state == "COMPLETED"
        assert strategy.reason == f"fired and settled: run 1, trade {run.trade_id}"


def test_one_cancels_other_and_a_trailing_stop_follows_its_high(scoped_wallet, deployed_devchain):
    with node_restored(deployed_devchain):
        pool = Pool(deployed_devchain)
        pool.advance(WINDOW + 5)
        start = pool.spot()
        params = {"twap_window_seconds": WINDOW}
        stop = create(
            scoped_wallet,
            "stop_loss",
            {**params, "stop_price": _price(start * Decimal("0.8"))},
            oco_group="exit",
        )
        take = create(
            scoped_wallet,
            "take_profit",
            {**params, "target_price": _price(start * Decimal("1.04"))},
            oco_group="exit",
        )
        trailing = create(scoped_wallet, "trailing_stop", {**params, "distance_bps": 300})
        assert tick() == {"ended": 0, "watch": 3}
        first_high = reload(trailing).high_water_mark
        assert abs(first_high - start) < start * Decimal("0.001")

        # The price rises over several blocks: the take-profit fires, its sibling is cancelled, the
        # trailing stop's high follows the price up.
        for _ in range(3):
            pool.sell_dai(40_000 * 10**18)
            pool.advance(WINDOW // 3)
        assert tick().get("create") == 1
        (fired,) = runs(take)
        assert reload(take).awaiting_trade
        cancelled = reload(stop)
        assert cancelled.state == "CANCELLED"
        assert cancelled.reason.startswith(f"one-cancels-other: strategy {take.pk} of group 'exit' fired")
        event = StrategyEvent.objects.get(strategy=stop, kind="oco_cancelled")
        assert event.data["trade"] == fired.trade_id
        assert reload(trailing).high_water_mark > first_high * Decimal("1.04")
        assert runs(trailing) == []
        pool.advance(WINDOW + 1)  # the TWAP catches up with the plateau
        tick()
        high = reload(trailing).high_water_mark
        assert abs(high - pool.spot()) < high * Decimal("0.001")

        # Down 2% from the high: above the 3% trailing level, nothing. Down 4%: it fires.
        pool.push_down("0.98")
        pool.advance(WINDOW + 1)
        assert tick().get("create") is None
        assert reload(trailing).high_water_mark == high
        pool.push_down("0.98")
        pool.advance(WINDOW + 1)
        assert tick().get("create") == 1
        (run,) = runs(trailing)
        assert Decimal(run.trigger["high_water_mark"]) == high
        assert high * Decimal("0.95") < Decimal(run.trigger["price"]) <= high * Decimal("0.97")


def test_nothing_fires_on_missing_stale_disagreeing_or_diverging_prices(funded_wallet, deployed_devchain):
    sources_ensure()
    grant_scope(funded_wallet, allow_onchain_only_pricing=False)
    usdc, dai = tokens()
    with node_restored(deployed_devchain):
        pool = Pool(deployed_devchain)
        pool.advance(WINDOW + 5)
        spot = pool.spot()
        # The stop is above the price: any judgement would fire it.
        strategy = create(
            funded_wallet,
            "stop_loss",
            {"stop_price": _price(spot * Decimal("1.05")), "twap_window_seconds": WINDOW},
        )

        def skipped() -> list[str]:
            return [r.reason.split(":", 1)[0] for r in runs(strategy)]

        tick()
        tick()  # the same problem again: one run records it, not one per tick
        assert skipped() == ["no_independent_price"]
        blind = reload(strategy)
        assert blind.state == "ACTIVE"
        assert blind.blind_since is not None
        assert "no market source has a price" in blind.judge_problem

        Strategy.objects.filter(pk=strategy.pk).update(
            blind_since=timezone.now() - timedelta(seconds=WINDOW + 1)
        )
        report = health_report()
        assert "strategies:blind" in report.failing
        assert report.checks["strategies"]["blind"][0]["id"] == strategy.pk
        assert report.checks["strategies"]["blind"][0]["problem"] == "no_independent_price"

        price_tick(usdc, "coincap", "1.00", age_seconds=10_000)
        price_tick(dai, "coincap", "1.00", age_seconds=10_000)
        tick()
        assert "every price is stale" in reload(strategy).judge_problem

        # Fresh and agreeing among themselves, but 20% away from the pool's TWAP.
        price_tick(usdc, "coincap", _price(spot * Decimal("1.2")))
        price_tick(dai, "coincap", "1.00")
        tick()
        assert skipped()[-1] == "reference_twap_disagree"

        # Two sources for dDAI 10% apart.
        price_tick(usdc, "coincap", _price(spot))
        price_tick(dai, "coinlore", "1.10")
        tick()
        assert skipped()[-1] == "price_sources_diverge"
        assert runs(strategy)[-1].trigger["reference"]["dDAI"]["fresh"]
        assert all(r.trade_id is None for r in runs(strategy))

        # Fresh, agreeing and vouching for the TWAP: now it fires.
        price_tick(dai, "coinlore", "1.00")
        assert tick().get("create") == 1
        run = runs(strategy)[-1]
        assert run.trigger["basis"] == "independent reference and pool TWAP"
        assert run.trigger["gap_bps"] <= 200
        strategy = reload(strategy)
        assert strategy.blind_since is None
        assert strategy.judge_problem == ""
        assert [(r.outcome, r.reason.split(":", 1)[0]) for r in runs(strategy)][:3] == [
            ("skipped", "no_independent_price"),
            ("skipped", "reference_twap_disagree"),
            ("skipped", "price_sources_diverge"),
        ]
        assert run.outcome == "created"
        assert run.trade_id is not None
