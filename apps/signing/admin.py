"""Signing records and refusals in the admin: read-only, and the raw signed bytes are never shown."""

from django.contrib import admin

from apps.signing.models import SigningRecord, SigningRefusal


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(SigningRecord)
class SigningRecordAdmin(ReadOnlyAdmin):
    list_display = ("id", "trade", "attempt", "wallet", "chain", "nonce", "tx_hash", "created_at")
    list_filter = ("chain",)
    search_fields = ("=trade__id", "tx_hash", "payload_hash")
    fields = (
        "trade",
        "attempt",
        "wallet",
        "chain",
        "nonce",
        "chain_transaction",
        "payload_hash",
        "tx_hash",
        "max_fee_per_gas",
        "max_priority_fee_per_gas",
        "replaces",
        "created_at",
    )
    readonly_fields = fields


@admin.register(SigningRefusal)
class SigningRefusalAdmin(ReadOnlyAdmin):
    list_display = ("id", "trade", "attempt", "code", "created_at")
    list_filter = ("code",)
    fields = ("trade", "attempt", "code", "detail", "created_at")
    readonly_fields = fields
