#!/usr/bin/env python3
"""The tail of `make run`: dev chain, schedules, demo admin, then every process under honcho.

Prints the admin login, and a line once /api/v1/health is green; Ctrl-C stops everything
(including the Hardhat node, which the `chain` process owns).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python")
BIND = os.environ.get("CUSTOS_BIND", "127.0.0.1:8000")
HEALTH_URL = f"http://{BIND}/api/v1/health"
HEALTH_WAIT_SECONDS = int(os.environ.get("CUSTOS_HEALTH_WAIT_SECONDS", "180"))


def say(message: str) -> None:
    print(f"[run] {message}", flush=True)


def manage(*args: str) -> None:
    subprocess.run([PY, "manage.py", *args], cwd=ROOT, check=True)  # noqa: S603


def health() -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(HEALTH_URL, timeout=5) as response:  # noqa: S310 - loopback
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except (urllib.error.URLError, OSError, ValueError):
        return 0, {}


def demo() -> None:
    """The demo swap: a funded keystore wallet sells 100 dUSDC for dDAI, streamed until it ends."""
    if os.environ.get("CUSTOS_DEMO", "1") == "0":
        return
    say("demo: wallet, funds and scope")
    try:
        manage("demo_setup")
        say("demo: swap 100 dUSDC for dDAI through the whole pipeline")
        manage(
            "trade_submit",
            "--wallet",
            "demo",
            "--sell",
            "dUSDC",
            "--buy",
            "dDAI",
            "--amount",
            "100",
            "--slippage-bps",
            "50",
            "--follow",
        )
        say("demo settled; the stack keeps running (Ctrl-C stops it)")
    except subprocess.CalledProcessError:
        say("demo trade did not settle; see the output above (the stack keeps running)")


def main() -> int:
    say("dev chain: start and deploy (idempotent)")
    manage("devchain", "up")
    say("beat schedules and database roles")
    manage("setup_schedules")
    manage("setup_db_roles")
    manage("create_demo_admin")
    honcho = subprocess.Popen(  # noqa: S603
        [str(ROOT / ".venv" / "bin" / "honcho"), "start"],
        cwd=ROOT,
        start_new_session=True,
    )

    def forward(signum, _frame):
        os.killpg(honcho.pid, signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)

    deadline = time.monotonic() + HEALTH_WAIT_SECONDS
    failing: list = []
    while time.monotonic() < deadline and honcho.poll() is None:
        status, body = health()
        if status == 200:
            say(f"Custos is up: {HEALTH_URL} is green; admin at http://{BIND}/admin/")
            demo()
            break
        failing = body.get("failing", ["web"]) if body else ["web"]
        time.sleep(2)
    else:
        if honcho.poll() is None:
            say(f"health still failing after {HEALTH_WAIT_SECONDS}s: {', '.join(failing)}")
    code = honcho.wait()
    # honcho reports the signal that stopped its processes; a Ctrl-C stop is a clean exit.
    return 0 if code in (0, -signal.SIGINT, 128 + signal.SIGINT, 130) else code


if __name__ == "__main__":
    sys.exit(main())
