"""Authentication (named per-device tokens, hashed at rest, revocable, last use), object-level
permissions (another owner's objects are 404) and per-token throttling (429 with Retry-After)."""

from __future__ import annotations

import hashlib

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from apps.gateway.models import ApiToken
from apps.gateway.services import api_token_create
from apps.wallets.models import PermissionScope
from tests.gateway.conftest import submitted_trade

pytestmark = pytest.mark.django_db(transaction=True)


def test_tokens_are_stored_only_as_hashes(alice):
    token = ApiToken.objects.get(user=alice.user)
    raw = alice.issued.raw
    assert token.key_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert raw.startswith(token.prefix)
    stored = [str(v) for v in ApiToken.objects.filter(pk=token.pk).values().get().values()]
    assert all(raw not in value for value in stored)


def test_a_request_without_a_token_is_401_with_a_bearer_challenge(db, redis_client):
    response = APIClient().get("/api/v1/wallets")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["error"]["code"] == "not_authenticated"


def test_an_unknown_token_is_401(db, redis_client):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer cst_not-a-real-token")
    response = client.get("/api/v1/wallets")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"


def test_a_revoked_token_is_401_at_once(alice):
    assert alice.client.get("/api/v1/wallets").status_code == 200
    token_id = ApiToken.objects.get(user=alice.user).pk
    response = alice.client.post(f"/api/v1/auth/tokens/{token_id}/revoke", format="json")
    assert response.status_code == 200
    assert response.json()["revoked_at"] is not None
    response = alice.client.get("/api/v1/wallets")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"


def test_session_login_does_not_authenticate_the_api(alice):
    alice.user.is_staff = True
    alice.user.set_password("pw-for-the-admin")
    alice.user.save()
    client = APIClient()
    assert client.login(username="alice", password="pw-for-the-admin")
    assert client.get("/api/v1/wallets").status_code == 401


def test_last_used_is_recorded(alice):
    assert ApiToken.objects.get(user=alice.user).last_used_at is None
    alice.client.get("/api/v1/ping")
    assert ApiToken.objects.get(user=alice.user).last_used_at is not None


def test_tokens_are_named_per_device_and_listed_without_their_secret(alice):
    response = alice.client.post("/api/v1/auth/tokens", {"name": "desktop"}, format="json")
    assert response.status_code == 201
    raw = response.json()["token"]
    desktop = APIClient()
    desktop.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert desktop.get("/api/v1/ping").status_code == 200
    listed = alice.client.get("/api/v1/auth/tokens").json()
    assert [t["name"] for t in listed] == ["phone", "desktop"]
    assert all("token" not in t for t in listed)
    duplicate = alice.client.post("/api/v1/auth/tokens", {"name": "desktop"}, format="json")
    assert duplicate.status_code == 400
    assert "name" in duplicate.json()["error"]["fields"]


def test_management_command_issues_a_working_token(alice, capsys):
    call_command("api_token_create", user="alice", name="laptop")
    raw = capsys.readouterr().out.strip()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert client.get("/api/v1/ping").status_code == 200


def test_another_owners_objects_are_404(alice, bob, registry):
    wallet = alice.active_wallet()
    trade = submitted_trade(alice, registry, wallet)
    from tests.gateway.test_wallets_api import scope_body

    scope_id = alice.client.post(
        f"/api/v1/wallets/{wallet.pk}/scopes", scope_body(registry), format="json"
    ).json()["id"]
    alices_token = ApiToken.objects.get(user=alice.user).pk
    for method, url in [
        ("get", f"/api/v1/wallets/{wallet.pk}"),
        ("get", f"/api/v1/wallets/{wallet.pk}/scopes"),
        ("post", f"/api/v1/wallets/{wallet.pk}/scopes"),
        ("post", f"/api/v1/scopes/{scope_id}/revoke"),
        ("get", f"/api/v1/trades/{trade.pk}"),
        ("post", f"/api/v1/trades/{trade.pk}/cancel"),
        ("post", f"/api/v1/auth/tokens/{alices_token}/revoke"),
    ]:
        body = scope_body(registry) if url.endswith("/scopes") and method == "post" else None
        response = getattr(bob.client, method)(url, body, format="json")
        assert response.status_code == 404, (method, url, response.content)
        assert response.json()["error"]["code"] == "not_found"
    assert bob.client.get("/api/v1/trades").json() == []
    assert bob.client.get("/api/v1/wallets").json() == []
    trade.refresh_from_db()
    assert trade.state == "PENDING"
    assert PermissionScope.objects.get(pk=scope_id).active
    assert ApiToken.objects.get(pk=alices_token).revoked_at is None


def test_a_trade_on_another_owners_wallet_is_refused_naming_the_wallet(alice, bob, registry):
    from tests.gateway.conftest import trade_body

    wallet = alice.active_wallet()
    response = bob.client.post(
        "/api/v1/trades", trade_body(registry, wallet), format="json", HTTP_IDEMPOTENCY_KEY="steal-0001"
    )
    assert response.status_code == 400
    assert "wallet" in response.json()["error"]["fields"]


def test_throttling_is_per_token_with_retry_after(alice, bob, settings):
    settings.API_THROTTLE_RATE = "3/min"
    for _ in range(3):
        assert alice.client.get("/api/v1/ping").status_code == 200
    response = alice.client.get("/api/v1/ping")
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "throttled"
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    # A second token of the same owner, and another owner, have their own budgets.
    assert bob.client.get("/api/v1/ping").status_code == 200
    other = api_token_create(user=alice.user, name="desktop", level="read").raw
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {other}")
    assert client.get("/api/v1/ping").status_code == 200


def test_throttle_counts_live_in_redis(alice, settings, redis_client):
    settings.API_THROTTLE_RATE = "100/min"
    alice.client.get("/api/v1/ping")
    alice.client.get("/api/v1/ping")
    keys = [k.decode() for k in redis_client.keys("*custos:throttle:token:*")]
    assert len(keys) == 1
    assert int(redis_client.get(keys[0])) == 2


def test_concurrent_requests_of_one_token_all_succeed(alice):
    """Every request may record last use: the SERIALIZABLE conflict between two of them must not
    turn into an error."""
    import threading

    from django.db import connection

    barrier = threading.Barrier(4)
    statuses = []

    def ping():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {alice.issued.raw}")
        barrier.wait()
        try:
            statuses.append(client.get("/api/v1/ping").status_code)
        finally:
            connection.close()

    for _round in range(3):
        ApiToken.objects.filter(user=alice.user).update(last_used_at=None)
        threads = [threading.Thread(target=ping) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert statuses == [200] * 12


def test_throttling_fails_closed_when_redis_is_unreachable(alice, settings):
    from tests.conftest import free_port

    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
        }
    }
    response = alice.client.get("/api/v1/wallets")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "throttle_unavailable"
