from django.contrib import admin

from apps.chain.models import Chain, Dex, Pair, RpcEndpoint, Token
from project.admin_shown import ShownOnly

HEALTH_FIELDS = (
    "health",
    "health_until",
    "consecutive_failures",
    "latency_ewma_ms",
    "last_checked_at",
    "last_head",
    "last_latency_ms",
    "last_error",
)


# RPC endpoints are shown, never edited, here: the web's database role may not write them (a
# compromised web process must not point the engine at an attacker's node). They come from
# RPC_ENDPOINTS, synced by `manage.py rpc_endpoints_sync` on the host.


class RpcEndpointInline(ShownOnly, admin.TabularInline):
    model = RpcEndpoint
    extra = 0
    readonly_fields = HEALTH_FIELDS


@admin.register(Chain)
class ChainAdmin(admin.ModelAdmin):
    list_display = (
        "chain_id",
        "name",
        "confirmations_required",
        "settlement_quorum",
        "block_time_ms",
        "broadcast_to_public",
        "is_dev",
    )
    inlines = [RpcEndpointInline]


@admin.register(RpcEndpoint)
class RpcEndpointAdmin(ShownOnly, admin.ModelAdmin):
    list_display = (
        "name",
        "chain",
        "kind",
        "priority",
        "weight",
        "active",
        "health",
        "latency_ewma_ms",
        "last_head",
        "health_until",
        "last_error",
    )
    list_filter = ("chain", "kind", "active", "health")
    readonly_fields = HEALTH_FIELDS


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
