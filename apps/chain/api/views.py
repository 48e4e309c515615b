"""Registry reads: the chains, tokens and DEXes Custos knows (GatewayViews, so token auth and
throttling apply).

Not routed by this app: apps/gateway owns the URL map (see apps/chain/api/urls.py)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.response import Response

from apps.chain.api import serializers as s
from apps.chain.models import Chain, Dex, Token
from apps.gateway.api.base import GatewayView, validated_query
from apps.gateway.models import TokenLevel


class ChainListView(GatewayView):
    required_levels = {"GET": TokenLevel.READ}

    @extend_schema(responses={200: s.ChainOutput(many=True)})
    def get(self, request):
        return Response(s.ChainOutput(Chain.objects.order_by("chain_id"), many=True).data)


class TokenListView(GatewayView):
    required_levels = {"GET": TokenLevel.READ}

    @extend_schema(parameters=[s.ChainFilterQuery], responses={200: s.TokenOutput(many=True)})
    def get(self, request):
        query = validated_query(s.ChainFilterQuery, request)
        tokens = Token.objects.select_related("chain").order_by("chain__chain_id", "symbol")
        if "chain_id" in query:
            tokens = tokens.filter(chain__chain_id=query["chain_id"])
        return Response(s.TokenOutput(tokens, many=True).data)


class DexListView(GatewayView):
    required_levels = {"GET": TokenLevel.READ}

    @extend_schema(parameters=[s.ChainFilterQuery], responses={200: s.DexOutput(many=True)})
    def get(self, request):
        query = validated_query(s.ChainFilterQuery, request)
        dexes = Dex.objects.select_related("chain").order_by("chain__chain_id", "name")
        if "chain_id" in query:
            dexes = dexes.filter(chain__chain_id=query["chain_id"])
        return Response(s.DexOutput(dexes, many=True).data)
