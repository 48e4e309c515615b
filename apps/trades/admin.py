"""Trades in the admin console: everything read-only (the state changes only through the engine),
the audit timeline and transaction attempts inline, and two safe actions (cancel, retry a stalled
trade) that ask for confirmation and record a request the engine carries out (the web process may
not move a trade: apps.trades.services), its outcome in the audit trail. Audit events are read-only,
with a verify action."""

from django.contrib import admin, messages

from apps.trades.audit import audit_verify
from apps.trades.models import ChainTransaction, OwnerRequest, Trade, TradeEvent
from apps.trades.services import admin_trade_cancel, admin_trades_retry
from project.admin_confirm import confirmation_page, confirmed
from project.admin_shown import ShownOnly


class TradeEventInline(ShownOnly, admin.TabularInline):
    model = TradeEvent
    extra = 0
    fields = ("created_at", "kind", "from_state", "to_state", "data", "hash")
    readonly_fields = fields
    ordering = ("id",)
    verbose_name = "timeline event"
    verbose_name_plural = "timeline"


class ChainTransactionInline(ShownOnly, admin.TabularInline):
    model = ChainTransaction
    fk_name = "trade"
    extra = 0
    # Raw signed bytes are deliberately absent.
    fields = (
        "sequence",
        "kind",
        "attempt",
        "nonce",
        "to",
        "gas",
        "max_fee_per_gas",
        "status",
        "tx_hash",
        "receipt_block_number",
    )
    readonly_fields = fields
    verbose_name_plural = "transaction attempts"


class OwnerRequestInline(ShownOnly, admin.TabularInline):
    model = OwnerRequest
    extra = 0
    fields = ("created_at", "kind", "requested_by", "reason", "handled_at", "outcome")
    readonly_fields = fields
    ordering = ("id",)
    verbose_name_plural = "cancel and retry requests"


class StaffViewMixin:
    """Staff may view (and run the actions); nobody edits, adds or deletes through the admin."""

    def has_view_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_staff

    def get_actions(self, request):
        # Django offers actions to viewers too; keep exactly the declared, service-backed ones.
        if not self.has_view_permission(request):
            return {}
        return {name: self.get_action(name) for name in self.actions}


@admin.register(Trade)
class TradeAdmin(StaffViewMixin, ShownOnly, admin.ModelAdmin):
    list_display = ("id", "state", "owner", "wallet", "chain", "amount_in", "created_at", "updated_at")
    list_filter = ("state", "chain", "wallet")
    search_fields = ("idempotency_key", "=id")
    date_hierarchy = "created_at"
    inlines = [TradeEventInline, ChainTransactionInline, OwnerRequestInline]
    actions = ["cancel_trades", "retry_stalled_trades"]
    # Trades start through the API (idempotency key, validation_2026) and change state only
    # through the engine: the admin shows them, it never saves one.
    readonly_fields = [field.name for field in Trade._meta.fields]

    @admin.action(description="Cancel the selected trades (only before SIGNING)")
    def cancel_trades(self, request, queryset):
        if not confirmed(request):
            return confirmation_page(
                self,
                request,
                queryset,
                action="cancel_trades",
                question="Cancel these trades? Trades already signing or later are left alone.",
                verb="cancel them",
            )
        requested, refused = [], []
        for trade in queryset.order_by("pk"):
            asked = admin_trade_cancel(trade=trade, staff=request.user)
            (requested if asked else refused).append(trade.pk)
        if requested:
            messages.success(
                request,
                f"cancel requested for trade(s) {requested}: the engine cancels each one still before "
                "SIGNING; its timeline shows the outcome",
            )
        if refused:
            messages.warning(request, f"not cancellable in their state: {refused}")
        return None

    @admin.action(description="Retry the selected stalled trades")
    def retry_stalled_trades(self, request, queryset):
        if not confirmed(request):
            return confirmation_page(
                self,
                request,
                queryset,
                action="retry_stalled_trades",
                question="Re-enqueue the current step of these trades if they are stalled?",
                verb="retry them",
            )
        ids = list(queryset.values_list("pk", flat=True))
        retried = admin_trades_retry(trade_ids=ids, staff=request.user)
        skipped = sorted(set(ids) - set(retried))
        if retried:
            messages.success(
                request, f"retry requested for stalled trade(s) {retried}: the engine re-enqueues their step"
            )
        if skipped:
            messages.warning(request, f"not stalled (terminal or recently updated): {skipped}")
        return None


@admin.register(TradeEvent)
class TradeEventAdmin(StaffViewMixin, ShownOnly, admin.ModelAdmin):
    list_display = ("id", "trade", "kind", "from_state", "to_state", "created_at", "hash")
    list_filter = ("kind", "to_state")
    search_fields = ("=trade__id", "hash")
    actions = ["verify_chain"]
    readonly_fields = [field.name for field in TradeEvent._meta.fields]

    @admin.action(description="Verify the hash chains of the selected events' trades")
    def verify_chain(self, request, queryset):
        trade_ids = sorted(set(queryset.values_list("trade_id", flat=True)))
        checked, broken = audit_verify(trade_ids=trade_ids)
        if broken is None:
            messages.success(request, f"audit chain intact: {checked} event(s) of {len(trade_ids)} trade(s)")
        else:
            messages.error(
                request,
                f"audit chain BROKEN at event {broken.event_id} of trade {broken.trade_id}: {broken.problem}",
            )
