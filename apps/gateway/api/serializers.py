"""Input serializers (all StrictSerializer, so validation_2026 applies) and output serializers
(which describe and render the dicts the selectors build)."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from rest_framework import serializers
from rest_framework.exceptions import ValidationError

from apps.chain.models import Dex, Token
from apps.gateway.validation_2026 import (
    AMOUNT_PATTERN,
    ChainIdField,
    ChecksumAddressField,
    DeadlineField,
    DecimalStringField,
    SlippageBpsField,
    StrictSerializer,
    to_base_units,
)
from apps.trades.models import TradeState
from apps.wallets.models import Wallet

GWEI_DECIMALS = 9
USD_DECIMALS = 2
MAX_USD = Decimal("999999999999999999.99")  # the scope's DecimalField(max_digits=20, decimal_places=2)


def _field_error(field: str, message: str) -> ValidationError:
    return ValidationError({field: [message]})


def _base_units(attrs: dict, field: str, decimals: int) -> int:
    try:
        return to_base_units(attrs[field], decimals)
    except ValidationError as exc:
        raise ValidationError({field: exc.detail}) from exc


def _token(chain, address: str, field: str) -> Token:
    token = Token.objects.filter(chain=chain, address=address).first()
    if token is None:
        raise _field_error(field, f"no token {address} registered on chain {chain.chain_id}")
    return token


# --- inputs ------------------------------------------------------------------------------------------


class ApiTokenCreateInput(StrictSerializer):
    name = serializers.CharField(min_length=1, max_length=64)


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
    valid_from = serializers.DateTimeField()
    valid_until = serializers.DateTimeField()

    def validate(self, attrs):
        chain = attrs["chain_id"]
        dex = Dex.objects.filter(pk=attrs["dex"], chain=chain).first()
        if dex is None:
            raise _field_error("dex", f"no DEX {attrs['dex']} on chain {chain.chain_id}")
        token_in = _token(chain, attrs["token_in"], "token_in")
        token_out = _token(chain, attrs["token_out"], "token_out")
        if attrs["valid_until"] <= attrs["valid_from"]:
            raise _field_error("valid_until", "must be after valid_from")
        return {
            "dex": dex,
            "token_in": token_in,
            "token_out": token_out,
            "allow_reverse": attrs["allow_reverse"],
            "allow_onchain_only_pricing": attrs["allow_onchain_only_pricing"],
            "max_amount_in": _base_units(attrs, "max_amount_in", token_in.decimals),
            "max_slippage_bps": attrs["max_slippage_bps"],
            "max_fee_per_gas": _base_units(attrs, "max_fee_per_gas_gwei", GWEI_DECIMALS),
            "max_priority_fee_per_gas": _base_units(attrs, "max_priority_fee_per_gas_gwei", GWEI_DECIMALS),
            "max_notional_usd": attrs.get("max_notional_usd"),
            "daily_volume_usd": attrs.get("daily_volume_usd"),
            "valid_from": attrs["valid_from"],
            "valid_until": attrs["valid_until"],
        }


class TradeCreateInput(StrictSerializer):
    wallet = serializers.IntegerField(min_value=1, max_value=2**63 - 1)
    chain_id = ChainIdField()
    dex = serializers.IntegerField(min_value=1, max_value=2**63 - 1)
    path = serializers.ListField(child=ChecksumAddressField(), min_length=2, max_length=2)
    amount_in = DecimalStringField(help_text='path[0] token units as a decimal string, e.g. "100.5"')
    slippage_bps = SlippageBpsField(required=False)
    min_amount_out = DecimalStringField(required=False, help_text="path[-1] token units")
    deadline = DeadlineField()

    def validate(self, attrs):
        request = self.context["request"]
        wallet = Wallet.objects.filter(pk=attrs["wallet"], owner=request.user).first()
        if wallet is None:
            raise _field_error("wallet", "no such wallet")
        chain = attrs["chain_id"]
        dex = Dex.objects.filter(pk=attrs["dex"], chain=chain).select_related("chain").first()
        if dex is None:
            raise _field_error("dex", f"no DEX {attrs['dex']} on chain {chain.chain_id}")
        if ("slippage_bps" in attrs) == ("min_amount_out" in attrs):
            raise _field_error("slippage_bps", "give exactly one of slippage_bps and min_amount_out")
        path = attrs["path"]
        if path[0] == path[1]:
            raise _field_error("path", "two different tokens")
        tokens = {t.address: t for t in Token.objects.filter(chain=chain, address__in=path)}
        for address in path:
            if address not in tokens:
                raise _field_error("path", f"no token {address} registered on chain {chain.chain_id}")
        token_in, token_out = tokens[path[0]], tokens[path[1]]
        min_out = None
        if "min_amount_out" in attrs:
            min_out = _base_units(attrs, "min_amount_out", token_out.decimals)
        return {
            "wallet": wallet,
            "dex": dex,
            "path": path,
            "amount_in": _base_units(attrs, "amount_in", token_in.decimals),
            "slippage_bps": attrs.get("slippage_bps"),
            "min_amount_out": min_out,
            "deadline": attrs["deadline"],
        }


# --- query parameters (reads: not validation_2026's job, but still 400 naming the parameter) ---------


class TradeListQuery(serializers.Serializer):
    state = serializers.ChoiceField(choices=TradeState.values, required=False)
    wallet = serializers.IntegerField(min_value=1, max_value=2**63 - 1, required=False)
    chain_id = serializers.IntegerField(min_value=1, max_value=2**63 - 1, required=False)
    before = serializers.IntegerField(min_value=1, max_value=2**63 - 1, required=False)
    limit = serializers.IntegerField(min_value=1, max_value=200, required=False, default=50)


class TradeUpdatesQuery(serializers.Serializer):
    after = serializers.IntegerField(min_value=0, max_value=2**63 - 1, required=False)
    trade = serializers.IntegerField(min_value=1, max_value=2**63 - 1, required=False)
    timeout = serializers.IntegerField(min_value=0, max_value=60, required=False)


class ChainFilterQuery(serializers.Serializer):
    chain_id = serializers.IntegerField(min_value=1, max_value=2**63 - 1, required=False)


# --- outputs ------------------------------------------------------------------------------------------


def _amount(**kwargs):
    return serializers.RegexField(AMOUNT_PATTERN, **kwargs)


class ErrorDetailOutput(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    fields = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))


class ErrorOutput(serializers.Serializer):
    error = ErrorDetailOutput()


class ApiTokenOutput(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    prefix = serializers.CharField()
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)


class ApiTokenIssuedOutput(ApiTokenOutput):
    token = serializers.CharField(help_text="shown once; store it on the device")


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
    max_amount_in = _amount()
    max_slippage_bps = serializers.IntegerField()
    max_fee_per_gas_gwei = _amount()
    max_priority_fee_per_gas_gwei = _amount()
    max_notional_usd = _amount(allow_null=True)
    daily_volume_usd = _amount(allow_null=True)
    valid_from = serializers.DateTimeField()
    valid_until = serializers.DateTimeField()
    active = serializers.BooleanField()
    revoked_at = serializers.DateTimeField(allow_null=True)


class TradeOutput(serializers.Serializer):
    id = serializers.IntegerField()
    state = serializers.ChoiceField(choices=TradeState.values)
    wallet = serializers.IntegerField()
    chain_id = serializers.IntegerField()
    dex = serializers.IntegerField()
    path = serializers.ListField(child=serializers.CharField())
    token_in = serializers.CharField(allow_null=True)
    token_out = serializers.CharField(allow_null=True)
    amount_in = _amount()
    slippage_bps = serializers.IntegerField(allow_null=True)
    min_amount_out = _amount(allow_null=True)
    quoted_amount_out = _amount(allow_null=True)
    amount_out_min = _amount(allow_null=True)
    deadline = serializers.DateTimeField()
    idempotency_key = serializers.CharField()
    reason = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class TradeEventOutput(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    from_state = serializers.CharField(allow_blank=True)
    to_state = serializers.CharField(allow_blank=True)
    data = serializers.JSONField()
    hash = serializers.CharField()
    created_at = serializers.DateTimeField()


class ChainTransactionOutput(serializers.Serializer):
    sequence = serializers.IntegerField()
    kind = serializers.CharField()
    attempt = serializers.IntegerField()
    replaces = serializers.IntegerField(allow_null=True)
    nonce = serializers.IntegerField()
    to = serializers.CharField()
    gas = serializers.IntegerField()
    max_fee_per_gas = serializers.CharField(help_text="wei, decimal string")
    max_priority_fee_per_gas = serializers.CharField(help_text="wei, decimal string")
    tx_hash = serializers.CharField(allow_blank=True)
    status = serializers.CharField()
    broadcast_at = serializers.DateTimeField(allow_null=True)
    receipt_block_number = serializers.IntegerField(allow_null=True)
    receipt_block_hash = serializers.CharField(allow_blank=True)


class TradeDetailOutput(TradeOutput):
    events = TradeEventOutput(many=True)
    transactions = ChainTransactionOutput(many=True)


class TradeUpdateOutput(serializers.Serializer):
    id = serializers.IntegerField()
    trade = serializers.IntegerField()
    kind = serializers.CharField()
    from_state = serializers.CharField(allow_blank=True)
    to_state = serializers.CharField(allow_blank=True)
    state = serializers.CharField(help_text="the trade's state now")
    created_at = serializers.DateTimeField()


class TradeUpdatesOutput(serializers.Serializer):
    cursor = serializers.IntegerField(help_text="pass as `after` in the next poll")
    events = TradeUpdateOutput(many=True)


class ChainOutput(serializers.Serializer):
    chain_id = serializers.IntegerField()
    name = serializers.CharField()
    native_symbol = serializers.CharField()
    confirmations_required = serializers.IntegerField()
    block_time_ms = serializers.IntegerField()
    is_dev = serializers.BooleanField()


class TokenOutput(serializers.Serializer):
    id = serializers.IntegerField()
    chain_id = serializers.IntegerField(source="chain.chain_id")
    address = serializers.CharField()
    symbol = serializers.CharField()
    name = serializers.CharField()
    decimals = serializers.IntegerField()
    is_wrapped_native = serializers.BooleanField()
    is_stablecoin = serializers.BooleanField()


class DexOutput(serializers.Serializer):
    id = serializers.IntegerField()
    chain_id = serializers.IntegerField(source="chain.chain_id")
    name = serializers.CharField()
    kind = serializers.CharField()
    router = serializers.CharField()
    factory = serializers.CharField()
