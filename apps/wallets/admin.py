"""Wallets and scopes in the admin: key references are read-only and key material has no field at all."""

from django.contrib import admin, messages

from apps.wallets.models import NonceCursor, PermissionScope, Wallet
from apps.wallets.services import scope_revoke


class ScopeInline(admin.TabularInline):
    model = PermissionScope
    extra = 0
    fields = (
        "chain",
        "router",
        "token_in",
        "token_out",
        "max_amount_in",
        "max_slippage_bps",
        "valid_until",
        "active",
        "revoked_at",
    )
    readonly_fields = fields
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Wallet)
class WalletAdmin(admin.ModelAdmin):
    list_display = ("label", "owner", "address", "key_backend", "status", "active")
    list_filter = ("key_backend", "status", "active")
    readonly_fields = ("address", "key_backend", "key_id", "status", "created_at")
    inlines = [ScopeInline]

    def get_readonly_fields(self, request, obj=None):
        # A new wallet's backend is chosen once; the key itself is created by the signer.
        return ("address", "key_id", "status", "created_at") if obj is None else self.readonly_fields


@admin.register(PermissionScope)
class PermissionScopeAdmin(admin.ModelAdmin):
    list_display = (
        "pk",
        "wallet",
        "chain",
        "token_in",
        "token_out",
        "max_amount_in",
        "active",
        "valid_until",
    )
    list_filter = ("active", "chain")
    readonly_fields = ("router", "revoked_at", "created_at")
    actions = ["revoke"]

    def has_delete_permission(self, request, obj=None):
        return False  # revoke instead: the ledger keeps pointing at the scope

    @admin.action(description="Revoke the selected scopes (effective immediately)")
    def revoke(self, request, queryset):
        for scope in queryset:
            scope_revoke(scope=scope)
        messages.success(request, f"revoked {queryset.count()} scope(s)")


@admin.register(NonceCursor)
class NonceCursorAdmin(admin.ModelAdmin):
    list_display = ("wallet", "chain", "next_nonce", "updated_at")
    readonly_fields = ("wallet", "chain", "next_nonce", "updated_at")
