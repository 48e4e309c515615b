"""Read-only market endpoints: a token's reference price with its sources, and its price history.

Not routed by this app: apps/gateway owns the URL map (see apps/market/api/urls.py)."""

from datetime import timedelta

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from apps.chain.models import Chain
from apps.gateway.api.base import GatewayView
from apps.gateway.models import TokenLevel
from apps.market import selectors
from apps.market.api import serializers as s
from apps.market.reference import asset_reference


def _token(query: dict):
    chain = Chain.objects.filter(chain_id=query["chain_id"]).first()
    if chain is None:
        raise NotFound({"chain_id": "no such chain"})
    token = selectors.token_by_address(chain=chain, address=query["token"])
    if token is None:
        raise NotFound({"token": "no such token on this chain"})
    return token


class MarketPriceView(GatewayView):
    required_levels = {"GET": TokenLevel.READ}

    @extend_schema(parameters=[s.TokenQuerySerializer], responses=s.PriceOutSerializer)
    def get(self, request):
        query = s.TokenQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        reference = asset_reference(_token(query.validated_data))
        return Response(s.PriceOutSerializer(reference).data)


class MarketHistoryView(GatewayView):
    required_levels = {"GET": TokenLevel.READ}

    @extend_schema(parameters=[s.HistoryQuerySerializer], responses=s.CandleOutSerializer(many=True))
    def get(self, request):
        query = s.HistoryQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        data = query.validated_data
        since = data.get("since") or timezone.now() - timedelta(hours=24)
        interval = None if data["interval"] == "tick" else data["interval"]
        rows = selectors.price_history(
            token=_token(data), since=since, interval=interval, source=data.get("source")
        )[: data["limit"]]
        out = s.TickOutSerializer if interval is None else s.CandleOutSerializer
        return Response(out(rows, many=True).data)
