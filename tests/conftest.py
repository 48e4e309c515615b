"""Shared fixtures: a real Hardhat node per test session, deployed once, and Redis cleanup."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.conf import settings

from apps.chain import devchain


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def hardhat_url(tmp_path_factory) -> Iterator[str]:
    """A private Hardhat node (automine) for this test session; stopped at the end."""
    port = free_port()
    run_dir: Path = tmp_path_factory.mktemp("hardhat")
    pid_file = run_dir / "node.pid"
    devchain.node_start(port=port, block_ms=0, pid_file=pid_file, log_file=run_dir / "node.log")
    try:
        yield devchain.devchain_url(port)
    finally:
        devchain.node_stop(pid_file)


@pytest.fixture
def deployed_devchain(hardhat_url, db):
    """The dev contracts deployed to the session's node and recorded in this test's database."""
    devchain.deploy_devchain(url=hardhat_url, log=lambda _msg: None)
    return hardhat_url


@pytest.fixture
def keystore(settings, tmp_path):
    """The keystore backend on a temporary directory at a test's scrypt cost, the default backend."""
    from apps.signing import services as signer

    (tmp_path / "pass").write_text("test passphrase")
    settings.KEYSTORE_DIR = str(tmp_path / "keys")
    settings.KEYSTORE_PASSPHRASE_FILE = str(tmp_path / "pass")
    settings.KEYSTORE_SCRYPT_N = 2**10
    settings.KEY_BACKEND_DEFAULT = "keystore"
    signer.backend.cache_clear()
    yield
    signer.backend.cache_clear()


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    """The test Redis database, emptied before and after the test."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture(autouse=True)
def _confirm_marks_forgotten() -> None:
    """The confirm batches' "looked at" marks live in Redis, keyed by trade id; ids repeat across
    tests, so no test inherits another's marks (the tick would skip its trades)."""
    from apps.trades.real_money_transaction_manager.confirm import LOOKED_AT

    redis.Redis.from_url(settings.REDIS_URL).delete(LOOKED_AT)
