"""A TWAP strategy: N slices, each waiting for the previous slice's trade to end, settle exactly N trades
whose amounts add up to the total exactly."""

from __future__ import annotations

import pytest

from apps.trades.models import Trade
from tests.strategies.conftest import create, later, reload, runs, settle, tick

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.chain]


def test_a_twap_of_n_slices_settles_exactly_n_trades_adding_up_to_the_total(scoped_wallet, deployed_devchain):
    total = 100 * 10**6 + 1  # in 3 slices: 33,333,333 each and a remainder of 2 base units
    strategy = create(scoped_wallet, "twap", {"slices": 3, "duration_seconds": 180}, total="100.000001")
    assert int(strategy.max_per_run) == 33_333_334
    assert strategy.max_runs == 3
    for i in range(3):
        at = later(strategy, 1 + 60 * i)
        assert tick(now=at).get("create") == 1
        # Its slot long past, the next slice still waits for this one's trade to end.
        assert tick(now=later(strategy, 1 + 60 * i + 300)).get("create") is None
        assert settle(deployed_devchain, runs(strategy)[-1].trade).state == "SETTLED"
        tick(now=at)  # learns the end; the next slice is due 60 s after this one started

    strategy = reload(strategy)
    assert strategy.state == "COMPLETED", strategy.reason
    assert strategy.reason == "all 3 slices settled"
    trades = Trade.objects.filter(strategy_run__strategy=strategy).order_by("pk")
    amounts = [int(t.amount_in) for t in trades]
    assert amounts == [33_333_334, 33_333_334, 33_333_333]
    assert sum(amounts) == total == int(strategy.amount_committed)
    assert set(trades.values_list("state", flat=True)) == {"SETTLED"}
    assert tick(now=later(strategy, 3_000)) == {"ended": 0}
    assert Trade.objects.filter(strategy_run__strategy=strategy).count() == 3
