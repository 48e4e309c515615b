"""What every benchmark script needs: output, a free loopback port, a throwaway SoftHSM token."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path


def say(message: str) -> None:
    print(message, flush=True)


def stop_groups(processes: list[subprocess.Popen], timeout: float = 20) -> None:
    """SIGTERM each still-running process group (started with start_new_session), SIGKILL what has
    not exited within `timeout` seconds."""
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def softhsm_token(directory: Path, label: str) -> dict[str, str]:
    """A fresh SoftHSM token under `directory`: the settings a process needs to use it (the PIN
    itself is only in the file PKCS11_PIN_FILE names)."""
    (directory / "tokens").mkdir(mode=0o700, parents=True)
    conf = directory / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {directory / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    pin_file = directory / "pin"
    pin_file.write_text(secrets.token_hex(8))
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            label,
            "--pin",
            pin_file.read_text(),
            "--so-pin",
            secrets.token_hex(8),
        ],
        check=True,
        capture_output=True,
        timeout=30,
        env={**os.environ, "SOFTHSM2_CONF": str(conf)},
    )
    return {"SOFTHSM2_CONF": str(conf), "PKCS11_TOKEN_LABEL": label, "PKCS11_PIN_FILE": str(pin_file)}


def redis_start(directory: Path, port: int, *options: str) -> int:
    """A private redis-server on 127.0.0.1:`port` with its files in `directory` (made if missing)
    and `options` (a config file first, if any); its pid once it answers."""
    import redis

    directory.mkdir(exist_ok=True)
    subprocess.run(
        [
            "redis-server",
            *options,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(directory),
            "--daemonize",
            "yes",
            "--pidfile",
            str(directory / "redis.pid"),
            "--logfile",
            str(directory / "redis.log"),
        ],
        check=True,
    )
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    for _ in range(100):
        try:
            if client.ping() and (directory / "redis.pid").exists():
                return int((directory / "redis.pid").read_text().strip())
        except redis.ConnectionError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"private Redis did not start; see {directory / 'redis.log'}")


def funded_pkcs11_wallet(*, url: str, owner, label: str):
    """A wallet whose key is created on the SoftHSM token, funded on the dev node, with a scope wide
    enough for any bench swap; this process then lets go of its token session."""
    from datetime import timedelta
    from decimal import Decimal

    from django.utils import timezone

    from apps.chain import devchain
    from apps.signing import services as signer
    from apps.wallets.services import wallet_create
    from tests.factories import grant_scope

    wallet = wallet_create(owner=owner, label=label, key_backend="pkcs11")
    signer.backend.cache_clear()
    wallet = signer.wallet_key_create(wallet_id=wallet.pk)
    signer.backend.cache_clear()  # the key lives on the token; the workers open their own sessions
    devchain.fund_address(url=url, address=wallet.address, eth=Decimal(100), token_units=10**6)
    grant_scope(
        wallet,
        max_amount_in=10**12,
        max_fee_per_gas=10**12,
        max_priority_fee_per_gas=10**11,
        valid_until=timezone.now() + timedelta(days=1),
    )
    return wallet
