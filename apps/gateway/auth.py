"""Bearer-token authentication for the API (per-device tokens); the admin keeps Django sessions."""

from __future__ import annotations

from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed

from apps.gateway.services import api_token_authenticate

KEYWORD = "Bearer"


class ApiTokenAuthentication(BaseAuthentication):
    def authenticate(self, request):
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != KEYWORD.lower().encode():
            return None
        if len(parts) != 2:
            raise AuthenticationFailed("Malformed Authorization header: expected 'Bearer <token>'.")
        token = api_token_authenticate(raw=parts[1].decode("ascii", errors="replace"))
        if token is None:
            raise AuthenticationFailed("Invalid or revoked token.")
        return token.user, token

    def authenticate_header(self, request):
        # Makes unauthenticated requests 401 (with this challenge) rather than 403.
        return f'{KEYWORD} realm="custos"'
