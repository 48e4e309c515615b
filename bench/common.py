"""What every benchmark script needs: output, a free loopback port, a throwaway SoftHSM token."""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
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


# One core's thief: pinned to its core, at real-time priority (it preempts every ordinary process
# there), busy for `busy` of each period and asleep for the rest, so the core is left to everything
# else for the rest of each period, as a hypervisor throttling a burstable instance's vCPU does. It
# ends by itself once its parent (the bench) is gone or after `lifetime` seconds, so a bench killed
# with SIGKILL does not leave a machine loaded behind it.
_THIEF = """
import os, sys, time
parent, core, busy, period, lifetime = int(sys.argv[1]), int(sys.argv[2]), *map(float, sys.argv[3:])
os.sched_setaffinity(0, {core})
try:
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
except PermissionError:
    os.nice(-20) if os.geteuid() == 0 else None
until = time.monotonic() + lifetime
while os.getppid() == parent and time.monotonic() < until:
    start = time.monotonic()
    while time.monotonic() - start < busy * period:
        pass
    time.sleep(max(0.0, start + period - time.monotonic()))
"""


class CpuLoad:
    """A slow machine on a fast one: on each of `cores` cores (from the first), a process that takes
    `busy` (0..1) of every `period_ms` from everything else on that core, at real-time priority
    (SCHED_FIFO; with no right to it, nice -20 as root, which the kernel does not hold to the
    fraction). start(), and stop() in a finally."""

    def __init__(self, cores: int, busy: float, period_ms: float = 10, lifetime: float = 3600):
        self.cores, self.busy, self.period_ms, self.lifetime = cores, busy, period_ms, lifetime
        self.running: list[subprocess.Popen] = []

    def describe(self) -> str:
        return (
            f"a real-time busy loop on each of {self.cores} core(s), {self.busy:.0%} of every"
            f" {self.period_ms:g} ms"
        )

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.running]

    def start(self) -> None:
        cpus = sorted(os.sched_getaffinity(0))
        for core in range(self.cores):
            args = [os.getpid(), cpus[core % len(cpus)], self.busy, self.period_ms / 1000, self.lifetime]
            self.running.append(
                subprocess.Popen([sys.executable, "-c", _THIEF, *map(str, args)], start_new_session=True)
            )

    def stop(self) -> None:
        stop_groups(self.running, timeout=5)
        self.running = []


def trade_steps(trade_ids) -> dict[int, list[tuple[str, object]]]:
    """Each trade's audit events as (kind, created_at) in chain order, from its submission up to and
    including its settle (a caller inside Django, reading the trades' TradeEvent rows)."""
    from apps.trades.models import TradeEvent

    steps: dict[int, list[tuple[str, object]]] = {}
    events = TradeEvent.objects.filter(trade_id__in=list(trade_ids)).order_by("trade_id", "id")
    for trade_id, kind, at in events.values_list("trade_id", "kind", "created_at"):
        trail = steps.setdefault(trade_id, [])
        if not trail or trail[-1][0] != "settle":
            trail.append((kind, at))
    return steps


def longest_gaps(steps: dict[int, list[tuple[str, object]]], now) -> dict[int, tuple[float, str, str]]:
    """Each trade's longest wait between two consecutive steps: (seconds, step before, step after).
    A trade not settled has an open last gap, to `now`, whose step after is '(not settled)'."""
    gaps = {}
    for trade_id, trail in steps.items():
        if trail[-1][0] != "settle":
            trail = [*trail, ("(not settled)", now)]
        pairs = zip(trail, trail[1:], strict=False)
        gaps[trade_id] = max(((b[1] - a[1]).total_seconds(), a[0], b[0]) for a, b in pairs)
    return gaps


class ExtrasFormatter(logging.Formatter):
    """The log line, then its record's `extra` fields (the trade, the wallet...) as JSON."""

    _standard = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = {k: v for k, v in vars(record).items() if k not in self._standard}
        return f"{line} {json.dumps(extra, default=str)}" if extra else line


def traced_worker_settings(directory: Path, base: str = "project.settings.base") -> str:
    """A settings module written to `directory` (put it on PYTHONPATH; the module's name is returned):
    `base`, with each worker log line carrying its extra fields (ExtrasFormatter) and one line per
    task start, retry and end naming its arguments: what a worker did to which trade, and when."""
    import importlib.util

    # `base` is loaded from its file, not imported: importing it imports its package first, which
    # (project/__init__.py -> celery_app) reads the settings, i.e. this module, not yet there.
    origin = importlib.util.find_spec(base).origin
    (directory / "bench_worker_settings.py").write_text(
        "import importlib.util\n"
        f"_spec = importlib.util.spec_from_file_location('_base_settings', {origin!r})\n"
        "_base = importlib.util.module_from_spec(_spec)\n"
        "_spec.loader.exec_module(_base)\n"
        "globals().update({k: v for k, v in vars(_base).items() if k.isupper()})\n"
        "from bench.common import trace_tasks\n"
        "LOGGING = trace_tasks(LOGGING)\n"
    )
    return "bench_worker_settings"


