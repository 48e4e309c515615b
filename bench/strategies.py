"""The strategies tick with 10, 1,000 and 10,000 ACTIVE strategies of which 10 are due, against the
same tick with 10 strategies all due.

With a throwaway database and Redis database: one owner's keystore wallet with a signed dUSDC -> dDAI
scope on the dev DEX (a private Hardhat node is started only to deploy and record the dev contracts,
and stopped before anything is measured: the tick measured here makes no chain read, so one that
reached for the chain would fail or stall here rather than go unnoticed). For each size N:

- the N - 10 strategies that are not due: one recurring strategy made by the owner's service
  (strategy_create, start_at a day ahead) and N - 11 clones of it inserted with bulk_create, each with
  its own idempotency key and its own start a few seconds apart (anchor_at = next_run_at = start_at,
  as the service would have set them), each with its `created` event (its id from the trade events'
  sequence, as event_append takes it). Inserts only: migration 0002's trigger refuses updates, not
  inserts, and nothing is updated;
- the 10 due strategies: recurring, no price bound (their run reads no price and no chain), made by
  the service, due at once. The measured tick (strategies_tick, in-process) runs each: a SERIALIZABLE
  transaction, its run and a real PENDING trade (trade_submit_in_transaction), whose first step is
  sent to a Redis database no worker reads: the trades go no further, only the tick is measured.

Each measurement is one tick: its wall time, the SQL statements it sent (connection.execute_wrapper:
every execute/executemany; BEGIN and COMMIT, which psycopg sends itself, are not counted) and the time
spent inside them. Between ticks the 10 strategies just run are cancelled (strategy_cancel) and 10
new due ones created, so each tick meets N ACTIVE strategies of which 10 are due. The sizes are
interleaved: each of --rounds rounds seeds every size afresh (in turn, the order reversed every
other round) and measures --ticks ticks of it, so a slow spell of a shared machine falls on every
size alike; two unmeasured ticks first warm the process. Medians over all the ticks of a size are
reported. The baseline is the smallest size, 10 strategies all due, measured in the same run.
Target: from 10 to the largest size, the tick's time and statement count stay within 2x (the partial
index `strategy_due` holds only what is ACTIVE and not waiting for a trade, and the due query reads
it up to `now`: its cost should follow the number due, not the number that exist). Whether the due
query's plan uses that index is reported per size (at 10 rows PostgreSQL rightly scans the table).
JSON object is the last line.

Run: .venv/bin/python bench/strategies.py [--sizes 10,1000,10000] [--rounds 5] [--ticks 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import free_port, say  # noqa: E402 - after the path setup above

DUE = 10
TARGET_RATIO = 2.0
INTERVAL_SECONDS = 86_400  # daily buys
AMOUNT_PER_RUN = "10"  # dUSDC
TOTAL = "10000"  # dUSDC: 1,000 runs, so no cap is near


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10,1000,10000", help="ACTIVE strategies per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, each seeding every size afresh")
    parser.add_argument("--ticks", type=int, default=3, help="measured ticks per size and round")
    parser.add_argument("--quick", action="store_true", help="sizes 10,100,1000")
    args = parser.parse_args()
    sizes = sorted({int(s) for s in ("10,100,1000" if args.quick else args.sizes).split(",")})
    if sizes[0] != DUE:
        parser.error(f"the smallest size is the baseline: {DUE} strategies, all due")
    tmp = Path(tempfile.mkdtemp(prefix="custos-strategies-bench-"))
    (tmp / "pass").write_text("bench passphrase")
    os.environ.update(
        {
            "TEST_REDIS_URL": f"redis://127.0.0.1:6379/{os.environ.get('BENCH_REDIS_DB', '13')}",
            # The tests' keystore: a throwaway directory, a cheap scrypt cost (one key, never used).
            "KEYSTORE_DIR": str(tmp / "keys"),
            "KEYSTORE_PASSPHRASE_FILE": str(tmp / "pass"),
            "KEYSTORE_SCRYPT_N": str(2**10),
            "KEY_BACKEND_DEFAULT": "keystore",
        }
    )
    os.environ.setdefault("DATABASE_TEST_NAME", "bench_strategies")
    os.environ.setdefault("LOG_LEVEL", "WARNING")  # the tick logs each run at INFO
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings.test")
    import django

    django.setup()
    import redis
    from django.conf import settings
    from django.db import connection

    from apps.chain import devchain

    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    broker = redis.Redis.from_url(settings.REDIS_URL)
    broker.flushdb()
    try:
        port = free_port()
        url = devchain.devchain_url(port)
        say(f"starting hardhat on {url} (to deploy and record the dev contracts only)")
        devchain.node_start(port=port, block_ms=0, pid_file=tmp / "node.pid", log_file=tmp / "node.log")
        try:
            wallet = _setup(url)
        finally:
            devchain.node_stop(tmp / "node.pid")
        say("hardhat stopped: every tick below runs without a chain")
        results = run(wallet, sizes, args.rounds, args.ticks)
    finally:
        broker.flushdb()
        connection.close()
        connection.creation.destroy_test_db(old_name, verbosity=0)
    shutil.rmtree(tmp, ignore_errors=True)  # its throwaway key and the node's log (kept on a failure)
    print(json.dumps(results))


def _setup(url: str):
    """The dev contracts recorded, and one owner's wallet with a signed dUSDC -> dDAI scope."""
    from django.utils import timezone

    from apps.chain import devchain
    from apps.signing import services as signer
    from apps.wallets.services import wallet_create
    from tests.factories import UserFactory, grant_scope

    devchain.deploy_devchain(url=url, log=lambda _m: None)
    signer.backend.cache_clear()
    owner = UserFactory(username="bench-strategies")
    wallet = signer.wallet_key_create(
        wallet_id=wallet_create(owner=owner, label="bench", key_backend="keystore").pk
    )
    grant_scope(wallet, valid_until=timezone.now() + timedelta(days=7))
    return wallet


