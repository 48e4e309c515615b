"""Read-only ML endpoints: the latest advice for a pair, and the active model versions.

Not routed by this app: apps/gateway owns the URL map (see apps/ml/api/urls.py). Nothing here
imports torch (the web process serves it).
"""

from django.db.models.functions import Lower
from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from apps.chain.models import Chain, Token
from apps.gateway.api.base import GatewayView
from apps.gateway.models import TokenLevel
from apps.ml import selectors
from apps.ml.api import serializers as s
from apps.ml.models import Advice


def _token(chain: Chain, address: str, field: str) -> Token:
    token = (
        Token.objects.annotate(address_lower=Lower("address"))
        .filter(chain=chain, address_lower=address.lower())
        .first()
    )
    if token is None:
        raise NotFound({field: "no such token on this chain"})
    return token


class AdviceListView(GatewayView):
    required_levels = {"GET": TokenLevel.READ}

    @extend_schema(parameters=[s.AdviceQuerySerializer], responses=s.AdviceOutSerializer(many=True))
    def get(self, request):
        query = s.AdviceQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        data = query.validated_data
        chain = Chain.objects.filter(chain_id=data["chain_id"]).first()
        if chain is None:
            raise NotFound({"chain_id": "no such chain"})
        token = _token(chain, data["token"], "token")
        rows = Advice.objects.filter(token=token).select_related("token", "quote_token", "model_version")
        if "quote_token" in data:
            rows = rows.filter(quote_token=_token(chain, data["quote_token"], "quote_token"))
        else:
            rows = rows.filter(quote_token__isnull=True)
        if "horizon" in data:
            rows = rows.filter(horizon_bars=data["horizon"])
        rows = rows.order_by("-created_at", "-id")[: data["limit"]]
        return Response(s.AdviceOutSerializer(rows, many=True).data)


class ModelVersionListView(GatewayView):
    required_levels = {"GET": TokenLevel.READ}

    @extend_schema(responses=s.ModelVersionOutSerializer(many=True))
    def get(self, request):
        return Response(s.ModelVersionOutSerializer(selectors.active_model_versions(), many=True).data)
