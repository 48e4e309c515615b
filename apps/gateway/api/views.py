"""The gateway's own views: health, a ping and the owner's API tokens. Each app's endpoints live in
apps/<app>/api/views.py, also GatewayViews, so validation_2026 runs on every write."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from apps.gateway import selectors
from apps.gateway.api import serializers as s
from apps.gateway.api.base import GatewayView
from apps.gateway.auth import PUBLIC
from apps.gateway.models import ApiToken, TokenLevel
from apps.gateway.services import api_token_create, api_token_revoke
from apps.gateway.validation_2026 import EmptyInput

# --- health ----------------------------------------------------------------------------------------


class HealthView(GatewayView):
    """200 when the database, broker, every queue's worker and every chain answer; else 503 naming
    what does not."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []
    required_levels = {"GET": PUBLIC}

    @extend_schema(responses={200: OpenApiTypes.OBJECT, 503: OpenApiTypes.OBJECT})
    def get(self, request):
        report = selectors.health_report()
        return Response(report.as_dict(), status=200 if report.ok else 503)


class PingView(GatewayView):
    """A trivial authenticated read: the baseline bench/api.py measures the other endpoints against."""

    required_levels = {"GET": TokenLevel.READ}

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        return Response({"ok": True})


# --- API tokens ------------------------------------------------------------------------------------


class ApiTokenListView(GatewayView):
    """The owner's device tokens. A new token's `level` defaults to `read`, the least, and may not be
    above the calling token's own."""

    input_serializer_class = s.ApiTokenCreateInput
    required_levels = {"GET": TokenLevel.READ, "POST": TokenLevel.MANAGE}

    @extend_schema(responses={200: s.ApiTokenOutput(many=True)})
    def get(self, request):
        tokens = ApiToken.objects.filter(user=request.user).order_by("id")
        return Response(s.ApiTokenOutput(tokens, many=True).data)

    @extend_schema(request=s.ApiTokenCreateInput, responses={201: s.ApiTokenIssuedOutput})
    def post(self, request):
        issued = api_token_create(
            user=request.user, name=self.validated["name"], level=self.validated["level"]
        )
        body = {**s.ApiTokenOutput(issued.token).data, "token": issued.raw}
        return Response(body, status=status.HTTP_201_CREATED)


class ApiTokenRevokeView(GatewayView):
    input_serializer_class = EmptyInput
    required_levels = {"POST": TokenLevel.MANAGE}

    @extend_schema(request=None, responses={200: s.ApiTokenOutput})
    def post(self, request, token_id: int):
        token = get_object_or_404(ApiToken, user=request.user, pk=token_id)
        return Response(s.ApiTokenOutput(api_token_revoke(token=token)).data)
