"""The t3.micro budget: the memory of the whole Custos core, databases included, while it trades.

Starts a private PostgreSQL and Redis configured by deploy/t3micro/ (tuned for 1 GiB of RAM), a
private Hardhat node with Uniswap V2, and the core processes with production settings and the
deploy/t3micro/custos.env sizes, each as the Procfile starts it (web under gunicorn, the execution,
signer, watcher and market workers, beat; not the ml worker). Then submits --trades swaps through
the API and waits until every one has ended, sampling every process's proportional set size (PSS,
from /proc/<pid>/smaps_rollup; shared pages are split between the processes sharing them, so the
figures add up) twice a second. Reports the peak PSS of each process group (a Celery worker is its
parent plus its pool children; PostgreSQL is the postmaster plus every backend), and the peak of
the total sampled at one instant. The Hardhat node stands for a remote RPC endpoint and is left
out. The baseline, measured in the same run, is the same total at rest before the first trade.
Target: the whole core under 700 MiB, leaving room for the OS in 1 GiB. JSON object is the last line.

Run: .venv/bin/python bench/footprint.py [--trades 200]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import free_port, funded_pkcs11_wallet, redis_start, say, softhsm_token, stop_groups  # noqa: E402 - after the path setup above

T3MICRO = ROOT / "deploy" / "t3micro"
BUDGET_MIB = 700
IS_ROOT = os.geteuid() == 0
# Credentials only the signer may hold (blanked for every other process, as in the Procfile).
SIGNER_ONLY = ("KEYSTORE_PASSPHRASE_FILE", "PKCS11_PIN_FILE", "VAULT_SECRET_ID_FILE", "VAULT_TOKEN_FILE")


def env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


# --- memory sampling -----------------------------------------------------------------------------


def pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(parent, []).append(int(entry))
    return kids


def tree(root: int, kids: dict[int, list[int]]) -> list[int]:
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


class Sampler(threading.Thread):
    """Peak PSS per group, and the peak of their sum at one instant."""

    def __init__(self, groups: dict[str, int], interval: float = 0.5):
        super().__init__(daemon=True)
        self.groups, self.interval = groups, interval
        self.peak: dict[str, int] = dict.fromkeys(groups, 0)
        self.processes: dict[str, int] = dict.fromkeys(groups, 0)
        self.peak_total = 0
        self.samples = 0
        self._halt = threading.Event()

    def sample(self) -> int:
        kids = children_map()
        total = 0
        for name, root in self.groups.items():
            pids = tree(root, kids)
            kib = sum(pss_kib(pid) for pid in pids)
            self.peak[name] = max(self.peak[name], kib)
            self.processes[name] = max(self.processes[name], len(pids))
            total += kib
        self.peak_total = max(self.peak_total, total)
        self.samples += 1
        return total

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


# --- private services ----------------------------------------------------------------------------


def as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if IS_ROOT else argv


def pg_bin() -> Path:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    raise SystemExit("PostgreSQL server binaries not found (apt-get install postgresql)")


def pg_start(tmp: Path, port: int) -> tuple[Path, int]:
    data = tmp / "pg"
    data.mkdir()
    if IS_ROOT:
        shutil.chown(data, "postgres", "postgres")
    bindir = pg_bin()
    subprocess.run(
        as_postgres([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8"]),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    conf = data / "t3micro.conf"  # a copy the postgres user can read wherever the checkout lives
    shutil.copy(T3MICRO / "postgresql.conf", conf)
    if IS_ROOT:
        shutil.chown(conf, "postgres", "postgres")
    with open(data / "postgresql.conf", "a") as main:
        main.write("\ninclude 't3micro.conf'\n")
    subprocess.run(
        as_postgres(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(data / "server.log"),
                "-w",
                "-o",
                f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={data}",
                "start",
            ]
        ),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    postmaster = int((data / "postmaster.pid").read_text().splitlines()[0])
    return data, postmaster


def pg_stop(data: Path) -> None:
    subprocess.run(
        as_postgres([str(pg_bin() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
        check=False,
        stdout=subprocess.DEVNULL,
    )


# --- the run -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=200)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="custos-footprint-"))
    tmp.chmod(0o755)  # the postgres user runs its cluster in here
    pg_port, redis_port, node_port, web_port = free_port(), free_port(), free_port(), free_port()
    processes: list[subprocess.Popen] = []
    pg_data = None
    node_pid_file = tmp / "node.pid"
    try:
        say(f"private PostgreSQL (deploy/t3micro/postgresql.conf) on 127.0.0.1:{pg_port}")
        pg_data, postmaster = pg_start(tmp, pg_port)
        say(f"private Redis (deploy/t3micro/redis.conf) on 127.0.0.1:{redis_port}")
        redis_pid = redis_start(tmp / "redis", redis_port, str(T3MICRO / "redis.conf"))
        hsm = softhsm_token(tmp / "softhsm", "footprint")
        database_url = f"postgres://postgres@127.0.0.1:{pg_port}/custos"
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        subprocess.run(
            as_postgres(["createdb", "-h", "127.0.0.1", "-p", str(pg_port), "-U", "postgres", "custos"]),
            check=True,
        )
        common = {
            **hsm,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "CHAIN_IDS": "31337",
            "KEY_BACKEND_DEFAULT": "pkcs11",
            "LOG_LEVEL": "WARNING",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(40),
            **env_file(T3MICRO / "custos.env"),
        }
        os.environ.update(common)
        os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings.base"
        import django

        django.setup()
        from django.core.management import call_command

        from apps.chain import devchain

        say("migrate, database roles, beat schedules")
        call_command("migrate", verbosity=0)
        call_command("setup_db_roles", verbosity=0)
        call_command("setup_schedules", verbosity=0)
        url = devchain.devchain_url(node_port)
        say(f"Hardhat node on {url} (stands for the remote RPC endpoint; not counted)")
        devchain.node_start(port=node_port, block_ms=0, pid_file=node_pid_file, log_file=tmp / "node.log")
        devchain.deploy_devchain(url=url, log=lambda _m: None)
        seeded = seed(url)

        prod = {**os.environ, **common, "DJANGO_SETTINGS_MODULE": "project.settings.production"}
        blank = dict.fromkeys(SIGNER_ONLY, "")
        py = sys.executable
        commands = {
            "web": (
                {"DB_ROLE": "custos_api", **blank},
                [
                    str(Path(py).parent / "gunicorn"),
                    "project.wsgi",
                    "--bind",
                    f"127.0.0.1:{web_port}",
                    "--workers",
                    common["WEB_WORKERS"],
                    "--worker-class",
                    "gthread",
                    "--threads",
                    common["WEB_THREADS"],
                    "--timeout",
                    "30",
                ],
            ),
            "worker-execution": (
                {"DB_ROLE": "custos_engine", **blank},
                [py, "manage.py", "run_worker", "execution"],
            ),
            "worker-signer": ({"DB_ROLE": "custos_signer"}, [py, "manage.py", "run_worker", "signer"]),
            "worker-watcher": (
                {"DB_ROLE": "custos_watcher", **blank},
                [py, "manage.py", "run_worker", "watcher"],
            ),
            "worker-market": (
                {"DB_ROLE": "custos_market", **blank},
                [py, "manage.py", "run_worker", "market"],
            ),
            "beat": ({"DB_ROLE": "custos_beat", **blank}, [py, "manage.py", "run_worker", "beat"]),
        }
        groups: dict[str, int] = {}
        for name, (extra, argv) in commands.items():
            log = open(tmp / f"{name}.log", "w")  # noqa: SIM115 - lives as long as the process
            argv = argv if name == "web" else [*argv, "--loglevel", "WARNING"]
            process = subprocess.Popen(
                argv,
                cwd=ROOT,
                env={**prod, **extra},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            processes.append(process)
            groups[name] = process.pid
        groups["postgresql"] = postmaster
        groups["redis"] = redis_pid
        say("core processes: " + ", ".join(f"{n} ({p})" for n, p in groups.items()))
        wait_web(web_port, seeded["token"], tmp)
        time.sleep(8)  # workers through their start checks and connected
        for name, process in zip(commands, processes, strict=True):
            if process.poll() is not None:
                raise SystemExit(f"{name} exited at start; see {tmp / (name + '.log')}")

        rest = Sampler(groups)
        for _ in range(6):
            rest.sample()
            time.sleep(0.5)
        say(
            f"at rest: {rest.peak_total / 1024:.0f} MiB in all: "
            + ", ".join(f"{name} {kib / 1024:.0f}" for name, kib in rest.peak.items())
        )

        sampler = Sampler(groups)
        sampler.start()
        start = time.perf_counter()
        ids = submit(web_port, seeded, args.trades)
        say(f"submitted {len(ids)} swaps through POST /api/v1/trades in {time.perf_counter() - start:.1f} s")
        states = wait_ended(ids, start, timeout=300 + 3 * args.trades)
        elapsed = time.perf_counter() - start
        sampler.stop()
        for name, process in zip(commands, processes, strict=True):
            if process.poll() is not None:
                say(f"warning: {name} exited during the run (code {process.returncode})")
    finally:
        stop_groups(processes)
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # noqa: BLE001, S110 - Django may not be set up yet
            pass
        if node_pid_file.exists():
            from apps.chain import devchain

            devchain.node_stop(node_pid_file)
        if (tmp / "redis" / "redis.pid").exists():
            try:
                os.kill(int((tmp / "redis" / "redis.pid").read_text().strip()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
        if pg_data is not None:
            pg_stop(pg_data)
        shutil.rmtree(tmp, ignore_errors=True)

    mib = {name: round(kib / 1024, 1) for name, kib in sampler.peak.items()}
    total = round(sampler.peak_total / 1024, 1)
    at_rest = round(rest.peak_total / 1024, 1)
    say("")
    say(f"{'process group':18s} {'processes':>9s} {'peak PSS MiB':>13s}")
    for name in groups:
        say(f"{name:18s} {sampler.processes[name]:9d} {mib[name]:13.1f}")
    say(f"{'total (one instant)':18s} {'':9s} {total:13.1f}   at rest {at_rest:.1f}   budget {BUDGET_MIB}")
    say(
        f"{len(ids)} swaps in {elapsed:.1f} s: "
        + ", ".join(f"{state} {count}" for state, count in sorted(states.items()))
        + f"; {sampler.samples} samples"
    )
    print(
        json.dumps(
            {
                "bench": "footprint",
                "trades": len(ids),
                "ended": states,
                "seconds": round(elapsed, 1),
                "peak_pss_mib": mib,
                "peak_total_mib": total,
                "at_rest_total_mib": at_rest,
                "ratio_to_rest": round(total / at_rest, 3) if at_rest else None,
                "budget_mib": BUDGET_MIB,
                "meets_target": total < BUDGET_MIB,
                "samples": sampler.samples,
                "settings": env_file(T3MICRO / "custos.env"),
            }
        )
    )


def seed(url: str) -> dict:
    """An owner with an API token and a funded pkcs11 wallet with a scope; one confirmation settles."""
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from apps.chain.models import Chain, Dex, Token
    from apps.gateway.services import api_token_create

    Chain.objects.update(confirmations_required=1)
    user = get_user_model().objects.create(username="footprint")
    token = api_token_create(user=user, name="footprint", level="trade").raw  # submits trades
    wallet = funded_pkcs11_wallet(url=url, owner=user, label="footprint")
    return {
        "token": token,
        "wallet": wallet.pk,
        "dex": Dex.objects.get().pk,
        "path": [Token.objects.get(symbol="dUSDC").address, Token.objects.get(symbol="dDAI").address],
        "deadline": (timezone.now() + timedelta(minutes=55)).isoformat(),
    }


def wait_web(port: int, token: str, tmp: Path) -> None:
    import httpx

    for _ in range(200):
        try:
            if (
                httpx.get(f"http://127.0.0.1:{port}/api/v1/ping", headers=auth(token), timeout=2).status_code
                == 200
            ):
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"gunicorn did not answer; see {tmp / 'web.log'}")


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def submit(port: int, seeded: dict, n: int) -> list[int]:
    import httpx

    body = {
        "wallet": seeded["wallet"],
        "chain_id": 31337,
        "dex": seeded["dex"],
        "path": seeded["path"],
        "amount_in": "10",
        "slippage_bps": 100,
        "deadline": seeded["deadline"],
    }
    ids = []
    with httpx.Client(
        base_url=f"http://127.0.0.1:{port}", headers=auth(seeded["token"]), timeout=30
    ) as client:
        for i in range(n):
            response = client.post(
                "/api/v1/trades", json=body, headers={"Idempotency-Key": f"footprint-{i:06d}"}
            )
            if response.status_code not in (200, 201, 202):
                raise SystemExit(
                    f"POST /api/v1/trades answered {response.status_code}: {response.text[:300]}"
                )
            ids.append(response.json()["id"])
    return ids


def wait_ended(ids: list[int], start: float, timeout: float) -> dict[str, int]:
    from django.db import OperationalError
    from django.db.models import Count

    from apps.trades.models import Trade

    terminal = {"SETTLED", "REJECTED", "FAILED", "CANCELLED", "FINALITY_VIOLATED"}
    last_report = 0.0
    states: dict[str, int] = {}
    while time.perf_counter() - start < timeout:
        try:
            states = dict(
                Trade.objects.filter(pk__in=ids).values_list("state").annotate(n=Count("id")).order_by()
            )
        except OperationalError:  # cancelled by the workers' SERIALIZABLE writes: read again
            time.sleep(0.2)
            continue
        done = sum(count for state, count in states.items() if state in terminal)
        if time.perf_counter() - last_report >= 10:
            say(f"  {time.perf_counter() - start:5.0f} s: {done}/{len(ids)} ended")
            last_report = time.perf_counter()
        if done == len(ids):
            return states
        time.sleep(0.5)
    raise SystemExit(f"not every trade ended within {timeout:.0f} s: {states}")


if __name__ == "__main__":
    main()
