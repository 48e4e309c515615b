"""Trades over the API: create (through the engine's trade_submit), list with filters, detail with
the timeline and transaction attempts, cancel (a request the engine carries out)."""

from __future__ import annotations

import base64
import json
from decimal import Decimal

import pytest

from apps.trades import tasks
from apps.trades.audit import audit_verify
from apps.trades.models import OwnerRequest, Trade, TradeEvent
from apps.trades.real_money_transaction_manager.transition import transition
from project.db import serializable_attempts
from tests.factories import signing_trade
from tests.gateway.conftest import DAI, USDC, submitted_trade, trade_body

pytestmark = pytest.mark.django_db(transaction=True)


def _engine_handles(response) -> None:
    """What the execution worker does with the `trades.owner_requests` message the cancel sent (the web
    process may not move a trade itself)."""
    tasks.owner_requests.apply(args=[[response.json()["request"]["id"]]], throw=True)


def _queued(redis_client, queue: str) -> list[tuple[str, list]]:
    out = []
    for raw in redis_client.lrange(queue, 0, -1):
        message = json.loads(raw)
        body = json.loads(base64.b64decode(message["body"]))
        out.append((message["headers"]["task"], list(body[0])))
    return out


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
    _engine_handles(alice.client.post(f"/api/v1/trades/{t1.pk}/cancel", format="json"))

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
    _engine_handles(alice.client.post(f"/api/v1/trades/{trade.pk}/cancel", format="json"))
    events = alice.client.get(f"/api/v1/trades/{trade.pk}").json()["events"]
    assert [(e["kind"], e["from_state"], e["to_state"]) for e in events] == [
        ("submitted", "", "PENDING"),
        ("cancel", "PENDING", "CANCELLED"),
    ]
    assert events[1]["data"] == {"reason": "cancelled by the owner"}


def test_cancel_is_accepted_at_once_and_carried_out_by_the_engine(alice, registry, redis_client):
    wallet = alice.active_wallet()
    trade = submitted_trade(alice, registry, wallet)
    redis_client.delete("execution")
    response = alice.client.post(f"/api/v1/trades/{trade.pk}/cancel", format="json")
    assert response.status_code == 202, response.json()
    body = response.json()
    request = OwnerRequest.objects.get(trade=trade)
    assert body["request"] == {
        "id": request.pk,
        "kind": "cancel",
        "created_at": body["request"]["created_at"],
        "handled_at": None,
        "outcome": "",
    }
    assert (body["trade"]["id"], body["trade"]["state"]) == (trade.pk, "PENDING")  # as it is: not yet
    assert _queued(redis_client, "execution") == [("trades.owner_requests", [[request.pk]])]
    # Asked again before the engine got to it: the same request, no second one.
    again = alice.client.post(f"/api/v1/trades/{trade.pk}/cancel", format="json")
    assert (again.status_code, again.json()["request"]["id"]) == (202, request.pk)
    assert OwnerRequest.objects.count() == 1

    _engine_handles(response)
    trade.refresh_from_db()
    assert trade.state == "CANCELLED"
    done = alice.client.post(f"/api/v1/trades/{trade.pk}/cancel", format="json")
    assert done.status_code == 200, done.json()
    assert done.json()["trade"]["state"] == "CANCELLED"
    assert (done.json()["request"]["id"], done.json()["request"]["outcome"]) == (request.pk, "cancelled")
    assert done.json()["request"]["handled_at"] is not None
    assert audit_verify()[1] is None


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
    assert not OwnerRequest.objects.exists()


def test_a_cancel_the_engine_finds_too_late_is_refused_in_the_timeline(alice, registry):
    """Accepted while VALIDATING; by the time the engine handles it the trade is SIGNING: nothing moves,
    the request says so and the timeline shows the refusal."""
    trade = submitted_trade(alice, registry, alice.active_wallet())
    for method in ("start_simulation", "start_validation"):
        for attempt in serializable_attempts():
            with attempt:
                transition(Trade.objects.get(pk=trade.pk), method)
    response = alice.client.post(f"/api/v1/trades/{trade.pk}/cancel", format="json")
    assert response.status_code == 202, response.json()
    for attempt in serializable_attempts():
        with attempt:
            transition(Trade.objects.get(pk=trade.pk), "start_signing")
    _engine_handles(response)
    trade.refresh_from_db()
    assert trade.state == "SIGNING"
    assert OwnerRequest.objects.get().outcome == "not_cancellable"
    last = alice.client.get(f"/api/v1/trades/{trade.pk}").json()["events"][-1]
    assert (last["kind"], last["data"]["state"]) == ("cancel_refused", "SIGNING")
    assert audit_verify()[1] is None


def test_a_cancel_whose_message_was_lost_is_carried_out_by_the_next_tick(alice, registry, redis_client):
    trade = submitted_trade(alice, registry, alice.active_wallet())
    assert alice.client.post(f"/api/v1/trades/{trade.pk}/cancel", format="json").status_code == 202
    redis_client.flushdb()  # the broker lost the message
    tasks.tick.apply(throw=True)
    trade.refresh_from_db()
    assert trade.state == "CANCELLED"
    assert OwnerRequest.objects.get().outcome == "cancelled"


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
