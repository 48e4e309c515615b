"""Trained model versions, the advice they produced, and each scope's optional advisory gate.

Nothing here imports torch: Django loads this module in every process.
"""

from __future__ import annotations

from decimal import Decimal

from django.db import models

PROBABILITY = {"max_digits": 6, "decimal_places": 5}


class ModelVersion(models.Model):
    """One trained model for one horizon; its weights file is trusted only if its sha256 matches."""

    name = models.CharField(max_length=64)
    architecture = models.CharField(max_length=32, default="mlp")
    horizon_bars = models.PositiveSmallIntegerField(help_text="prediction horizon, in bars")
    bar_seconds = models.PositiveIntegerField()
    features = models.JSONField(help_text="feature names, in input order")
    feature_spec = models.JSONField(help_text="return horizons, volatility windows, volume window")
    # Training-set mean and standard deviation per feature: inputs are standardised with them, and
    # inputs far outside them make the advice abstain.
    feature_stats = models.JSONField()
    hidden_units = models.PositiveSmallIntegerField()
    trained_on = models.JSONField(help_text="the series used (pairs or synthetic generator and seed)")
    train_start = models.DateTimeField()
    train_end = models.DateTimeField()
    samples = models.JSONField(help_text="rows in the train, validation and test splits")
    metrics = models.JSONField(help_text="held-out test metrics against the naive baselines")
    seed = models.IntegerField()
    device = models.CharField(max_length=16)
    weights_file = models.CharField(max_length=255, help_text="relative to ML_MODEL_DIR")
    weights_sha256 = models.CharField(max_length=64)
    active = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["horizon_bars"],
                condition=models.Q(active=True),
                name="ml_one_active_model_per_horizon",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} #{self.pk} (h={self.horizon_bars})"

    @property
    def brier_skill(self) -> float:
        return float(self.metrics.get("model", {}).get("brier_skill", 0.0))


class Advice(models.Model):
    """What a model said about `token` (priced in USD, or in `quote_token`) over a horizon.

    An abstaining advice says "I don't know" and why; it carries no probability the gate could use.
    """

    class Abstain(models.TextChoices):
        NONE = "", "—"
        STALE = "stale", "data stale"
        INSUFFICIENT_HISTORY = "insufficient_history", "not enough history"
        OUT_OF_DISTRIBUTION = "out_of_distribution", "inputs out of distribution"
        MISSING_FEATURE = "missing_feature", "a feature the model needs is missing"
        NO_EDGE = "no_edge", "the model showed no edge on held-out data"

    token = models.ForeignKey("chain.Token", on_delete=models.CASCADE, related_name="+")
    quote_token = models.ForeignKey(
        "chain.Token", on_delete=models.CASCADE, related_name="+", null=True, blank=True
    )
    horizon_bars = models.PositiveSmallIntegerField()
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="advice")
    p_up = models.DecimalField(**PROBABILITY, null=True, blank=True)
    expected_volatility = models.DecimalField(
        max_digits=12, decimal_places=8, null=True, blank=True, help_text="per-bar log-return RMS"
    )
    confidence = models.DecimalField(**PROBABILITY, default=Decimal(0))
    abstain = models.BooleanField(default=False)
    abstain_reason = models.CharField(max_length=32, choices=Abstain.choices, blank=True, default="")
    detail = models.CharField(max_length=300, blank=True, default="")
    data_until = models.DateTimeField(null=True, blank=True, help_text="newest price the advice used")
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "advice"
        indexes = [
            models.Index(
                fields=["token", "quote_token", "horizon_bars", "-created_at"], name="ml_advice_latest"
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(abstain=True) | models.Q(p_up__isnull=False),
                name="ml_advice_probability_unless_abstain",
            ),
            models.CheckConstraint(
                condition=models.Q(p_up__isnull=True) | models.Q(p_up__gte=0, p_up__lte=1),
                name="ml_advice_p_up_range",
            ),
            models.CheckConstraint(
                condition=models.Q(abstain=False, abstain_reason="")
                | (models.Q(abstain=True) & ~models.Q(abstain_reason="")),
                name="ml_advice_abstain_has_reason",
            ),
        ]

    def __str__(self) -> str:
        quote = self.quote_token.symbol if self.quote_token_id else "USD"
        what = "abstain" if self.abstain else f"p_up={self.p_up}"
        return f"{self.token.symbol}/{quote} h={self.horizon_bars}: {what}"


class AdviceGate(models.Model):
    """A scope's opt-in: refuse a trade when fresh, confident advice says its direction likely loses.

    The gate can only refuse; it never starts, sizes or changes a trade.
    """

    scope = models.OneToOneField(
        "wallets.PermissionScope", on_delete=models.CASCADE, related_name="advice_gate"
    )
    enabled = models.BooleanField(default=True)
    horizon_bars = models.PositiveSmallIntegerField(default=1)
    refuse_at_probability = models.DecimalField(
        max_digits=4,
        decimal_places=3,
        default=Decimal("0.750"),
        help_text="refuse when the probability that the bought token falls against the sold one reaches this",
    )
    min_confidence = models.DecimalField(
        max_digits=4, decimal_places=3, default=Decimal("0.200"), help_text="weaker advice is ignored"
    )
    max_advice_age_seconds = models.PositiveIntegerField(default=3600, help_text="older advice is ignored")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(refuse_at_probability__gt=Decimal("0.5"), refuse_at_probability__lte=1),
                name="ml_gate_threshold_above_half",
            ),
            models.CheckConstraint(
                condition=models.Q(min_confidence__gte=0, min_confidence__lte=1),
                name="ml_gate_min_confidence_range",
            ),
        ]

    def __str__(self) -> str:
        return f"advice gate of scope {self.scope_id} ({'on' if self.enabled else 'off'})"
