"""The owner's strategy endpoints: create (idempotent), read, pause, resume, cancel, lower caps, runs;
reads need a `read` token and writes a `trade` one; every invalid parameter is a 400 naming the field
and writes nothing; strategy events come through the owner's update feed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.chain.models import Pair
from apps.gateway.models import TokenLevel
from apps.strategies.models import Strategy, StrategyEvent, StrategyRun
from apps.trades.selectors import latest_event_id, trade_events_after
from tests.factories import grant_scope
from tests.gateway.conftest import DAI, USDC, Owner, alice, bob, registry  # noqa: F401 - fixtures

PAST = (timezone.now() - timedelta(minutes=1)).isoformat()
HOUR_AGO = (timezone.now() - timedelta(hours=1)).isoformat()
SOON = (timezone.now() + timedelta(days=1)).isoformat()


def body(registry, owned, **overrides) -> dict:  # noqa: F811 - the fixture's value
    out = {
        "wallet": owned.pk,
        "chain_id": 31337,
        "dex": registry["dex"].pk,
        "path": [USDC, DAI],
        "kind": "recurring",
        "params": {"amount_per_run": "10", "interval_seconds": 3600},
        "total_amount_in": "100",
        "max_slippage_bps": 50,
    }
    out.update(overrides)
    return {k: v for k, v in out.items() if v is not None}


def _post(owner, payload, key="strategy-key-1", client=None):
    return (client or owner.client).post(
        "/api/v1/strategies", payload, format="json", HTTP_IDEMPOTENCY_KEY=key
    )


@pytest.fixture
def scoped(alice, registry):  # noqa: F811
    wallet = alice.active_wallet()
    grant_scope(wallet)
    Pair.objects.create(
        dex=registry["dex"], address="0x" + "ab" * 20, token0=registry["usdc"], token1=registry["dai"]
    )
    return wallet


def _counts():
    return Strategy.objects.count(), StrategyEvent.objects.count(), StrategyRun.objects.count()


STOP = {"kind": "stop_loss", "params": {"stop_price": "0.95"}}
TWAP = {"kind": "twap", "params": {"slices": 5, "duration_seconds": 3600}}
BAD_CASES = [
    ("kind", {"kind": "moonshot"}),
    ("total_amount_in", {"total_amount_in": "-5"}),
    ("total_amount_in", {"total_amount_in": "0"}),
    ("total_amount_in", {"total_amount_in": 100}),  # a JSON number
    ("params.amount_per_run", {"params": {"amount_per_run": "0", "interval_seconds": 3600}}),
    ("params.amount_per_run", {"params": {"amount_per_run": "-1", "interval_seconds": 3600}}),
    ("params.amount_per_run", {"params": {"amount_per_run": 10, "interval_seconds": 3600}}),
    ("params.amount_per_run", {"params": {"amount_per_run": "0.0000001", "interval_seconds": 3600}}),
    ("total_amount_in", {"params": {"amount_per_run": "500", "interval_seconds": 3600}}),  # below one run
    ("params.interval_seconds", {"params": {"amount_per_run": "10", "interval_seconds": 59}}),
    ("params.interval_seconds", {"params": {"amount_per_run": "10", "interval_seconds": "3600"}}),
    ("params.interval_seconds", {"params": {"amount_per_run": "10"}}),
    ("params.bogus", {"params": {"amount_per_run": "10", "interval_seconds": 3600, "bogus": 1}}),
    ("params", {"params": ["not", "an", "object"]}),
    ("params.start_at", {"params": {"amount_per_run": "10", "interval_seconds": 3600, "start_at": HOUR_AGO}}),
    ("total_amount_in", {**TWAP, "total_amount_in": "0.000004"}),  # 5 slices of at least 1 base unit
    ("params.duration_seconds", {**TWAP, "params": {"slices": 10, "duration_seconds": 100}}),
    ("params.slices", {**TWAP, "params": {"slices": 1, "duration_seconds": 3600}}),
    ("max_per_run", {**TWAP, "max_per_run": "1"}),
    ("expires_at", {"expires_at": PAST}),
    ("expires_at", {"kind": "limit", "params": {"trigger": "at_or_below", "limit_price": "0.9"}}),
    (
        "params.trigger",
        {"kind": "limit", "params": {"trigger": "sideways", "limit_price": "0.9"}, "expires_at": SOON},
    ),
    ("params.stop_price", {**STOP, "params": {"stop_price": "-0.95"}}),
    ("params.stop_price", {**STOP, "params": {}}),
    ("params.twap_window_seconds", {**STOP, "params": {"stop_price": "0.95", "twap_window_seconds": 5}}),
    ("params.price_token", {**STOP, "params": {"stop_price": "0.95", "price_token": "usd"}}),
    ("params.distance_bps", {"kind": "trailing_stop", "params": {"distance_bps": 0}}),
    ("max_per_run", {**STOP, "max_per_run": "50"}),  # a stop fires once, with the whole total
    ("oco_group", {"oco_group": "exit"}),  # a recurring strategy has no sibling to cancel
    ("max_slippage_bps", {"max_slippage_bps": 0}),
    ("path", {"path": [DAI, USDC]}),  # the scope lets the wallet sell dUSDC for dDAI, not the reverse
    ("path", {"path": [USDC, USDC]}),
    ("path", {"path": [USDC, "0x" + "12" * 20]}),
    ("chain_id", {"chain_id": 1}),
    ("dex", {"dex": 424242}),
    ("wallet", {"wallet": 424242}),
]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("field", "change"), BAD_CASES, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD_CASES)]
)
def test_every_invalid_parameter_is_a_400_naming_the_field_and_nothing_is_written(
    alice,  # noqa: F811
    registry,  # noqa: F811
    scoped,
    settings,
    field,
    change,
):
    settings.STRATEGY_MIN_INTERVAL_SECONDS = 60
    settings.STRATEGY_MIN_TWAP_WINDOW_SECONDS = 10
    before = _counts()
    response = _post(alice, body(registry, scoped, **change))
    assert response.status_code == 400, response.content
    fields = response.json()["error"]["fields"]
    assert any(name == field or name.startswith(f"{field}.") for name in fields), fields
    assert _counts() == before


@pytest.mark.django_db
def test_a_pair_without_an_owner_signed_scope_is_refused(alice, registry):  # noqa: F811
    wallet = alice.active_wallet()
    grant_scope(wallet, signed=False)  # proposed, never signed by the owner
    response = _post(alice, body(registry, wallet))
    assert response.status_code == 400
    assert "no active scope signed by the owner" in response.json()["error"]["fields"]["path"][0]
    assert _counts() == (0, 0, 0)


@pytest.mark.django_db(transaction=True)
def test_the_owner_creates_pauses_resumes_lowers_and_cancels(alice, bob, registry, scoped):  # noqa: F811
    payload = body(registry, scoped)
    created = _post(alice, payload)
    assert created.status_code == 201, created.content
    strategy = created.json()
    assert (strategy["state"], strategy["kind"], strategy["runs"]) == ("ACTIVE", "recurring", [])
    assert strategy["params"]["amount_per_run"] == "10"
    assert (strategy["total_amount_in"], strategy["max_per_run"], strategy["max_runs"]) == ("100", "10", 10)
    url = f"/api/v1/strategies/{strategy['id']}"

    replay = _post(alice, payload)
    assert (replay.status_code, replay["Idempotent-Replayed"], replay.json()["id"]) == (
        201,
        "true",
        strategy["id"],
    )
    assert _post(alice, {**payload, "total_amount_in": "90"}).status_code == 409
    assert Strategy.objects.count() == 1

    assert alice.client.get(url).json()["id"] == strategy["id"]
    assert bob.client.get(url).status_code == 404  # another owner's is missing to bob
    assert [s["id"] for s in alice.client.get("/api/v1/strategies").json()] == [strategy["id"]]
    assert alice.client.get(f"{url}/runs").json() == []

    paused = alice.client.post(f"{url}/pause", format="json")
    assert paused.status_code == 200
    assert paused.json()["state"] == "PAUSED"
    resumed = alice.client.post(f"{url}/resume", {"catch_up": False}, format="json")
    assert resumed.status_code == 200
    assert resumed.json()["state"] == "ACTIVE"

    raised = alice.client.patch(url, {"total_amount_in": "1000"}, format="json")
    assert raised.status_code == 400
    assert "total_amount_in" in raised.json()["error"]["fields"]
    lowered = alice.client.patch(url, {"total_amount_in": "50", "max_runs": 5}, format="json")
    assert lowered.status_code == 200, lowered.content
    assert (lowered.json()["total_amount_in"], lowered.json()["max_runs"]) == ("50", 5)

    cancelled = alice.client.post(f"{url}/cancel", format="json")
    assert cancelled.json()["state"] == "CANCELLED"
    again = alice.client.post(f"{url}/resume", format="json")
    assert again.status_code == 409
    assert alice.client.patch(url, {"max_runs": 1}, format="json").status_code == 409

    kinds = list(StrategyEvent.objects.order_by("id").values_list("kind", flat=True))
    assert kinds == ["created", "pause", "resume", "caps_lowered", "cancel"]
    # The owner's update feed carries them, in order, behind one cursor.
    feed = trade_events_after(alice.user, after_id=0)
    assert [e["kind"] for e in feed] == [f"strategy.{k}" for k in kinds]
    assert {e["strategy"] for e in feed} == {strategy["id"]}
    assert latest_event_id() == feed[-1]["id"]
    assert trade_events_after(bob.user, after_id=0) == []


@pytest.mark.django_db(transaction=True)
def test_reads_need_a_read_token_and_writes_a_trade_token(alice, registry, scoped):  # noqa: F811
    reader = alice.client_of_level(TokenLevel.READ)
    trader = alice.client_of_level(TokenLevel.TRADE)
    assert reader.get("/api/v1/strategies").status_code == 200
    refused = _post(alice, body(registry, scoped), client=reader)
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "insufficient_level")
    created = _post(alice, body(registry, scoped), client=trader)
    assert created.status_code == 201
    url = f"/api/v1/strategies/{created.json()['id']}"
    assert reader.post(f"{url}/pause", format="json").status_code == 403
    assert trader.post(f"{url}/pause", format="json").status_code == 200
