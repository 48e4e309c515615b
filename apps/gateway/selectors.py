"""Gateway reads: the health of the database, the broker, the queues' workers and each chain's head."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis
from django.conf import settings
from django.db import connection
from django.db.models import Q, QuerySet
from django.shortcuts import get_object_or_404

from apps.chain.models import Chain, Token
from apps.chain.rpc import RpcError, block_number_of, chain_id_of
from apps.gateway.services import HEARTBEAT_PREFIX, redis_client
from apps.trades.models import ChainTransaction, Trade, TradeEvent
from apps.wallets.models import PermissionScope, Wallet
from apps.watcher.selectors import chain_truth_health
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
    return report


def _check_chain_truth(report: HealthReport) -> None:
    """The watcher's view (endpoint health, watched tip, last reorg); a settled trade whose block left
    the chain fails health until the owner has looked at it."""
    truth = chain_truth_health()
    report.checks["chain_truth"] = truth
    for chain_id, entry in truth.items():
        if entry["finality_violated_trades"]:
            report.failing.append(f"finality:{chain_id}")


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


# --- owner-scoped reads for the API ---------------------------------------------------------------
# Every lookup below filters by owner, so another owner's object is indistinguishable from a
# missing one (404).


def wallets_of(owner) -> QuerySet[Wallet]:
    return Wallet.objects.filter(owner=owner).order_by("id")


def wallet_of(owner, wallet_id: int) -> Wallet:
    return get_object_or_404(wallets_of(owner), pk=wallet_id)


def scopes_of(owner, *, wallet: Wallet | None = None) -> QuerySet[PermissionScope]:
    scopes = PermissionScope.objects.filter(wallet__owner=owner).select_related(
        "chain", "token_in", "token_out"
    )
    return scopes.filter(wallet=wallet) if wallet is not None else scopes


def scope_of(owner, scope_id: int) -> PermissionScope:
    return get_object_or_404(scopes_of(owner), pk=scope_id)


def trades_of(
    owner,
    *,
    state: str | None = None,
    wallet_id: int | None = None,
    chain_id: int | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[Trade]:
    trades = Trade.objects.filter(owner=owner).select_related("chain").order_by("-id")
    if state:
        trades = trades.filter(state=state)
    if wallet_id:
        trades = trades.filter(wallet_id=wallet_id)
    if chain_id:
        trades = trades.filter(chain__chain_id=chain_id)
    if before_id:
        trades = trades.filter(pk__lt=before_id)
    return list(trades[:limit])


def trade_of(owner, trade_id: int) -> Trade:
    return get_object_or_404(Trade.objects.select_related("chain"), owner=owner, pk=trade_id)


def tokens_by_address(chain_pk: int, addresses) -> dict[str, Token]:
    return {t.address: t for t in Token.objects.filter(chain_id=chain_pk, address__in=list(addresses))}


def _units(value, decimals: int | None) -> str | None:
    """Base units as an exact decimal string in token units (integer arithmetic, no rounding); base
    units as they are when the token's decimals are unknown."""
    if value is None:
        return None
    base = int(value)
    if not decimals:
        return str(base)
    whole, fraction = divmod(base, 10**decimals)
    fraction_text = str(fraction).rjust(decimals, "0").rstrip("0")
    return f"{whole}.{fraction_text}" if fraction_text else str(whole)


def trade_summary(trade: Trade, tokens: dict[str, Token]) -> dict:
    token_in, token_out = tokens.get(trade.path[0]), tokens.get(trade.path[-1])
    dec_in = token_in.decimals if token_in else None
    dec_out = token_out.decimals if token_out else None
    return {
        "id": trade.pk,
        "state": trade.state,
        "wallet": trade.wallet_id,
        "chain_id": trade.chain.chain_id,
        "dex": trade.dex_id,
        "path": list(trade.path),
        "token_in": token_in.symbol if token_in else None,
        "token_out": token_out.symbol if token_out else None,
        "amount_in": _units(trade.amount_in, dec_in),
        "slippage_bps": trade.slippage_bps,
        "min_amount_out": _units(trade.min_amount_out, dec_out),
        "quoted_amount_out": _units(trade.quoted_amount_out, dec_out),
        "amount_out_min": _units(trade.amount_out_min, dec_out),
        "deadline": trade.deadline,
        "idempotency_key": trade.idempotency_key,
        "reason": trade.reason,
        "created_at": trade.created_at,
        "updated_at": trade.updated_at,
    }


