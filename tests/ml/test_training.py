"""Real torch training on synthetic series: an edge where there is one, none where there is none,
reproducible by seed, and weights that load only with their recorded sha256."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings

from apps.ml import evaluation, inference, synthetic
from apps.ml.features import FeatureSpec, resample
from apps.ml.model import WeightsChecksumMismatch
from apps.ml.models import ModelVersion
from apps.ml.training import model_train, rows_from_bars

pytestmark = pytest.mark.django_db(transaction=True)


def held_out_scores(version: ModelVersion, points) -> dict:
    """The model and both baselines on a series the model never saw."""
    bars = resample(points, bar_seconds=version.bar_seconds)
    _, rows = rows_from_bars(
        bars, FeatureSpec.from_json(version.feature_spec), horizon=version.horizon_bars, with_volume=False
    )
    p, _ = inference.predict_rows(inference.load_model(version), inference.standardise(version, rows.x))
    return evaluation.compare(p, rows.up, rows.last_r, version.metrics["last_sign_hit_rate"])


def test_on_a_known_signal_the_model_beats_both_baselines_on_held_out_data():
    series = synthetic.known_signal_series(n=4000, seed=11)
    version = model_train(series={"signal": series[:3000]}, horizon=1, epochs=200, seed=7)
    scores = held_out_scores(version, series[3000:])
    model, flat, last_sign = scores["model"], scores["flat"], scores["last_sign"]
    assert model["n"] > 900
    assert model["accuracy"] > flat["accuracy"] + 0.05
    assert model["accuracy"] > last_sign["accuracy"] + 0.05
    assert model["brier"] < flat["brier"] - 0.01
    assert model["brier"] < last_sign["brier"] - 0.01
    # Calibrated enough that its probabilities mean what they say.
    assert model["calibration_error"] < 0.06
    # The model's own test split told the same story, so its advice will not abstain for lack of edge.
    assert version.brier_skill > settings.ML_MIN_SKILL


def test_on_a_random_walk_the_model_shows_no_edge():
    series = synthetic.random_walk_series(n=4000, seed=11)
    version = model_train(series={"walk": series[:3000]}, horizon=1, epochs=200, seed=7)
    scores = held_out_scores(version, series[3000:])
    assert abs(scores["model"]["accuracy"] - 0.5) < 0.05
    assert scores["model"]["brier"] > scores["flat"]["brier"] - 0.005
    # Its own test split shows no skill either: inference will abstain with "no_edge".
    assert version.brier_skill < settings.ML_MIN_SKILL


def test_a_model_version_records_its_features_window_metrics_and_weights_checksum():
    series = synthetic.known_signal_series(n=800, seed=2)
    version = model_train(series={"signal": series}, horizon=4, epochs=20, seed=7)
    assert version.active
    assert version.horizon_bars == 4
    assert version.features == ["ret_1", "ret_4", "ret_16", "vol_8", "vol_32"]
    assert version.train_start == series[0].at
    assert version.train_end == series[-1].at
    assert set(version.samples) == {"train", "validation", "test"}
    assert version.samples["test"] > 0
    assert {"model", "flat", "last_sign"} <= set(version.metrics)
    assert len(version.feature_stats["mean"]) == len(version.features)
    path = Path(settings.ML_MODEL_DIR) / version.weights_file
    assert hashlib.sha256(path.read_bytes()).hexdigest() == version.weights_sha256
    # A newer model for the horizon retires the previous one.
    newer = model_train(series={"signal": series}, horizon=4, epochs=20, seed=8)
    version.refresh_from_db()
    assert newer.active
    assert not version.active


def test_training_is_reproducible_with_a_fixed_seed():
    series = synthetic.known_signal_series(n=800, seed=2)
    first = model_train(series={"s": series}, horizon=1, epochs=30, seed=5, activate=False)
    second = model_train(series={"s": series}, horizon=1, epochs=30, seed=5, activate=False)
    other = model_train(series={"s": series}, horizon=1, epochs=30, seed=6, activate=False)
    assert first.weights_sha256 == second.weights_sha256
    assert first.weights_sha256 != other.weights_sha256


def test_weights_whose_checksum_does_not_match_are_refused():
    series = synthetic.known_signal_series(n=800, seed=2)
    version = model_train(series={"s": series}, horizon=1, epochs=10, seed=5)
    path = Path(settings.ML_MODEL_DIR) / version.weights_file
    inference._loaded.clear()
    assert inference.load_model(version) is not None  # the genuine file loads
    inference._loaded.clear()
    data = bytearray(path.read_bytes())
    data[-20] ^= 0x01  # one flipped bit in the tensor data
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsChecksumMismatch, match="does not match"):
        inference.load_model(version)
    # A recorded checksum that was tampered with instead of the file: refused as well.
    inference._loaded.clear()
    path.write_bytes(bytes(data[:-1]))
    version.weights_sha256 = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(WeightsChecksumMismatch):
        inference.load_model(version)


def test_evaluation_scores_and_baselines_by_hand():
    up = np.array([1.0, 0.0, 1.0, 1.0])
    p = np.array([0.9, 0.2, 0.4, 0.5])
    # Right, right, wrong, and a 0.5 that earns half: 2.5 / 4.
    assert evaluation.accuracy(p, up) == 0.625
    # (0.01 + 0.04 + 0.36 + 0.25) / 4
    assert evaluation.brier(p, up) == pytest.approx(0.165)
    last_r = np.array([0.1, -0.2, 0.3, 0.0])
    # Training: the sign of the last return was right 3 times out of 4 moves.
    hit = evaluation.last_sign_hit_rate(
        np.array([1.0, -1.0, 1.0, -1.0, 0.0]), np.array([1.0, 0.0, 0.0, 0.0, 1.0])
    )
    assert hit == 0.75
    assert list(evaluation.last_sign_baseline(last_r, hit)) == [0.75, 0.25, 0.75, 0.5]
    assert evaluation.brier(evaluation.flat_baseline(4), up) == 0.25
