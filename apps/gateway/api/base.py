"""The base of every API view: token auth, token levels, per-token throttling and, for writes,
validation_2026; and what every app's views and serializers share (query validation, the 409 answer,
amount output)."""

from collections.abc import Mapping

from rest_framework import serializers, status
from rest_framework.exceptions import APIException
from rest_framework.views import APIView

from apps.gateway.auth import TokenLevelPermission
from apps.gateway.validation_2026 import AMOUNT_PATTERN, ValidatedWriteMixin


class GatewayView(ValidatedWriteMixin, APIView):
    """Authentication, permission and throttle classes come from REST_FRAMEWORK (or the view's own);
    then the token's level is checked against `required_levels`, which every view must declare for
    every method it handles (apps/gateway/auth.py; no default: an undeclared method fails closed);
    write requests are then validated by ValidatedWriteMixin.initial before the handler runs."""

    # {"GET": TokenLevel.READ, "POST": TokenLevel.TRADE, ...}; None (undeclared) answers nothing.
    required_levels: Mapping[str, str] | None = None

    def get_permissions(self):
        # Appended here rather than listed in permission_classes, so a view that sets its own
        # permission classes still checks the level.
        return [*super().get_permissions(), TokenLevelPermission()]


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
