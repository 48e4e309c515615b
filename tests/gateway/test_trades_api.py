"""Trades over the API: create (through the engine's trade_submit), list with filters, detail with
the timeline and transaction attempts, cancel."""

from __future__ import annotations

from decimal import Decimal

import pytest

from apps.trades.models import Trade, TradeEvent
from tests.factories import signing_trade
from tests.gateway.conftest import DAI, USDC, submitted_trade, trade_body

pytestmark = pytest.mark.django_db(transaction=True)


def test_create_freezes_the_trade_in_base_units_and_answers_in_token_units(alice, registry):
    wallet = alice.active_wallet()
    response = alice.client.post(
        "/api/v1/trades", trade_body(registry, wallet), format="json", HTTP_IDEMPOTENCY_KEY="create-001"
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    trade = Trade.objects.get(pk=body["id"])
    assert trade.owner == alice.user
    assert trade.amount_in == Decimal(100_500_000)  # 100.5 dUSDC, 6 decimals
    assert trade.idempotency_key == "create-001"
    assert body["amount_in"] == "100.5"
    assert body["state"] == "PENDING"
    assert body["path"] == [USDC, DAI]
    assert [e["kind"] for e in body["events"]] == ["submitted"]
    assert body["transactions"] == []


def test_min_amount_out_is_converted_with_the_output_tokens_decimals(alice, registry):
    wallet = alice.active_wallet()
    body = trade_body(registry, wallet, min_amount_out="0.000000000000000001")
    del body["slippage_bps"]
    response = alice.client.post("/api/v1/trades", body, format="json", HTTP_IDEMPOTENCY_KEY="minout-01")
    assert response.status_code == 201, response.json()
    assert Trade.objects.get().min_amount_out == 1
    assert response.json()["min_amount_out"] == "0.000000000000000001"


def test_list_filters_by_state_wallet_and_chain(alice, registry):
    first = alice.active_wallet("first")
    second = alice.active_wallet("second")
    t1 = submitted_trade(alice, registry, first, key="list-key-1")
    t2 = submitted_trade(alice, registry, second, key="list-key-2")
    alice.client.post(f"/api/v1/trades/{t1.pk}/cancel", format="json")

    def ids(query):
        response = alice.client.get("/api/v1/trades" + query)
        assert response.status_code == 200, response.json()
        return [t["id"] for t in response.json()]

    assert ids("") == [t2.pk, t1.pk]
    assert ids("?state=CANCELLED") == [t1.pk]
    assert ids("?state=PENDING") == [t2.pk]
    assert ids(f"?wallet={second.pk}") == [t2.pk]
    assert ids("?chain_id=31337") == [t2.pk, t1.pk]
    assert ids("?chain_id=1") == []
    assert ids(f"?before={t2.pk}") == [t1.pk]
    assert ids("?limit=1") == [t2.pk]


def test_list_rejects_a_bad_filter_naming_it(alice, registry):
    response = alice.client.get("/api/v1/trades?state=MOON")
    assert response.status_code == 400
    assert "state" in response.json()["error"]["fields"]


def test_detail_has_the_event_timeline_and_every_transaction_attempt(alice, registry):
    wallet = alice.active_wallet()
    trade = signing_trade(wallet, state="SIGNING")
    response = alice.client.get(f"/api/v1/trades/{trade.pk}")
    assert response.status_code == 200
    body = response.json()
    assert body["state"] == "SIGNING"
    assert [(t["sequence"], t["kind"], t["attempt"]) for t in body["transactions"]] == [
        (0, "approve", 1),
        (1, "swap", 1),
    ]
    assert body["transactions"][0]["max_fee_per_gas"] == str(20 * 10**9)
    assert "raw_signed" not in body["transactions"][0]


def test_detail_timeline_lists_events_in_order(alice, registry):
    wallet = alice.active_wallet()
    trade = submitted_trade(alice, registry, wallet)
    alice.client.post(f"/api/v1/trades/{trade.pk}/cancel", format="json")
    events = alice.client.get(f"/api/v1/trades/{trade.pk}").json()["events"]
    assert [(e["kind"], e["from_state"], e["to_state"]) for e in events] == [
        ("submitted", "", "PENDING"),
        ("cancel", "PENDING", "CANCELLED"),
    ]
    assert events[1]["data"] == {"reason": "cancelled by the owner"}


def test_cancel_a_pending_trade(alice, registry):
    wallet = alice.active_wallet()
    trade = submitted_trade(alice, registry, wallet)
    response = alice.client.post(f"/api/v1/trades/{trade.pk}/cancel", format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["state"] == "CANCELLED"
    trade.refresh_from_db()
    assert trade.state == "CANCELLED"


def test_cancel_after_signing_started_is_a_409_and_changes_nothing(alice, registry):
    wallet = alice.active_wallet()
    trade = signing_trade(wallet, state="SIGNING")
    events = TradeEvent.objects.count()
    response = alice.client.post(f"/api/v1/trades/{trade.pk}/cancel", format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "not_cancellable"
    trade.refresh_from_db()
    assert trade.state == "SIGNING"
    assert TradeEvent.objects.count() == events


def test_updates_long_poll_returns_new_events_after_the_cursor(alice, bob, registry):
    start = alice.client.get("/api/v1/trades/updates").json()
    assert start["events"] == []
    wallet = alice.active_wallet()
    trade = submitted_trade(alice, registry, wallet)
    submitted_trade(bob, registry, bob.active_wallet(), key="bobs-trade-1")
    response = alice.client.get(f"/api/v1/trades/updates?after={start['cursor']}&timeout=0")
    assert response.status_code == 200
    body = response.json()
    assert [(e["trade"], e["kind"], e["state"]) for e in body["events"]] == [
        (trade.pk, "submitted", "PENDING")
    ]
    assert body["cursor"] == body["events"][-1]["id"]
    again = alice.client.get(f"/api/v1/trades/updates?after={body['cursor']}&timeout=1").json()
    assert again == {"cursor": body["cursor"], "events": []}


def test_updates_long_poll_wakes_up_for_an_event_during_the_wait(alice, registry, settings):
    import threading

    from django.db import connection

    settings.API_LONGPOLL_INTERVAL_SECONDS = 0.1
    wallet = alice.active_wallet()
    cursor = alice.client.get("/api/v1/trades/updates").json()["cursor"]

    def submit_later():
        import time

        time.sleep(0.5)
        try:
            submitted_trade(alice, registry, wallet, key="during-the-wait")
        finally:
            connection.close()

    thread = threading.Thread(target=submit_later)
    thread.start()
    body = alice.client.get(f"/api/v1/trades/updates?after={cursor}&timeout=15").json()
    thread.join(timeout=15)
    assert [e["kind"] for e in body["events"]] == ["submitted"]
    assert body["cursor"] > cursor
