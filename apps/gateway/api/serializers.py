"""The gateway's own serializers: API token input and outputs, and the one error shape every
operation documents (apps.gateway.schema). Each app's endpoints have theirs in apps/<app>/api/."""

from __future__ import annotations

from rest_framework import serializers

from apps.gateway.auth import request_level
from apps.gateway.models import TokenLevel, level_allows
from apps.gateway.validation_2026 import StrictSerializer

# --- inputs ------------------------------------------------------------------------------------------


class ApiTokenCreateInput(StrictSerializer):
    name = serializers.CharField(min_length=1, max_length=64)
    level = serializers.ChoiceField(
        choices=TokenLevel.choices,
        default=TokenLevel.READ,
        help_text="what the new token may do (read < trade < manage); at most the calling token's level",
    )

    def validate_level(self, value: str) -> str:
        request = self.context.get("request")
        have = request_level(request) if request is not None else None
        if have is None or not level_allows(have, value):
            raise serializers.ValidationError(
                f"a token of level '{have}' cannot issue a token of level '{value}'"
            )
        return value


# --- outputs ------------------------------------------------------------------------------------------


class ErrorDetailOutput(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    fields = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))


class ErrorOutput(serializers.Serializer):
    error = ErrorDetailOutput()


class ApiTokenOutput(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    prefix = serializers.CharField()
    level = serializers.ChoiceField(choices=TokenLevel.choices)
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)


class ApiTokenIssuedOutput(ApiTokenOutput):
    token = serializers.CharField(help_text="shown once; store it on the device")
