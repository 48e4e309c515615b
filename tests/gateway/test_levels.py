"""API token levels (read < trade < manage) on every route: the routes are enumerated from the URL map
and every route x method x level is sent through the API, so a new route that declares no level, or
a level the policy below does not allow, fails here (and the system check gateway.E002 names it)."""

from __future__ import annotations

import re

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient, APIRequestFactory, force_authenticate

from apps.gateway.auth import PUBLIC, handled_methods, required_level
from apps.gateway.models import LEVEL_ORDER, ApiToken, TokenLevel, level_allows
from apps.gateway.services import api_token_create
from tests.gateway.conftest import Owner

# The gate answers before any service opens a transaction: rollback-per-test is enough.
pytestmark = pytest.mark.django_db

READ, TRADE, MANAGE = TokenLevel.READ, TokenLevel.TRADE, TokenLevel.MANAGE
READ_METHODS = {"GET", "HEAD", "OPTIONS"}


def _routes(resolver=None, prefix=""):
    resolver = resolver or get_resolver()
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            yield from _routes(entry, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            view_class = getattr(entry.callback, "view_class", None) or getattr(entry.callback, "cls", None)
            if view_class is not None:
                yield prefix + str(entry.pattern), view_class


def _api_route_methods():
    """(route, method, view class) for every method of every /api/v1/ route: the view's own handlers,
    HEAD where it answers GET, and OPTIONS, which every API view answers."""
    out = []
    for route, view_class in _routes():
        if not route.startswith("api/v1/"):
            continue
        methods = handled_methods(view_class)
        methods += ["HEAD"] * ("GET" in methods) + ["OPTIONS"]
        out.extend((route, method, view_class) for method in methods)
    return out


ROUTE_METHODS = _api_route_methods()


def policy(route: str, method: str) -> str:
    """The level each kind of request must need: the health check none; every read `read`; submitting
    and cancelling trades, and the strategies that submit them, `trade`; every other write (wallets,
    scopes, tokens, and whatever is added next, until this says otherwise) `manage`."""
    if route == "api/v1/health":
        return PUBLIC
    if method in READ_METHODS:
        return READ
    if route == "api/v1/trades" or re.fullmatch(r"api/v1/trades/<id:\w+>/cancel", route):
        return TRADE
    if route == "api/v1/strategies" or route.startswith("api/v1/strategies/"):
        return TRADE
    return MANAGE


def expected_level(route: str, method: str, view_class) -> str:
    if method != "OPTIONS":
        return policy(route, method)
    # OPTIONS describes the view: whoever may use any of its methods may ask.
    own = {policy(route, m) for m in handled_methods(view_class)}
    return PUBLIC if PUBLIC in own else next(level for level in LEVEL_ORDER if level in own)


def _url(route: str) -> str:
    # Every path parameter is an id; a missing one is fine: the gate answers before any lookup.
    return "/" + re.sub(r"<id:[a-z_]+>", "999999", route)


@pytest.fixture
def clients(db, redis_client) -> dict[str, APIClient]:
    owner = Owner("levels", level=READ)
    return {READ: owner.client, TRADE: owner.client_of_level(TRADE), MANAGE: owner.client_of_level(MANAGE)}


def _send(client: APIClient, method: str, route: str):
    kwargs = {"HTTP_IDEMPOTENCY_KEY": "level-check-key"}
    if method in READ_METHODS:
        return client.generic(method, _url(route), **kwargs)
    return client.generic(method, _url(route), "{}", content_type="application/json", **kwargs)


def _refused_for_level(response) -> bool:
    if response.status_code != 403:
        return False
    return response.json()["error"]["code"] == "insufficient_level"


def test_the_enumeration_finds_every_apps_routes():
    found = {(route, method) for route, method, _ in ROUTE_METHODS}
    for expected in [
        ("api/v1/health", "GET"),
        ("api/v1/ping", "GET"),
        ("api/v1/auth/tokens", "GET"),
        ("api/v1/auth/tokens", "POST"),
        ("api/v1/auth/tokens/<id:token_id>/revoke", "POST"),
        ("api/v1/wallets", "POST"),
        ("api/v1/wallets/<id:wallet_id>", "GET"),
        ("api/v1/wallets/<id:wallet_id>/scopes", "POST"),
        ("api/v1/scopes/<id:scope_id>/revoke", "POST"),
        ("api/v1/trades", "GET"),
        ("api/v1/trades", "POST"),
        ("api/v1/trades/updates", "GET"),
        ("api/v1/trades/<id:trade_id>", "HEAD"),
        ("api/v1/trades/<id:trade_id>/cancel", "POST"),
        ("api/v1/chains", "GET"),
        ("api/v1/tokens", "GET"),
        ("api/v1/dexes", "OPTIONS"),
        ("api/v1/market/prices", "GET"),
        ("api/v1/market/history", "GET"),
        ("api/v1/ml/advice", "GET"),
        ("api/v1/ml/models", "GET"),
    ]:
        assert expected in found
    assert len({route for route, _ in found}) >= 19


@pytest.mark.parametrize(("route", "method", "view_class"), ROUTE_METHODS, ids=lambda v: str(v))
def test_every_route_declares_the_level_the_policy_asks(route, method, view_class):
    # ImproperlyConfigured here: the view handles `method` without declaring its level.
    assert required_level(view_class, method) == expected_level(route, method, view_class)


@pytest.mark.parametrize(("route", "method", "view_class"), ROUTE_METHODS, ids=lambda v: str(v))
def test_a_token_passes_the_gate_iff_its_level_is_at_least_the_routes(clients, route, method, view_class):
    needed = required_level(view_class, method)
    wrong = []
    for level in LEVEL_ORDER:
        response = _send(clients[level], method, route)
        passes = not _refused_for_level(response)
        should = needed == PUBLIC or level_allows(level, needed)
        if passes != should:
            wrong.append((level, response.status_code, response.content[:200]))
    assert not wrong, (route, method, needed, wrong)


def test_the_refusal_names_the_level_needed_in_the_one_error_shape(clients):
    response = clients[READ].post("/api/v1/trades/999999/cancel", format="json")
    assert response.status_code == 403
    assert response.json() == {
        "error": {
            "code": "insufficient_level",
            "message": "This request needs a token of level 'trade' or higher; this token's level is 'read'.",
            "fields": {},
        }
    }
    response = clients[TRADE].post("/api/v1/wallets", {"label": "x"}, format="json")
    assert response.status_code == 403
    assert "'manage'" in response.json()["error"]["message"]


def test_the_gate_answers_before_validation_and_changes_nothing(clients):
    from apps.wallets.models import Wallet

    response = clients[TRADE].post(
        "/api/v1/wallets", {"label": "x", "key_backend": "keystore"}, format="json"
    )
    assert response.status_code == 403
    response = clients[READ].post("/api/v1/auth/tokens", {"name": "x", "level": "manage"}, format="json")
    assert response.status_code == 403
    assert not Wallet.objects.exists()
    assert ApiToken.objects.count() == 3


def test_no_token_is_still_401_not_403(db, redis_client):
    response = APIClient().post("/api/v1/trades", {}, format="json")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_a_method_a_route_does_not_handle_is_405_behind_the_gate(clients):
    # The lowest level the view declares (trade for cancel) gets DRF's 405, lower ones the 403.
    assert _refused_for_level(clients[READ].delete("/api/v1/trades/999999/cancel"))
    assert clients[TRADE].delete("/api/v1/trades/999999/cancel").status_code == 405
    assert clients[READ].put("/api/v1/chains", {}, format="json").status_code == 405


def test_a_request_authenticated_without_a_token_reads_but_never_writes(db, redis_client):
    """The API authenticates only tokens (Django sessions serve the admin); anything else that
    authenticates a user (a forced user in a test, a session if one were ever accepted) carries the
    level `read`, never `trade` or `manage`."""
    from apps.trades.api.views import TradeListView
    from apps.wallets.api.views import WalletListView

    user = Owner("forced").user
    factory = APIRequestFactory()
    read = factory.get("/")
    force_authenticate(read, user=user)
    assert TradeListView.as_view()(read).status_code == 200
    for view in (TradeListView, WalletListView):
        write = factory.post("/", {}, format="json", HTTP_IDEMPOTENCY_KEY="forced-key-1")
        force_authenticate(write, user=user)
        response = view.as_view()(write)
        assert response.status_code == 403
        assert response.data["error"]["code"] == "insufficient_level"


# --- fail closed: a view without levels -------------------------------------------------------------


def test_the_system_check_flags_routes_without_levels(settings):
    from apps.gateway.checks import api_routes_declare_levels

    assert api_routes_declare_levels() == []
    settings.ROOT_URLCONF = "tests.gateway.undeclared_level_urls"
    errors = api_routes_declare_levels()
    assert {e.id for e in errors} == {"gateway.E002"}
    flagged = sorted(e.msg.split(":")[0] for e in errors)
    assert flagged == [
        "/api/v1/drops-the-level",
        "/api/v1/half-declared",
        "/api/v1/plain-read",
        "/api/v1/undeclared",
    ]
    assert any("declares no level for POST" in e.msg for e in errors)


def test_a_view_without_a_level_answers_nothing(clients, settings):
    settings.ROOT_URLCONF = "tests.gateway.undeclared_level_urls"
    with pytest.raises(ImproperlyConfigured, match="declares no required_levels"):
        clients[MANAGE].get("/api/v1/undeclared")
    with pytest.raises(ImproperlyConfigured, match="no level for POST"):
        clients[MANAGE].post("/api/v1/half-declared", {}, format="json")
    # Not even its declared method: the view is broken until every method has its level.
    with pytest.raises(ImproperlyConfigured, match="no level for POST"):
        clients[MANAGE].get("/api/v1/half-declared")


def test_overriding_permission_classes_does_not_drop_the_level(clients, monkeypatch):
    from rest_framework.permissions import AllowAny

    from apps.trades.api.views import TradeCancelView

    monkeypatch.setattr(TradeCancelView, "permission_classes", [AllowAny])
    assert _refused_for_level(clients[READ].post("/api/v1/trades/999999/cancel", format="json"))


def test_level_rules():
    assert [level_allows(have, TRADE) for have in LEVEL_ORDER] == [False, True, True]
    assert not level_allows("admin", READ)
    assert not level_allows(MANAGE, "admin")

    from apps.wallets.api.views import ScopeListView

    assert required_level(ScopeListView, "GET") == READ
    assert required_level(ScopeListView, "HEAD") == READ
    assert required_level(ScopeListView, "POST") == MANAGE
    assert required_level(ScopeListView, "OPTIONS") == READ
    assert required_level(ScopeListView, "DELETE") == READ  # not handled: 405 after the gate

    class Typo:
        http_method_names = ["get"]
        required_levels = {"GET": "reed"}

        def get(self, request): ...

    with pytest.raises(ImproperlyConfigured, match="unknown levels"):
        required_level(Typo, "GET")


# --- issuing tokens with a level --------------------------------------------------------------------


def test_a_new_token_is_read_unless_a_level_is_named(clients):
    response = clients[MANAGE].post("/api/v1/auth/tokens", {"name": "watch"}, format="json")
    assert response.status_code == 201
    assert response.json()["level"] == "read"
    assert ApiToken.objects.get(name="watch").level == READ
    watch = APIClient()
    watch.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['token']}")
    assert watch.get("/api/v1/trades").status_code == 200
    assert _refused_for_level(watch.post("/api/v1/trades", {}, format="json"))


