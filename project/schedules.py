"""Every beat entry Custos needs, in one list; `manage.py setup_schedules` writes them."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from project.queues import TaskName


@dataclass(frozen=True)
class ScheduleSpec:
    name: str
    task: TaskName
    every_seconds: int
    description: str


def schedule_specs() -> list[ScheduleSpec]:
    specs = [
        ScheduleSpec(
            name="chain: probe RPC endpoints",
            task=TaskName.CHAIN_PROBE_ENDPOINTS,
            every_seconds=settings.RPC_PROBE_INTERVAL_SECONDS,
            description="Chain id, head and latency of every active RPC endpoint.",
        ),
        ScheduleSpec(
            name="trades: confirm and recover",
            task=TaskName.TRADES_TICK,
            every_seconds=settings.TRADE_TICK_SECONDS,
            description="Receipts and settlement of CONFIRMING trades; re-enqueue stalled steps.",
        ),
        ScheduleSpec(
            name="watcher: headers and reorgs",
            task=TaskName.WATCHER_TICK_ALL,
            every_seconds=settings.WATCHER_TICK_SECONDS,
            description="Per chain at its block time: new headers, reorg detection, receipt re-checks.",
        ),
        ScheduleSpec(
            name="strategies: run what is due",
            task=TaskName.STRATEGIES_TICK,
            every_seconds=settings.STRATEGY_TICK_SECONDS,
            description="Learn how runs' trades ended; run every due strategy (docs/strategies.md).",
        ),
        # --- market data
        ScheduleSpec(
            name="market: refresh prices",
            task=TaskName.MARKET_REFRESH,
            every_seconds=settings.MARKET_REFRESH_TICK_SECONDS,
            description="Prices of tokens in active scopes from each due source (rate limited), candles.",
        ),
    ]
    if settings.ML_ENABLED:  # nothing consumes the ml queue otherwise
        specs.append(
            ScheduleSpec(
                name="ml: refresh advice",
                task=TaskName.ML_ADVISE_ALL,
                every_seconds=settings.ML_ADVISE_INTERVAL_SECONDS,
                description="Advice (or an abstention) from every model for every recently priced pair.",
            )
        )
    return specs
