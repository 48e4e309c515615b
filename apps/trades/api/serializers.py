"""Input serializers of the trade endpoints (the write is a StrictSerializer, so validation_2026
applies; query parameters are plain serializers) and output serializers (which describe and render
the dicts apps.trades.selectors builds)."""

from __future__ import annotations

from rest_framework import serializers

from apps.chain.models import Dex, Token
from apps.gateway.api.base import amount_field
from apps.gateway.validation_2026 import (
    ChainIdField,
    ChecksumAddressField,
    DeadlineField,
    DecimalStringField,
    SlippageBpsField,
    StrictSerializer,
    base_units_of,
    field_error,
)
from apps.trades.models import TradeState
from apps.wallets.models import Wallet

# --- inputs ------------------------------------------------------------------------------------------


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
            raise field_error("wallet", "no such wallet")
        chain = attrs["chain_id"]
        dex = Dex.objects.filter(pk=attrs["dex"], chain=chain).select_related("chain").first()
        if dex is None:
            raise field_error("dex", f"no DEX {attrs['dex']} on chain {chain.chain_id}")
        if ("slippage_bps" in attrs) == ("min_amount_out" in attrs):
            raise field_error("slippage_bps", "give exactly one of slippage_bps and min_amount_out")
        path = attrs["path"]
        if path[0] == path[1]:
            raise field_error("path", "two different tokens")
        tokens = {t.address: t for t in Token.objects.filter(chain=chain, address__in=path)}
        for address in path:
            if address not in tokens:
                raise field_error("path", f"no token {address} registered on chain {chain.chain_id}")
        token_in, token_out = tokens[path[0]], tokens[path[1]]
        min_out = None
        if "min_amount_out" in attrs:
            min_out = base_units_of(attrs, "min_amount_out", token_out.decimals)
        return {
            "wallet": wallet,
            "dex": dex,
            "path": path,
            "amount_in": base_units_of(attrs, "amount_in", token_in.decimals),
            "slippage_bps": attrs.get("slippage_bps"),
            "min_amount_out": min_out,
            "deadline": attrs["deadline"],
        }


# --- query parameters --------------------------------------------------------------------------------


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


# --- outputs ------------------------------------------------------------------------------------------


class TradeOutput(serializers.Serializer):
    id = serializers.IntegerField()
    state = serializers.ChoiceField(choices=TradeState.values)
    wallet = serializers.IntegerField()
    chain_id = serializers.IntegerField()
    dex = serializers.IntegerField()
    path = serializers.ListField(child=serializers.CharField())
    token_in = serializers.CharField(allow_null=True)
    token_out = serializers.CharField(allow_null=True)
    amount_in = amount_field()
    slippage_bps = serializers.IntegerField(allow_null=True)
    min_amount_out = amount_field(allow_null=True)
    quoted_amount_out = amount_field(allow_null=True)
    amount_out_min = amount_field(allow_null=True)
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


class OwnerRequestOutput(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    created_at = serializers.DateTimeField()
    handled_at = serializers.DateTimeField(allow_null=True, help_text="null until the engine handled it")
    outcome = serializers.CharField(
        allow_blank=True, help_text="cancelled or not_cancellable once handled; empty before"
    )


class TradeCancelOutput(serializers.Serializer):
    request = OwnerRequestOutput(allow_null=True, help_text="the cancel request (null: cancelled otherwise)")
    trade = TradeDetailOutput(help_text="the trade as it is at the time of the answer")


def trade_cancel_view(owner_request, trade: dict) -> dict:
    """The cancel endpoint's body: the cancel request (or None) and the trade's detail dict as it is."""
    return {
        "request": None if owner_request is None else OwnerRequestOutput(owner_request).data,
        "trade": trade,
    }


class TradeUpdateOutput(serializers.Serializer):
    id = serializers.IntegerField()
    trade = serializers.IntegerField(allow_null=True, help_text="null for a strategy event without a trade")
    strategy = serializers.IntegerField(
        allow_null=True, required=False, help_text="set on a strategy event (kind `strategy.<kind>`)"
    )
    kind = serializers.CharField()
    from_state = serializers.CharField(allow_blank=True)
    to_state = serializers.CharField(allow_blank=True)
    state = serializers.CharField(help_text="the trade's state now (a strategy event: the strategy's)")
    created_at = serializers.DateTimeField()


class TradeUpdatesOutput(serializers.Serializer):
    cursor = serializers.IntegerField(help_text="pass as `after` in the next poll")
    events = TradeUpdateOutput(many=True)
