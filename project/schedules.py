"""Every beat entry Custos needs, in one list; `manage.py setup_schedules` writes them."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class ScheduleSpec:
    name: str
    task: str
    every_seconds: int
    description: str


def schedule_specs() -> list[ScheduleSpec]:
    return [
        ScheduleSpec(
            name="chain: probe RPC endpoints",
            task="chain.probe_endpoints",
            every_seconds=settings.RPC_PROBE_INTERVAL_SECONDS,
            description="Chain id, head and latency of every active RPC endpoint.",
        ),
        ScheduleSpec(
            name="trades: confirm and recover",
            task="trades.tick",
            every_seconds=settings.TRADE_TICK_SECONDS,
            description="Receipts and settlement of CONFIRMING trades; re-enqueue stalled steps.",
        ),
    ]
