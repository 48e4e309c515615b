"""The watcher's tick with 10, 100 and 1000 CONFIRMING trades, against a per-trade baseline.

On a private Hardhat node (automine off, console logging off) with a throwaway database and Redis
database: N CONFIRMING trades whose swap receipts sit in the last 10 real blocks of the node. Each
measured tick follows one newly mined block (as on a live chain) and is timed with its RPC cost: HTTP
requests and JSON-RPC calls (batch items counted one by one). The baseline, measured in the same run,
is what a watcher without batching would do: one eth_getBlockByNumber per CONFIRMING transaction.
Target at 1000 trades: at most 20 RPC requests and under 250 ms per tick. JSON object is the last line.

Run: .venv/bin/python bench/watcher.py [--ticks 15] [--sizes 10,100,1000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import free_port, say  # noqa: E402 - after the path setup above


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ticks", type=int, default=15)
    parser.add_argument("--sizes", default="10,100,1000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="custos-watcher-bench-"))
    os.environ.update(
        {
            "TEST_REDIS_URL": f"redis://127.0.0.1:6379/{os.environ.get('BENCH_REDIS_DB', '12')}",
            "DATABASE_TEST_NAME": "bench_watcher",
        }
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings.test")
    import django

    django.setup()
    import redis
    from django.conf import settings
    from django.db import connection

    from apps.chain import devchain

    port = free_port()
    url = devchain.devchain_url(port)
    say(f"starting hardhat on {url}")
    devchain.node_start(port=port, block_ms=0, pid_file=tmp / "node.pid", log_file=tmp / "node.log")
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    try:
        results = run(url, sizes, args.ticks)
    finally:
        connection.close()
        connection.creation.destroy_test_db(old_name, verbosity=0)
        devchain.node_stop(tmp / "node.pid")
    print(json.dumps(results))


def _seed(n: int, blocks: list[tuple[int, str]]) -> None:
    """N CONFIRMING trades, one mined swap each, spread over `blocks`. Set up directly: the watcher
    only reads these rows; how they got here is the engine's business, measured elsewhere."""
    from django.utils import timezone

    from apps.chain.models import Dex, Token
    from apps.trades.models import ChainTransaction, Trade
    from apps.wallets.models import Wallet
    from apps.wallets.services import wallet_create
    from tests.factories import UserFactory

    dex = Dex.objects.get()
    usdc, dai = Token.objects.get(symbol="dUSDC"), Token.objects.get(symbol="dDAI")
    wallet = Wallet.objects.first() or wallet_create(
        owner=UserFactory(), label="bench", key_backend="keystore"
    )
    deadline = timezone.now() + timedelta(hours=1)
    trades = Trade.objects.bulk_create(
        [
            Trade(
                owner_id=wallet.owner_id,
                wallet=wallet,
                chain=dex.chain,
                dex=dex,
                path=[usdc.address, dai.address],
                amount_in=10**6,
                slippage_bps=50,
                deadline=deadline,
                idempotency_key=f"bench-{n}-{i}",
                state="CONFIRMING",
            )
            for i in range(n)
        ]
    )
    ChainTransaction.objects.bulk_create(
        [
            ChainTransaction(
                trade=trade,
                sequence=0,
                kind="swap",
                chain_id=dex.chain.chain_id,
                sender=wallet.address or "0x" + "00" * 20,
                nonce=i,
                to=dex.router,
                data="0x",
                gas=200_000,
                max_fee_per_gas=10**9,
                max_priority_fee_per_gas=10**9,
                unsigned_hash="0x" + f"{i:064x}",
                tx_hash="0x" + f"{i + 1:064x}",
                receipt_block_number=blocks[i % len(blocks)][0],
                receipt_block_hash=blocks[i % len(blocks)][1],
                status="mined",
            )
            for i, trade in enumerate(trades)
        ]
    )


def run(url: str, sizes: list[int], ticks: int) -> dict:
    from django.db import connection
    from web3 import Web3

    from apps.chain import devchain
    from apps.chain.models import Chain
    from apps.chain.pool import pools_reset
    from apps.trades.models import ChainTransaction, Trade, TradeEvent
    from apps.watcher.models import BlockHeader
    from apps.watcher.services import watcher_tick

    w3 = Web3(Web3.HTTPProvider(url))
    w3.provider.make_request("hardhat_setLoggingEnabled", [False])
    devchain.deploy_devchain(url=url, log=lambda _m: None)
    w3.provider.make_request("evm_setAutomine", [False])
    chain = Chain.objects.get()
    Chain.objects.filter(pk=chain.pk).update(confirmations_required=12)
    out: dict = {"ticks_per_size": ticks, "sizes": {}}
    for n in sizes:
        # TRUNCATE, not DELETE: audit events are append-only (a trigger refuses DELETE to every role).
        tables = [m._meta.db_table for m in (TradeEvent, ChainTransaction, Trade, BlockHeader)]
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {', '.join(tables)} CASCADE")
        pools_reset()
        for _ in range(12):
            w3.provider.make_request("evm_mine", [])
        head = w3.eth.block_number
        blocks = [(b, "0x" + bytes(w3.eth.get_block(b)["hash"]).hex()) for b in range(head - 9, head + 1)]
        _seed(n, blocks)
        watcher_tick(chain_id=chain.chain_id)  # first tick fills the window
        times, requests, calls = [], [], []
        for _ in range(ticks):
            w3.provider.make_request("evm_mine", [])
            started = time.perf_counter()
            report = watcher_tick(chain_id=chain.chain_id)
            times.append((time.perf_counter() - started) * 1000)
            requests.append(report.rpc_requests)
            calls.append(report.rpc_calls)
            if report.skipped or report.reconfirmed:
                raise RuntimeError(f"the bench chain must be quiet: {report}")
        # Baseline: one request per CONFIRMING transaction's inclusion block.
        rows = list(
            ChainTransaction.objects.filter(trade__state="CONFIRMING").values_list(
                "receipt_block_number", "receipt_block_hash"
            )
        )
        started = time.perf_counter()
        for number, block_hash in rows:
            if "0x" + bytes(w3.eth.get_block(number)["hash"]).hex() != block_hash:
                raise RuntimeError(f"baseline: block {number} changed")
        baseline_ms = (time.perf_counter() - started) * 1000
        tick_ms = statistics.median(times)
        result = {
            "trades": n,
            "tick_ms_p50": round(tick_ms, 1),
            "tick_ms_max": round(max(times), 1),
            "rpc_requests_per_tick_max": max(requests),
            "rpc_calls_per_tick_max": max(calls),
            "baseline_ms": round(baseline_ms, 1),
            "baseline_rpc_requests": len(rows),
            "speedup_vs_baseline": round(baseline_ms / tick_ms, 1) if tick_ms else None,
        }
        say(
            f"{n:>5} trades: tick p50 {result['tick_ms_p50']} ms (max {result['tick_ms_max']}), "
            f"{result['rpc_requests_per_tick_max']} requests / {result['rpc_calls_per_tick_max']} calls per "
            f"tick; per-trade baseline {result['baseline_ms']} ms, {len(rows)} requests "
            f"({result['speedup_vs_baseline']}x)"
        )
        out["sizes"][str(n)] = result
    big = out["sizes"].get("1000")
    if big:
        out["target_met"] = big["rpc_requests_per_tick_max"] <= 20 and big["tick_ms_p50"] < 250
    return out


if __name__ == "__main__":
    main()
