"""System checks (tagged `urls`: run by `manage.py check`, `runserver` and `migrate`, so by `make run`
and every deploy; not by the workers, which serve no URL), so that a new endpoint cannot skip them even
before the route-enumeration tests run: every route under /api/ that accepts a write must be a
GatewayView, so validation_2026 runs (gateway.E001); every route under /api/v1/ must be a GatewayView
that checks token levels and declares the level of every method it handles (gateway.E002)."""

from __future__ import annotations

from django.core.checks import Error, Tags, register
from django.urls import URLPattern, URLResolver, get_resolver


def api_routes(resolver=None, prefix: str = ""):
    """(route, view class) for every class-based view in the URL map."""
    resolver = resolver or get_resolver()
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            yield from api_routes(entry, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            view_class = getattr(entry.callback, "view_class", None) or getattr(entry.callback, "cls", None)
            if view_class is not None:
                yield prefix + str(entry.pattern), view_class


@register(Tags.urls)
def write_routes_are_validated(app_configs=None, **kwargs):
    from apps.gateway.api.base import GatewayView
    from apps.gateway.validation_2026 import WRITE_METHODS

    errors = []
    for route, view_class in api_routes():
        if not route.startswith("api/v1/"):
            continue
        writes = [m for m in sorted(WRITE_METHODS) if hasattr(view_class, m.lower())]
        if writes and not issubclass(view_class, GatewayView):
            errors.append(
                Error(
                    f"/{route} accepts {', '.join(writes)} but {view_class.__name__} is not a GatewayView",
                    hint="derive API views from apps.gateway.api.base.GatewayView (validation_2026)",
                    id="gateway.E001",
                )
            )
    return errors


@register(Tags.urls)
def api_routes_declare_levels(app_configs=None, **kwargs):
    from django.core.exceptions import ImproperlyConfigured

    from apps.gateway.api.base import GatewayView
    from apps.gateway.auth import TokenLevelPermission, declared_levels

    errors = []
    for route, view_class in api_routes():
        if not route.startswith("api/v1/"):
            continue
        problem = None
        if not issubclass(view_class, GatewayView):
            problem = f"{view_class.__name__} is not a GatewayView, so no token level is checked"
        elif not any(isinstance(p, TokenLevelPermission) for p in view_class().get_permissions()):
            problem = f"{view_class.__name__}.get_permissions() drops TokenLevelPermission"
        else:
            try:
                declared_levels(view_class)
            except ImproperlyConfigured as exc:
                problem = str(exc)
        if problem:
            errors.append(
                Error(
                    f"/{route}: {problem}",
                    hint="derive API views from GatewayView and declare required_levels = "
                    '{"GET": TokenLevel.READ, "POST": TokenLevel.TRADE, ...} (apps/gateway/auth.py)',
                    id="gateway.E002",
                )
            )
    return errors
