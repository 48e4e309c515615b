"""The ML read endpoints (routed by the gateway; called here directly with an authenticated user)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from rest_framework.test import APIRequestFactory, force_authenticate

from apps.ml.api.views import AdviceListView, ModelVersionListView
from apps.ml.models import Advice
from apps.ml.services import advice_record

pytestmark = pytest.mark.django_db(transaction=True)


def _get(view, user, **params):
    request = APIRequestFactory().get("/", params)
    if user is not None:
        force_authenticate(request, user=user)
    return view.as_view()(request)


def test_advice_for_a_pair_newest_first_with_abstentions_explained(world, version):
    now = timezone.now()
    common = {
        "token_id": world["weth"].pk,
        "model_version_id": version.pk,
        "horizon_bars": 1,
        "data_until": now,
    }
    older = advice_record(
        quote_token_id=None,
        created_at=now - timedelta(hours=1),
        p_up=Decimal("0.61"),
        confidence=Decimal("0.2"),
        **common,
    )
    newer = advice_record(
        quote_token_id=None,
        created_at=now,
        abstain_reason=Advice.Abstain.STALE,
        detail="newest price is 9000s old",
        **common,
    )
    advice_record(quote_token_id=world["usdc"].pk, created_at=now, p_up=Decimal("0.4"), **common)
    response = _get(AdviceListView, world["owner"], chain_id=31999, token=world["weth"].address.lower())
    assert response.status_code == 200
    assert [row["id"] for row in response.data] == [newer.pk, older.pk]
    assert response.data[0]["abstain"] is True
    assert response.data[0]["abstain_reason"] == "stale"
    assert response.data[0]["p_up"] is None
    assert response.data[1]["p_up"] == "0.61000"
    assert response.data[1]["model_name"] == "mlp-h1"
    quoted = _get(
        AdviceListView,
        world["owner"],
        chain_id=31999,
        token=world["weth"].address,
        quote_token=world["usdc"].address,
    )
    assert [row["quote_token"] for row in quoted.data] == [world["usdc"].address]


def test_bad_input_is_a_4xx_naming_the_field(world):
    assert _get(AdviceListView, world["owner"], chain_id=31999, token="nope").status_code == 400
    missing = _get(AdviceListView, world["owner"], chain_id=4242, token=world["weth"].address)
    assert missing.status_code == 404
    assert "chain_id" in str(missing.data)
    unknown = _get(AdviceListView, world["owner"], chain_id=31999, token="0x" + "12" * 20)
    assert unknown.status_code == 404
    assert "no such token" in str(unknown.data)


def test_reading_needs_authentication_and_models_are_listed(world, version):
    assert _get(AdviceListView, None, chain_id=31999, token=world["weth"].address).status_code in {401, 403}
    listed = _get(ModelVersionListView, world["owner"])
    assert [row["id"] for row in listed.data] == [version.pk]
    assert listed.data[0]["weights_sha256"] == version.weights_sha256
