"""Input serializers of the wallet and scope writes (StrictSerializer, so validation_2026 applies) and
output serializers (which describe and render the wallet and the dicts apps.wallets.selectors builds)."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from rest_framework import serializers

from apps.chain.models import Dex, Token
from apps.gateway.api.base import amount_field
from apps.gateway.validation_2026 import (
    ChainIdField,
    ChecksumAddressField,
    DecimalStringField,
    SlippageBpsField,
    StrictSerializer,
    base_units_of,
    field_error,
)
from apps.wallets.models import ScopeStatus, Wallet
from apps.wallets.selectors import GWEI_DECIMALS

USD_DECIMALS = 2
MAX_USD = Decimal("999999999999999999.99")  # the scope's DecimalField(max_digits=20, decimal_places=2)


def _token(chain, address: str, field: str) -> Token:
    token = Token.objects.filter(chain=chain, address=address).first()
    if token is None:
        raise field_error(field, f"no token {address} registered on chain {chain.chain_id}")
    return token


# --- inputs ------------------------------------------------------------------------------------------


class WalletCreateInput(StrictSerializer):
    label = serializers.CharField(min_length=1, max_length=64)
    key_backend = serializers.ChoiceField(choices=Wallet.Backend.values, required=False)

    def validate(self, attrs):
        attrs.setdefault("key_backend", settings.KEY_BACKEND_DEFAULT)
        return attrs


class ScopeGrantInput(StrictSerializer):
    chain_id = ChainIdField()
    dex = serializers.IntegerField(min_value=1, max_value=2**63 - 1)
    token_in = ChecksumAddressField()
    token_out = ChecksumAddressField()
    allow_reverse = serializers.BooleanField(required=False, default=False)
    allow_onchain_only_pricing = serializers.BooleanField(
        required=False,
        default=False,
        help_text="price-check quotes against the pool's own TWAP when no independent market price is fresh",
    )
    max_amount_in = DecimalStringField(help_text='token_in units, e.g. "1000.5"')
    max_slippage_bps = SlippageBpsField()
    max_fee_per_gas_gwei = DecimalStringField(decimals=GWEI_DECIMALS)
    max_priority_fee_per_gas_gwei = DecimalStringField(decimals=GWEI_DECIMALS)
    max_notional_usd = DecimalStringField(decimals=USD_DECIMALS, max_value=MAX_USD, required=False)
    daily_volume_usd = DecimalStringField(decimals=USD_DECIMALS, max_value=MAX_USD, required=False)
    fee_budget_gwei = DecimalStringField(
        decimals=GWEI_DECIMALS,
        required=False,
        help_text="the most one transaction may spend on fees (gas limit x max fee per gas), in gwei; "
        "default: max_fee_per_gas_gwei x SCOPE_FEE_BUDGET_DEFAULT_GAS",
    )
    valid_from = serializers.DateTimeField(help_text="whole seconds are signed: microseconds are dropped")
    valid_until = serializers.DateTimeField(help_text="whole seconds are signed: microseconds are dropped")

    def validate(self, attrs):
        chain = attrs["chain_id"]
        dex = Dex.objects.filter(pk=attrs["dex"], chain=chain).first()
        if dex is None:
            raise field_error("dex", f"no DEX {attrs['dex']} on chain {chain.chain_id}")
        token_in = _token(chain, attrs["token_in"], "token_in")
        token_out = _token(chain, attrs["token_out"], "token_out")
        if attrs["valid_until"] <= attrs["valid_from"]:
            raise field_error("valid_until", "must be after valid_from")
        return {
            "dex": dex,
            "token_in": token_in,
            "token_out": token_out,
            "allow_reverse": attrs["allow_reverse"],
            "allow_onchain_only_pricing": attrs["allow_onchain_only_pricing"],
            "max_amount_in": base_units_of(attrs, "max_amount_in", token_in.decimals),
            "max_slippage_bps": attrs["max_slippage_bps"],
            "max_fee_per_gas": base_units_of(attrs, "max_fee_per_gas_gwei", GWEI_DECIMALS),
            "max_priority_fee_per_gas": base_units_of(attrs, "max_priority_fee_per_gas_gwei", GWEI_DECIMALS),
            "max_notional_usd": attrs.get("max_notional_usd"),
            "daily_volume_usd": attrs.get("daily_volume_usd"),
            "fee_budget_wei": (
                base_units_of(attrs, "fee_budget_gwei", GWEI_DECIMALS) if "fee_budget_gwei" in attrs else None
            ),
            "valid_from": attrs["valid_from"],
            "valid_until": attrs["valid_until"],
        }


class ScopeSignatureInput(StrictSerializer):
    signature = serializers.RegexField(
        r"^0x[0-9a-fA-F]{130}$",
        max_length=132,
        help_text="the eth_signTypedData_v4 signature of the scope's typed_data: 0x + 65 bytes in hex",
    )


# --- outputs ------------------------------------------------------------------------------------------


class WalletOutput(serializers.Serializer):
    id = serializers.IntegerField()
    label = serializers.CharField()
    address = serializers.CharField(allow_null=True, help_text="null while provisioning")
    key_backend = serializers.CharField()
    status = serializers.ChoiceField(choices=Wallet.Status.values)
    active = serializers.BooleanField()
    created_at = serializers.DateTimeField()


class ScopeOutput(serializers.Serializer):
    id = serializers.IntegerField()
    wallet = serializers.IntegerField()
    chain_id = serializers.IntegerField()
    dex = serializers.IntegerField()
    router = serializers.CharField()
    token_in = serializers.CharField()
    token_out = serializers.CharField()
    allow_reverse = serializers.BooleanField()
    allow_onchain_only_pricing = serializers.BooleanField()
    max_amount_in = amount_field()
    max_slippage_bps = serializers.IntegerField()
    max_fee_per_gas_gwei = amount_field()
    max_priority_fee_per_gas_gwei = amount_field()
    max_notional_usd = amount_field(allow_null=True)
    daily_volume_usd = amount_field(allow_null=True)
    valid_from = serializers.DateTimeField()
    valid_until = serializers.DateTimeField()
    active = serializers.BooleanField()
    revoked_at = serializers.DateTimeField(allow_null=True)
    status = serializers.ChoiceField(
        choices=ScopeStatus.values, help_text="proposed: allows nothing until its owner signs typed_data"
    )
    revision = serializers.IntegerField()
    fee_budget_gwei = amount_field()
    signed_by = serializers.CharField(
        allow_blank=True, help_text="the authority key that signed; empty if none"
    )
    signed_at = serializers.DateTimeField(allow_null=True)
    typed_data = serializers.JSONField(
        help_text="the EIP-712 document the owner signs (eth_signTypedData_v4): every address and limit above"
    )
