"""A system check (tagged `urls`: run by `manage.py check`, `runserver` and `migrate`, so by `make run`
and every deploy; not by the workers, which serve no URL): every route under /api/ that accepts a
write must be a GatewayView, so validation_2026 cannot be skipped by a new endpoint even before the
route-enumeration test runs."""

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
