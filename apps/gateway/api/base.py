"""The base of every API view: token auth, per-token throttling and, for writes, validation_2026; and
what every app's views and serializers share (query validation, the 409 answer, amount output)."""

from rest_framework import serializers, status
from rest_framework.exceptions import APIException
from rest_framework.views import APIView

from apps.gateway.validation_2026 import AMOUNT_PATTERN, ValidatedWriteMixin


class GatewayView(ValidatedWriteMixin, APIView):
    # Authentication, permission and throttle classes come from REST_FRAMEWORK; write requests are
    # validated by ValidatedWriteMixin.initial before the handler runs.
    pass


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the resource's current state."
    default_code = "conflict"


def validated_query(serializer_class, request) -> dict:
    """The request's query parameters through `serializer_class` (reads: not validation_2026's job,
    but still a 400 naming the parameter)."""
    query = serializer_class(data=request.query_params)
    query.is_valid(raise_exception=True)
    return query.validated_data


def amount_field(**kwargs) -> serializers.RegexField:
    """An amount in token units as the API writes it: a plain decimal string."""
    return serializers.RegexField(AMOUNT_PATTERN, **kwargs)
