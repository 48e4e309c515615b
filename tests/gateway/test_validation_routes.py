"""validation_2026 runs on every write route: the routes are enumerated from the URL map, so a new
endpoint that skipped it would fail here."""

from __future__ import annotations

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from apps.gateway.api.base import GatewayView
from apps.gateway.validation_2026 import WRITE_METHODS, StrictSerializer, ValidatedWriteMixin

# Validation fails before any service opens a transaction: the faster rollback-per-test is enough.
pytestmark = pytest.mark.django_db


def _routes(resolver=None, prefix=""):
    resolver = resolver or get_resolver()
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            yield from _routes(entry, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern), entry


def _api_write_routes():
    out = []
    for route, entry in _routes():
        view_class = getattr(entry.callback, "view_class", None) or getattr(entry.callback, "cls", None)
        if not route.startswith("api/") or view_class is None:
            continue
        for method in sorted(WRITE_METHODS):
            if hasattr(view_class, method.lower()):
                out.append((route, method, view_class))
    return out


WRITE_ROUTES = _api_write_routes()


def _url(route: str) -> str:
    # Every path parameter is an id; a non-existent one is fine: validation runs before any lookup.
    import re

    return "/" + re.sub(r"<id:[a-z_]+>", "999999", route)


def test_the_system_check_flags_a_write_route_that_is_not_a_gateway_view(settings):
    from apps.gateway.checks import write_routes_are_validated

    assert write_routes_are_validated() == []
    settings.ROOT_URLCONF = "tests.gateway.unvalidated_urls"
    errors = write_routes_are_validated()
    assert [e.id for e in errors] == ["gateway.E001"]
    assert "/api/v1/sneaky" in errors[0].msg


def test_the_enumeration_finds_the_write_routes():
    found = {(route, method) for route, method, _ in WRITE_ROUTES}
    assert ("api/v1/trades", "POST") in found
    assert ("api/v1/wallets", "POST") in found
    assert ("api/v1/wallets/<id:wallet_id>/scopes", "POST") in found
    assert ("api/v1/trades/<id:trade_id>/cancel", "POST") in found
    assert ("api/v1/scopes/<id:scope_id>/revoke", "POST") in found
    assert len(found) >= 7


def test_no_route_outside_the_api_accepts_writes_through_drf():
    for route, entry in _routes():
        if route.startswith("api/v1/"):
            continue
        view_class = getattr(entry.callback, "view_class", None)
        if view_class is None or route.startswith("admin/"):
            continue
        assert not any(hasattr(view_class, m.lower()) for m in WRITE_METHODS), route


@pytest.mark.parametrize(("route", "method", "view_class"), WRITE_ROUTES, ids=lambda v: str(v))
def test_every_write_route_is_a_validated_view_with_a_strict_input(route, method, view_class):
    assert issubclass(view_class, GatewayView)
    assert issubclass(view_class, ValidatedWriteMixin)
    assert issubclass(view_class.input_serializer_class, StrictSerializer)


@pytest.mark.parametrize(("route", "method", "view_class"), WRITE_ROUTES, ids=lambda v: str(v))
def test_every_write_route_rejects_an_unknown_field(alice, route, method, view_class):
    response = alice.client.generic(
        method,
        _url(route),
        '{"smuggled_field": 1}',
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY="route-check-key",
    )
    assert response.status_code == 400, (route, response.content)
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert error["fields"]["smuggled_field"] == ["unknown field"]


@pytest.mark.parametrize(("route", "method", "view_class"), WRITE_ROUTES, ids=lambda v: str(v))
def test_every_write_route_limits_the_body_size(alice, settings, route, method, view_class):
    settings.API_MAX_BODY_BYTES = 64
    body = '{"label": "' + "x" * 100 + '"}'
    response = alice.client.generic(
        method, _url(route), body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="route-check-key"
    )
    assert response.status_code == 413, (route, response.content)
    assert response.json()["error"]["code"] == "body_too_large"


@pytest.mark.parametrize(("route", "method", "view_class"), WRITE_ROUTES, ids=lambda v: str(v))
def test_every_write_route_requires_json(alice, route, method, view_class):
    response = alice.client.generic(
        method, _url(route), "label=x", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 415, (route, response.content)
    assert response.json()["error"]["code"] == "unsupported_media_type"
