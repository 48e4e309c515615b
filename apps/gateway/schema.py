"""OpenAPI generation: every API operation documents the one error shape for the 4xx answers it can
give, the bearer-token authentication and the token level it needs (`x-token-level`, also said in
its description)."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema

from apps.gateway.api.serializers import ErrorOutput
from apps.gateway.auth import INSUFFICIENT_LEVEL, PUBLIC, required_level
from apps.gateway.models import TokenLevel

READ_ERRORS = (400, 401, 403, 404, 429, 503)
WRITE_ERRORS = (400, 401, 403, 404, 409, 413, 415, 429, 503)


class GatewayAutoSchema(AutoSchema):
    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None or not path.startswith("/api/v1/"):
            return operation
        level = required_level(type(self.view), method)
        operation["x-token-level"] = level
        if level == PUBLIC:
            note = "No token needed."
        elif level == TokenLevel.READ:
            note = "Token level: `read` (any token)."
        else:
            note = f"Token level: `{level}` or higher; a lower one gets 403 `{INSUFFICIENT_LEVEL}`."
        description = operation.get("description")
        operation["description"] = f"{description}\n\n{note}" if description else note
        return operation

    def get_description(self):
        # Only the view's own docstring: never one inherited from the base classes.
        own = vars(type(self.view)).get("__doc__")
        return super().get_description() if own else ""

    def _get_response_bodies(self, direction="response"):
        bodies = super()._get_response_bodies(direction=direction)
        if not self.path.startswith("/api/v1/") or self.path == "/api/v1/health":
            return bodies
        codes = WRITE_ERRORS if self.method in {"POST", "PUT", "PATCH", "DELETE"} else READ_ERRORS
        for code in codes:
            if str(code) not in bodies:
                bodies[str(code)] = self._get_response_for_code(ErrorOutput, str(code), direction=direction)
        return bodies


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "apps.gateway.auth.ApiTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "A per-device API token (cst_…)."}
