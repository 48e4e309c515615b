"""Scoring probability forecasts against outcomes, and the two naive baselines. numpy only."""

from __future__ import annotations

import numpy as np

CALIBRATION_BINS = 10


def accuracy(p: np.ndarray, up: np.ndarray) -> float:
    """Share of right directions; a forecast of exactly 0.5 says nothing and earns half a point."""
    hits = np.where(p == 0.5, 0.5, ((p > 0.5) == (up == 1.0)).astype(float))
    return float(np.mean(hits))


def brier(p: np.ndarray, up: np.ndarray) -> float:
    return float(np.mean((p - up) ** 2))


def log_loss(p: np.ndarray, up: np.ndarray) -> float:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-np.mean(up * np.log(q) + (1 - up) * np.log(1 - q)))


def calibration(p: np.ndarray, up: np.ndarray, *, bins: int = CALIBRATION_BINS) -> list[dict]:
    """Per probability bin: how many forecasts, their mean, and how often the price went up."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    out = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            out.append(
                {
                    "low": float(edges[b]),
                    "high": float(edges[b + 1]),
                    "count": int(mask.sum()),
                    "mean_p": float(p[mask].mean()),
                    "frequency_up": float(up[mask].mean()),
                }
            )
    return out


def expected_calibration_error(p: np.ndarray, up: np.ndarray) -> float:
    table = calibration(p, up)
    n = sum(row["count"] for row in table)
    return (
        float(sum(row["count"] * abs(row["mean_p"] - row["frequency_up"]) for row in table) / n) if n else 0.0
    )


def summarize(p: np.ndarray, up: np.ndarray) -> dict:
    return {
        "n": len(p),
        "accuracy": accuracy(p, up),
        "brier": brier(p, up),
        "log_loss": log_loss(p, up),
        "calibration_error": expected_calibration_error(p, up),
    }


def flat_baseline(n: int) -> np.ndarray:
    """Always flat: no view on the direction."""
    return np.full(n, 0.5)


def last_sign_hit_rate(last_r: np.ndarray, up: np.ndarray) -> float:
    """How often, on training data, the next move had the last return's sign (zero returns skipped)."""
    moved = last_r != 0
    if not moved.any():
        return 0.5
    return float(np.mean((last_r[moved] > 0) == (up[moved] == 1.0)))


def last_sign_baseline(last_r: np.ndarray, hit_rate: float) -> np.ndarray:
    """The sign of the last return, with the probability it was right on the training data."""
    return np.where(last_r > 0, hit_rate, np.where(last_r < 0, 1.0 - hit_rate, 0.5))


def compare(p_model: np.ndarray, up: np.ndarray, last_r: np.ndarray, hit_rate: float) -> dict:
    """The model and both baselines on the same rows; brier_skill = 1 - brier / brier(flat)."""
    flat = summarize(flat_baseline(len(up)), up)
    out = {
        "model": summarize(p_model, up),
        "flat": flat,
        "last_sign": summarize(last_sign_baseline(last_r, hit_rate), up),
        "last_sign_hit_rate": hit_rate,
        "frequency_up": float(np.mean(up)) if len(up) else 0.0,
    }
    for key in ("model", "last_sign"):
        out[key]["brier_skill"] = 1.0 - out[key]["brier"] / flat["brier"] if flat["brier"] else 0.0
    out["flat"]["brier_skill"] = 0.0
    out["model"]["calibration"] = calibration(p_model, up)
    return out
