"""The chaos run: trades over several wallets while workers die, Redis restarts, an RPC endpoint
goes down and the chain reorganises; then the invariants are checked.

Private Hardhat node (automine off: this script mines a block every --block-ms, as a chain would),
a private Redis, a throwaway database; real execution, signer and watcher workers, each as its own
database role. The chain has two RPC endpoints: the node itself and a fault-injecting proxy in front
of it. While the trades run, at random moments (seeded): a worker (execution, signer or watcher)
is killed with SIGKILL and restarted; Redis is restarted (its queues are lost: recovery must find
every step again); the proxy endpoint drops every request for a few seconds; the chain reorganises
1 to 5 blocks deep (evm_snapshot, blocks, evm_revert, other blocks). At the end it checks: every
trade is in a terminal state and none is lost; no nonce carries two different mined payloads and no
nonce has two different original signed payloads; no trade settled on a block that is not
canonical now; the audit chain verifies. Prints those counts and the wall time; JSON last line;
exit status 1 when an invariant is broken.

Run: .venv/bin/python bench/chaos.py [--trades 300] [--wallets 3] [--seed 7]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import free_port, redis_start, say  # noqa: E402 - after the path setup above

SECRETS = ("KEYSTORE_PASSPHRASE_FILE", "PKCS11_PIN_FILE", "VAULT_SECRET_ID_FILE", "VAULT_TOKEN_FILE")
WORKERS = {"execution": "custos_engine", "signer": "custos_signer", "watcher": "custos_watcher"}


class Redis:
    def __init__(self, tmp: Path):
        self.port, self.dir = free_port(), tmp / "redis"
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        redis_start(self.dir, self.port, "--save", "", "--appendonly", "no")

    def stop(self) -> None:
        import redis

        try:
            redis.Redis.from_url(self.url, socket_timeout=2).shutdown(nosave=True)
        except redis.ConnectionError:
            pass  # a shutdown closes the connection it was sent on
        for _ in range(100):
            if not (self.dir / "redis.pid").exists():
                return
            time.sleep(0.05)


class Workers:
    def __init__(self, tmp: Path, env: dict[str, str]):
        self.tmp, self.env = tmp, env
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str) -> None:
        env = {**self.env, "DB_ROLE": WORKERS[name]}
        if name != "signer":
            env.update(dict.fromkeys(SECRETS, ""))
        log = open(self.tmp / f"{name}.log", "a")  # noqa: SIM115 - owned by the child
        self.processes[name] = subprocess.Popen(
            [sys.executable, "manage.py", "run_worker", name, "--loglevel", "WARNING"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self, name: str) -> None:
        process = self.processes[name]
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        for process in self.processes.values():
            process.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=300)
    parser.add_argument("--wallets", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--block-ms", type=int, default=400)
    parser.add_argument("--timeout", type=float, default=0, help="seconds (default: 120 + 3 per trade)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="custos-chaos-"))
    redis_server = Redis(tmp)
    redis_server.start()
    (tmp / "keystore.pass").write_text("chaos passphrase")
    common = {
        "REDIS_URL": redis_server.url,
        "TEST_REDIS_URL": redis_server.url,
        "DATABASE_TEST_NAME": "bench_chaos",
        "CHAIN_IDS": "31337",
        "KEYSTORE_DIR": str(tmp / "keystore"),
        "KEYSTORE_PASSPHRASE_FILE": str(tmp / "keystore.pass"),
        "KEYSTORE_SCRYPT_N": "1024",
        "TRADE_STALL_SECONDS": "4",
        "CELERY_VISIBILITY_TIMEOUT": "20",
        "CELERY_TASK_TIME_LIMIT": "15",
        "CELERY_TASK_SOFT_TIME_LIMIT": "12",
        "LOG_LEVEL": "WARNING",
    }
    os.environ.update(common)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings.test")
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection

    from apps.chain import devchain

    port = free_port()
    url = devchain.devchain_url(port)
    say(f"Hardhat node on {url}, private Redis on {redis_server.url}")
    devchain.node_start(port=port, block_ms=0, pid_file=tmp / "node.pid", log_file=tmp / "node.log")
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    workers = None
    proxy = None
    try:
        devchain.deploy_devchain(url=url, log=lambda _m: None)
        db = connection.settings_dict
        env = {
            **os.environ,
            **common,
            "DJANGO_SETTINGS_MODULE": "project.settings.base",
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        }
        for name, value in common.items():
            if name.startswith("KEYSTORE_"):
                setattr(settings, name, int(value) if name == "KEYSTORE_SCRYPT_N" else value)
        workers = Workers(tmp, env)
        result, proxy = run(args, rng, url, workers, redis_server)
    finally:
        if workers is not None:
            workers.stop_all()
        if proxy is not None:
            proxy.close()
        connection.close()
        connection.creation.destroy_test_db(old_name, verbosity=0)
        devchain.node_stop(tmp / "node.pid")
        redis_server.stop()
    say(json.dumps(result))
    return 0 if result["invariants_hold"] else 1


def run(args, rng: random.Random, url: str, workers: Workers, redis_server: Redis):
    from datetime import timedelta

    from django.db import connection
    from django.utils import timezone
    from web3 import Web3

    from apps.chain import devchain
    from apps.chain.models import Chain, Dex, RpcEndpoint, Token
    from apps.signing import services as signer
    from apps.trades import real_money_transaction_manager as rmtm
    from apps.trades.models import TERMINAL, Trade
    from apps.wallets.services import wallet_create
    from project.db import serializable_attempts
    from project.db_roles import setup_roles
    from tests.chain.faultproxy import FaultProxy
    from tests.factories import UserFactory, grant_scope

    w3 = Web3(Web3.HTTPProvider(url))
    w3.provider.make_request("hardhat_setLoggingEnabled", [False])
    setup_roles(database=connection.settings_dict["NAME"])
    chain = Chain.objects.get(chain_id=31337)
    # Deeper than any reorg this run makes (5): what an owner configures for a chain's real depth.
    Chain.objects.filter(pk=chain.pk).update(confirmations_required=6)
    proxy = FaultProxy(url)
    RpcEndpoint.objects.create(
        chain=chain, name="flaky-proxy", url=proxy.url, priority=1, rate_limit_per_second=0
    )
    dex = Dex.objects.get()
    usdc, dai = Token.objects.get(symbol="dUSDC"), Token.objects.get(symbol="dDAI")
    signer.backend.cache_clear()
    wallets = []
    for i in range(args.wallets):
        wallet = signer.wallet_key_create(
            wallet_id=wallet_create(owner=UserFactory(), label=f"chaos-{i}", key_backend="keystore").pk
        )
        devchain.fund_address(url=url, address=wallet.address, eth=Decimal(50), token_units=10**6)
        grant_scope(wallet, max_amount_in=10**12, valid_until=timezone.now() + timedelta(days=1))
        wallets.append(wallet)
    w3.provider.make_request("evm_setAutomine", [False])
    for name in WORKERS:
        workers.start(name)
    time.sleep(6)  # through their start checks
    from celery_app import app

    def send(task: str) -> None:
        try:
            app.send_task(task)
        except Exception:  # noqa: BLE001 - Redis may be restarting right now: beat would miss it too
            missed["ticks_not_sent"] += 1

    def read(query):
        for attempt in serializable_attempts(label="chaos read"):
            with attempt:
                value = query()
        return value

    def mine(blocks: int = 1) -> None:
        for _ in range(blocks):
            w3.provider.make_request("evm_mine", [])

    start = time.perf_counter()
    ids: list[int] = []
    for i in range(args.trades):
        wallet = wallets[i % len(wallets)]
        ids.append(
            rmtm.trade_submit(
                owner=wallet.owner,
                wallet=wallet,
                dex=dex,
                path=[usdc.address, dai.address],
                amount_in=(5 + i % 7) * 10**6,
                slippage_bps=100,
                idempotency_key=f"chaos-{i}",
                deadline=timezone.now() + timedelta(minutes=30),
            ).trade.pk
        )
    say(f"submitted {len(ids)} swaps over {len(wallets)} wallets")
    events: Counter = Counter()
    missed: Counter = Counter()
    # Every kind of fault at least once, in a seeded order, then at random.
    first = [*(f"kill:{name}" for name in WORKERS), "redis", "rpc", "reorg"]
    rng.shuffle(first)
    restart_at: dict[str, float] = {}
    proxy_back_at = 0.0
    reorg: dict | None = None
    timeout = args.timeout or 120 + 3 * args.trades
    deadline = time.monotonic() + timeout
    next_chaos = time.monotonic() + 2
    last_report = 0.0
    states: dict[int, str] = {}
    interval = args.block_ms / 1000
    quiet_until: float | None = None
    while time.monotonic() < deadline:
        now = time.monotonic()
        for name, when in list(restart_at.items()):
            if now >= when:
                workers.start(name)
                del restart_at[name]
        if proxy.drop and now >= proxy_back_at:
            proxy.drop = False
        if reorg is not None and w3.eth.block_number >= reorg["until"]:
            w3.provider.make_request("evm_revert", [reorg["snapshot"]])
            w3.provider.make_request("hardhat_setCoinbase", ["0x" + os.urandom(20).hex()])
            mine(reorg["depth"] + 1)
            events[f"reorg_depth_{reorg['depth']}"] += 1
            reorg = None
        if now >= next_chaos and len(restart_at) < 2:
            kind = first.pop() if first else rng.choice(["kill", "kill", "redis", "rpc", "reorg"])
            if kind.startswith("kill"):
                name = kind.partition(":")[2] or rng.choice([n for n in WORKERS if n not in restart_at])
                if name in restart_at:
                    first.append(kind)  # still down from before: its turn comes again
                    next_chaos = now + 1
                    continue
                workers.kill(name)
                restart_at[name] = now + rng.uniform(0.5, 3)
                events[f"kill_{name}"] += 1
            elif kind == "redis":
                redis_server.stop()
                time.sleep(rng.uniform(0.2, 1.5))
                redis_server.start()
                events["redis_restart"] += 1
            elif kind == "rpc" and not proxy.drop:
                proxy.drop = True
                proxy_back_at = now + rng.uniform(2, 6)
                events["rpc_endpoint_down"] += 1
            elif kind == "reorg" and reorg is None:
                depth = rng.randint(1, 5)
                snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
                reorg = {"snapshot": snapshot, "depth": depth, "until": w3.eth.block_number + depth}
            next_chaos = now + rng.uniform(2, 6)
        mine(1)
        send("trades.tick")
        send("watcher.tick_all")
        try:
            states = dict(read(lambda: list(Trade.objects.filter(pk__in=ids).values_list("pk", "state"))))
        except Exception:  # noqa: BLE001 - a read the workers' writes kept cancelling: next round
            states = states or {}
        done = sum(1 for s in states.values() if s in TERMINAL)
        if now - last_report >= 10:
            elapsed = time.perf_counter() - start
            say(f"  {elapsed:5.0f} s: {done}/{len(ids)} ended; chaos so far {dict(events)}")
            last_report = now
        if done == len(ids) and reorg is None and not restart_at and not first and not proxy.drop:
            if quiet_until is None:
                quiet_until = now + 5  # a few more ticks: the watcher sees the last reorg
            elif now >= quiet_until:
                break
        time.sleep(interval)
    for name in list(restart_at):
        workers.start(name)
    elapsed = time.perf_counter() - start
    result = check(ids, wallets, w3, states, events, elapsed)
    result["ticks_not_sent"] = missed["ticks_not_sent"]  # while Redis was down, as beat's would be
    return result, proxy


def check(ids, wallets, w3, states, events, elapsed) -> dict:
    from apps.signing.models import SigningRecord
    from apps.trades.audit import audit_verify
    from apps.trades.models import TERMINAL, ChainTransaction, Trade, TradeEvent

    final = dict(Trade.objects.filter(pk__in=ids).values_list("pk", "state"))
    lost = len(ids) - len(final)
    not_terminal = [pk for pk, state in final.items() if state not in TERMINAL]
    mined = defaultdict(set)
    for tx in ChainTransaction.objects.filter(trade_id__in=ids, status="mined").select_related("trade"):
        mined[(tx.trade.wallet_id, int(tx.nonce))].add(tx.unsigned_hash)
    originals = defaultdict(set)
    for record in SigningRecord.objects.filter(trade_id__in=ids, replaces__isnull=True):
        originals[(record.wallet_id, int(record.nonce))].add(record.payload_hash)
    nonce_doubled = sum(1 for p in mined.values() if len(p) > 1) + sum(
        1 for p in originals.values() if len(p) > 1
    )
    orphaned = 0
    for tx in ChainTransaction.objects.filter(
        trade__in=[pk for pk, s in final.items() if s == "SETTLED"]
    ).exclude(receipt_block_hash=""):
        block = w3.eth.get_block(int(tx.receipt_block_number))
        if "0x" + bytes(block["hash"]).hex() != tx.receipt_block_hash:
            orphaned += 1
    checked, broken = audit_verify(trade_ids=ids)
    sent_back = (
        TradeEvent.objects.filter(trade_id__in=ids, kind="reconfirm", data__has_key="reorg")
        .values("trade_id")
        .distinct()
        .count()
    )
    by_state = Counter(final.values())
    reasons = Counter(
        reason.split(":")[0][:80]
        for reason in Trade.objects.filter(pk__in=ids)
        .exclude(state="SETTLED")
        .values_list("reason", flat=True)
    )
    result = {
        "bench": "chaos",
        "trades": len(ids),
        "wallets": len(wallets),
        "seconds": round(elapsed, 1),
        "states": dict(by_state),
        "lost": lost,
        "not_terminal": len(not_terminal),
        "nonces_with_two_payloads": nonce_doubled,
        "settled_on_orphaned_block": orphaned,
        "audit_events_checked": checked,
        "audit_broken_link": None if broken is None else str(broken),
        "chaos": dict(events),
        "trades_sent_back_by_a_reorg": sent_back,
        "reasons_not_settled": dict(reasons.most_common(5)),
    }
    result["invariants_hold"] = (
        lost == 0 and not not_terminal and nonce_doubled == 0 and orphaned == 0 and broken is None
    )
    audit = "verifies" if broken is None else f"BROKEN: {broken}"
    say(
        f"{len(ids)} trades in {elapsed:.0f} s: {dict(by_state)}; lost {lost}, "
        f"not terminal {len(not_terminal)}, nonces with two payloads {nonce_doubled}, "
        f"settled on an orphaned block {orphaned}, audit {audit} ({checked} events); chaos {dict(events)}"
    )
    say(f"trades whose receipt a reorg orphaned (cleared, re-broadcast, re-mined): {sent_back}")
    if reasons:
        say(f"why not settled: {dict(reasons.most_common(5))}")
    return result


if __name__ == "__main__":
    sys.exit(main())
