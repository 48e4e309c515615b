"""GET /api/v1/health: 200 when everything answers, 503 naming what does not."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from apps.chain.models import Chain, RpcEndpoint
from project.heartbeat import worker_heartbeat_write
from project.queues import Queue
from tests.conftest import free_port

pytestmark = pytest.mark.django_db


def _all_queues_alive():
    for queue in Queue:
        worker_heartbeat_write(hostname=f"{queue}@test", queues=[str(queue)])


@pytest.mark.chain
def test_health_is_green_when_database_broker_workers_and_chain_answer(deployed_devchain, redis_client):
    _all_queues_alive()
    response = APIClient().get("/api/v1/health")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok"
    assert body["failing"] == []
    assert body["database"]["ok"]
    assert body["broker"]["ok"]
    assert body["queues"]["signer"]["workers"] == ["signer@test"]
    chain = body["chains"]["31337"]
    assert chain["ok"]
    assert isinstance(chain["head"], int)
    assert chain["head"] > 0


def test_health_503_names_the_broker_when_redis_is_unreachable(settings, redis_client):
    _all_queues_alive()
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"
    response = APIClient().get("/api/v1/health")
    assert response.status_code == 503
    body = response.json()
    assert "broker" in body["failing"]
    assert body["broker"]["ok"] is False
    assert "redis unreachable" in body["broker"]["error"]
    assert body["database"]["ok"] is True


def test_health_503_names_queues_without_a_live_worker(redis_client, settings):
    settings.ML_ENABLED = True  # the ml queue is expected only where ML runs
    worker_heartbeat_write(hostname="execution@test", queues=["execution"])
    body = APIClient().get("/api/v1/health").json()
    assert "queue:execution" not in body["failing"]
    assert {"queue:signer", "queue:watcher", "queue:market", "queue:ml"} <= set(body["failing"])


def test_health_503_names_a_chain_whose_endpoints_do_not_answer(redis_client):
    _all_queues_alive()
    chain = Chain.objects.create(chain_id=777, name="dead chain")
    RpcEndpoint.objects.create(chain=chain, name="dead", url=f"http://127.0.0.1:{free_port()}")
    response = APIClient().get("/api/v1/health")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["chain:777"]
    assert body["chains"]["777"]["errors"][0].startswith("dead:")


def test_heartbeats_expire(redis_client, settings):
    settings.WORKER_HEARTBEAT_TTL_SECONDS = 1
    worker_heartbeat_write(hostname="ml@test", queues=["ml"])
    assert redis_client.ttl("custos:worker:ml:ml@test") == 1


@pytest.mark.chain
def test_health_shows_chain_truth_and_fails_on_a_finality_violation(deployed_devchain, redis_client):
    from apps.trades.models import Trade
    from apps.wallets.models import Wallet
    from tests.factories import UserFactory, signing_trade

    _all_queues_alive()
    body = APIClient().get("/api/v1/health").json()
    assert body["chain_truth"]["31337"]["finality_violated_trades"] == 0
    assert not any(name.startswith("finality:") for name in body["failing"])

    wallet = Wallet.objects.create(
        owner=UserFactory(), label="w", key_backend="keystore", address="0x" + "11" * 20, status="active"
    )
    trade = signing_trade(wallet)
    Trade.objects.filter(pk=trade.pk).update(state="FINALITY_VIOLATED")
    response = APIClient().get("/api/v1/health")
    assert response.status_code == 503
    assert "finality:31337" in response.json()["failing"]
    assert response.json()["chain_truth"]["31337"]["finality_violated_trades"] == 1
