"""Inference on the ml worker: the newest prices of a pair -> an Advice row, or an abstention that
says why (stale data, too little history, inputs unlike the training data, no demonstrated edge).
Imports torch (ml worker only)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import numpy as np
import torch
from django.conf import settings
from django.utils import timezone

from apps.ml import data, selectors, services
from apps.ml.features import FeatureSpec, feature_matrix, resample
from apps.ml.model import AdvisorNet, configure_threads, weights_load
from apps.ml.models import Advice, ModelVersion

logger = logging.getLogger(__name__)
P_QUANTUM = Decimal("0.00001")
VOL_QUANTUM = Decimal("0.00000001")
A = Advice.Abstain
PAIRS_SEEN_WITHIN = timedelta(days=7)

# Loaded networks by model version id, with the sha256 they were verified against.
_loaded: dict[int, tuple[str, AdvisorNet]] = {}


def load_model(version: ModelVersion, *, model_dir: Path | None = None) -> AdvisorNet:
    cached = _loaded.get(version.pk)
    if cached is not None and cached[0] == version.weights_sha256:
        return cached[1]
    configure_threads(settings.ML_TORCH_THREADS)
    net = weights_load(
        path=Path(model_dir or settings.ML_MODEL_DIR) / version.weights_file,
        sha256=version.weights_sha256,
        n_features=len(version.features),
        hidden=version.hidden_units,
    )
    _loaded[version.pk] = (version.weights_sha256, net)
    return net


def standardise(version: ModelVersion, x: np.ndarray) -> np.ndarray:
    stats = version.feature_stats
    return (x - np.asarray(stats["mean"])) / np.asarray(stats["std"])


def predict_rows(net: AdvisorNet, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(p_up, expected volatility) for standardised rows; one forward pass for the whole batch."""
    with torch.inference_mode():
        logit, logvol = net(torch.as_tensor(z, dtype=torch.float32))
        return torch.sigmoid(logit).double().numpy(), torch.exp(logvol).double().numpy()


def confidence_of(p_up: float, skill: float) -> float:
    """The forecast's margin |2p - 1|, trusted in proportion to the model's held-out Brier skill
    (fully from ML_FULL_CONFIDENCE_SKILL up)."""
    trust = min(1.0, max(0.0, skill) / settings.ML_FULL_CONFIDENCE_SKILL)
    return abs(2.0 * p_up - 1.0) * trust


def _q(value: float, quantum: Decimal) -> Decimal:
    return Decimal(repr(float(value))).quantize(quantum, rounding=ROUND_HALF_EVEN)


def advise_pair(
    *, version: ModelVersion, token_id: int, quote_token_id: int | None, now: datetime | None = None
) -> Advice:
    """Advice for one pair from the prices stored up to `now`."""
    now = now or timezone.now()
    spec = FeatureSpec.from_json(version.feature_spec)
    bar = timedelta(seconds=version.bar_seconds)
    points = data.price_series(
        token_id=token_id,
        quote_token_id=quote_token_id,
        start=now - bar * (spec.warmup * 3 + 2),
        end=now,
        bar_seconds=version.bar_seconds,
    )
    common = {
        "token_id": token_id,
        "quote_token_id": quote_token_id,
        "model_version_id": version.pk,
        "horizon_bars": version.horizon_bars,
        "created_at": now,
        "data_until": points[-1].at if points else None,
    }

    def abstain(reason: str, detail: str, **extra) -> Advice:
        logger.info("ml advice abstains", extra={"token_id": token_id, "reason": reason, "detail": detail})
        return services.advice_record(abstain_reason=reason, detail=detail, **common, **extra)

    if not points:
        return abstain(A.STALE, "no stored prices for this pair")
    age = (now - points[-1].at).total_seconds()
    if age > settings.ML_STALE_SECONDS:
        return abstain(A.STALE, f"newest price is {age:.0f}s old (limit {settings.ML_STALE_SECONDS}s)")
    bars = resample(points, bar_seconds=version.bar_seconds)
    wants_volume = len(version.features) > len(spec.names(with_volume=False))
    if wants_volume and bars.volumes is None:
        return abstain(A.MISSING_FEATURE, "the model needs volume and this pair's source has none")
    names, x = feature_matrix(bars, spec, with_volume=wants_volume)
    if len(x) == 0:
        return abstain(A.INSUFFICIENT_HISTORY, f"{len(bars.prices)} bars stored, {spec.warmup + 1} needed")
    z = standardise(version, x[-1:])
    worst = int(np.argmax(np.abs(z[0])))
    if not np.all(np.isfinite(z)) or abs(z[0, worst]) > settings.ML_OOD_MAX_Z:
        return abstain(
            A.OUT_OF_DISTRIBUTION,
            f"{names[worst]} is {z[0, worst]:+.1f} training standard deviations out"
            f" (limit {settings.ML_OOD_MAX_Z})",
        )
    p, vol = predict_rows(load_model(version), z)
    p_up, expected_vol = float(p[0]), float(vol[0])
    prediction = {"p_up": _q(p_up, P_QUANTUM), "expected_volatility": _q(expected_vol, VOL_QUANTUM)}
    skill = version.brier_skill
    if skill < settings.ML_MIN_SKILL:
        # The probability is kept for transparency, but the advice says it knows nothing.
        return abstain(
            A.NO_EDGE,
            f"held-out Brier skill {skill:+.4f} is below {settings.ML_MIN_SKILL}: no demonstrated edge",
            **prediction,
        )
    return services.advice_record(
        confidence=_q(confidence_of(p_up, skill), P_QUANTUM), **prediction, **common
    )


def advise_all(*, now: datetime | None = None) -> list[Advice]:
    """Advice from every active model for every pair priced in the last week (a pair whose prices
    stopped gets an explicit "stale" abstention rather than keeping its last confident advice)."""
    now = now or timezone.now()
    pairs = data.pairs_with_prices(since=now - PAIRS_SEEN_WITHIN)
    out = []
    for version in selectors.active_model_versions():
        for token_id, quote_token_id in pairs:
            out.append(
                advise_pair(version=version, token_id=token_id, quote_token_id=quote_token_id, now=now)
            )
    return out
