"""Output serializers of the registry reads (chains, tokens, DEXes) and their one query parameter."""

from rest_framework import serializers


class ChainFilterQuery(serializers.Serializer):
    chain_id = serializers.IntegerField(min_value=1, max_value=2**63 - 1, required=False)


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
