"""A URL map with API views that declare no token level, or not for every method, or are not
GatewayViews at all, for the level system-check and fail-closed tests."""

from django.urls import include, path
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.gateway.api.base import GatewayView
from apps.gateway.models import TokenLevel
from apps.gateway.validation_2026 import EmptyInput


class Undeclared(GatewayView):
    def get(self, request):
        return Response({})


class HalfDeclared(GatewayView):
    input_serializer_class = EmptyInput
    required_levels = {"GET": TokenLevel.READ}

    def get(self, request):
        return Response({})

    def post(self, request):
        return Response({})


class PlainRead(APIView):
    def get(self, request):
        return Response({})


class DropsTheLevel(GatewayView):
    required_levels = {"GET": TokenLevel.READ}

    def get_permissions(self):
        return []

    def get(self, request):
        return Response({})


urlpatterns = [
    path("api/v1/undeclared", Undeclared.as_view()),
    path("api/v1/half-declared", HalfDeclared.as_view()),
    path("api/v1/plain-read", PlainRead.as_view()),
    path("api/v1/drops-the-level", DropsTheLevel.as_view()),
    path("api/v1/", include("apps.gateway.urls")),
]