def test_a_manage_token_issues_any_level_and_the_list_shows_it(clients):
    for level in LEVEL_ORDER:
        response = clients[MANAGE].post(
            "/api/v1/auth/tokens", {"name": f"new-{level}", "level": level}, format="json"
        )
        assert response.status_code == 201, response.content
        assert response.json()["level"] == level
    listed = {t["name"]: t["level"] for t in clients[READ].get("/api/v1/auth/tokens").json()}
    assert listed == {
        "phone": "read",
        "device-trade": "trade",
        "device-manage": "manage",
        "new-read": "read",
        "new-trade": "trade",
        "new-manage": "manage",
    }
    token_id = ApiToken.objects.get(name="new-trade").pk
    revoked = clients[MANAGE].post(f"/api/v1/auth/tokens/{token_id}/revoke", format="json").json()
    assert (revoked["level"], revoked["revoked_at"] is not None) == ("trade", True)


def test_an_unknown_level_is_a_400_naming_it(clients):
    response = clients[MANAGE].post("/api/v1/auth/tokens", {"name": "x", "level": "admin"}, format="json")
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["level"]


def test_a_token_cannot_issue_a_token_above_its_own_level(clients, monkeypatch):
    """Only `manage` issues tokens today, and nothing is above it; were issuing ever opened to a lower
    level, the new token would still be capped at the caller's own."""
    from apps.gateway.api.views import ApiTokenListView

    monkeypatch.setattr(ApiTokenListView, "required_levels", {"GET": READ, "POST": TRADE})
    response = clients[TRADE].post("/api/v1/auth/tokens", {"name": "up", "level": "manage"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "level": ["a token of level 'trade' cannot issue a token of level 'manage'"]
    }
    assert not ApiToken.objects.filter(name="up").exists()
    for level in (READ, TRADE):
        response = clients[TRADE].post(
            "/api/v1/auth/tokens", {"name": f"ok-{level}", "level": level}, format="json"
        )
        assert response.status_code == 201, response.content
    assert _refused_for_level(clients[READ].post("/api/v1/auth/tokens", {"name": "r"}, format="json"))


def test_the_service_refuses_an_unknown_level(db):
    with pytest.raises(ValueError, match="unknown token level"):
        api_token_create(user=Owner("svc").user, name="x", level="root")


def test_the_command_issues_manage_by_default_or_the_level_named(db, capsys):
    user = Owner("cli").user
    call_command("api_token_create", user="cli", name="laptop")
    call_command("api_token_create", user="cli", name="watch", level="read")
    call_command("api_token_create", "--user", "cli", "--name", "bot", "--level", "trade")
    levels = dict(ApiToken.objects.filter(user=user).values_list("name", "level"))
    assert levels == {"phone": "manage", "laptop": "manage", "watch": "read", "bot": "trade"}
    with pytest.raises(CommandError):
        call_command("api_token_create", "--user", "cli", "--name", "x", "--level", "root")


# --- the migration ----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_migration_makes_existing_tokens_manage():
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before, after = [("gateway", "0001_initial")], [("gateway", "0002_apitoken_level")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        apps = executor.loader.project_state(before).apps
        user = apps.get_model("auth", "User").objects.create(username="old")
        apps.get_model("gateway", "ApiToken").objects.create(
            user=user, name="old", prefix="cst_x", key_hash="x" * 64
        )
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(after)
    assert ApiToken.objects.get(name="old").level == MANAGE
    # ...while a token created without naming one now gets the least.
    assert (
        ApiToken.objects.create(user_id=user.pk, name="new", prefix="cst_y", key_hash="y" * 64).level == READ
    )
