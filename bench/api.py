"""The API under gunicorn at a fixed request rate: trade detail and trade create against a trivial
authenticated DRF endpoint (GET /api/v1/ping) measured in the same run.

A throwaway database (bench_api) and Redis database; gunicorn serves project.wsgi as in the Procfile
(sync workers). Each phase sends requests open-loop at --rate per second for --seconds (latency is
taken from each request's scheduled start, so a slow server cannot hide its queueing). Prints p50,
p99 and achieved requests per second for each endpoint and the ratios to the trivial endpoint; a
JSON object is the last line. Target: p99 of GET /api/v1/trades/{id} within 3x the trivial one.

Run: .venv/bin/python bench/api.py [--rate 30] [--seconds 10] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import free_port, say, stop_groups  # noqa: E402 - after the path setup above

USDC = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
DAI = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def seed(tmp: Path) -> dict:
    """A registry, an owner with a token, an active wallet (real keystore key) and a trade with a
    timeline and two transaction attempts."""
    from datetime import timedelta

    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.utils import timezone

    from apps.chain.models import Chain, Dex, Token
    from apps.gateway.services import api_token_create
    from apps.signing import services as signer
    from apps.trades.audit import audit_append
    from apps.trades.models import Trade
    from apps.wallets.services import wallet_create
    from tests.factories import signing_trade

    (tmp / "pass").write_text("bench passphrase")
    settings.KEYSTORE_DIR = str(tmp / "keys")
    settings.KEYSTORE_PASSPHRASE_FILE = str(tmp / "pass")
    settings.KEYSTORE_SCRYPT_N = 2**10
    chain = Chain.objects.create(chain_id=31337, name="devchain", is_dev=True)
    Token.objects.create(chain=chain, address=USDC, symbol="dUSDC", name="Dev USDC", decimals=6)
    Token.objects.create(chain=chain, address=DAI, symbol="dDAI", name="Dev DAI", decimals=18)
    dex = Dex.objects.create(
        chain=chain,
        name="devswap",
        router="0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0",
        factory="0xCf7Ed3AccA5a467e9e704C703E8D87F634fB0Fc9",
    )
    user = get_user_model().objects.create(username="bench")
    raw = api_token_create(user=user, name="bench", level="trade").raw  # reads and trade creation
    wallet = wallet_create(owner=user, label="bench", key_backend="keystore")
    wallet = signer.wallet_key_create(wallet_id=wallet.pk)
    trade = signing_trade(wallet, state="SIGNING")
    with transaction.atomic():
        for kind in ("submitted", "start_simulation", "start_validation", "start_signing"):
            audit_append(trade=Trade.objects.get(pk=trade.pk), kind=kind, data={"bench": True})
    return {
        "token": raw,
        "trade": trade.pk,
        "wallet": wallet.pk,
        "dex": dex.pk,
        "timezone": timezone,
        "timedelta": timedelta,
    }


def phase(client, *, rate: float, seconds: float, endpoints: list[tuple[str, object]]) -> dict:
    """Open-loop and interleaved: the endpoints take turns (a, b, a, b, ...), each at `rate` per
    second, so background noise on a shared machine hits them alike. Request i is due at
    start + i / (rate * len(endpoints)); its latency counts from that moment."""
    per_endpoint = int(rate * seconds)
    total = per_endpoint * len(endpoints)
    latencies: dict[str, list[float]] = {name: [] for name, _ in endpoints}
    statuses: dict[str, dict[int, int]] = {name: {} for name, _ in endpoints}
    lock = threading.Lock()

    def one(index: int, due: float) -> None:
        name, make_request = endpoints[index % len(endpoints)]
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        status = make_request(client, index).status_code
        elapsed = time.perf_counter() - due
        with lock:
            latencies[name].append(elapsed * 1000)
            statuses[name][status] = statuses[name].get(status, 0) + 1

    start = time.perf_counter() + 0.2
    with ThreadPoolExecutor(max_workers=64) as pool:
        for index in range(total):
            pool.submit(one, index, start + index / (rate * len(endpoints)))
    wall = time.perf_counter() - start
    return {
        name: {
            "requests": per_endpoint,
            "statuses": statuses[name],
            "p50_ms": round(statistics.median(latencies[name]), 2),
            "p99_ms": round(percentile(latencies[name], 0.99), 2),
            "req_per_s": round(per_endpoint / wall, 1),
        }
        for name, _ in endpoints
    }


def report(name: str, r: dict) -> None:
    say(
        f"{name:28s} p50 {r['p50_ms']:8.2f} ms  p99 {r['p99_ms']:8.2f} ms  "
        f"{r['req_per_s']:6.1f} req/s  statuses {r['statuses']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=30.0, help="requests per second per endpoint")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers (Procfile default)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="custos-api-bench-"))
    redis_db = os.environ.get("BENCH_REDIS_DB", "11")
    env_common = {
        "TEST_REDIS_URL": f"redis://127.0.0.1:6379/{redis_db}",
        "DATABASE_TEST_NAME": "bench_api",
        "API_THROTTLE_RATE": "1000000/min",
        "DJANGO_SETTINGS_MODULE": "project.settings.test",
    }
    os.environ.update(env_common)
    import django

    django.setup()
    import httpx
    import redis
    from django.conf import settings
    from django.db import connection

    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    server = None
    try:
        seeded = seed(tmp)
        connection.close()
        port = free_port()
        db = connection.settings_dict
        auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
        db_url = f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        server_env = {**os.environ, "DATABASE_URL": db_url}
        server = subprocess.Popen(
            [
                str(ROOT / ".venv" / "bin" / "gunicorn"),
                "project.wsgi",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(args.workers),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=server_env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=open(tmp / "gunicorn.log", "w"),  # noqa: SIM115 - lives as long as the server
        )
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {seeded['token']}"}
        client = httpx.Client(base_url=base, headers=headers, timeout=30)
        for _ in range(100):
            try:
                if client.get("/api/v1/ping").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        else:
            raise SystemExit(f"gunicorn did not answer; see {tmp / 'gunicorn.log'}")
        for _ in range(20):  # warm every worker
            client.get("/api/v1/ping")
            client.get(f"/api/v1/trades/{seeded['trade']}")
        deadline = (seeded["timezone"].now() + seeded["timedelta"](minutes=50)).isoformat()
        body = {
            "wallet": seeded["wallet"],
            "chain_id": 31337,
            "dex": seeded["dex"],
            "path": [USDC, DAI],
            "amount_in": "1.5",
            "slippage_bps": 50,
            "deadline": deadline,
        }
        say(
            f"gunicorn ({args.workers} sync workers), each endpoint at {args.rate:g} req/s for "
            f"{args.seconds:g} s, interleaved with the trivial endpoint"
        )
        ping = ("trivial GET /api/v1/ping", lambda c, i: c.get("/api/v1/ping"))
        reads = phase(
            client,
            rate=args.rate,
            seconds=args.seconds,
            endpoints=[
                ping,
                ("GET /api/v1/trades/{id}", lambda c, i: c.get(f"/api/v1/trades/{seeded['trade']}")),
            ],
        )
        writes = phase(
            client,
            rate=args.rate,
            seconds=args.seconds,
            endpoints=[
                ping,
                (
                    "POST /api/v1/trades",
                    lambda c, i: c.post(
                        "/api/v1/trades", json=body, headers={"Idempotency-Key": f"bench-{i:08d}"}
                    ),
                ),
            ],
        )
        trivial, detail = reads["trivial GET /api/v1/ping"], reads["GET /api/v1/trades/{id}"]
        trivial_w, create = writes["trivial GET /api/v1/ping"], writes["POST /api/v1/trades"]
        report("trivial GET /api/v1/ping", trivial)
        report("GET /api/v1/trades/{id}", detail)
        report("trivial (with the POSTs)", trivial_w)
        report("POST /api/v1/trades", create)
        summary = {
            "rate": args.rate,
            "seconds": args.seconds,
            "workers": args.workers,
            "trivial": trivial,
            "trade_detail": detail,
            "trivial_during_create": trivial_w,
            "trade_create": create,
            "detail_p99_ratio": round(detail["p99_ms"] / trivial["p99_ms"], 2),
            "detail_p50_ratio": round(detail["p50_ms"] / trivial["p50_ms"], 2),
            "create_p99_ratio": round(create["p99_ms"] / trivial_w["p99_ms"], 2),
            "create_p50_ratio": round(create["p50_ms"] / trivial_w["p50_ms"], 2),
            "target_detail_p99_ratio": 3.0,
        }
        summary["detail_within_target"] = summary["detail_p99_ratio"] <= 3.0
        say(
            f"detail/trivial p99 {summary['detail_p99_ratio']}x (target <= 3x), "
            f"p50 {summary['detail_p50_ratio']}x; create/trivial p99 {summary['create_p99_ratio']}x"
        )
        client.close()
    finally:
        if server is not None:
            stop_groups([server])
        connection.close()
        connection.creation.destroy_test_db(old_name, verbosity=0)
        redis.Redis.from_url(settings.REDIS_URL).flushdb()
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
