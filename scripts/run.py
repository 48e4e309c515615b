#!/usr/bin/env python3
"""The tail of `make run`: dev chain, schedules, demo admin, then every process under honcho.

The console shows the stack coming up, health and the demo trade's timeline; each process's own
output goes to var/log/<process>.log (`make logs` follows them all), so worker lines no longer scroll
the demo away. A process that stops is named on the console with the end of its log. Ctrl-C stops
everything (including the Hardhat node, which the `chain` process owns). With ML_ENABLED=0 the ml
worker is not started.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python")
LOG_DIR = ROOT / "var" / "log"
BIND = os.environ.get("CUSTOS_BIND", "127.0.0.1:8000")
HEALTH_URL = f"http://{BIND}/api/v1/health"
HEALTH_WAIT_SECONDS = int(os.environ.get("CUSTOS_HEALTH_WAIT_SECONDS", "180"))
# honcho's line format: "HH:MM:SS name.1   | text"; its own messages come from "system".
HONCHO_LINE = re.compile(r"^\d\d:\d\d:\d\d (?P<name>\S+?)(?:\.\d+)? *\| ?(?P<text>.*)$")
HONCHO_EVENT = re.compile(
    r"^(?P<name>\S+?)(?:\.\d+)? (?P<event>started|stopped) \((?:pid|rc)=(?P<value>-?\d+)\)$"
)
STAMPED = re.compile(r"^\[?\d{4}-\d\d-\d\d[ T]\d\d:\d\d")
# The line honcho takes as a process (anything else in the Procfile, comments too, it skips).
PROCFILE_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$", re.M)
ML_PROCESS = "worker-ml"


def say(message: str) -> None:
    print(f"[run] {message}", flush=True)


def manage(*args: str) -> None:
    subprocess.run([PY, "manage.py", *args], cwd=ROOT, check=True)  # noqa: S603


def configured(name: str, default: str) -> str:
    """A setting as Django sees it: the environment, then var/env, then .env, then the default."""
    if name in os.environ:
        return os.environ[name]
    for path in (ROOT / "var" / "env", ROOT / ".env"):
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.startswith(f"{name}="):
                    return line.split("=", 1)[1].strip().strip("'\"")
    return default


def env_bool(value: str) -> bool:
    """django-environ's reading of a boolean (env.bool)."""
    try:
        return int(value) != 0
    except ValueError:
        return value.strip().lower() in {"true", "on", "ok", "y", "yes"}


def procfile_processes(*, ml_enabled: bool) -> list[str]:
    """The Procfile's process names in order, without the ml worker when ML is off."""
    names = [match[1] for match in PROCFILE_LINE.finditer((ROOT / "Procfile").read_text())]
    return [name for name in names if ml_enabled or name != ML_PROCESS]


def health() -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(HEALTH_URL, timeout=5) as response:  # noqa: S310 - loopback
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except (urllib.error.URLError, OSError, ValueError):
        return 0, {}


def health_summary(body: dict) -> str:
    queues = body.get("queues", {})
    running = [name for name, entry in queues.items() if entry.get("workers")]
    off = [name for name, entry in queues.items() if not entry.get("expected", True)]
    parts = ["database ok", "broker ok", f"workers on {', '.join(running) or 'no queue'}"]
    if off:
        parts.append(f"not expected: {', '.join(off)}")
    for chain_id, entry in body.get("chains", {}).items():
        parts.append(f"chain {chain_id} at block {entry.get('head')}")
    return "; ".join(parts)


