"""The whole pipeline against a plain web3.py loop and against the node's ceiling, in one run.

On a private Hardhat node (automine, console logging off), with a throwaway database and Redis
database, real execution and signer workers (pkcs11 backend on a temporary SoftHSM token):
- pipeline, one wallet: N swaps submitted at once, each an exact-amount approve plus the swap,
  through simulate, validate, sign, persist and broadcast; then the same N spread over several
  wallets (--wallets, 4 by default: N/4 each, submitted at once, round robin);
- (a) a plain web3.py loop doing the same swaps one by one: quote, build, estimate, sign with
  eth-account, send, wait for each receipt; measured again just before each pipeline run (for the
  several-wallet run it takes its keys in turn: one swap at a time all the same);
- (b) the node's ceiling: the same transactions pre-signed and sent in a loop.
Prints swaps per second to mined for each and the ratios; request-to-broadcast latency (p50, p99)
of each burst, with its p99 against 1.5 x the burst's own duration (n / throughput); and again for
a short run of requests paced at half the measured throughput, once the burst has settled.
Stalls: once a burst has settled, every trade's longest wait between two consecutive steps of its
audit trail (submitted ... settle); the trades waiting over 5 s, the worst gap and, for the worst
trades, their whole timeline. A JSON object is the last line.

--slow: the same runs on a slow machine, as a burstable instance out of CPU credits is: CpuLoad
(bench/common.py) takes BENCH_SLOW_BUSY (0.6) of every 10 ms on each of BENCH_SLOW_CORES (2) cores
with a real-time busy loop, from before (b) until the end (stopped in a finally); the node,
PostgreSQL, the workers and the harness share what is left. Every baseline runs under the same load
in the same run; the loop is also measured briefly before the load starts, and the slowdown printed
(about 0.3 x on this 2-core machine: default-priority busy loops, even at nice -10 and one per core,
left it at 0.75-1.0 x, since the loop mostly waits and the scheduler lets a waking process in first).

Targets: one wallet >= 1.3 x (a) (>= 1.0 x with --slow), several wallets >= 2 x (a), no trade with a
step gap over 5 s, burst p99 <= 1.5 x the burst's duration, and p50 < 300 ms on the paced run (not
--slow): the pipeline's own latency. A burst's p50 is time spent queued behind the burst's first
half, about (n/2)/throughput, above this node's ceiling (b) for 300 ms: printed, not judged.

Run: .venv/bin/python bench/pipeline.py [--trades 200] [--wallets 4] [--slow] [--quick]
(BENCH_EXECUTION_CONCURRENCY / BENCH_SIGNER_CONCURRENCY: pool children per worker, by default the
settings' WORKER_CONCURRENCY_EXECUTION and 1 signer child, as an HSM deployment runs them;
BENCH_WORKER_LOGLEVEL=INFO keeps each task's start, retry and end, with its arguments, and the
engine's log lines with their trade in the workers' logs under the temporary directory printed
first.)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402 - after the path setup above
    CpuLoad,
    CpuMeter,
    free_port,
    funded_pkcs11_wallet,
    say,
    serializable_read,
    softhsm_token,
    stall_summary,
    start_workers,
    step_timeline,
    stop_groups,
    trade_steps,
)

ENDED = ("REJECTED", "FAILED", "CANCELLED")
GAP_S = 5.0  # a wait between two steps of one trade longer than this is a stall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trades", type=int, default=200)
    parser.add_argument("--wallets", type=int, default=4, help="wallets of the second burst")
    parser.add_argument("--slow", action="store_true", help="under a CPU load: a slow machine")
    parser.add_argument("--quick", action="store_true", help="30 trades")
    args = parser.parse_args()
    n = 30 if args.quick else args.trades
    tmp = Path(tempfile.mkdtemp(prefix="custos-pipeline-"))
    say(f"temporary directory (workers' logs): {tmp}")
    token = softhsm_token(tmp, "pipeline")
    redis_db = os.environ.get("BENCH_REDIS_DB", "12")
    env_common = {
        **token,
        "TEST_REDIS_URL": f"redis://127.0.0.1:6379/{redis_db}",
        "DATABASE_TEST_NAME": "bench_pipeline",
    }
    os.environ.update(env_common)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings.test")
    import django

    django.setup()
    import redis
    from django.conf import settings
    from django.db import connection

    from apps.chain import devchain

    load = None
    if args.slow:
        load = CpuLoad(
            int(os.environ.get("BENCH_SLOW_CORES", "2")), float(os.environ.get("BENCH_SLOW_BUSY", "0.6"))
        )
    port = free_port()
    url = devchain.devchain_url(port)
    say(f"starting hardhat on {url}")
    devchain.node_start(port=port, block_ms=0, pid_file=tmp / "node.pid", log_file=tmp / "node.log")
    workers: list[subprocess.Popen] = []
    old_name = connection.settings_dict["NAME"]
    # A SIGTERM (a timeout, a stopped job) unwinds through the finally below, as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
        redis.Redis.from_url(settings.REDIS_URL).flushdb()
        from web3 import Web3

        w3 = Web3(Web3.HTTPProvider(url))
        w3.provider.make_request("hardhat_setLoggingEnabled", [False])
        devchain.deploy_devchain(url=url, log=lambda _m: None)
        bench = Bench(url, tmp, env_common, workers, load)
        results = bench.run(n, max(1, args.wallets))
    finally:
        if load:
            load.stop()
        stop_groups(workers)
        connection.close()
        if connection.settings_dict["NAME"] != old_name:  # the test database was made
            connection.creation.destroy_test_db(old_name, verbosity=0)
        devchain.node_stop(tmp / "node.pid")
    print(json.dumps(results))


class Bench:
    def __init__(self, url: str, tmp: Path, env_common: dict, workers: list, load: CpuLoad | None):
        from web3 import Web3

        from apps.chain import devchain
        from apps.chain.models import Chain, Dex, Token

        self.url, self.tmp, self.env_common, self.workers, self.load = url, tmp, env_common, workers, load
        self.w3 = w3 = Web3(Web3.HTTPProvider(url))
        Chain.objects.update(confirmations_required=1)
        self.dex = Dex.objects.get()
        self.usdc, self.dai = Token.objects.get(symbol="dUSDC"), Token.objects.get(symbol="dDAI")
        self.path = [self.usdc.address, self.dai.address]
        self.amount = 10 * 10**6
        abi = devchain.load_artifact
        self.router = w3.eth.contract(address=self.dex.router, abi=abi("UniswapV2Router02")["abi"])
        self.erc20 = w3.eth.contract(address=self.usdc.address, abi=abi("DevToken")["abi"])
        self.node_pid = int((tmp / "node.pid").read_text())
        self.next_tick = 0.0

    def funded_keys(self, count: int) -> list:
        from eth_account import Account

        from apps.chain import devchain

        keys = [Account.create() for _ in range(count)]
        for key in keys:
            devchain.fund_address(url=self.url, address=key.address, eth=Decimal(100), token_units=10**6)
        return keys

    def ceiling(self, n: int) -> float:
        """(b) pre-signed approve + swap pairs sent in a loop."""
        from eth_account import Account

        (key,) = self.funded_keys(1)
        latest = self.w3.eth.get_block("latest")
        fees = {
            "maxFeePerGas": 2 * latest["baseFeePerGas"] + 10**9,
            "maxPriorityFeePerGas": 10**9,
            "chainId": self.w3.eth.chain_id,
        }
        raw = []
        for i in range(n):
            approve = self.erc20.functions.approve(self.dex.router, self.amount).build_transaction(
                {**fees, "from": key.address, "nonce": 2 * i, "gas": 60_000}
            )
            swap = self.router.functions.swapExactTokensForTokens(
                self.amount, 0, self.path, key.address, latest["timestamp"] + 3600
            ).build_transaction({**fees, "from": key.address, "nonce": 2 * i + 1, "gas": 250_000})
            raw += [Account.sign_transaction(tx, key.key).raw_transaction for tx in (approve, swap)]
        start = time.perf_counter()
        for tx in raw:
            last = self.w3.eth.send_raw_transaction(tx)
        self.w3.eth.wait_for_transaction_receipt(last)
        return n / (time.perf_counter() - start)

    def loop(self, n: int, keys: list) -> tuple[float, dict]:
        """(a) one swap at a time, taking `keys` in turn: swaps/s and the CPU seconds it used."""
        from eth_account import Account

        from apps.trades.models import ChainTransaction
        from apps.trades.real_money_transaction_manager.payloads import with_margin

        w3 = self.w3

        def send(tx: dict, key, kind: str = "") -> None:
            # The same margin Custos adds, with its headroom for a swap's first price-accumulator
            # writes (a swap estimated in one block and mined in the next can need them).
            tx["gas"] = with_margin(w3.eth.estimate_gas(tx), kind)
            sent = w3.eth.send_raw_transaction(Account.sign_transaction(tx, key.key).raw_transaction)
            w3.eth.wait_for_transaction_receipt(sent)

        meter = CpuMeter({"node": [self.node_pid], "harness": [os.getpid()], "load": self.load_pids()})
        meter.start()
        start = time.perf_counter()
        nonces = {key.address: w3.eth.get_transaction_count(key.address) for key in keys}
        for i in range(n):
            key = keys[i % len(keys)]
            quoted = self.router.functions.getAmountsOut(self.amount, self.path).call()[-1]
            block = w3.eth.get_block("latest")
            tx_fees = {
                "maxFeePerGas": 2 * block["baseFeePerGas"] + 10**9,
                "maxPriorityFeePerGas": 10**9,
                "chainId": 31337,
                "from": key.address,
            }
            approve = self.erc20.functions.approve(self.dex.router, self.amount).build_transaction(
                {**tx_fees, "nonce": nonces[key.address]}
            )
            send(approve, key)
            swap = self.router.functions.swapExactTokensForTokens(
                self.amount, quoted * 995 // 1000, self.path, key.address, block["timestamp"] + 600
            ).build_transaction({**tx_fees, "nonce": nonces[key.address] + 1})
            send(swap, key, ChainTransaction.Kind.SWAP)
            nonces[key.address] += 2
        return n / (time.perf_counter() - start), meter.stop()

    def load_pids(self) -> list[int]:
        return self.load.pids if self.load else []

    def start_workers(self) -> dict:
        from django.conf import settings

        concurrency_of = {
            "execution": os.environ.get(
                "BENCH_EXECUTION_CONCURRENCY", str(settings.WORKER_CONCURRENCY_EXECUTION)
            ),
            # The HSM deployment (keys never leave the token, so the signer keeps its child:
            # SIGNER_MAX_TASKS_PER_CHILD=0) runs one signer child: it signs in queue (nonce) order
            # in larger batches, and leaves the second core to the engine (.env.example).
            "signer": os.environ.get("BENCH_SIGNER_CONCURRENCY", "1"),
        }
        env = {**self.env_common, "SIGNER_MAX_TASKS_PER_CHILD": "0"}
        start_workers(self.tmp, env, concurrency_of, self.workers)
        return {f"{q}-worker": [w.pid] for q, w in zip(concurrency_of, self.workers, strict=True)}

    def submit(self, wallet, key: str) -> int:
        from django.utils import timezone

        from apps.trades import real_money_transaction_manager as rmtm

        return rmtm.trade_submit(
            owner=wallet.owner,
            wallet=wallet,
            dex=self.dex,
            path=self.path,
            amount_in=self.amount,
            slippage_bps=100,
            idempotency_key=key,
            deadline=timezone.now() + timedelta(minutes=30),
        ).trade.pk

    def tick(self) -> None:
        """As beat would, every TRADE_TICK_SECONDS: receipts, and the stalled trades' recovery."""
        from django.conf import settings

        from celery_app import app

        if time.monotonic() >= self.next_tick:
            app.send_task("trades.tick")
            self.next_tick = time.monotonic() + settings.TRADE_TICK_SECONDS

    def wait_mined(self, ids: list[int], starts: dict[str, int], pace=None) -> None:
        """Until every trade's two transactions are mined (`starts`: each wallet's nonce before);
        ticking as beat would; `pace` submits more on the way (paced arrivals)."""
        from apps.trades.models import Trade

        total = pace.total if pace else len(ids)
        deadline_s = time.monotonic() + 60 + total * 2 * (2 if self.load else 1)
        self.next_tick = 0.0
        while time.monotonic() < deadline_s:
            if pace:
                pace.step(ids)
            self.tick()
            mined = sum(self.w3.eth.get_transaction_count(a) - s for a, s in starts.items())
            if mined >= 2 * total:
                return
            if serializable_read(lambda: Trade.objects.filter(pk__in=ids, state__in=ENDED).exists()):
                ended = Trade.objects.filter(pk__in=ids, state__in=ENDED)
                reasons = list(ended.values_list("pk", "state", "reason")[:3])
                raise SystemExit(f"{ended.count()} pipeline trades ended: {reasons}")
            time.sleep(0.05)  # the harness's own polling must not eat the node's and workers' CPU
        raise SystemExit("the pipeline did not finish in time")

    def wait_settled(self, ids: list[int], seconds: float) -> int:
        """Until every trade is SETTLED or `seconds` have passed, ticking; how many are not."""
        from apps.trades.models import Trade

        until = time.monotonic() + seconds
        while left := serializable_read(
            lambda: Trade.objects.filter(pk__in=ids).exclude(state="SETTLED").count()
        ):
            if time.monotonic() > until:
                return left
            self.tick()
            time.sleep(0.1)
        return 0

    def latency_ms(self, ids: list[int]) -> tuple[float, float, int]:
        from apps.trades.models import ChainTransaction, Trade

        # Mined can come before the broadcaster has recorded its run's sends: wait for the records.
        until = time.monotonic() + 30
        sent = ChainTransaction.objects.filter(trade_id__in=ids, kind="swap", broadcast_at__isnull=False)
        while (
            serializable_read(lambda: sent.values("trade_id").distinct().count()) < len(ids)
            and time.monotonic() < until
        ):
            time.sleep(0.1)
        created = dict(Trade.objects.filter(pk__in=ids).values_list("pk", "created_at"))
        latencies = sorted(
            (at - created[trade_id]).total_seconds() * 1000
            for trade_id, at in sent.values_list("trade_id", "broadcast_at")
            .order_by("trade_id", "attempt")
            .distinct("trade_id")
        )
        return statistics.median(latencies), latencies[max(0, int(len(latencies) * 0.99) - 1)], len(latencies)

    def burst(self, wallets: list, n: int, tag: str, meter_roots: dict) -> tuple[dict, list[int]]:
        """n swaps submitted at once over `wallets` in turn, until mined and then settled: throughput,
        latency, where the time went and the stalls."""
        from django.utils import timezone

        from apps.trades.models import Trade

        starts = {w.address: self.w3.eth.get_transaction_count(w.address) for w in wallets}
        meter = CpuMeter(
            {"node": [self.node_pid], **meter_roots, "harness": [os.getpid()], "load": self.load_pids()}
        )
        meter.start()
        start = time.perf_counter()
        ids = [self.submit(wallets[i % len(wallets)], f"{tag}-{i}") for i in range(n)]
        self.wait_mined(ids, starts)
        elapsed = time.perf_counter() - start
        cpu = meter.stop()
        p50, p99, counted = self.latency_ms(ids)
        unsettled = self.wait_settled(ids, 90)
        # Where the burst's time went, and the trades that waited.
        t0 = min(Trade.objects.filter(pk__in=ids).values_list("created_at", flat=True))
        steps = serializable_read(lambda: trade_steps(ids))
        return {
            "trades": n,
            "wallets": len(wallets),
            "seconds": round(elapsed, 2),
            "swaps_per_s": round(n / elapsed, 2),
            "p50_request_to_broadcast_ms": round(p50, 1),
            "p99_request_to_broadcast_ms": round(p99, 1),
            "p99_limit_ms": round(1.5 * elapsed * 1000, 1),  # 1.5 x the burst's duration, n / throughput
            "swaps_with_latency": counted,
            "stalls": {**stall_summary(steps, timezone.now(), GAP_S, t0), "unsettled": unsettled},
            "timeline_s": step_timeline(steps, t0),
            "cpu_seconds": cpu,
        }, ids

    def paced(self, wallet, n: int, count: int, rate: float) -> tuple[float, float, dict]:
        """Requests arriving at `rate`, so the figure is the pipeline's own latency rather than time
        spent queued behind the burst: p50, p99 and the median ms from request to each event."""
        from apps.trades.models import Trade, TradeEvent

        bench = self

        class Pace:
            def __init__(self):
                self.total, self.interval, self.sent, self.t0 = count, 1.0 / rate, 0, time.monotonic()

            def step(self, into: list[int]) -> None:
                while self.sent < self.total and time.monotonic() >= self.t0 + self.sent * self.interval:
                    into.append(bench.submit(wallet, f"paced-{n + self.sent}"))
                    self.sent += 1

        ids: list[int] = []
        self.wait_mined(ids, {wallet.address: self.w3.eth.get_transaction_count(wallet.address)}, Pace())
        p50, p99, _ = self.latency_ms(ids)
        offsets: dict[str, list[float]] = {}
        created = dict(Trade.objects.filter(pk__in=ids).values_list("pk", "created_at"))
        for trade_id, kind, at in TradeEvent.objects.filter(trade_id__in=ids).values_list(
            "trade_id", "kind", "created_at"
        ):
            offsets.setdefault(kind, []).append((at - created[trade_id]).total_seconds() * 1000)
        return p50, p99, {kind: round(statistics.median(v), 1) for kind, v in offsets.items()}

    def run(self, n: int, wallet_count: int) -> dict:
        from django.db import connection

        from project.db_roles import setup_roles
        from tests.factories import UserFactory

        slow = self.load is not None
        unloaded = None
        if slow:
            unloaded, _ = self.loop(min(n, 40), self.funded_keys(1))
            self.load.start()
            say(f"slow machine: {self.load.describe()}; before it, the plain loop: {unloaded:.1f} swaps/s")
        ceiling = self.ceiling(n)
        say(f"(b) node ceiling, pre-signed:        {ceiling:7.1f} swaps/s")
        setup_roles(database=connection.settings_dict["NAME"])
        owner = UserFactory()
        wallets = [
            funded_pkcs11_wallet(url=self.url, owner=owner, label=f"pipeline-{i}")
            for i in range(1 + wallet_count)
        ]
        roots = self.start_workers()

        # One wallet: the burst, against the loop just before it.
        loop, loop_cpu = self.loop(n, self.funded_keys(1))
        say(f"(a) plain web3.py loop:              {loop:7.1f} swaps/s")
        say(f"    CPU seconds during (a): {json.dumps(loop_cpu)}")
        if slow:
            say(f"    the load slows the plain loop to {loop / unloaded:.2f} x its rate without it")
        one, ids = self.burst(wallets[:1], n, "one", roots)
        self.report(one, loop, 1.0 if slow else 1.3)
        say(f"pipeline / (b) = {one['swaps_per_s'] / ceiling:.2f}")

        # Paced, once the burst has settled (confirm batches and ticks still at work would queue the
        # paced requests' steps behind them, and that is the burst's queue again, not the pipeline).
        if self.wait_settled(ids, 60):
            say("warning: the burst's trades had not all settled; pacing anyway")
        paced_n, rate = max(10, n // 10), one["swaps_per_s"] / 2
        paced_p50, paced_p99, steps = self.paced(wallets[0], n, paced_n, rate)
        say(
            f"request -> broadcast, {paced_n} paced at {rate:.2f}/s: p50 {paced_p50:.0f} ms, "
            f"p99 {paced_p99:.0f} ms" + ("" if slow else " (target p50 < 300 ms)")
        )
        say(
            "paced, median ms from request to each event: "
            + ", ".join(f"{k} {v:.0f}" for k, v in sorted(steps.items(), key=lambda kv: kv[1]))
        )

        # Several wallets: the same number of swaps spread over them, against a loop taking as many
        # keys in turn (one swap at a time all the same).
        per = max(1, n // wallet_count)
        loop_many, loop_many_cpu = self.loop(per * wallet_count, self.funded_keys(wallet_count))
        say(f"(a) plain web3.py loop, {wallet_count} keys in turn: {loop_many:7.1f} swaps/s")
        many, _ = self.burst(wallets[1:], per * wallet_count, "many", roots)
        self.report(many, loop_many, 2.0)

        targets_met = {
            "one_wallet_ratio": one["swaps_per_s"] / loop >= (1.0 if slow else 1.3),
            "wallets_ratio": many["swaps_per_s"] / loop_many >= 2.0,
            "no_stalls": one["stalls"]["trades_over"] == 0 and many["stalls"]["trades_over"] == 0,
            "p99_within_1_5x_duration": all(
                b["p99_request_to_broadcast_ms"] <= b["p99_limit_ms"] for b in (one, many)
            ),
        }
        if not slow:
            targets_met["paced_p50_under_300_ms"] = paced_p50 < 300
        say(f"targets met: {json.dumps(targets_met)}")
        return {
            "mode": "slow" if slow else "normal",
            "cpu_load": self.load.describe() if slow else None,
            "loop_before_load_swaps_per_s": round(unloaded, 2) if slow else None,
            "loop_under_load_ratio": round(loop / unloaded, 3) if slow else None,
            "trades": n,
            "pipeline_swaps_per_s": one["swaps_per_s"],
            "web3_loop_swaps_per_s": round(loop, 2),
            "node_ceiling_swaps_per_s": round(ceiling, 2),
            "ratio_vs_loop": round(one["swaps_per_s"] / loop, 3),
            "ratio_vs_ceiling": round(one["swaps_per_s"] / ceiling, 3),
            "p50_request_to_broadcast_ms": one["p50_request_to_broadcast_ms"],
            "p99_request_to_broadcast_ms": one["p99_request_to_broadcast_ms"],
            "swaps_with_latency": one["swaps_with_latency"],
            "paced_trades": paced_n,
            "paced_rate_per_s": round(rate, 2),
            "paced_p50_request_to_broadcast_ms": round(paced_p50, 1),
            "paced_p99_request_to_broadcast_ms": round(paced_p99, 1),
            "paced_median_ms_to_event": steps,
            "one_wallet": one,
            "wallets": {
                **many,
                "web3_loop_swaps_per_s": round(loop_many, 2),
                "ratio_vs_loop": round(many["swaps_per_s"] / loop_many, 3),
                "cpu_seconds_loop": loop_many_cpu,
            },
            "cpu_seconds_loop": loop_cpu,
            "target_ratio_vs_loop": 1.0 if slow else 1.3,
            "target_wallets_ratio_vs_loop": 2.0,
            "target_trades_over_gap": 0,
            "target_p99_vs_duration": 1.5,
            "target_p50_ms": None if slow else 300,
            "targets_met": targets_met,
            "burst_p50_floor_ms_at_node_ceiling": round(n / 2 / ceiling * 1000, 1),
        }

    @staticmethod
    def report(burst: dict, loop: float, target: float) -> None:
        n, s, p99 = burst["trades"], burst["stalls"], burst["p99_request_to_broadcast_ms"]
        say(f"pipeline, {burst['wallets']} wallet(s), {n} swaps: {burst['swaps_per_s']:7.1f} swaps/s")
        say(f"pipeline / (a) = {burst['swaps_per_s'] / loop:.2f} (target >= {target})")
        say(
            f"request -> broadcast, burst of {n}: p50 {burst['p50_request_to_broadcast_ms']:.0f} ms, "
            f"p99 {p99:.0f} ms"
            f" (target <= 1.5 x the burst's {burst['seconds']:.1f} s: {burst['p99_limit_ms']:.0f} ms)"
        )
        say(
            f"stalls: {s['trades_over']} of {n} trades waited over {GAP_S:.0f} s between two steps (target 0)"
            f"; worst {s['worst_gap_s']:.1f} s, trade {s['worst_trade']}: {' -> '.join(s['worst_steps'])}"
            + (f"; {s['unsettled']} not settled" if s["unsettled"] else "")
        )
        if s["over_by_steps"]:
            say(f"    stalls by steps: {json.dumps(s['over_by_steps'])}")
        for trade_id, steps in s["worst_timelines"].items():
            say(f"    trade {trade_id}: " + ", ".join(f"{k} {t}" for k, t in steps))
        say(
            "    timeline, s from the first request (count first median last): "
            + json.dumps(burst["timeline_s"])
        )
        say(f"    CPU seconds during the burst: {json.dumps(burst['cpu_seconds'])}")


if __name__ == "__main__":
    main()