def trace_tasks(config: dict) -> dict:
    from celery import signals

    log = logging.getLogger("bench.task")

    def started(task_id=None, task=None, args=None, **_):
        log.info("task start %s %s %s", task.name, task_id, args)

    def ended(task_id=None, task=None, args=None, state=None, **_):
        log.info("task end %s %s %s %s", task.name, task_id, args, state)

    def retried(request=None, reason=None, **_):
        log.info("task retry %s %s %s: %r", request.task, request.id, request.args, reason)

    signals.task_prerun.connect(started, weak=False)
    signals.task_postrun.connect(ended, weak=False)
    signals.task_retry.connect(retried, weak=False)
    config = {**config, "formatters": {**config["formatters"]}}
    config["formatters"]["plain"] = {
        "()": "bench.common.ExtrasFormatter",
        "format": "%(asctime)s %(process)d %(levelname)s %(name)s %(message)s",
    }
    return config


def stall_summary(
    steps: dict[int, list[tuple[str, object]]], now, threshold: float, t0, worst: int = 3
) -> dict:
    """From trade_steps: how many trades waited over `threshold` seconds between two consecutive
    steps, by which two steps, the worst gap, and the `worst` stalled trades' timelines (seconds from
    each trade's submission, after `first_request_s`: when it was submitted, from t0)."""
    gaps = longest_gaps(steps, now)
    ranked = sorted(gaps, key=lambda t: -gaps[t][0])
    over = [t for t in ranked if gaps[t][0] > threshold]
    timelines = {}
    for trade_id in over[:worst]:
        first = steps[trade_id][0][1]
        timelines[trade_id] = [("first_request_s", round((first - t0).total_seconds(), 2))] + [
            (kind, round((at - first).total_seconds(), 2)) for kind, at in steps[trade_id]
        ]
    gap, before, after = gaps[ranked[0]] if ranked else (0.0, "", "")
    return {
        "gap_threshold_s": threshold,
        "trades_over": len(over),
        "over_by_steps": dict(Counter(f"{gaps[t][1]} -> {gaps[t][2]}" for t in over).most_common()),
        "worst_gap_s": round(gap, 2),
        "worst_trade": ranked[0] if ranked else None,
        "worst_steps": [before, after],
        "worst_timelines": timelines,
    }


def serializable_read(query):
    """A harness's read of the database, retried like the workers' SERIALIZABLE transactions (the
    workers' writes can cancel it)."""
    from project.db import serializable_attempts

    for attempt in serializable_attempts(label="bench read"):
        with attempt:
            result = query()
    return result


def wait_for_workers(app, queues, *, timeout: float = 120, logs: Path | None = None) -> None:
    """Until a worker of each of `queues` (hostnames queue@host) answers a ping."""
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        if {name.split("@")[0] for reply in app.control.ping(timeout=1.0) for name in reply} >= set(queues):
            return
    raise SystemExit(f"the workers did not answer within {timeout:.0f} s; see their logs in {logs}")


def start_workers(directory: Path, env: dict, concurrency_of: dict[str, str], processes: list) -> None:
    """`manage.py run_worker <queue>` for each queue of `concurrency_of` (queue -> pool children), on
    the database and Redis `env` names, each in its own session (appended to `processes`, for
    stop_groups) and its own log in `directory` (traced: traced_worker_settings; at
    BENCH_WORKER_LOGLEVEL, WARNING by default); returns once each answers a ping."""
    from django.conf import settings
    from django.db import connection

    from celery_app import app

    root = Path(__file__).resolve().parent.parent
    db = connection.settings_dict
    level = os.environ.get("BENCH_WORKER_LOGLEVEL", "WARNING")
    env = {
        **os.environ,
        **env,
        "DJANGO_SETTINGS_MODULE": traced_worker_settings(directory),
        "PYTHONPATH": os.pathsep.join([str(directory), str(root)]),
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "CHAIN_IDS": "31337",
        "LOG_LEVEL": level,
    }
    role_of = {"execution": "custos_engine", "signer": "custos_signer"}
    for queue, concurrency in concurrency_of.items():
        processes.append(
            subprocess.Popen(
                [sys.executable, "manage.py", "run_worker", queue, "--loglevel", level],
                cwd=root,
                env={**env, "DB_ROLE": role_of[queue], f"WORKER_CONCURRENCY_{queue.upper()}": concurrency},
                stdout=open(directory / f"{queue}.log", "w"),  # noqa: SIM115
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    wait_for_workers(app, concurrency_of, logs=directory)  # they check the database, broker and chain


def step_timeline(steps: dict[int, list[tuple[str, object]]], t0) -> dict[str, list]:
    """From trade_steps: for each kind of step, how often it happened (retries and refusals show up
    as extra events) and its first, median and last time in seconds from t0, by median time."""
    at_of: dict[str, list[float]] = {}
    for trail in steps.values():
        for kind, at in trail:
            at_of.setdefault(kind, []).append((at - t0).total_seconds())
    return {
        kind: [len(v), round(min(v), 2), round(statistics.median(v), 2), round(max(v), 2)]
        for kind, v in sorted(at_of.items(), key=lambda kv: statistics.median(kv[1]))
    }
