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


def _proc_table() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent pid, command name, CPU seconds used so far) for every process /proc shows."""
    tick = os.sysconf("SC_CLK_TCK")
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # exited meanwhile
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        # fields[1] is ppid; utime, stime, cutime, cstime are fields 11..14 after the name
        cpu = sum(int(f) for f in fields[11:15]) / tick
        table[int(entry)] = (int(fields[1]), name, cpu)
    return table


class CpuMeter:
    """CPU seconds per named group of processes between start() and stop(): each group is the given
    root pids and all their descendants; processes named in `by_name` (e.g. postgres, redis-server)
    are grouped by command name; what is left is 'other' (this machine is shared). Exited
    children's time is counted through their parents' cutime/cstime."""

    def __init__(self, roots: dict[str, list[int]], by_name: tuple[str, ...] = ("postgres", "redis-server")):
        self.roots, self.by_name = roots, by_name

    def _groups(self) -> dict[str, float]:
        table = _proc_table()
        group_of: dict[int, str] = {}
        for group, pids in self.roots.items():
            group_of.update(dict.fromkeys(pids, group))
        totals: dict[str, float] = {}
        for pid, (_ppid, name, cpu) in table.items():
            group, cursor, seen = None, pid, 0
            while cursor in table and seen < 64:  # walk up to a root (bounded against pid reuse loops)
                if cursor in group_of:
                    group = group_of[cursor]
                    break
                cursor, seen = table[cursor][0], seen + 1
            if group is None:
                group = name if name in self.by_name else "other"
            totals[group] = totals.get(group, 0.0) + cpu
        return totals

    def start(self) -> None:
        self.t0, self.before = time.perf_counter(), self._groups()

    def stop(self) -> dict[str, float]:
        """{group: CPU seconds in the interval}, plus 'wall' seconds."""
        after = self._groups()
        used = {g: round(after.get(g, 0.0) - self.before.get(g, 0.0), 2) for g in after}
        return {
            **{g: s for g, s in sorted(used.items(), key=lambda kv: -kv[1]) if s > 0},
            "wall": round(time.perf_counter() - self.t0, 2),
        }
