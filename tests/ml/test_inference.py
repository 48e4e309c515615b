"""Advice from stored prices: honest probabilities when the data is fresh and familiar, abstentions
(stale, too little history, out of distribution, no edge) otherwise; the ml-queue tasks."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from apps.ml import inference, synthetic, tasks
from apps.ml.data import PricePoint
from apps.ml.models import Advice
from apps.ml.training import model_train
from tests.ml.conftest import shifted, store_prices

pytestmark = pytest.mark.django_db(transaction=True)
A = Advice.Abstain


@pytest.fixture
def signal_model():
    return model_train(
        series={"signal": synthetic.known_signal_series(n=2500, seed=11)}, horizon=1, epochs=150, seed=7
    )


@pytest.fixture
def now():
    return timezone.now()


def _store_recent(world, now, *, which="weth", n=200, seed=21, age=timedelta(minutes=10), generator=None):
    points = (generator or synthetic.known_signal_series)(n=n, seed=seed)
    points = shifted(points, end=now - age)
    store_prices(points, token=world[which], source=world["source"])
    return points


def test_fresh_prices_give_a_probability_a_volatility_and_a_confidence(world, signal_model, now):
    points = _store_recent(world, now)
    advice = inference.advise_pair(
        version=signal_model, token_id=world["weth"].pk, quote_token_id=None, now=now
    )
    advice.refresh_from_db()
    assert not advice.abstain
    assert advice.abstain_reason == ""
    assert Decimal(0) < advice.p_up < Decimal(1)
    assert advice.expected_volatility > 0
    assert Decimal(0) <= advice.confidence <= Decimal(1)
    assert advice.model_version == signal_model
    assert advice.horizon_bars == 1
    assert advice.data_until == points[-1].at
    # The stored probability is the network's forecast for exactly those prices.
    expected = inference.confidence_of(float(advice.p_up), signal_model.brier_skill)
    assert float(advice.confidence) == pytest.approx(expected, abs=1e-4)


def test_the_advice_follows_the_signal_in_the_prices(world, signal_model, now):
    """Two histories ending in opposite moves two to four bars back get opposite views."""
    base = synthetic.known_signal_series(n=200, seed=21)
    last = base[-1].price

    def ending(factor):
        tail = [last * Decimal(factor), last * Decimal(factor), last * Decimal(factor) * Decimal("1.001")]
        pts = base + [PricePoint(base[-1].at + timedelta(hours=i + 1), p, None) for i, p in enumerate(tail)]
        return shifted(pts, end=now - timedelta(minutes=5))

    store_prices(ending("1.02"), token=world["weth"], source=world["source"])
    store_prices(ending("0.98"), token=world["dai"], source=world["source"])
    after_rise = inference.advise_pair(
        version=signal_model, token_id=world["weth"].pk, quote_token_id=None, now=now
    )
    after_fall = inference.advise_pair(
        version=signal_model, token_id=world["dai"].pk, quote_token_id=None, now=now
    )
    # The synthetic market mean-reverts: after a rise it expects a fall, and the other way round.
    assert after_rise.p_up < Decimal("0.5") < after_fall.p_up


def test_stale_data_abstains(world, signal_model, now):
    _store_recent(world, now, age=timedelta(hours=3))
    advice = inference.advise_pair(
        version=signal_model, token_id=world["weth"].pk, quote_token_id=None, now=now
    )
    assert advice.abstain
    assert advice.abstain_reason == A.STALE
    assert advice.p_up is None
    assert advice.confidence == 0
    assert "old" in advice.detail


def test_no_prices_at_all_abstains(world, signal_model, now):
    advice = inference.advise_pair(
        version=signal_model, token_id=world["usdc"].pk, quote_token_id=None, now=now
    )
    assert advice.abstain
    assert advice.abstain_reason == A.STALE
    assert advice.p_up is None


def test_too_little_history_abstains(world, signal_model, now):
    _store_recent(world, now, n=20)
    advice = inference.advise_pair(
        version=signal_model, token_id=world["weth"].pk, quote_token_id=None, now=now
    )
    assert advice.abstain
    assert advice.abstain_reason == A.INSUFFICIENT_HISTORY


def test_inputs_unlike_the_training_data_abstain(world, signal_model, now):
    points = synthetic.known_signal_series(n=200, seed=21)
    # A tripling in one bar: nothing like it was in the training data.
    points.append(PricePoint(points[-1].at + timedelta(hours=1), points[-1].price * 3, None))
    store_prices(shifted(points, end=now - timedelta(minutes=5)), token=world["weth"], source=world["source"])
    advice = inference.advise_pair(
        version=signal_model, token_id=world["weth"].pk, quote_token_id=None, now=now
    )
    assert advice.abstain
    assert advice.abstain_reason == A.OUT_OF_DISTRIBUTION
    assert advice.p_up is None
    assert "ret_1" in advice.detail


def test_a_model_without_edge_abstains_on_a_random_walk(world, now):
    walk = synthetic.random_walk_series(n=3000, seed=11)
    version = model_train(series={"walk": walk}, horizon=1, epochs=150, seed=7)
    _store_recent(world, now, generator=synthetic.random_walk_series)
    advice = inference.advise_pair(version=version, token_id=world["weth"].pk, quote_token_id=None, now=now)
    assert advice.abstain
    assert advice.abstain_reason == A.NO_EDGE
    assert advice.confidence == 0
    # The forecast is kept for transparency, and it is close to a coin flip.
    assert abs(advice.p_up - Decimal("0.5")) < Decimal("0.1")


def test_confidence_is_the_margin_scaled_by_demonstrated_skill(settings):
    settings.ML_FULL_CONFIDENCE_SKILL = 0.1
    assert inference.confidence_of(0.8, 0.1) == pytest.approx(0.6)
    assert inference.confidence_of(0.8, 0.05) == pytest.approx(0.3)
    assert inference.confidence_of(0.2, 0.2) == pytest.approx(0.6)
    assert inference.confidence_of(0.9, -0.01) == 0.0


def test_the_beat_task_advises_every_priced_pair_with_every_active_model(world, signal_model, now):
    model_train(
        series={"signal": synthetic.known_signal_series(n=2500, seed=11)}, horizon=4, epochs=30, seed=7
    )
    _store_recent(world, now, which="weth")
    _store_recent(world, now, which="dai", seed=22, age=timedelta(hours=5))  # stale
    assert tasks.advise_all() == 4
    rows = list(Advice.objects.all())
    assert sorted((a.token_id, a.horizon_bars) for a in rows) == sorted(
        [(world["weth"].pk, 1), (world["weth"].pk, 4), (world["dai"].pk, 1), (world["dai"].pk, 4)]
    )
    assert {a.abstain_reason for a in rows if a.token_id == world["dai"].pk} == {A.STALE}


def test_advice_on_demand_for_one_pair(world, signal_model, now):
    _store_recent(world, now, age=timedelta(minutes=1))
    ids = tasks.advise_pair(world["weth"].pk)
    assert len(ids) == 1
    advice = Advice.objects.get(pk=ids[0])
    assert advice.token == world["weth"]
    assert advice.quote_token is None
    assert not advice.abstain
