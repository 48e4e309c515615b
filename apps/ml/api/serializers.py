"""Input and output serializers of the ML read endpoints."""

from rest_framework import serializers

from apps.ml.models import Advice, ModelVersion


class AdviceQuerySerializer(serializers.Serializer):
    chain_id = serializers.IntegerField(min_value=1)
    token = serializers.RegexField(r"^0x[0-9a-fA-F]{40}$", help_text="the priced token's address")
    quote_token = serializers.RegexField(
        r"^0x[0-9a-fA-F]{40}$", required=False, help_text="quote token address (default: USD)"
    )
    horizon = serializers.IntegerField(min_value=1, max_value=10_000, required=False)
    limit = serializers.IntegerField(min_value=1, max_value=200, default=20)


class AdviceOutSerializer(serializers.ModelSerializer):
    token = serializers.CharField(source="token.address")
    token_symbol = serializers.CharField(source="token.symbol")
    quote_token = serializers.CharField(source="quote_token.address", allow_null=True, default=None)
    model_name = serializers.CharField(source="model_version.name")

    class Meta:
        model = Advice
        fields = [
            "id",
            "token",
            "token_symbol",
            "quote_token",
            "horizon_bars",
            "p_up",
            "expected_volatility",
            "confidence",
            "abstain",
            "abstain_reason",
            "detail",
            "model_version",
            "model_name",
            "data_until",
            "created_at",
        ]


class ModelVersionOutSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "name",
            "architecture",
            "horizon_bars",
            "bar_seconds",
            "features",
            "train_start",
            "train_end",
            "samples",
            "metrics",
            "weights_sha256",
            "active",
            "created_at",
        ]
