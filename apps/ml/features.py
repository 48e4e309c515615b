"""The feature pipeline: price points -> regular bars -> feature rows and labels. Deterministic.

Prices stay Decimal until here; features are float64 (they only ever feed the model). Every feature
at bar t uses bars up to t only; labels use bars t+1 .. t+h only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from apps.ml.data import PricePoint


@dataclass(frozen=True)
class FeatureSpec:
    return_horizons: tuple[int, ...] = (1, 4, 16)
    vol_windows: tuple[int, ...] = (8, 32)
    volume_window: int = 32

    @property
    def warmup(self) -> int:
        """Bars of history the first feature row needs before it."""
        return max(*self.return_horizons, *self.vol_windows, self.volume_window)

    def names(self, *, with_volume: bool) -> list[str]:
        names = [f"ret_{h}" for h in self.return_horizons] + [f"vol_{w}" for w in self.vol_windows]
        if with_volume:
            names.append(f"volume_{self.volume_window}")
        return names

    def as_json(self) -> dict:
        return {
            key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()
        }

    @classmethod
    def from_json(cls, data: dict) -> FeatureSpec:
        return cls(
            return_horizons=tuple(data["return_horizons"]),
            vol_windows=tuple(data["vol_windows"]),
            volume_window=int(data["volume_window"]),
        )


@dataclass(frozen=True)
class Bars:
    times: list[datetime]  # each bar's end
    prices: np.ndarray  # float64, the last price seen by the bar's end
    volumes: np.ndarray | None  # summed over the bar; None when the source gives no volume


def resample(points: Sequence[PricePoint], *, bar_seconds: int) -> Bars:
    """Bars ending on multiples of `bar_seconds` (UTC epoch). A bar without a price repeats the last
    one (a zero return, zero volume); volume is kept only if every point has it."""
    if not points:
        return Bars(times=[], prices=np.zeros(0), volumes=None)
    with_volume = all(p.volume is not None for p in points)
    buckets: dict[int, tuple[float, float]] = {}
    for point in points:
        # A price observed exactly on a boundary closes the bar that ends there.
        bucket = math.ceil(point.at.timestamp() / bar_seconds)
        volume = float(point.volume) if with_volume else 0.0
        _, previous_volume = buckets.get(bucket, (0.0, 0.0))
        buckets[bucket] = (float(point.price), previous_volume + volume)
    first, last = min(buckets), max(buckets)
    prices, volumes, times = [], [], []
    price = buckets[first][0]
    for bucket in range(first, last + 1):
        price, volume = buckets.get(bucket, (price, 0.0))
        prices.append(price)
        volumes.append(volume)
        times.append(datetime.fromtimestamp(bucket * bar_seconds, tz=UTC))
    return Bars(
        times=times,
        prices=np.asarray(prices, dtype=np.float64),
        volumes=np.asarray(volumes, dtype=np.float64) if with_volume else None,
    )


def one_bar_returns(prices: np.ndarray) -> np.ndarray:
    """r[t] = ln(p[t] / p[t-1]); r[0] is NaN."""
    out = np.full(len(prices), np.nan)
    out[1:] = np.diff(np.log(prices))
    return out


def feature_matrix(
    bars: Bars, spec: FeatureSpec, *, with_volume: bool | None = None
) -> tuple[list[str], np.ndarray]:
    """One row per bar t >= spec.warmup (bars before have too little history): rows[i] is bar
    spec.warmup + i. Columns, in order:
    ret_h = ln(p[t] / p[t-h]); vol_w = population std of the one-bar log returns r[t-w+1..t];
    volume_w = ln(1 + v[t]) - ln(1 + mean(v[t-w+1..t]))."""
    if with_volume is None:
        with_volume = bars.volumes is not None
    if with_volume and bars.volumes is None:
        raise ValueError("the series has no volume")
    names = spec.names(with_volume=with_volume)
    n = len(bars.prices)
    rows = max(0, n - spec.warmup)
    out = np.empty((rows, len(names)), dtype=np.float64)
    if rows == 0:
        return names, out
    logp = np.log(bars.prices)
    r = one_bar_returns(bars.prices)
    idx = np.arange(spec.warmup, n)
    col = 0
    for h in spec.return_horizons:
        out[:, col] = logp[idx] - logp[idx - h]
        col += 1
    for w in spec.vol_windows:
        # windows[j] holds r[j .. j+w-1]; bar t's window r[t-w+1 .. t] is windows[t-w+1].
        windows = sliding_window_view(r, w)
        out[:, col] = windows[idx - w + 1].std(axis=1)
        col += 1
    if with_volume:
        v = bars.volumes
        w = spec.volume_window
        out[:, col] = np.log1p(v[idx]) - np.log1p(sliding_window_view(v, w)[idx - w + 1].mean(axis=1))
    return names, out


def labels(bars: Bars, spec: FeatureSpec, *, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """For each feature row (bar t), up = 1.0 if p[t+h] > p[t] else 0.0, and the realised volatility
    sqrt(mean(r[t+1..t+h]^2)). Rows whose future is not known yet are NaN."""
    n = len(bars.prices)
    idx = np.arange(spec.warmup, n)
    up = np.full(len(idx), np.nan)
    vol = np.full(len(idx), np.nan)
    r = one_bar_returns(bars.prices)
    for i, t in enumerate(idx):
        if t + horizon < n:
            up[i] = 1.0 if bars.prices[t + horizon] > bars.prices[t] else 0.0
            vol[i] = math.sqrt(float(np.mean(r[t + 1 : t + horizon + 1] ** 2)))
    return up, vol


def last_returns(bars: Bars, spec: FeatureSpec) -> np.ndarray:
    """The one-bar return at each feature row's bar (what the last-return-sign baseline sees)."""
    r = one_bar_returns(bars.prices)
    return r[spec.warmup :]