def trade_list_view(trades: list[Trade]) -> list[dict]:
    by_chain: dict[int, set[str]] = {}
    for trade in trades:
        by_chain.setdefault(trade.chain_id, set()).update(trade.path)
    tokens: dict[str, Token] = {}
    if by_chain:
        query = Q()
        for chain_pk, addresses in by_chain.items():
            query |= Q(chain_id=chain_pk, address__in=list(addresses))
        tokens = {t.address: t for t in Token.objects.filter(query)}
    return [trade_summary(trade, tokens) for trade in trades]


def trade_detail_view(trade: Trade) -> dict:
    """The trade, its audit timeline and every transaction attempt (never raw signed bytes)."""
    out = trade_summary(trade, tokens_by_address(trade.chain_id, trade.path))
    out["events"] = [
        {
            "id": e.pk,
            "kind": e.kind,
            "from_state": e.from_state,
            "to_state": e.to_state,
            "data": e.data,
            "hash": e.hash,
            "created_at": e.created_at,
        }
        for e in TradeEvent.objects.filter(trade=trade).order_by("id")
    ]
    out["transactions"] = [
        {
            "sequence": tx.sequence,
            "kind": tx.kind,
            "attempt": tx.attempt,
            "replaces": tx.replaces_id,
            "nonce": tx.nonce,
            "to": tx.to,
            "gas": tx.gas,
            "max_fee_per_gas": str(int(tx.max_fee_per_gas)),
            "max_priority_fee_per_gas": str(int(tx.max_priority_fee_per_gas)),
            "tx_hash": tx.tx_hash,
            "status": tx.status,
            "broadcast_at": tx.broadcast_at,
            "receipt_block_number": tx.receipt_block_number,
            "receipt_block_hash": tx.receipt_block_hash,
        }
        for tx in ChainTransaction.objects.filter(trade=trade)
        .order_by("sequence", "attempt")
        .only(*TX_FIELDS)
    ]
    return out


TX_FIELDS = (
    "id",
    "trade_id",
    "sequence",
    "kind",
    "attempt",
    "replaces_id",
    "nonce",
    "to",
    "gas",
    "max_fee_per_gas",
    "max_priority_fee_per_gas",
    "tx_hash",
    "status",
    "broadcast_at",
    "receipt_block_number",
    "receipt_block_hash",
)


def trade_events_after(owner, *, after_id: int, trade_id: int | None = None, limit: int = 200):
    events = TradeEvent.objects.filter(trade__owner=owner, pk__gt=after_id).select_related("trade")
    if trade_id:
        events = events.filter(trade_id=trade_id)
    return [
        {
            "id": e.pk,
            "trade": e.trade_id,
            "kind": e.kind,
            "from_state": e.from_state,
            "to_state": e.to_state,
            "state": e.trade.state,
            "created_at": e.created_at,
        }
        for e in events.order_by("id")[:limit]
    ]


def latest_event_id() -> int:
    return TradeEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0


def scope_view(scope: PermissionScope) -> dict:
    return {
        "id": scope.pk,
        "wallet": scope.wallet_id,
        "chain_id": scope.chain.chain_id,
        "dex": scope.dex_id,
        "router": scope.router,
        "token_in": scope.token_in.address,
        "token_out": scope.token_out.address,
        "allow_reverse": scope.allow_reverse,
        "allow_onchain_only_pricing": scope.allow_onchain_only_pricing,
        "max_amount_in": _units(scope.max_amount_in, scope.token_in.decimals),
        "max_slippage_bps": scope.max_slippage_bps,
        "max_fee_per_gas_gwei": _units(scope.max_fee_per_gas, 9),
        "max_priority_fee_per_gas_gwei": _units(scope.max_priority_fee_per_gas, 9),
        "max_notional_usd": None if scope.max_notional_usd is None else str(scope.max_notional_usd),
        "daily_volume_usd": None if scope.daily_volume_usd is None else str(scope.daily_volume_usd),
        "valid_from": scope.valid_from,
        "valid_until": scope.valid_until,
        "active": scope.active,
        "revoked_at": scope.revoked_at,
    }
