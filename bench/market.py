"""Cost of the reference price check that validation runs inside its SERIALIZABLE transaction.

- reference_check (two token lookups, the latest tick per source for each token, a TWAP lookup)
  against a database holding a day of minute ticks from two sources for both tokens, vs the
  pre-issue-7 check (pure Decimal arithmetic on the pool's reserves) measured in the same run.
  The ratio is small by design (database reads against arithmetic); what matters is the absolute
  per-check time next to a validation step's chain reads.

Creates and destroys its own test database. Prints readable lines, then a JSON object as the last
line. Run: .venv/bin/python bench/market.py [--seconds 1.5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def per_second(fn: Callable[[], object], seconds: float) -> float:
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        count += 1
    return count / (time.perf_counter() - start)


def pool_only(amount_in: int, quoted: int, reserves: tuple[int, int], tolerance: int) -> str:
    """The check _price_sanity made before issue 7."""
    mid = Decimal(amount_in) * Decimal(reserves[1]) / Decimal(reserves[0])
    deviation = ((mid - Decimal(quoted)) / mid * 10_000).to_integral_value(rounding=ROUND_FLOOR)
    return "" if deviation <= tolerance else "price_deviation"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=1.5)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings.test")
    os.environ.setdefault("DATABASE_TEST_NAME", "bench_market")
    import django

    django.setup()
    from django.db import connection, transaction
    from django.utils import timezone

    from apps.chain.models import Chain, Token
    from apps.market.models import MarketSource, PriceTick
    from apps.market.reference import reference_check
    from apps.market.services import sources_ensure

    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        sources_ensure()
        chain = Chain.objects.create(chain_id=31337, name="bench")
        usdc = Token.objects.create(chain=chain, address=f"0x{1:040x}", symbol="USDC", name="u", decimals=6)
        dai = Token.objects.create(chain=chain, address=f"0x{2:040x}", symbol="DAI", name="d", decimals=18)
        now = timezone.now()
        rows = []
        for slug in ("coincap", "coinlore"):
            source = MarketSource.objects.get(slug=slug)
            for token in (usdc, dai):
                for minute in range(1440):
                    at = now - timedelta(minutes=minute)
                    rows.append(
                        PriceTick(
                            source=source, token=token, price=Decimal("1.0001"), observed_at=at, fetched_at=at
                        )
                    )
        PriceTick.objects.bulk_create(rows, batch_size=2000)
        amount, quoted, reserves = 100 * 10**6, 99 * 10**18, (10**12, 10**24)

        def check() -> None:
            with transaction.atomic():
                result = reference_check(
                    chain=chain,
                    token_in=usdc.address,
                    token_out=dai.address,
                    amount_in=amount,
                    quoted_out=quoted,
                    tolerance_bps=200,
                    allow_onchain_only=False,
                    pool_reserves=reserves,
                )
            assert result.ok, result.reason

        check()
        baseline = per_second(lambda: pool_only(amount, quoted, reserves, 200), args.seconds)
        measured = per_second(check, args.seconds)
        result = {
            "ticks": len(rows),
            "pool_only_per_s": round(baseline),
            "reference_check_per_s": round(measured),
            "reference_check_ms": round(1000 / measured, 3),
            "ratio": round(measured / baseline, 5),
        }
        print(f"pool-only check (pre-issue-7 baseline): {baseline:,.0f}/s")
        print(
            f"reference_check with {len(rows):,} ticks stored: {measured:,.0f}/s ({1000 / measured:.2f} ms)"
        )
        print(f"ratio: {measured / baseline:.5f}")
        print(json.dumps(result))
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    main()
