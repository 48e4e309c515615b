"""Reads of apps.ml. Nothing here imports torch (the engine's gate uses these)."""

from __future__ import annotations

from datetime import datetime

from apps.ml.models import Advice, AdviceGate, ModelVersion


def active_model_versions() -> list[ModelVersion]:
    return list(ModelVersion.objects.filter(active=True).order_by("horizon_bars"))


def latest_advice(
    *, token_id: int, quote_token_id: int | None, horizon_bars: int, since: datetime
) -> Advice | None:
    """The newest advice for the pair and horizon created since `since`, abstaining or not: an
    abstention is the current view, and an older confident advice must not outlive it."""
    qs = Advice.objects.filter(token_id=token_id, horizon_bars=horizon_bars, created_at__gte=since)
    qs = (
        qs.filter(quote_token__isnull=True)
        if quote_token_id is None
        else qs.filter(quote_token_id=quote_token_id)
    )
    return qs.select_related("model_version").order_by("-created_at", "-id").first()


def gate_for_scope(*, scope_id: int) -> AdviceGate | None:
    return AdviceGate.objects.filter(scope_id=scope_id, enabled=True).first()