def _create(wallet, key: str, **params):
    """A recurring dUSDC -> dDAI strategy through the owner's service."""
    from apps.chain.models import Dex, Token
    from apps.strategies.kinds import units_of
    from apps.strategies.services import strategy_create

    usdc, dai = Token.objects.get(symbol="dUSDC"), Token.objects.get(symbol="dDAI")
    return strategy_create(
        owner=wallet.owner,
        idempotency_key=key,
        wallet=wallet,
        dex=Dex.objects.get(),
        path=[usdc.address, dai.address],
        kind="recurring",
        params={"amount_per_run": AMOUNT_PER_RUN, "interval_seconds": INTERVAL_SECONDS, **params},
        total_amount_in=units_of(TOTAL, "total_amount_in", usdc.decimals),
        max_slippage_bps=100,
    ).strategy


def _reset() -> None:
    """No strategy, run, trade or event left (TRUNCATE: events are append-only, a trigger refuses
    DELETE; TRUNCATE fires no row trigger)."""
    from django.db import connection

    from apps.strategies.models import Strategy, StrategyEvent, StrategyRun
    from apps.trades.models import Trade, TradeEvent

    tables = [m._meta.db_table for m in (StrategyEvent, StrategyRun, Strategy, TradeEvent, Trade)]
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(tables)} CASCADE")


def _seed_not_due(wallet, count: int, tag: str) -> None:
    """`count` ACTIVE recurring strategies due from a day ahead: one made by the service, the rest its
    clones, inserted as the service inserts them (the strategy, then its `created` event)."""
    from django.db import connection
    from django.utils import timezone

    from apps.strategies.models import Strategy, StrategyEvent
    from apps.trades.models import TradeEvent

    if count <= 0:
        return
    start = (timezone.now() + timedelta(days=1)).replace(microsecond=0)
    template = _create(wallet, f"bench-{tag}-idle-0", start_at=start.isoformat())
    skip = {"id", "idempotency_key", "params", "anchor_at", "next_run_at", "created_at", "updated_at"}
    fields = {
        f.attname: getattr(template, f.attname)
        for f in Strategy._meta.concrete_fields
        if f.attname not in skip
    }
    clones = []
    for i in range(1, count):
        at = start + timedelta(seconds=7 * i)  # each its own slot, all well ahead of any tick's `now`
        clones.append(
            Strategy(
                **fields,
                idempotency_key=f"bench-{tag}-idle-{i}",
                params={**template.params, "start_at": at.isoformat()},
                anchor_at=at,
                next_run_at=at,
            )
        )
    clones = Strategy.objects.bulk_create(clones, batch_size=2000)
    if not clones:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
            [TradeEvent._meta.db_table, len(clones)],
        )
        ids = [row[0] for row in cursor.fetchall()]
    now = timezone.now()
    StrategyEvent.objects.bulk_create(
        [
            StrategyEvent(
                id=event_id,
                strategy=clone,
                kind="created",
                to_state=clone.state,
                data={"kind": clone.kind},
                created_at=now,
            )
            for event_id, clone in zip(ids, clones, strict=True)
        ],
        batch_size=2000,
    )


class _Statements:
    """Counts the SQL statements sent through the connection, and the time spent in them."""

    def __init__(self):
        self.count, self.seconds = 0, 0.0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.seconds += time.perf_counter() - started


def _due_plan_uses_index() -> bool:
    from django.conf import settings
    from django.utils import timezone

    from apps.strategies.selectors import due_query, strategy_rows

    query = strategy_rows().filter(due_query(timezone.now())).order_by("next_run_at", "pk")
    return "strategy_due" in query[: settings.STRATEGY_TICK_BATCH].explain()