class ProcessLogs:
    """Reads honcho's multiplexed output and writes each process's lines to var/log/<process>.log.

    honcho's own messages go to var/log/honcho.log; a process starting or stopping is also told on the
    console (a stop with the last lines of that process's log, unless the whole stack is stopping).
    """

    def __init__(self, names: list[str]):
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.files = {}
        self.tails: dict[str, deque[str]] = {}
        self.stopping = False
        stamp = datetime.now().astimezone().isoformat(timespec="seconds")
        for name in [*names, "honcho"]:
            handle = open(LOG_DIR / f"{name}.log", "a", buffering=1, encoding="utf-8")
            handle.write(f"===== make run started at {stamp} =====\n")
            self.files[name] = handle
            self.tails[name] = deque(maxlen=15)

    def path(self, name: str) -> str:
        return str((LOG_DIR / f"{name}.log").relative_to(ROOT))

    def pump(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            match = HONCHO_LINE.match(line)
            name, text = (match["name"], match["text"]) if match else ("system", line)
            if name == "system" or name not in self.files:
                self.files["honcho"].write(line + "\n")
                self.event(text)
                continue
            # honcho's time, unless the line carries its own (Django's and Celery's logging do).
            self.files[name].write(f"{text}\n" if STAMPED.match(text) else f"{line[:8]} {text}\n")
            self.tails[name].append(text)
        for handle in self.files.values():
            handle.close()

    def event(self, text: str) -> None:
        match = HONCHO_EVENT.match(text.strip())
        if not match:
            return
        name = match["name"]
        if match["event"] == "started":
            say(f"{name} started (pid {match['value']}), log: {self.path(name)}")
        elif not self.stopping:
            say(f"{name} stopped (exit {match['value']}); the others stop too. End of {self.path(name)}:")
            for line in self.tails.get(name, ()):
                print(f"    {line}", flush=True)


def demo(stack: ProcessLogs) -> None:
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
        say("demo settled")
        say("demo: a recurring strategy buys dDAI with 10 dUSDC every minute, twice (beat runs it)")
        manage(
            "strategy_create",
            "--wallet",
            "demo",
            "--kind",
            "recurring",
            "--sell",
            "dUSDC",
            "--buy",
            "dDAI",
            "--total",
            "20",
            "--slippage-bps",
            "50",
            "--params",
            '{"amount_per_run": "10", "interval_seconds": 60}',
            "--follow-runs",
            "2",
            "--timeout",
            "300",
        )
        say("demo strategy settled two runs; the stack keeps running (Ctrl-C stops it)")
    except subprocess.CalledProcessError:
        if not stack.stopping:
            say("the demo did not settle; see the output above (the stack keeps running)")


def main() -> int:
    ml_enabled = env_bool(configured("ML_ENABLED", "1"))
    names = procfile_processes(ml_enabled=ml_enabled)
    say("dev chain: start and deploy (idempotent)")
    manage("devchain", "up")
    say("beat schedules, database roles and RPC endpoints")
    manage("setup_schedules")
    manage("setup_db_roles")
    # The execution worker syncs RPC_ENDPOINTS at its start too; the watcher, whose role (custos_watcher)
    # may not write endpoints, would otherwise start before them.
    manage("rpc_endpoints_sync")
    manage("create_demo_admin")
    if not ml_enabled:
        say("ML_ENABLED=0: the ml worker is not started")
    stack = ProcessLogs(names)
    say(f"starting {len(names)} processes under honcho; each logs to var/log/<process>.log (make logs)")
    honcho = subprocess.Popen(  # noqa: S603
        [str(ROOT / ".venv" / "bin" / "honcho"), "start", "--no-colour", *names],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    reader = threading.Thread(target=stack.pump, args=(honcho.stdout,), daemon=True)
    reader.start()

    def forward(signum, _frame):
        if not stack.stopping:
            stack.stopping = True
            say("stopping every process (the Hardhat node too)")
        os.killpg(honcho.pid, signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)

    deadline = time.monotonic() + HEALTH_WAIT_SECONDS
    failing: list = []
    said = None
    while time.monotonic() < deadline and honcho.poll() is None:
        time.sleep(2)
        status, body = health()
        if status == 200:
            say(f"health: {health_summary(body)}")
            say(f"Custos is up: {HEALTH_URL} is green; admin at http://{BIND}/admin/")
            demo(stack)
            if honcho.poll() is None and not stack.stopping:
                say("process logs: var/log/<process>.log (make logs follows them); Ctrl-C stops everything")
            break
        failing = body.get("failing", ["web"]) if body else ["web"]
        if failing != said:
            say(f"waiting for health: not yet {', '.join(failing)}")
            said = failing
    else:
        if honcho.poll() is None:
            say(f"health still failing after {HEALTH_WAIT_SECONDS}s: {', '.join(failing)}")
            say("see var/log/<process>.log for why (make logs)")
    code = honcho.wait()
    reader.join(timeout=10)
    if stack.stopping:
        # Ctrl-C (or SIGTERM) stopped the stack: a clean exit, whatever code honcho reports.
        say("stopped")
        return 0
    say(f"a process stopped on its own, so honcho stopped the others (exit {code}); see var/log/")
    return code or 1


if __name__ == "__main__":
    sys.exit(main())
