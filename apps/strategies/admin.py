"""Strategies in the admin console: read-only pages (a strategy changes only through its services and
the tick) with the runs, each run's trade and that trade's timeline, and the strategy's events; three
actions, pause, resume and cancel, that ask for confirmation and go through the services."""

from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from apps.strategies.models import Strategy, StrategyEvent, StrategyRun
from apps.strategies.services import StrategyStateError, strategy_cancel, strategy_pause, strategy_resume
from apps.trades.admin import StaffViewMixin
from apps.trades.models import TradeEvent
from project.admin_confirm import confirmation_page, confirmed
from project.admin_shown import ShownOnly

RUNS_SHOWN = 50


class StrategyRunInline(ShownOnly, admin.TabularInline):
    model = StrategyRun
    extra = 0
    fields = ("sequence", "outcome", "trade_link", "amount_in", "reason", "created_at", "ended_at")
    readonly_fields = fields
    ordering = ("-sequence",)
    verbose_name_plural = "runs"

    @admin.display(description="trade")
    def trade_link(self, run):
        if not run.trade_id:
            return "-"
        url = reverse("admin:trades_trade_change", args=[run.trade_id])
        return format_html('<a href="{}">trade {} [{}]</a>', url, run.trade_id, run.trade.state)


class StrategyEventInline(ShownOnly, admin.TabularInline):
    model = StrategyEvent
    fk_name = "strategy"
    extra = 0
    fields = ("created_at", "kind", "from_state", "to_state", "data")
    readonly_fields = fields
    ordering = ("id",)
    verbose_name = "event"
    verbose_name_plural = "strategy events"


@admin.register(Strategy)
class StrategyAdmin(StaffViewMixin, ShownOnly, admin.ModelAdmin):
    list_display = ("id", "kind", "state", "owner", "wallet", "next_run_at", "runs_created", "updated_at")
    list_filter = ("state", "kind", "chain")
    search_fields = ("=id", "oco_group", "idempotency_key")
    inlines = [StrategyRunInline, StrategyEventInline]
    actions = ["pause_strategies", "resume_strategies", "cancel_strategies"]
    readonly_fields = [field.name for field in Strategy._meta.fields] + ["trade_timelines"]

    @admin.display(description="runs' trades and their timelines (latest runs first)")
    def trade_timelines(self, strategy):
        runs = list(
            StrategyRun.objects.filter(strategy=strategy, trade__isnull=False)
            .select_related("trade")
            .order_by("-sequence")[:RUNS_SHOWN]
        )
        if not runs:
            return "no run has created a trade yet"
        events: dict[int, list[TradeEvent]] = {}
        for event in TradeEvent.objects.filter(trade_id__in=[r.trade_id for r in runs]).order_by("id"):
            events.setdefault(event.trade_id, []).append(event)
        return format_html_join(
            "",
            '<div style="margin-bottom:.8em"><b>run {} → <a href="{}">trade {}</a> [{}]</b>'
            '<ol style="margin:0">{}</ol></div>',
            (
                (
                    run.sequence,
                    reverse("admin:trades_trade_change", args=[run.trade_id]),
                    run.trade_id,
                    run.trade.state,
                    format_html_join(
                        "",
                        "<li>{} {} {}{}</li>",
                        (
                            (
                                f"{e.created_at:%Y-%m-%d %H:%M:%S}",
                                e.kind,
                                f"{e.from_state or '·'} → {e.to_state}" if e.to_state else "",
                                f" — {e.data['reason']}"
                                if isinstance(e.data, dict) and e.data.get("reason")
                                else "",
                            )
                            for e in events.get(run.trade_id, [])
                        ),
                    ),
                )
                for run in runs
            ),
        )

    def _act(self, request, queryset, *, action: str, question: str, verb: str, service, done: str):
        if not confirmed(request):
            return confirmation_page(self, request, queryset, action=action, question=question, verb=verb)
        changed, refused = [], []
        staff = request.user.get_username()
        for strategy in queryset.order_by("pk"):
            try:
                service(strategy, staff)
                changed.append(strategy.pk)
            except StrategyStateError:
                refused.append(strategy.pk)
        if changed:
            messages.success(request, f"{done}: strategies {changed}")
        if refused:
            messages.warning(request, f"already ended, left alone: {refused}")
        return None

    @admin.action(description="Pause the selected strategies")
    def pause_strategies(self, request, queryset):
        return self._act(
            request,
            queryset,
            action="pause_strategies",
            question="Pause these strategies? Trades already on their way go on.",
            verb="pause them",
            service=lambda s, staff: strategy_pause(
                strategy=s, reason=f"paused by staff {staff} in the admin"
            ),
            done="paused",
        )

    @admin.action(description="Resume the selected strategies (at their next due time)")
    def resume_strategies(self, request, queryset):
        return self._act(
            request,
            queryset,
            action="resume_strategies",
            question="Resume these strategies at their next due time (missed runs are not caught up)?",
            verb="resume them",
            service=lambda s, staff: strategy_resume(strategy=s),
            done="resumed",
        )

    @admin.action(description="Cancel the selected strategies")
    def cancel_strategies(self, request, queryset):
        return self._act(
            request,
            queryset,
            action="cancel_strategies",
            question="Cancel these strategies for good? Trades already on their way go on.",
            verb="cancel them",
            service=lambda s, staff: strategy_cancel(
                strategy=s, reason=f"cancelled by staff {staff} in the admin"
            ),
            done="cancelled",
        )
