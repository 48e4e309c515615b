"""Admin pages for model versions, advice and advisory gates (no torch here: the web imports it)."""

from django.contrib import admin

from apps.ml.models import Advice, AdviceGate, ModelVersion
from apps.ml.services import model_version_activate


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "horizon_bars", "active", "test_accuracy", "test_brier_skill", "created_at")
    list_filter = ("active", "horizon_bars")
    # A version is a record of a training run; the owner only chooses which one is active (through
    # the action, which retires the horizon's previous active version in the same transaction).
    readonly_fields = [f.name for f in ModelVersion._meta.fields]
    actions = ["activate"]

    @admin.action(description="Make the selected version the active one for its horizon")
    def activate(self, request, queryset):
        chosen = {}
        for version in queryset.order_by("horizon_bars", "-id"):
            chosen.setdefault(version.horizon_bars, version)
        for version in chosen.values():
            model_version_activate(version_id=version.pk)
        self.message_user(request, f"activated: {', '.join(str(v) for v in chosen.values())}")

    @admin.display(description="test accuracy")
    def test_accuracy(self, obj: ModelVersion) -> str:
        return f"{obj.metrics.get('model', {}).get('accuracy', 0):.3f}"

    @admin.display(description="Brier skill")
    def test_brier_skill(self, obj: ModelVersion) -> str:
        return f"{obj.brier_skill:+.4f}"

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(Advice)
class AdviceAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "token",
        "quote_token",
        "horizon_bars",
        "p_up",
        "expected_volatility",
        "confidence",
        "abstain",
        "abstain_reason",
        "model_version",
    )
    list_filter = ("abstain", "abstain_reason", "horizon_bars")
    list_select_related = ("token", "quote_token", "model_version")
    date_hierarchy = "created_at"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(AdviceGate)
class AdviceGateAdmin(admin.ModelAdmin):
    list_display = (
        "scope",
        "enabled",
        "horizon_bars",
        "refuse_at_probability",
        "min_confidence",
        "max_advice_age_seconds",
        "updated_at",
    )
    list_filter = ("enabled",)
    raw_id_fields = ("scope",)
