"""Deterministic synthetic price series for tests, the demo and training without stored data.

`known_signal_series` mean-reverts with a one-bar delay: each bar's expected log return is -k times
the sum of the log returns two to four bars back, so the past predicts the next direction well while
the sign of the last return alone is only a weak guide. `random_walk_series` has independent returns:
nothing can be predicted.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np

from apps.ml.data import PricePoint

START = datetime(2026, 1, 1, tzinfo=UTC)
PRICE_QUANTUM = Decimal("0.00000001")
SIGNAL_LAGS = (2, 3, 4)


def _regime_sigma(n: int, sigma: float) -> np.ndarray:
    # Slow volatility regimes, so rolling volatility carries information about the next bars' size.
    t = np.arange(n)
    return sigma * (1.0 + 0.5 * np.sin(2 * np.pi * t / 500.0))


def _to_points(
    returns: np.ndarray, *, rng: np.random.Generator, start: datetime, bar_seconds: int, with_volume: bool
) -> list[PricePoint]:
    prices = 100.0 * np.exp(np.cumsum(returns))
    volumes = None
    if with_volume:
        # Volume rises with the size of the move, as it tends to in real markets.
        volumes = 1_000.0 * (1.0 + 20.0 * np.abs(returns)) * rng.lognormal(0.0, 0.1, size=len(returns))
    points = []
    for i, price in enumerate(prices):
        volume = Decimal(repr(round(float(volumes[i]), 4))) if volumes is not None else None
        points.append(
            PricePoint(
                at=start + timedelta(seconds=bar_seconds * i),
                price=Decimal(repr(float(price))).quantize(PRICE_QUANTUM),
                volume=volume,
            )
        )
    return points


def known_signal_series(
    *,
    n: int,
    seed: int,
    k: float = 0.25,
    sigma: float = 0.01,
    start: datetime = START,
    bar_seconds: int = 3600,
    with_volume: bool = False,
) -> list[PricePoint]:
    """r_t = -k * (r_{t-2} + r_{t-3} + r_{t-4}) + sigma_t * e_t; stationary for k < 1/3."""
    rng = np.random.default_rng(seed)
    sig = _regime_sigma(n, sigma)
    noise = rng.standard_normal(n)
    r = np.zeros(n)
    for t in range(n):
        past = sum(r[t - lag] for lag in SIGNAL_LAGS if t >= lag)
        r[t] = -k * past + sig[t] * noise[t]
    return _to_points(r, rng=rng, start=start, bar_seconds=bar_seconds, with_volume=with_volume)


def random_walk_series(
    *,
    n: int,
    seed: int,
    sigma: float = 0.01,
    start: datetime = START,
    bar_seconds: int = 3600,
    with_volume: bool = False,
) -> list[PricePoint]:
    """Independent Gaussian log returns with constant volatility."""
    rng = np.random.default_rng(seed)
    r = sigma * rng.standard_normal(n)
    return _to_points(r, rng=rng, start=start, bar_seconds=bar_seconds, with_volume=with_volume)


GENERATORS = {"signal": known_signal_series, "random-walk": random_walk_series}
