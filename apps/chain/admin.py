from django.contrib import admin

from apps.chain.models import Chain, Dex, Pair, RpcEndpoint, Token


class RpcEndpointInline(admin.TabularInline):
    model = RpcEndpoint
    extra = 0
    readonly_fields = ("last_checked_at", "last_head", "last_latency_ms", "last_error")


@admin.register(Chain)
class ChainAdmin(admin.ModelAdmin):
    list_display = ("chain_id", "name", "confirmations_required", "block_time_ms", "is_dev")
    inlines = [RpcEndpointInline]


@admin.register(RpcEndpoint)
class RpcEndpointAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "chain",
        "kind",
        "priority",
        "active",
        "last_head",
        "last_latency_ms",
        "last_error",
    )
    list_filter = ("chain", "kind", "active")
    readonly_fields = ("last_checked_at", "last_head", "last_latency_ms", "last_error")


@admin.register(Token)
class TokenAdmin(admin.ModelAdmin):
    list_display = ("symbol", "chain", "address", "decimals", "is_stablecoin", "is_wrapped_native")
    list_filter = ("chain",)


@admin.register(Dex)
class DexAdmin(admin.ModelAdmin):
    list_display = ("name", "chain", "router", "factory")


@admin.register(Pair)
class PairAdmin(admin.ModelAdmin):
    list_display = ("__str__", "dex", "address")
