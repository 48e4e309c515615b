"""Real worker processes: start checks refuse clearly, and a live worker shows up in health."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from tests.conftest import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
ROOT = Path(settings.BASE_DIR)


def _env(**overrides: str) -> dict[str, str]:
    db = connection.settings_dict
    database_url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings.base",
        "DATABASE_URL": database_url,
        "REDIS_URL": settings.REDIS_URL,
        **overrides,
    }


def _run_worker(process: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "run_worker", process],
        cwd=ROOT,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_worker_refuses_to_start_when_the_broker_does_not_answer():
    result = _run_worker("market", REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert result.returncode == 1
    assert "market: not starting: broker at redis://127.0.0.1:" in result.stderr
    assert "does not answer" in result.stderr


def test_worker_refuses_to_start_when_the_database_does_not_answer():
    result = _run_worker("market", DATABASE_URL=f"postgres://postgres@127.0.0.1:{free_port()}/x")
    assert result.returncode == 1
    assert "market: not starting: database at 127.0.0.1:" in result.stderr


def test_worker_refuses_an_unknown_pool_by_its_setting_name():
    result = _run_worker("market", WORKER_POOL_MARKET="threads")
    assert result.returncode == 1
    assert "market: not starting: WORKER_POOL_MARKET must be prefork or solo, not 'threads'" in result.stderr


def test_rpc_worker_refuses_a_malformed_rpc_endpoints_entry_by_name():
    result = _run_worker("watcher", RPC_ENDPOINTS='[{"chain_id": 31337, "url": "http://127.0.0.1:1"}]')
    assert result.returncode == 1
    assert "watcher: not starting: RPC_ENDPOINTS[0].name: required" in result.stderr


def test_rpc_worker_refuses_to_start_without_its_chain():
    result = _run_worker("execution", CHAIN_IDS="4242")
    assert result.returncode == 1
    assert "chain 4242 (CHAIN_IDS) is not in the database" in result.stderr


@pytest.mark.chain
def test_rpc_worker_refuses_a_wrong_chain_id(hardhat_url):
    from apps.chain.models import Chain, RpcEndpoint

    chain = Chain.objects.create(chain_id=5151, name="liar")
    RpcEndpoint.objects.create(chain=chain, name="hardhat", url=hardhat_url)
    result = _run_worker("watcher", CHAIN_IDS="5151")
    assert result.returncode == 1
    assert "reports chain id 31337, expected 5151" in result.stderr


def test_a_started_worker_consumes_only_its_queue_and_shows_in_health(redis_client):
    process = subprocess.Popen(
        [sys.executable, "manage.py", "run_worker", "signer"],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        keys = []
        while time.monotonic() < deadline and not keys:
            keys = [k.decode() for k in redis_client.keys("custos:worker:*")]
            time.sleep(0.5)
        assert len(keys) == 1, keys
        assert keys[0].startswith("custos:worker:signer:signer@"), keys

        from rest_framework.test import APIClient

        body = APIClient().get("/api/v1/health").json()
        assert body["queues"]["signer"]["ok"] is True
        assert body["queues"]["execution"]["ok"] is False
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        output = process.communicate(timeout=30)[0]
    assert ".> signer" in output
    assert ".> execution" not in output
