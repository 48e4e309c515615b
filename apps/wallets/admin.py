"""Wallets and scopes in the admin: key references are read-only and key material has no field at all.
New wallets and scopes go through the services (the signer makes the key; a proposal freezes every
address and limit); a proposed scope shows the exact typed data its owner signs and takes the pasted
signature; a scope is never edited, only revoked, after a confirmation. Authority keys are shown
read-only: they are registered on the signer's host (manage.py authority_add)."""

import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.html import format_html

from apps.wallets.authority import scope_typed_data
from apps.wallets.models import AuthorityKey, NonceCursor, PermissionScope, Wallet
from apps.wallets.services import (
    ScopeError,
    scope_propose,
    scope_revoke,
    scope_signature_attach,
    wallet_create,
)
from project.admin_confirm import confirmation_page, confirmed
from project.admin_shown import ShownOnly


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
    readonly_fields = ("owner", "address", "key_backend", "key_id", "status", "created_at")
    inlines = [ScopeInline]

    def get_readonly_fields(self, request, obj=None):
        # A new wallet's backend is chosen once; the key itself is created by the signer.
        return ("address", "key_id", "status", "created_at") if obj is None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        if change:
            obj.save(update_fields=["label", "active"])  # all the web's database role may change
            return
        wallet = wallet_create(owner=obj.owner, label=obj.label, key_backend=obj.key_backend)
        obj.pk = wallet.pk
        messages.info(request, "the signer is creating the key; the wallet is provisioning until then")

    def has_delete_permission(self, request, obj=None):
        return False  # trades and signing records keep pointing at it: deactivate instead


@admin.register(PermissionScope)
class PermissionScopeAdmin(admin.ModelAdmin):
    list_display = (
        "pk",
        "wallet",
        "chain",
        "token_in",
        "token_out",
        "max_amount_in",
        "status",
        "valid_until",
    )
    list_filter = ("active", "chain")
    readonly_fields = (
        "status",
        "typed_data",
        "chain",
        "router",
        "revision",
        "signed_by",
        "signed_at",
        "signature",
        "active",
        "revoked_at",
        "created_at",
    )
    actions = ["revoke"]
    GRANT_FIELDS = (
        "wallet",
        "dex",
        "token_in",
        "token_out",
        "allow_reverse",
        "allow_onchain_only_pricing",
        "allowed_selectors",
        "max_amount_in",
        "max_notional_usd",
        "daily_volume_usd",
        "max_slippage_bps",
        "max_fee_per_gas",
        "max_priority_fee_per_gas",
        "fee_budget_wei",
        "valid_from",
        "valid_until",
    )

    @admin.display(description="status")
    def status(self, obj):
        return obj.status_at(timezone.now())

    @admin.display(description="what the owner signs (EIP-712 typed data)")
    def typed_data(self, obj):
        return format_html("<pre>{}</pre>", json.dumps(scope_typed_data(obj), indent=2))

    def get_fields(self, request, obj=None):
        if obj is None:
            return self.GRANT_FIELDS
        sign = ("owner_signature",) if not obj.signature else ()
        return (*sign, *self.readonly_fields, *self.GRANT_FIELDS)

    def get_readonly_fields(self, request, obj=None):
        # A granted scope is immutable: widen or narrow it by revoking and granting anew.
        return () if obj is None else (*self.GRANT_FIELDS, *self.readonly_fields)

    def has_delete_permission(self, request, obj=None):
        return False  # revoke instead: the ledger keeps pointing at the scope

    def get_form(self, request, obj=None, **kwargs):
        if obj is not None and not obj.signature:
            kwargs["form"] = _SignatureForm
            kwargs["fields"] = ("owner_signature",)
        form = super().get_form(request, obj, **kwargs)
        if obj is None:
            form.clean = _grant_clean(form.clean)
        return form

    def save_model(self, request, obj, form, change):
        if change:
            if getattr(form, "signed", None) is not None:
                messages.success(request, f"scope {obj.pk} signed by {form.signed.signed_by}: it is active")
            return
        obj.pk = form.granted.pk
        messages.success(
            request, f"proposed scope {obj.pk}: it allows nothing until its owner signs the typed data shown"
        )

    def save_related(self, request, form, formsets, change):
        if change:
            super().save_related(request, form, formsets, change)

    @admin.action(description="Revoke the selected scopes (effective immediately)")
    def revoke(self, request, queryset):
        if not confirmed(request):
            return confirmation_page(
                self,
                request,
                queryset,
                action="revoke",
                question="Revoke these scopes? Nothing more is signed under them, from this moment on.",
                verb="revoke them",
            )
        for scope in queryset:
            scope_revoke(scope=scope)
        messages.success(request, f"revoked {queryset.count()} scope(s)")
        return None


class _SignatureForm(forms.ModelForm):
    """A proposed scope's page: the owner's signature, pasted, is checked when the form is validated."""

    owner_signature = forms.CharField(
        required=False,
        help_text="0x… signature of the typed data below (eth_signTypedData_v4 by an authority key)",
        widget=forms.TextInput(attrs={"size": 140}),
    )

    class Meta:
        model = PermissionScope
        fields = ("owner_signature",)

    def clean(self):
        data = super().clean()
        signature = (data.get("owner_signature") or "").strip()
        self.signed = None
        if signature:
            try:
                self.signed = scope_signature_attach(scope=self.instance, signature=signature)
            except ScopeError as exc:
                raise ValidationError({"owner_signature": str(exc).split(": ", 1)[-1]}) from exc
        return data


def _grant_clean(original_clean):
    """Grant through the service while the form is validated, so its refusal shows on the field."""

    def clean(form):
        data = original_clean(form)
        if form.errors:
            return data
        fields = {name: data.get(name) for name in PermissionScopeAdmin.GRANT_FIELDS if name != "wallet"}
        fields["allowed_selectors"] = fields["allowed_selectors"] or None
        fields["max_amount_in"] = int(fields["max_amount_in"])
        fields["max_fee_per_gas"] = int(fields["max_fee_per_gas"])
        fields["max_priority_fee_per_gas"] = int(fields["max_priority_fee_per_gas"])
        fields["fee_budget_wei"] = int(fields["fee_budget_wei"]) if fields.get("fee_budget_wei") else None
        try:
            form.granted = scope_propose(wallet=data["wallet"], **fields)
        except ScopeError as exc:
            raise ValidationError({exc.field: str(exc).split(": ", 1)[-1]}) from exc
        return data

    return clean


@admin.register(NonceCursor)
class NonceCursorAdmin(admin.ModelAdmin):
    list_display = ("wallet", "chain", "next_nonce", "updated_at")
    readonly_fields = ("wallet", "chain", "next_nonce", "updated_at")


@admin.register(AuthorityKey)
class AuthorityKeyAdmin(ShownOnly, admin.ModelAdmin):
    """Read-only: an authority key is registered and removed only on the signer's host."""

    list_display = ("address", "owner", "label", "created_at", "removed_at")
    list_filter = ("removed_at",)
    readonly_fields = ("owner", "address", "label", "created_at", "removed_at")
