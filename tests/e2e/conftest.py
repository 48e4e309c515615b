"""The end-to-end stack: real execution and signer workers (subprocesses, each as its own DB role)
against the test database, the test Redis and a Hardhat node."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from web3 import Web3

from apps.chain import devchain
from apps.chain.models import Chain
from apps.signing import services as signer_services
from apps.wallets.services import wallet_create
from project.db_roles import setup_roles
from tests.factories import UserFactory, grant_scope

ROOT = Path(settings.BASE_DIR)
SECRETS = ("KEYSTORE_PASSPHRASE_FILE", "PKCS11_PIN_FILE", "VAULT_SECRET_ID_FILE", "VAULT_TOKEN_FILE")


class Stack:
    def __init__(self, tmp: Path, hardhat_url: str):
        self.tmp = tmp
        self.hardhat_url = hardhat_url
        self.processes: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        db = connection.settings_dict
        self.database_url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
        (tmp / "keystore.pass").write_text("e2e passphrase")
        self.keystore_env = {
            "KEYSTORE_DIR": str(tmp / "keystore"),
            "KEYSTORE_PASSPHRASE_FILE": str(tmp / "keystore.pass"),
            "KEYSTORE_SCRYPT_N": "1024",
        }

    def env(self, role: str, **extra: str) -> dict[str, str]:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "project.settings.base",
            "DATABASE_URL": self.database_url,
            "DB_ROLE": role,
            "REDIS_URL": settings.REDIS_URL,
            "CHAIN_IDS": "31337",
            "CELERY_VISIBILITY_TIMEOUT": "20",
            "CELERY_TASK_TIME_LIMIT": "15",
            "CELERY_TASK_SOFT_TIME_LIMIT": "12",
            "WORKER_CONCURRENCY_EXECUTION": "1",
            "WORKER_CONCURRENCY_SIGNER": "1",
            "LOG_LEVEL": "INFO",
            **self.keystore_env,
            **extra,
        }
        if role != "custos_signer":
            for name in SECRETS:
                env[name] = ""
        return env

    def start(self, name: str, queue: str, role: str, **extra: str) -> subprocess.Popen:
        log = self.tmp / f"{name}.log"
        self.logs[name] = log
        handle = open(log, "a")  # noqa: SIM115 - owned by the child process
        process = subprocess.Popen(
            [sys.executable, "manage.py", "run_worker", queue, "--loglevel", "INFO"],
            cwd=ROOT,
            env=self.env(role, **extra),
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes[name] = process
        return process

    def kill(self, name: str) -> None:
        process = self.processes[name]
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def alive(self, name: str) -> bool:
        return self.processes[name].poll() is None

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)

    def log_tail(self) -> str:
        return "\n".join(f"--- {n}\n" + p.read_text()[-3000:] for n, p in self.logs.items() if p.exists())

    def mine(self, blocks: int = 1) -> None:
        w3 = Web3(Web3.HTTPProvider(self.hardhat_url))
        for _ in range(blocks):
            w3.provider.make_request("evm_mine", [])


@pytest.fixture
def stack(deployed_devchain, tmp_path, settings, redis_client):
    """Roles applied to the test database, a dev chain with shallow confirmations, a keystore."""
    setup_roles(database=connection.settings_dict["NAME"])
    Chain.objects.update(confirmations_required=2)
    s = Stack(tmp_path, deployed_devchain)
    for name, value in s.keystore_env.items():
        setattr(settings, name, int(value) if name == "KEYSTORE_SCRYPT_N" else value)
    signer_services.backend.cache_clear()
    yield s
    s.stop_all()
    signer_services.backend.cache_clear()


def make_wallet(stack: Stack, label: str = "e2e", **scope):
    wallet = wallet_create(owner=UserFactory(), label=label, key_backend="keystore")
    wallet = signer_services.wallet_key_create(wallet_id=wallet.pk)
    devchain.fund_address(url=stack.hardhat_url, address=wallet.address, eth=Decimal(20), token_units=100_000)
    grant_scope(wallet, **scope)
    return wallet


def drive(stack: Stack, trade_ids: list[int], *, timeout: float = 120, on_tick=None) -> dict[int, str]:
    """Play beat: send trades.tick and mine a block every half second until every trade has ended."""
    from apps.trades.models import TERMINAL, Trade
    from celery_app import app

    deadline = time.monotonic() + timeout
    states: dict[int, str] = {}
    while time.monotonic() < deadline:
        states = dict(Trade.objects.filter(pk__in=trade_ids).values_list("pk", "state"))
        if all(state in TERMINAL for state in states.values()):
            return states
        if on_tick:
            on_tick()
        app.send_task("trades.tick")
        stack.mine(1)
        time.sleep(0.5)
    raise AssertionError(f"trades not finished in {timeout}s: {states}\n{stack.log_tail()}")
