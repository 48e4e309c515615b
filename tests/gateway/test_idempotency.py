"""POST /api/v1/trades with an Idempotency-Key: the same key and body give the same response, the
same key with another body gives 409, and concurrent identical requests create one trade."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from rest_framework.test import APIClient

from apps.trades.models import Trade, TradeEvent
from tests.gateway.conftest import trade_body

pytestmark = pytest.mark.django_db(transaction=True)


def test_same_key_and_body_gives_the_same_response(alice, registry):
    body = trade_body(registry, alice.active_wallet())
    first = alice.client.post("/api/v1/trades", body, format="json", HTTP_IDEMPOTENCY_KEY="same-key-01")
    again = alice.client.post("/api/v1/trades", body, format="json", HTTP_IDEMPOTENCY_KEY="same-key-01")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert Trade.objects.count() == 1
    assert TradeEvent.objects.count() == 1


def test_same_key_with_another_body_is_409_and_writes_nothing(alice, registry):
    wallet = alice.active_wallet()
    body = trade_body(registry, wallet)
    alice.client.post("/api/v1/trades", body, format="json", HTTP_IDEMPOTENCY_KEY="same-key-02")
    other = {**body, "amount_in": "200"}
    response = alice.client.post("/api/v1/trades", other, format="json", HTTP_IDEMPOTENCY_KEY="same-key-02")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert Trade.objects.count() == 1
    assert Trade.objects.get().amount_in == 100_500_000


def test_the_same_key_is_per_owner(alice, bob, registry):
    a = alice.client.post(
        "/api/v1/trades",
        trade_body(registry, alice.active_wallet()),
        format="json",
        HTTP_IDEMPOTENCY_KEY="shared-key-1",
    )
    b = bob.client.post(
        "/api/v1/trades",
        trade_body(registry, bob.active_wallet()),
        format="json",
        HTTP_IDEMPOTENCY_KEY="shared-key-1",
    )
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"]


def test_two_concurrent_identical_requests_create_one_trade(alice, registry):
    body = trade_body(registry, alice.active_wallet())
    barrier = threading.Barrier(2)
    results = []

    def post():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {alice.issued.raw}")
        barrier.wait()
        try:
            results.append(
                client.post("/api/v1/trades", body, format="json", HTTP_IDEMPOTENCY_KEY="concurrent-1")
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert [r.status_code for r in results] == [201, 201], [r.content for r in results]
    assert results[0].json()["id"] == results[1].json()["id"]
    assert Trade.objects.filter(idempotency_key="concurrent-1").count() == 1
    assert TradeEvent.objects.filter(kind="submitted").count() == 1


def test_the_same_inputs_written_differently_are_the_same_body(alice, registry):
    body = trade_body(registry, alice.active_wallet(), amount_in="100.5")
    first = alice.client.post("/api/v1/trades", body, format="json", HTTP_IDEMPOTENCY_KEY="same-key-03")
    again = alice.client.post(
        "/api/v1/trades", {**body, "amount_in": "100.500"}, format="json", HTTP_IDEMPOTENCY_KEY="same-key-03"
    )
    assert again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert Trade.objects.count() == 1
