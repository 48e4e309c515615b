"""Gateway views."""

from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.gateway.selectors import health_report


class HealthView(APIView):
    """200 when the database, broker, every queue's worker and every chain answer; else 503 naming
    what does not."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(responses={200: dict, 503: dict})
    def get(self, request):
        report = health_report()
        return Response(report.as_dict(), status=200 if report.ok else 503)
