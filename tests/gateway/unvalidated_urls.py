"""A URL map with a write endpoint that bypasses GatewayView, for the system-check test."""

from django.urls import include, path
from rest_framework.response import Response
from rest_framework.views import APIView


class Sneaky(APIView):
    def post(self, request):
        return Response({})


urlpatterns = [
    path("api/v1/sneaky", Sneaky.as_view()),
    path("api/v1/", include("apps.gateway.urls")),
]
