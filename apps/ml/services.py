"""Every write of apps.ml: model versions, advice rows, and a scope's advisory gate.

No function here touches a trade, a wallet or a scope; the ml database role could not anyway.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from apps.ml.models import Advice, AdviceGate, ModelVersion
from project.db import serializable


@serializable()
def model_version_create(*, activate: bool, **fields) -> ModelVersion:
    """Record a trained model; activating it retires the horizon's previous active model."""
    if activate:
        ModelVersion.objects.filter(horizon_bars=fields["horizon_bars"], active=True).update(active=False)
    return ModelVersion.objects.create(active=activate, **fields)


@serializable()
def model_version_activate(*, version_id: int) -> ModelVersion:
    version = ModelVersion.objects.select_for_update().get(pk=version_id)
    ModelVersion.objects.filter(horizon_bars=version.horizon_bars, active=True).exclude(pk=version.pk).update(
        active=False
    )
    if not version.active:
        version.active = True
        version.save(update_fields=["active"])
    return version


def advice_record(
    *,
    token_id: int,
    quote_token_id: int | None,
    model_version_id: int,
    horizon_bars: int,
    created_at: datetime,
    data_until: datetime | None,
    p_up: Decimal | None = None,
    expected_volatility: Decimal | None = None,
    confidence: Decimal = Decimal(0),
    abstain_reason: str = "",
    detail: str = "",
) -> Advice:
    """One advice row (a single INSERT, so no explicit transaction is needed)."""
    return Advice.objects.create(
        token_id=token_id,
        quote_token_id=quote_token_id,
        model_version_id=model_version_id,
        horizon_bars=horizon_bars,
        p_up=p_up,
        expected_volatility=expected_volatility,
        confidence=confidence,
        abstain=bool(abstain_reason),
        abstain_reason=abstain_reason,
        detail=detail[:300],
        data_until=data_until,
        created_at=created_at,
    )


@serializable()
def advice_gate_set(
    *,
    scope_id: int,
    enabled: bool = True,
    horizon_bars: int = 1,
    refuse_at_probability: Decimal = Decimal("0.750"),
    min_confidence: Decimal = Decimal("0.200"),
    max_advice_age_seconds: int = 3600,
) -> AdviceGate:
    """Turn a scope's advisory gate on (or off) with its thresholds. Written by the owner (web role)."""
    gate, _ = AdviceGate.objects.update_or_create(
        scope_id=scope_id,
        defaults={
            "enabled": enabled,
            "horizon_bars": horizon_bars,
            "refuse_at_probability": refuse_at_probability,
            "min_confidence": min_confidence,
            "max_advice_age_seconds": max_advice_age_seconds,
        },
    )
    return gate