def _tick(due: list) -> dict:
    """One measured tick over `due` (the strategies due now); checks it created their PENDING trades."""
    from django.db import connection

    from apps.strategies.engine import strategies_tick
    from apps.strategies.models import StrategyRun

    counter = _Statements()
    with connection.execute_wrapper(counter):
        started = time.perf_counter()
        counts = strategies_tick()
        seconds = time.perf_counter() - started
    states = list(StrategyRun.objects.filter(strategy__in=due).values_list("trade__state", flat=True))
    if counts.get("create") != len(due) or states != ["PENDING"] * len(due):
        raise RuntimeError(f"the tick did not create one PENDING trade per due strategy: {counts}, {states}")
    return {"ms": seconds * 1000, "statements": counter.count, "db_ms": counter.seconds * 1000}


def _seeded(wallet, size: int, tag: str) -> float:
    """An empty slate, then `size` - DUE strategies not due; returns the seconds it took."""
    from django.db import connection

    from apps.strategies.models import Strategy

    _reset()
    started = time.perf_counter()
    _seed_not_due(wallet, size - DUE, tag)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {Strategy._meta.db_table}")  # as autovacuum would have by now
    return time.perf_counter() - started


def _ticks(wallet, size: int, count: int, tag: str) -> list[dict]:
    """`count` ticks, each meeting `size` ACTIVE strategies of which DUE are due (made just before
    it); the ones it ran are cancelled after it."""
    from apps.strategies.models import Strategy, StrategyState
    from apps.strategies.services import strategy_cancel

    samples = []
    for n in range(count):
        due = [_create(wallet, f"bench-{tag}-due-{n}-{i}") for i in range(DUE)]
        active = Strategy.objects.filter(state=StrategyState.ACTIVE).count()
        if active != size:
            raise RuntimeError(f"{active} ACTIVE strategies, not {size}")
        samples.append(_tick(due))
        for strategy in due:
            strategy_cancel(strategy=Strategy.objects.get(pk=strategy.pk), reason="bench: next tick")
    return samples


def run(wallet, sizes: list[int], rounds: int, ticks: int) -> dict:
    """`rounds` rounds, each seeding every size afresh (in turn, the order reversed every other round,
    so a slow spell of this shared machine falls on every size alike) and measuring `ticks` ticks."""
    _seeded(wallet, sizes[0], "warmup")
    _ticks(wallet, sizes[0], 2, "warmup")  # imports, connections, caches: not measured
    samples: dict[int, list[dict]] = {size: [] for size in sizes}
    seed_s: dict[int, float] = {}
    for round_ in range(rounds):
        for size in sizes if round_ % 2 == 0 else reversed(sizes):
            seed_s[size] = _seeded(wallet, size, f"{round_}-{size}")
            samples[size] += _ticks(wallet, size, ticks, f"{round_}-{size}")
        say(f"round {round_ + 1}/{rounds} done")
    out: dict = {
        "due": DUE,
        "rounds": rounds,
        "ticks_per_round": ticks,
        "target_ratio": TARGET_RATIO,
        "sizes": {},
    }
    for size in sizes:
        times = [s["ms"] for s in samples[size]]
        statements = [s["statements"] for s in samples[size]]
        result = {
            "active": size,
            "due": DUE,
            "ticks": len(times),
            "tick_ms_p50": round(statistics.median(times), 1),
            "tick_ms_min": round(min(times), 1),
            "tick_ms_max": round(max(times), 1),
            "statements_p50": statistics.median_low(statements),
            "statements_min": min(statements),
            "statements_max": max(statements),
            "sql_ms_p50": round(statistics.median(s["db_ms"] for s in samples[size]), 1),
            "trades_created_per_tick": DUE,
            "seed_s": round(seed_s[size], 2),
        }
        _seeded(wallet, size, f"plan-{size}")
        result["due_query_uses_index"] = _due_plan_uses_index()
        say(
            f"{size:>6} active, {DUE} due: tick p50 {result['tick_ms_p50']} ms "
            f"(min {result['tick_ms_min']}, max {result['tick_ms_max']}; in SQL {result['sql_ms_p50']} ms), "
            f"{result['statements_p50']:g} statements (min {result['statements_min']}, max "
            f"{result['statements_max']}) over {len(times)} ticks; due query on strategy_due: "
            f"{result['due_query_uses_index']}; seeded in {result['seed_s']} s"
        )
        out["sizes"][str(size)] = result
    base, top = out["sizes"][str(sizes[0])], out["sizes"][str(sizes[-1])]
    out["baseline_size"], out["largest_size"] = sizes[0], sizes[-1]
    out["time_ratio"] = round(top["tick_ms_p50"] / base["tick_ms_p50"], 2)
    out["statements_ratio"] = round(top["statements_p50"] / base["statements_p50"], 2)
    out["target_met"] = out["time_ratio"] <= TARGET_RATIO and out["statements_ratio"] <= TARGET_RATIO
    say(
        f"{sizes[-1]:,}/{sizes[0]} active (both {DUE} due): time x{out['time_ratio']}, statements "
        f"x{out['statements_ratio']}; target <= {TARGET_RATIO:g}x each: "
        f"{'met' if out['target_met'] else 'NOT met'}"
    )
    return out


if __name__ == "__main__":
    main()
