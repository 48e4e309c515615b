"""Input and output serializers of the market read endpoints (prices as decimal strings)."""

from rest_framework import serializers

from apps.market.models import Candle

PRICE = {"max_digits": 48, "decimal_places": 18, "coerce_to_string": True}


class TokenQuerySerializer(serializers.Serializer):
    chain_id = serializers.IntegerField(min_value=1)
    token = serializers.RegexField(r"^0x[0-9a-fA-F]{40}$", help_text="the token's address")


class HistoryQuerySerializer(TokenQuerySerializer):
    interval = serializers.ChoiceField(choices=["tick", *Candle.Interval.values], default="1h")
    since = serializers.DateTimeField(required=False, help_text="default: 24 hours ago")
    source = serializers.SlugField(required=False)
    limit = serializers.IntegerField(min_value=1, max_value=1000, default=500)


class SourcePriceSerializer(serializers.Serializer):
    source = serializers.CharField()
    price_usd = serializers.DecimalField(source="price", **PRICE)
    age_seconds = serializers.IntegerField()


class PriceOutSerializer(serializers.Serializer):
    chain_id = serializers.IntegerField(source="token.chain.chain_id")
    token = serializers.CharField(source="token.address")
    symbol = serializers.CharField(source="token.symbol")
    is_stablecoin = serializers.BooleanField(source="token.is_stablecoin")
    reference_usd = serializers.DecimalField(source="price_usd", allow_null=True, **PRICE)
    problem = serializers.CharField()
    fresh = SourcePriceSerializer(many=True)
    stale = SourcePriceSerializer(many=True)


class TickOutSerializer(serializers.Serializer):
    source = serializers.CharField(source="source.slug")
    price = serializers.DecimalField(**PRICE)
    quote = serializers.SerializerMethodField()
    observed_at = serializers.DateTimeField()

    def get_quote(self, obj) -> str:
        return obj.quote_token.address if obj.quote_token_id else "USD"


class CandleOutSerializer(serializers.Serializer):
    source = serializers.CharField(source="source.slug")
    interval = serializers.CharField()
    start = serializers.DateTimeField()
    open = serializers.DecimalField(**PRICE)
    high = serializers.DecimalField(**PRICE)
    low = serializers.DecimalField(**PRICE)
    close = serializers.DecimalField(**PRICE)
    ticks = serializers.IntegerField()
