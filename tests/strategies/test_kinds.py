"""The kinds' rules without the database or the chain: TWAP slices add up to the total exactly, the
recurring schedule's next slot, the price conditions, and each kind's caps defaults."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apps.strategies.kinds import (
    StrategyInputError,
    next_slot,
    price_condition,
    slice_amount,
    strategy_params_check,
    units_of,
)

NOW = datetime(2030, 1, 1, tzinfo=UTC)


@given(total=st.integers(min_value=1, max_value=2**256 - 1), slices=st.integers(min_value=1, max_value=1000))
def test_slices_add_up_to_the_total_exactly_and_differ_by_at_most_one_unit(total, slices):
    amounts = [slice_amount(total, slices, i) for i in range(slices)]
    assert sum(amounts) == total
    assert max(amounts) - min(amounts) <= 1
    assert amounts == sorted(amounts, reverse=True)


def test_the_next_slot_is_on_the_anchors_grid_strictly_after_the_moment():
    anchor = NOW
    assert next_slot(anchor, 60, NOW - timedelta(hours=1)) == anchor
    assert next_slot(anchor, 60, NOW) == NOW + timedelta(seconds=60)
    assert next_slot(anchor, 60, NOW + timedelta(seconds=59, microseconds=999)) == NOW + timedelta(seconds=60)
    assert next_slot(anchor, 60, NOW + timedelta(seconds=3601)) == NOW + timedelta(seconds=3660)


def test_price_conditions():
    d = Decimal
    assert price_condition("stop_loss", {"stop_price": "0.95"}, d("0.95"), None)[0]
    assert not price_condition("stop_loss", {"stop_price": "0.95"}, d("0.951"), None)[0]
    assert price_condition("take_profit", {"target_price": "1.1"}, d("1.1"), None)[0]
    assert price_condition("limit", {"trigger": "at_or_above", "limit_price": "2"}, d("2.5"), None)[0]
    assert not price_condition("limit", {"trigger": "at_or_below", "limit_price": "2"}, d("2.5"), None)[0]
    trailing = {"distance_bps": 500}
    assert not price_condition("trailing_stop", trailing, d("95.01"), d("100"))[0]
    assert price_condition("trailing_stop", trailing, d("95"), d("100"))[0]
    bounds = {"max_price": "1.0", "min_price": "0.5"}
    assert price_condition("recurring", bounds, d("0.7"), None)[0]
    assert not price_condition("recurring", bounds, d("1.01"), None)[0]
    assert not price_condition("recurring", bounds, d("0.49"), None)[0]


def _check(kind, params, total=100 * 10**6, **caps):
    return strategy_params_check(
        kind=kind,
        params=params,
        decimals_in=6,
        total_amount_in=total,
        max_per_run=caps.get("max_per_run"),
        max_slippage_bps=caps.get("max_slippage_bps", 50),
        max_runs=caps.get("max_runs"),
        expires_at=caps.get("expires_at"),
        now=NOW,
    )


def test_each_kind_stores_base_units_and_fills_its_caps_defaults(settings):
    settings.STRATEGY_MIN_INTERVAL_SECONDS = 60
    stored, caps = _check("recurring", {"amount_per_run": "30.5", "interval_seconds": 3600})
    assert stored["amount_per_run"] == "30500000"
    assert (caps.max_per_run, caps.max_runs) == (30_500_000, 4)  # 100 / 30.5, rounded up
    stored, caps = _check("twap", {"slices": 3, "duration_seconds": 600}, total=10)
    assert (caps.max_per_run, caps.max_runs) == (4, 3)
    stored, caps = _check("stop_loss", {"stop_price": "0.950"})
    assert stored == {"price_token": "in", "twap_window_seconds": 300, "stop_price": "0.950"}
    assert (caps.max_per_run, caps.max_runs) == (100 * 10**6, 1)


@pytest.mark.parametrize(
    ("value", "field"),
    [("1.0000001", "x"), ("0", "x"), ("-1", "x"), ("1e6", "x"), (1, "x"), ("", "x"), ("9" * 78, "x")],
)
def test_amounts_are_exact_decimal_strings_in_token_units(value, field):
    with pytest.raises(StrategyInputError) as raised:
        units_of(value, field, 6)
    assert raised.value.field == field
    assert units_of("1.000001", field, 6) == 1_000_001
