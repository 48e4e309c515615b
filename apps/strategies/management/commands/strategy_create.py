"""`manage.py strategy_create`: create a strategy for a wallet from the command line, through the same
service and checks as the API (docs/strategies.md).

    manage.py strategy_create --wallet main --kind recurring --sell dUSDC --buy dDAI --total 300 \\
        --slippage-bps 50 --params '{"amount_per_run": "100", "interval_seconds": 86400}'
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from apps.chain.models import Dex, Token
from apps.strategies.kinds import StrategyInputError, units_of
from apps.strategies.models import StrategyKind
from apps.strategies.services import StrategyConflict, strategy_create
from apps.wallets.models import Wallet


class Command(BaseCommand):
    help = "Create a strategy (amounts in whole tokens of the token sold, as decimal strings)."

    def add_arguments(self, parser):
        parser.add_argument("--wallet", required=True, help="wallet label or address")
        parser.add_argument("--kind", required=True, choices=StrategyKind.values)
        parser.add_argument("--sell", required=True, help="symbol of the token sold (path[0])")
        parser.add_argument("--buy", required=True, help="symbol of the token bought (path[1])")
        parser.add_argument("--total", required=True, help="total_amount_in, whole tokens, e.g. 300")
        parser.add_argument("--max-per-run", default=None, help="whole tokens; default per kind")
        parser.add_argument("--slippage-bps", type=int, required=True, help="max_slippage_bps of each run")
        parser.add_argument("--max-runs", type=int, default=None)
        parser.add_argument("--expires-in-minutes", type=int, default=None)
        parser.add_argument("--oco-group", default="")
        parser.add_argument("--params", default="{}", help="the kind's parameters as a JSON object")
        parser.add_argument("--idempotency-key", default=None)
        parser.add_argument(
            "--follow-runs",
            type=int,
            default=0,
            help="stay and print each run as it happens until this many runs' trades settle "
            "(or the strategy ends); exits 1 if a run's trade ends otherwise",
        )
        parser.add_argument("--timeout", type=int, default=600, help="seconds --follow-runs waits at most")

    def handle(self, *args, **o):
        wallet = (
            Wallet.objects.filter(label=o["wallet"], active=True).first()
            or Wallet.objects.filter(address__iexact=o["wallet"]).first()
        )
        if wallet is None:
            raise CommandError(f"--wallet: no wallet labelled or addressed {o['wallet']!r}")
        dex = Dex.objects.filter(chain__tokens__symbol=o["sell"]).select_related("chain").distinct().first()
        if dex is None:
            raise CommandError(f"--sell: no DEX trades {o['sell']!r}")
        try:
            sell = Token.objects.get(chain=dex.chain, symbol=o["sell"])
            buy = Token.objects.get(chain=dex.chain, symbol=o["buy"])
        except Token.DoesNotExist as exc:
            raise CommandError("--sell/--buy: unknown token symbol") from exc
        try:
            params = json.loads(o["params"])
        except json.JSONDecodeError as exc:
            raise CommandError(f"--params: not JSON ({exc})") from exc
        expires = o["expires_in_minutes"]
        try:
            created = strategy_create(
                owner=wallet.owner,
                idempotency_key=o["idempotency_key"] or f"cli-{uuid.uuid4()}",
                wallet=wallet,
                dex=dex,
                path=[sell.address, buy.address],
                kind=o["kind"],
                params=params,
                total_amount_in=units_of(o["total"], "total_amount_in", sell.decimals),
                max_per_run=units_of(o["max_per_run"], "max_per_run", sell.decimals)
                if o["max_per_run"]
                else None,
                max_slippage_bps=o["slippage_bps"],
                max_runs=o["max_runs"],
                expires_at=timezone.now() + timedelta(minutes=expires) if expires else None,
                oco_group=o["oco_group"],
            )
        except StrategyInputError as exc:
            raise CommandError(str(exc)) from exc
        except StrategyConflict as exc:
            raise CommandError(str(exc)) from exc
        strategy = created.strategy
        self.stdout.write(
            f"strategy {strategy.pk}: {'created' if created.created else 'already created'} — "
            f"{strategy.kind} selling up to {o['total']} {o['sell']} for {o['buy']}, "
            f"next run at {strategy.next_run_at:%Y-%m-%d %H:%M:%S} UTC"
        )
        if o["follow_runs"]:
            self._follow(strategy, runs=o["follow_runs"], timeout=o["timeout"])

    def _follow(self, strategy, *, runs: int, timeout: int) -> None:
        """Print each run and its trade's end as they happen, until `runs` runs' trades settled."""
        seen: dict[int, str] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            strategy.refresh_from_db()
            for run in strategy.runs.select_related("trade").order_by("sequence"):
                state = run.trade.state if run.trade else run.outcome
                if seen.get(run.sequence) != state:
                    seen[run.sequence] = state
                    what = f"trade {run.trade_id} {state}" if run.trade else f"{run.outcome}: {run.reason}"
                    self.stdout.write(f"  {timezone.now():%H:%M:%S} run {run.sequence}: {what}")
                if run.trade and run.trade.state in ("REJECTED", "FAILED", "CANCELLED"):
                    raise CommandError(
                        f"run {run.sequence}'s trade ended {run.trade.state}: {run.trade.reason}"
                    )
            settled = sum(1 for state in seen.values() if state == "SETTLED")
            if settled >= runs:
                self.stdout.write(self.style.SUCCESS(f"strategy {strategy.pk}: {settled} runs settled"))
                return
            if strategy.state != "ACTIVE":
                raise CommandError(f"strategy {strategy.pk} is {strategy.state}: {strategy.reason}")
            time.sleep(1)
        raise CommandError(f"strategy {strategy.pk}: {runs} runs did not settle in {timeout}s")
