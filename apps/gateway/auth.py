"""Bearer-token authentication for the API (per-device tokens); the admin keeps Django sessions.

And token levels: every API view declares, per HTTP method, the level a token needs
(`required_levels = {"GET": TokenLevel.READ, "POST": TokenLevel.TRADE}`, or `PUBLIC` for a method
that needs no token at all), and `TokenLevelPermission` (which every GatewayView runs after its own
permission classes, so overriding `permission_classes` cannot drop it) refuses a token below it with
403 `insufficient_level`. A view that handles a method without declaring its level fails closed:
ImproperlyConfigured (a 500) rather than an answer, and the system check gateway.E002 names it
before the server even starts (apps/gateway/checks.py)."""

from __future__ import annotations

from collections.abc import Mapping

from django.core.exceptions import ImproperlyConfigured
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import BasePermission

from apps.gateway.models import LEVEL_ORDER, ApiToken, TokenLevel, level_allows
from apps.gateway.services import api_token_authenticate

KEYWORD = "Bearer"
# The "level" of a method anyone may call, without a token (the health check).
PUBLIC = "public"
INSUFFICIENT_LEVEL = "insufficient_level"
# Methods a view answers without a handler of its own: HEAD (Django answers it with GET's handler)
# needs what GET needs; OPTIONS (DRF's metadata) the view's lowest level (required_level).
_DERIVED = frozenset({"HEAD", "OPTIONS"})


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


# --- levels -----------------------------------------------------------------------------------------


def handled_methods(view_class) -> list[str]:
    """The HTTP methods `view_class` has its own handler for (upper case), OPTIONS and HEAD aside."""
    return [
        m.upper()
        for m in view_class.http_method_names
        if m.upper() not in _DERIVED and callable(getattr(view_class, m, None))
    ]


def declared_levels(view_class) -> dict[str, str]:
    """{method: level} for every method `view_class` handles; ImproperlyConfigured naming what is
    missing or unknown (so a view that forgot its levels answers nothing)."""
    levels = getattr(view_class, "required_levels", None)
    name = view_class.__name__
    if not isinstance(levels, Mapping):
        raise ImproperlyConfigured(f"{name} declares no required_levels {{method: level}}")
    unknown = {m: lvl for m, lvl in levels.items() if lvl != PUBLIC and lvl not in LEVEL_ORDER}
    if unknown:
        raise ImproperlyConfigured(f"{name}.required_levels has unknown levels: {unknown}")
    missing = [m for m in handled_methods(view_class) if m not in levels]
    if missing:
        raise ImproperlyConfigured(f"{name}.required_levels declares no level for {', '.join(missing)}")
    return dict(levels)


def required_level(view_class, method: str) -> str:
    """The level `method` on `view_class` needs: its declared one; HEAD what GET needs; OPTIONS, or a
    method the view does not handle (DRF then answers 405), the view's lowest declared level."""
    levels = declared_levels(view_class)
    method = method.upper()
    if method in levels:
        return levels[method]
    if method == "HEAD" and "GET" in levels:
        return levels["GET"]
    if PUBLIC in levels.values():
        return PUBLIC
    ranked = [level for level in LEVEL_ORDER if level in levels.values()]
    if not ranked:
        raise ImproperlyConfigured(f"{view_class.__name__}.required_levels is empty")
    return ranked[0]


def request_level(request) -> str | None:
    """The level the request carries: its API token's. A request authenticated some other way (the
    API accepts only tokens; a test may force a user) carries `read` at most, never `trade` or
    `manage`; an anonymous one carries none."""
    if isinstance(request.auth, ApiToken):
        return request.auth.level
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return TokenLevel.READ
    return None


class TokenLevelPermission(BasePermission):
    """Lets a request through iff its token's level is at least what the view declares for its
    method; otherwise 403 `insufficient_level` naming the level needed (401 if unauthenticated)."""

    code = INSUFFICIENT_LEVEL
    message = "This token's level is too low for this request."

    def has_permission(self, request, view) -> bool:
        needed = required_level(type(view), request.method)
        if needed == PUBLIC:
            return True
        have = request_level(request)
        if have is not None and level_allows(have, needed):
            return True
        self.message = f"This request needs a token of level '{needed}' or higher; " + (
            f"this token's level is '{have}'." if have is not None else "it carries no token."
        )
        return False
