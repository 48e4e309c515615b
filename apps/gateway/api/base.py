"""The base of every API view: token auth, per-token throttling and, for writes, validation_2026."""

from rest_framework.views import APIView

from apps.gateway.validation_2026 import ValidatedWriteMixin


class GatewayView(ValidatedWriteMixin, APIView):
    # Authentication, permission and throttle classes come from REST_FRAMEWORK; write requests are
    # validated by ValidatedWriteMixin.initial before the handler runs.
    pass
