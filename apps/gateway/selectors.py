"""Gateway reads: the health of the database, the broker, the queues' workers and each chain's head."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis
from django.conf import settings
from django.db import connection

from apps.chain.models import Chain
from apps.chain.rpc import RpcError, block_number_of, chain_id_of
from apps.gateway.services import HEARTBEAT_PREFIX, redis_client
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
    return report


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
        client = redis_client()
        client.ping()
        live: dict[str, list[str]] = {}
        for key in client.scan_iter(match=f"{HEARTBEAT_PREFIX}*", count=500):
            queue, hostname = key.decode()[len(HEARTBEAT_PREFIX) :].split(":", 1)
            live.setdefault(queue, []).append(hostname)
    except redis.RedisError as exc:
        report.checks["broker"] = {"ok": False, "error": f"redis unreachable: {type(exc).__name__}"}
        report.failing.append("broker")
        return None
    report.checks["broker"] = {"ok": True}
    return live


def _check_queues(report: HealthReport, live: dict[str, list[str]] | None) -> None:
    queues = {}
    for queue in Queue:
        workers = sorted((live or {}).get(str(queue), []))
        queues[str(queue)] = {"ok": bool(workers), "workers": workers}
        if not workers:
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
