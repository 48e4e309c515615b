"""Gateway reads: the health of the database, the broker, the queues' workers and each chain's head."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis
from django.conf import settings
from django.db import connection
from django.db.models import Count, F
from django.utils import timezone

from apps.chain.models import Chain
from apps.chain.rpc import RpcError, block_number_of, chain_id_of
from apps.strategies.selectors import strategies_blind
from apps.trades.models import Trade, TradeState
from apps.watcher.selectors import chain_truth_health
from project.heartbeat import worker_heartbeats_read
from project.queues import Queue


@dataclass
class HealthReport:
    checks: dict[str, Any] = field(default_factory=dict)
    failing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failing

    def as_dict(self) -> dict[str, Any]:
        return {"status": "ok" if self.ok else "unhealthy", "failing": self.failing, **self.checks}


def health_report() -> HealthReport:
    report = HealthReport()
    _check_database(report)
    live = _check_broker(report)
    _check_queues(report, live)
    _check_chains(report)
    _check_chain_truth(report)
    _check_strategies(report)
    return report


def _check_chain_truth(report: HealthReport) -> None:
    """The watcher's view (endpoint health, watched tip, last reorg); a settled trade whose block left
    the chain fails health until the owner has looked at it. A replaced dev chain's trades (earlier
    epochs, apps/chain/devchain.py) are history of a chain that is gone: shown, never failing."""
    truth = chain_truth_health()
    earlier = _violations_of_earlier_epochs()
    for chain_id, entry in truth.items():
        if earlier.get(chain_id):
            entry["finality_violated_trades"] -= earlier[chain_id]
            entry["finality_violated_earlier_epochs"] = earlier[chain_id]
            entry["ok"] = entry["endpoints_alive"] > 0 and not entry["finality_violated_trades"]
        if entry["finality_violated_trades"]:
            report.failing.append(f"finality:{chain_id}")
    report.checks["chain_truth"] = truth


def _violations_of_earlier_epochs() -> dict[str, int]:
    """FINALITY_VIOLATED trades made before their dev chain's current epoch, per chain id."""
    rows = (
        Trade.objects.filter(
            state=TradeState.FINALITY_VIOLATED,
            chain__epoch_started_at__isnull=False,
            created_at__lt=F("chain__epoch_started_at"),
        )
        .values("chain__chain_id")
        .annotate(n=Count("id"))
        .values_list("chain__chain_id", "n")
    )
    return {str(chain_id): n for chain_id, n in rows}


def _check_strategies(report: HealthReport) -> None:
    """ACTIVE strategies that have not been able to judge their price (stale or disagreeing prices, an
    unreadable pool) for longer than their TWAP window: nothing they watch can fire."""
    blind = strategies_blind(now=timezone.now())
    report.checks["strategies"] = {"ok": not blind, "blind": blind}
    if blind:
        report.failing.append("strategies:blind")


def _check_database(report: HealthReport) -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        report.checks["database"] = {"ok": True}
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        report.checks["database"] = {"ok": False, "error": type(exc).__name__}
        report.failing.append("database")


def _check_broker(report: HealthReport) -> dict[str, list[str]] | None:
    """Ping Redis (the broker) and read the worker heartbeats; None when Redis is unreachable."""
    try:
        live = worker_heartbeats_read()
    except redis.RedisError as exc:
        report.checks["broker"] = {"ok": False, "error": f"redis unreachable: {type(exc).__name__}"}
        report.failing.append("broker")
        return None
    report.checks["broker"] = {"ok": True}
    return live


def _check_queues(report: HealthReport, live: dict[str, list[str]] | None) -> None:
    """A live worker for every queue; with ML_ENABLED off no ml worker runs, and none is expected."""
    queues = {}
    for queue in Queue:
        workers = sorted((live or {}).get(str(queue), []))
        expected = queue is not Queue.ML or settings.ML_ENABLED
        queues[str(queue)] = {"ok": bool(workers) or not expected, "workers": workers, "expected": expected}
        if expected and not workers:
            report.failing.append(f"queue:{queue}")
    report.checks["queues"] = queues


def _check_chains(report: HealthReport) -> None:
    chains = {}
    timeout = settings.HEALTH_RPC_TIMEOUT_SECONDS
    for chain in Chain.objects.prefetch_related("rpc_endpoints"):
        endpoints = [e for e in chain.rpc_endpoints.all() if e.active]
        entry: dict[str, Any] = {"name": chain.name, "ok": False, "head": None}
        errors = []
        for endpoint in endpoints:
            try:
                reported = chain_id_of(endpoint.url, timeout=timeout)
                if reported != chain.chain_id:
                    errors.append(f"{endpoint.name}: wrong chain id {reported}")
                    continue
                entry.update(
                    ok=True, head=block_number_of(endpoint.url, timeout=timeout), endpoint=endpoint.name
                )
                break
            except RpcError as exc:
                errors.append(f"{endpoint.name}: {type(exc.__cause__ or exc).__name__}")
        if not endpoints:
            errors.append("no active RPC endpoint")
        if not entry["ok"]:
            entry["errors"] = errors
            report.failing.append(f"chain:{chain.chain_id}")
        chains[str(chain.chain_id)] = entry
    report.checks["chains"] = chains
