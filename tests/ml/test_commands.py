"""ml_train and ml_backtest end to end on a synthetic series (tiny epochs), and the admin pages."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from apps.ml import synthetic
from apps.ml.models import Advice, AdviceGate, ModelVersion
from apps.ml.services import advice_record
from apps.ml.training import model_train

pytestmark = pytest.mark.django_db(transaction=True)


def test_ml_train_records_a_model_version_per_horizon_with_progress(settings):
    out = StringIO()
    call_command(
        "ml_train",
        "--synthetic",
        "signal",
        "--bars",
        "1500",
        "--horizon",
        "1",
        "--horizon",
        "4",
        "--epochs",
        "15",
        "--seed",
        "3",
        stdout=out,
    )
    text = out.getvalue()
    assert "epoch 15/15" in text
    assert "[" in text
    assert "#" in text
    versions = list(ModelVersion.objects.order_by("horizon_bars"))
    assert [v.horizon_bars for v in versions] == [1, 4]
    assert all(v.active and v.seed == 3 and v.device == "cpu" for v in versions)
    assert versions[0].trained_on == ["synthetic:signal:seed=3:bars=1500"]
    assert (Path(settings.ML_MODEL_DIR) / versions[0].weights_file).is_file()
    summary = json.loads(text.strip().splitlines()[-1])
    assert summary["model_version"] == versions[1].pk
    assert "accuracy" in summary["metrics"]["model"]


def test_ml_train_without_stored_prices_says_what_to_do():
    with pytest.raises(CommandError, match="--synthetic signal"):
        call_command("ml_train", "--epochs", "1", stdout=StringIO())


def test_ml_backtest_writes_a_chart_and_reports_the_model_against_the_baselines(tmp_path):
    out = StringIO()
    png = tmp_path / "bt.png"
    call_command(
        "ml_backtest",
        "--synthetic",
        "signal",
        "--bars",
        "2500",
        "--folds",
        "3",
        "--epochs",
        "120",
        "--out",
        str(png),
        stdout=out,
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads(out.getvalue().strip().splitlines()[-1])
    (result,) = report.values()
    assert result["chart"] == str(png)
    assert result["model"]["accuracy"] > result["flat"]["accuracy"]
    assert result["model"]["brier"] < result["last_sign"]["brier"] < result["flat"]["brier"] + 0.01
    assert result["model"]["calibration"]
    assert "calibration_error" in result["model"]
    assert "fold 3/3" in out.getvalue()


def test_admin_pages_for_models_advice_and_gates(admin_client, world):
    version = model_train(series={"s": synthetic.known_signal_series(n=600, seed=1)}, horizon=1, epochs=5)
    advice = advice_record(
        token_id=world["weth"].pk,
        quote_token_id=None,
        model_version_id=version.pk,
        horizon_bars=1,
        created_at=version.created_at,
        data_until=None,
        abstain_reason=Advice.Abstain.STALE,
        detail="newest price is 9000s old",
    )
    for model in (ModelVersion, Advice, AdviceGate):
        page = admin_client.get(reverse(f"admin:ml_{model._meta.model_name}_changelist"))
        assert page.status_code == 200
    page = admin_client.get(reverse("admin:ml_modelversion_change", args=[version.pk]))
    assert page.status_code == 200
    assert version.weights_sha256 in page.content.decode()
    listing = admin_client.get(reverse("admin:ml_advice_changelist")).content.decode()
    assert "data stale" in listing
    # Advice is a record: it cannot be edited or added by hand.
    assert admin_client.get(reverse("admin:ml_advice_add")).status_code == 403
    assert admin_client.post(reverse("admin:ml_advice_change", args=[advice.pk]), {}).status_code == 403


def test_the_admin_action_switches_the_active_model_of_a_horizon(admin_client):
    series = {"s": synthetic.known_signal_series(n=600, seed=1)}
    old = model_train(series=series, horizon=1, epochs=5, seed=1)
    new = model_train(series=series, horizon=1, epochs=5, seed=2)
    old.refresh_from_db()
    assert new.active
    assert not old.active
    response = admin_client.post(
        reverse("admin:ml_modelversion_changelist"), {"action": "activate", "_selected_action": [old.pk]}
    )
    assert response.status_code == 302
    old.refresh_from_db()
    new.refresh_from_db()
    assert old.active
    assert not new.active
