"""The feature pipeline against values worked out by hand, and the synthetic generator's determinism."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest

from apps.ml import synthetic
from apps.ml.data import PricePoint
from apps.ml.features import FeatureSpec, feature_matrix, labels, last_returns, resample

T0 = datetime(2026, 3, 1, tzinfo=UTC)
SMALL = FeatureSpec(return_horizons=(1, 2), vol_windows=(2,), volume_window=2)
# ln(1.1), ln(0.9), ln(0.99), and the population std of {ln 1.1, ln 0.9} = (ln 1.1 - ln 0.9) / 2.
LN_1_1 = 0.09531017980432493
LN_0_9 = -0.10536051565782628
LN_0_99 = -0.01005033585350145
STD_UP_DOWN = 0.10033534773107561


def _bars(prices, volumes=None):
    points = [
        PricePoint(T0 + timedelta(hours=i), Decimal(p), None if volumes is None else Decimal(volumes[i]))
        for i, p in enumerate(prices)
    ]
    return resample(points, bar_seconds=3600)


def test_returns_and_volatility_match_hand_computed_values():
    # +10%, -10%, +10%.
    bars = _bars(["100", "110", "99", "108.9"])
    names, x = feature_matrix(bars, SMALL)
    assert names == ["ret_1", "ret_2", "vol_2"]
    # Rows start at bar 2 (the warmup is 2 bars).
    assert x.shape == (2, 3)
    assert x[0] == pytest.approx([LN_0_9, LN_0_99, STD_UP_DOWN], abs=1e-12)
    assert x[1] == pytest.approx([LN_1_1, LN_0_99, STD_UP_DOWN], abs=1e-12)
    assert list(last_returns(bars, SMALL)) == pytest.approx([LN_0_9, LN_1_1], abs=1e-12)


def test_volume_feature_where_the_source_gives_volume():
    bars = _bars(["100", "110", "99", "108.9"], volumes=["10", "30", "50", "70"])
    names, x = feature_matrix(bars, SMALL)
    assert names == ["ret_1", "ret_2", "vol_2", "volume_2"]
    # ln(1 + 50) - ln(1 + mean(30, 50)) = ln(51/41); then ln(71/61).
    assert x[:, 3] == pytest.approx([0.21825356602001797, 0.15180601286800413], abs=1e-12)
    # Without volume the column is absent, and asking for it is an error, not a silent zero.
    no_volume = _bars(["100", "110", "99", "108.9"])
    assert feature_matrix(no_volume, SMALL)[0] == ["ret_1", "ret_2", "vol_2"]
    with pytest.raises(ValueError, match="no volume"):
        feature_matrix(no_volume, SMALL, with_volume=True)


def test_constant_growth_has_exact_returns_and_zero_volatility():
    bars = _bars([str(2**i) for i in range(40)])
    names, x = feature_matrix(bars, FeatureSpec())
    assert names == ["ret_1", "ret_4", "ret_16", "vol_8", "vol_32"]
    assert len(x) == 40 - 32
    ln2 = math.log(2)
    assert np.allclose(x[:, 0], ln2)
    assert np.allclose(x[:, 1], 4 * ln2)
    assert np.allclose(x[:, 2], 16 * ln2)
    assert np.allclose(x[:, 3:], 0.0)


def test_labels_look_only_forward_and_unknown_futures_are_nan():
    bars = _bars(["100", "110", "99", "108.9", "108.9"])
    up, vol = labels(bars, SMALL, horizon=1)
    # Bar 2 (99) -> 108.9: up, realised vol |ln 1.1|; bar 3 -> 108.9: flat is not up, vol 0; bar 4: unknown.
    assert list(up[:2]) == [1.0, 0.0]
    assert vol[:2] == pytest.approx([LN_1_1, 0.0], abs=1e-12)
    assert math.isnan(up[2])
    assert math.isnan(vol[2])
    up2, vol2 = labels(bars, SMALL, horizon=2)
    # Bar 2 -> bar 4: 99 -> 108.9 is up; RMS of (ln 1.1, 0) = ln 1.1 / sqrt 2.
    assert up2[0] == 1.0
    assert vol2[0] == pytest.approx(LN_1_1 / math.sqrt(2), abs=1e-12)
    assert math.isnan(up2[1])


def test_features_at_a_bar_do_not_depend_on_later_prices():
    base = ["100", "110", "99", "108.9", "120"]
    _, x1 = feature_matrix(_bars(base), SMALL)
    _, x2 = feature_matrix(_bars([*base[:4], "50"]), SMALL)
    assert np.array_equal(x1[:2], x2[:2])
    assert not np.array_equal(x1[2], x2[2])


def test_resample_takes_the_last_price_per_bar_fills_gaps_and_sums_volume():
    points = [
        PricePoint(T0 + timedelta(minutes=10), Decimal("1.0"), Decimal("1")),
        PricePoint(T0 + timedelta(minutes=50), Decimal("2.0"), Decimal("2")),
        PricePoint(T0 + timedelta(hours=2), Decimal("3.0"), Decimal("4")),  # on the boundary: closes bar 2
        PricePoint(T0 + timedelta(hours=3, minutes=30), Decimal("5.0"), Decimal("8")),
    ]
    bars = resample(points, bar_seconds=3600)
    assert bars.times == [T0 + timedelta(hours=h) for h in (1, 2, 3, 4)]
    assert list(bars.prices) == [2.0, 3.0, 3.0, 5.0]
    assert list(bars.volumes) == [3.0, 4.0, 0.0, 8.0]
    # One point without volume: the series has no volume at all.
    partial = [*points[:3], PricePoint(points[3].at, Decimal("5.0"), None)]
    assert resample(partial, bar_seconds=3600).volumes is None


def test_synthetic_series_are_deterministic_by_seed_and_decimal():
    a = synthetic.known_signal_series(n=300, seed=3)
    b = synthetic.known_signal_series(n=300, seed=3)
    c = synthetic.known_signal_series(n=300, seed=4)
    assert a == b
    assert a != c
    assert all(isinstance(p.price, Decimal) and p.price > 0 for p in a)
    assert all(p.volume is None for p in a)
    with_volume = synthetic.random_walk_series(n=50, seed=3, with_volume=True)
    assert all(isinstance(p.volume, Decimal) for p in with_volume)
    # Hourly bars from the generator's start.
    assert a[1].at - a[0].at == timedelta(hours=1)


def test_known_signal_series_really_carries_its_signal():
    points = synthetic.known_signal_series(n=6000, seed=5)
    r = np.diff(np.log([float(p.price) for p in points]))
    lagged = np.array([r[t - 2] + r[t - 3] + r[t - 4] for t in range(4, len(r))])
    # The next return leans against the sum of the returns two to four bars back; a random walk's does not.
    assert np.corrcoef(r[4:], lagged)[0, 1] < -0.3
    walk = synthetic.random_walk_series(n=6000, seed=5)
    w = np.diff(np.log([float(p.price) for p in walk]))
    lagged_w = np.array([w[t - 2] + w[t - 3] + w[t - 4] for t in range(4, len(w))])
    assert abs(np.corrcoef(w[4:], lagged_w)[0, 1]) < 0.05
