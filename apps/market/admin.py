"""Admin pages: sources (last success, last error, calls used), asset mappings, ticks and candles."""

from django.contrib import admin

from apps.market.models import AssetMapping, Candle, MarketSource, PriceTick


@admin.register(MarketSource)
class MarketSourceAdmin(admin.ModelAdmin):
    list_display = (
        "slug",
        "name",
        "kind",
        "enabled",
        "independent",
        "last_success_at",
        "last_error_at",
        "last_error",
        "calls_month",
        "calls_total",
    )
    list_editable = ("enabled",)
    readonly_fields = (
        "slug",
        "kind",
        "last_success_at",
        "last_error_at",
        "last_error",
        "calls_total",
        "calls_month",
        "month_started",
    )


@admin.register(AssetMapping)
class AssetMappingAdmin(admin.ModelAdmin):
    list_display = ("token", "chain", "symbol", "is_stablecoin", "source", "external_id", "active")
    list_filter = ("source", "active", "token__chain", "token__is_stablecoin")
    search_fields = ("external_id", "token__symbol", "token__address")
    list_select_related = ("token__chain", "source")

    @admin.display(ordering="token__chain_id")
    def chain(self, obj):
        return obj.token.chain

    @admin.display(ordering="token__symbol")
    def symbol(self, obj):
        return obj.token.symbol

    @admin.display(boolean=True, description="stablecoin")
    def is_stablecoin(self, obj):
        return obj.token.is_stablecoin


class ReadOnlyAdmin(admin.ModelAdmin):
    """History is written by the market worker only."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(PriceTick)
class PriceTickAdmin(ReadOnlyAdmin):
    list_display = ("token", "quote_token", "price", "source", "observed_at", "fetched_at", "block_number")
    list_filter = ("source", "token")
    date_hierarchy = "observed_at"
    list_select_related = ("token", "quote_token", "source")


@admin.register(Candle)
class CandleAdmin(ReadOnlyAdmin):
    list_display = (
        "token",
        "quote_token",
        "interval",
        "start",
        "open",
        "high",
        "low",
        "close",
        "ticks",
        "source",
    )
    list_filter = ("interval", "source", "token")
    date_hierarchy = "start"
    list_select_related = ("token", "quote_token", "source")
