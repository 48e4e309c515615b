"""Input serializers of the strategy endpoints (writes are StrictSerializers, so validation_2026
applies; query parameters are plain serializers) and output serializers (which describe the dicts
apps.strategies.selectors builds). Each kind's parameters are checked by apps.strategies.kinds through
strategy_inputs_check; its refusals are 400s naming the field ("params.interval_seconds")."""

from __future__ import annotations

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
from apps.strategies.kinds import StrategyInputError
from apps.strategies.models import RunOutcome, StrategyKind, StrategyState
from apps.strategies.selectors import strategy_of
from apps.strategies.services import strategy_inputs_check
from apps.wallets.models import Wallet

ID = {"min_value": 1, "max_value": 2**63 - 1}

# --- inputs ------------------------------------------------------------------------------------------


class StrategyCreateInput(StrictSerializer):
    wallet = serializers.IntegerField(**ID)
    chain_id = ChainIdField()
    dex = serializers.IntegerField(**ID)
    path = serializers.ListField(child=ChecksumAddressField(), min_length=2, max_length=2)
    kind = serializers.ChoiceField(choices=StrategyKind.values)
    params = serializers.JSONField(
        help_text="per kind (docs/strategies.md); amounts in token units as decimal strings, prices as "
        "decimal strings, durations in whole seconds"
    )
    total_amount_in = DecimalStringField(help_text="path[0] token units, all runs together")
    max_per_run = DecimalStringField(required=False, help_text="path[0] token units; default per kind")
    max_slippage_bps = SlippageBpsField()
    max_runs = serializers.IntegerField(min_value=1, max_value=1_000_000, required=False)
    expires_at = serializers.DateTimeField(required=False)
    oco_group = serializers.CharField(max_length=64, required=False, allow_blank=True)

    def validate(self, attrs):
        request = self.context["request"]
        wallet = Wallet.objects.filter(pk=attrs["wallet"], owner=request.user).first()
        if wallet is None:
            raise field_error("wallet", "no such wallet")
        chain = attrs["chain_id"]
        dex = Dex.objects.filter(pk=attrs["dex"], chain=chain).select_related("chain").first()
        if dex is None:
            raise field_error("dex", f"no DEX {attrs['dex']} on chain {chain.chain_id}")
        path = attrs["path"]
        token_in = Token.objects.filter(chain=chain, address=path[0]).first()
        if token_in is None:
            raise field_error("path", f"no token {path[0]} registered on chain {chain.chain_id}")
        inputs = {
            "wallet": wallet,
            "dex": dex,
            "path": path,
            "kind": attrs["kind"],
            "params": attrs["params"],
            "total_amount_in": base_units_of(attrs, "total_amount_in", token_in.decimals),
            "max_per_run": (
                base_units_of(attrs, "max_per_run", token_in.decimals) if "max_per_run" in attrs else None
            ),
            "max_slippage_bps": attrs["max_slippage_bps"],
            "max_runs": attrs.get("max_runs"),
            "expires_at": attrs.get("expires_at"),
            "oco_group": attrs.get("oco_group", ""),
        }
        try:
            strategy_inputs_check(owner=request.user, **inputs)
        except StrategyInputError as exc:
            raise field_error(exc.field, exc.message) from exc
        return inputs


class StrategyCapsInput(StrictSerializer):
    """Lower any cap; a higher value is a 400 naming the field."""

    total_amount_in = DecimalStringField(required=False, help_text="path[0] token units")
    max_per_run = DecimalStringField(required=False, help_text="path[0] token units")
    max_slippage_bps = SlippageBpsField(required=False)
    max_runs = serializers.IntegerField(min_value=1, max_value=1_000_000, required=False)
    expires_at = serializers.DateTimeField(required=False)

    def validate(self, attrs):
        if not attrs:
            raise field_error("non_field_errors", "give at least one cap to lower")
        # The owner's strategy (404 otherwise), for its input token's decimals.
        view = self.context["view"]
        strategy = strategy_of(self.context["request"].user, view.kwargs["strategy_id"])
        token_in = Token.objects.filter(chain_id=strategy.chain_id, address=strategy.path[0]).first()
        decimals = token_in.decimals if token_in else 0
        out = {**attrs, "strategy": strategy}
        for name in ("total_amount_in", "max_per_run"):
            if name in attrs:
                out[name] = base_units_of(attrs, name, decimals)
        return out


class StrategyResumeInput(StrictSerializer):
    catch_up = serializers.BooleanField(
        required=False, default=False, help_text="run the slots missed while paused first, one by one"
    )


# --- query parameters --------------------------------------------------------------------------------


class StrategyListQuery(serializers.Serializer):
    state = serializers.ChoiceField(choices=StrategyState.values, required=False)
    before = serializers.IntegerField(**ID, required=False)
    limit = serializers.IntegerField(min_value=1, max_value=200, required=False, default=50)


class StrategyRunsQuery(serializers.Serializer):
    before = serializers.IntegerField(min_value=1, max_value=2**31, required=False, help_text="a sequence")
    limit = serializers.IntegerField(min_value=1, max_value=200, required=False, default=50)


# --- outputs ------------------------------------------------------------------------------------------


class StrategyOutput(serializers.Serializer):
    id = serializers.IntegerField()
    state = serializers.ChoiceField(choices=StrategyState.values)
    kind = serializers.ChoiceField(choices=StrategyKind.values)
    wallet = serializers.IntegerField()
    chain_id = serializers.IntegerField()
    dex = serializers.IntegerField()
    path = serializers.ListField(child=serializers.CharField())
    token_in = serializers.CharField(allow_null=True)
    token_out = serializers.CharField(allow_null=True)
    params = serializers.JSONField()
    total_amount_in = amount_field()
    max_per_run = amount_field()
    max_slippage_bps = serializers.IntegerField()
    max_runs = serializers.IntegerField()
    expires_at = serializers.DateTimeField(allow_null=True)
    next_run_at = serializers.DateTimeField(allow_null=True)
    catch_up = serializers.BooleanField()
    awaiting_trade = serializers.BooleanField()
    runs_created = serializers.IntegerField()
    runs_settled = serializers.IntegerField()
    amount_committed = amount_field()
    high_water_mark = serializers.CharField(allow_null=True)
    last_judged_at = serializers.DateTimeField(allow_null=True)
    blind_since = serializers.DateTimeField(allow_null=True)
    judge_problem = serializers.CharField(allow_blank=True)
    oco_group = serializers.CharField(allow_blank=True)
    reason = serializers.CharField(allow_blank=True)
    version = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class StrategyRunOutput(serializers.Serializer):
    sequence = serializers.IntegerField()
    outcome = serializers.ChoiceField(choices=RunOutcome.values)
    reason = serializers.CharField(allow_blank=True)
    trade = serializers.IntegerField(allow_null=True)
    trade_state = serializers.CharField(allow_null=True)
    amount_in = amount_field(allow_null=True)
    trigger = serializers.JSONField(help_text="prices judged, their sources and ages, the block")
    created_at = serializers.DateTimeField()
    ended_at = serializers.DateTimeField(allow_null=True)


class StrategyDetailOutput(StrategyOutput):
    runs = StrategyRunOutput(many=True, help_text="the latest runs, newest first")
