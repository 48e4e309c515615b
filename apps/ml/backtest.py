"""Walk-forward evaluation: train on everything before a fold, predict the fold, move on; score the
model and both naive baselines on the same out-of-sample rows, and chart the result (matplotlib, Agg).
Imports torch through apps.ml.training (ml commands only)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from django.conf import settings

from apps.ml import evaluation
from apps.ml.data import PricePoint
from apps.ml.features import FeatureSpec, resample
from apps.ml.model import choose_device, configure_threads
from apps.ml.training import fit, predict, rows_from_bars, standardisation


@dataclass
class Backtest:
    horizon: int
    folds: list[dict] = field(default_factory=list)
    p_model: np.ndarray = field(default_factory=lambda: np.empty(0))
    p_last_sign: np.ndarray = field(default_factory=lambda: np.empty(0))
    up: np.ndarray = field(default_factory=lambda: np.empty(0))
    summary: dict = field(default_factory=dict)


def walk_forward(
    points: Sequence[PricePoint],
    *,
    horizon: int,
    bar_seconds: int,
    spec: FeatureSpec | None = None,
    folds: int = 4,
    epochs: int = 300,
    seed: int = 7,
    hidden: int = 32,
    first_train_share: float = 0.4,
    progress=None,
) -> Backtest:
    spec = spec or FeatureSpec()
    configure_threads(settings.ML_TORCH_THREADS)
    device = choose_device(settings.ML_DEVICE)
    bars = resample(points, bar_seconds=bar_seconds)
    _, rows = rows_from_bars(bars, spec, horizon=horizon, with_volume=bars.volumes is not None)
    n = len(rows)
    first = int(n * first_train_share)
    size = (n - first) // folds
    if first < 100 or size < 20:
        raise ValueError(f"not enough history for {folds} folds: {n} rows")
    result = Backtest(horizon=horizon)
    p_model, p_last, ups, last_rs = [], [], [], []
    for k in range(folds):
        test_start = first + k * size
        test = rows.take(test_start, test_start + size if k < folds - 1 else n)
        # Everything before the fold (minus `horizon` rows whose labels reach into it); its last 15%
        # picks the epoch.
        history = rows.take(0, test_start - horizon)
        cut = int(len(history) * 0.85)
        train, validation = history.take(0, cut - horizon), history.take(cut, len(history))
        mean, std = standardisation(train.x)
        net = fit(
            train, validation, mean=mean, std=std, hidden=hidden, epochs=epochs, seed=seed + k, device=device
        )
        p, _ = predict(net, (test.x - mean) / std)
        hit_rate = evaluation.last_sign_hit_rate(train.last_r, train.up)
        baseline = evaluation.last_sign_baseline(test.last_r, hit_rate)
        fold = evaluation.compare(p, test.up, test.last_r, hit_rate)
        fold["model"].pop("calibration")
        fold.update({"fold": k + 1, "train_rows": len(train), "test_rows": len(test)})
        result.folds.append(fold)
        p_model.append(p)
        p_last.append(baseline)
        ups.append(test.up)
        last_rs.append(test.last_r)
        if progress is not None:
            progress(k + 1, folds, fold)
    result.p_model, result.p_last_sign, result.up = map(np.concatenate, (p_model, p_last, ups))
    flat = evaluation.summarize(evaluation.flat_baseline(len(result.up)), result.up)
    summary = {
        "model": evaluation.summarize(result.p_model, result.up),
        "last_sign": evaluation.summarize(result.p_last_sign, result.up),
        "flat": flat,
    }
    for key in summary:
        summary[key]["brier_skill"] = 1.0 - summary[key]["brier"] / flat["brier"]
    summary["model"]["calibration"] = evaluation.calibration(result.p_model, result.up)
    summary["last_sign"]["calibration"] = evaluation.calibration(result.p_last_sign, result.up)
    result.summary = summary
    return result


def chart(result: Backtest, path: Path, *, title: str) -> Path:
    """Predictions against outcomes (rolling), and the calibration curves, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 9))
    # The last 200 out-of-sample bars: each forecast against what happened (1 = up, 0 = not up).
    shown = slice(max(0, len(result.up) - 200), len(result.up))
    x = np.arange(len(result.up))[shown]
    top.scatter(x, result.up[shown], s=8, color="black", label="outcome (1 = up)")
    top.plot(x, result.p_model[shown], color="tab:blue", label="model p_up")
    top.plot(x, result.p_last_sign[shown], color="tab:orange", label="last-return sign p_up")
    top.axhline(0.5, color="grey", linestyle="--", label="always flat")
    top.set_xlabel("out-of-sample bar")
    top.set_ylabel("probability up")
    top.set_title(f"{title}: walk-forward predictions vs outcomes (horizon {result.horizon} bars)")
    top.legend(loc="upper right", fontsize=8)

    bottom.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
    for key, colour in (("model", "tab:blue"), ("last_sign", "tab:orange")):
        # Bins with few forecasts say little; leave them off the curve.
        table = [row for row in result.summary[key]["calibration"] if row["count"] >= 10]
        bottom.plot(
            [row["mean_p"] for row in table],
            [row["frequency_up"] for row in table],
            marker="o",
            color=colour,
            label=f"{key} (Brier {result.summary[key]['brier']:.4f})",
        )
    bottom.set_xlabel("forecast p_up")
    bottom.set_ylabel("observed frequency up")
    bottom.set_xlim(0, 1)
    bottom.set_ylim(0, 1)
    bottom.set_title("calibration")
    bottom.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
