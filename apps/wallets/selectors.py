"""Wallet reads for the API: the owner's wallets and permission scopes, and a scope as the API shows it.

Every lookup filters by owner, so another owner's object is indistinguishable from a missing one (404)."""

from __future__ import annotations

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from django.utils import timezone

from apps.wallets.authority import scope_typed_data
from apps.wallets.models import PermissionScope, Wallet

GWEI_DECIMALS = 9


def units_text(value, decimals: int | None) -> str | None:
    """Base units as an exact decimal string in token units (integer arithmetic, no rounding); base
    units as they are when the token's decimals are unknown."""
    if value is None:
        return None
    base = int(value)
    if not decimals:
        return str(base)
    whole, fraction = divmod(base, 10**decimals)
    fraction_text = str(fraction).rjust(decimals, "0").rstrip("0")
    return f"{whole}.{fraction_text}" if fraction_text else str(whole)


def wallets_of(owner) -> QuerySet[Wallet]:
    return Wallet.objects.filter(owner=owner).order_by("id")


def wallet_of(owner, wallet_id: int) -> Wallet:
    return get_object_or_404(wallets_of(owner), pk=wallet_id)


def scopes_of(owner, *, wallet: Wallet | None = None) -> QuerySet[PermissionScope]:
    scopes = PermissionScope.objects.filter(wallet__owner=owner).select_related(
        "wallet", "chain", "token_in", "token_out"
    )
    return scopes.filter(wallet=wallet) if wallet is not None else scopes


def scope_of(owner, scope_id: int) -> PermissionScope:
    return get_object_or_404(scopes_of(owner), pk=scope_id)


def scope_view(scope: PermissionScope) -> dict:
    return {
        "id": scope.pk,
        "wallet": scope.wallet_id,
        "chain_id": scope.chain_id_signed,
        "dex": scope.dex_id,
        "router": scope.router,
        "token_in": scope.token_in_address,
        "token_out": scope.token_out_address,
        "allow_reverse": scope.allow_reverse,
        "allow_onchain_only_pricing": scope.allow_onchain_only_pricing,
        "max_amount_in": units_text(scope.max_amount_in, scope.token_in_decimals),
        "max_slippage_bps": scope.max_slippage_bps,
        "max_fee_per_gas_gwei": units_text(scope.max_fee_per_gas, GWEI_DECIMALS),
        "max_priority_fee_per_gas_gwei": units_text(scope.max_priority_fee_per_gas, GWEI_DECIMALS),
        "max_notional_usd": None if scope.max_notional_usd is None else str(scope.max_notional_usd),
        "daily_volume_usd": None if scope.daily_volume_usd is None else str(scope.daily_volume_usd),
        "valid_from": scope.valid_from,
        "valid_until": scope.valid_until,
        "active": scope.active,
        "revoked_at": scope.revoked_at,
        "status": scope.status_at(timezone.now()),
        "revision": scope.revision,
        "fee_budget_gwei": units_text(scope.fee_budget_wei, GWEI_DECIMALS),
        "signed_by": scope.signed_by,
        "signed_at": scope.signed_at,
        "typed_data": scope_typed_data(scope),
    }
