"""Reads for health and the admin: each chain's endpoints, its watched tip and its alarms."""

from __future__ import annotations

from django.db.models import Count

from apps.chain.models import Chain, RpcEndpoint
from apps.trades.models import Trade, TradeState
from apps.watcher.models import BlockHeader, Reorg


def chain_truth_health() -> dict:
    """Per chain: endpoint health, the watcher's tip, the last reorg and any finality alarm. A chain
    is `ok` while at least one endpoint is alive and no settled trade has lost its block."""
    chains = {}
    violated = dict(_violations_by_chain())
    for chain in Chain.objects.all():
        endpoints = list(
            RpcEndpoint.objects.filter(chain=chain, active=True).values(
                "name", "kind", "health", "latency_ewma_ms", "last_head", "last_error"
            )
        )
        tip = BlockHeader.objects.filter(chain=chain, canonical=True).order_by("-number").first()
        last_reorg = Reorg.objects.filter(chain=chain).first()
        alive = sum(1 for e in endpoints if e["health"] == RpcEndpoint.Health.ALIVE)
        chains[str(chain.chain_id)] = {
            "ok": alive > 0 and not violated.get(chain.pk),
            "endpoints_alive": alive,
            "endpoints": endpoints,
            "watched_tip": tip.number if tip else None,
            "watched_at": tip.seen_at.isoformat() if tip else None,
            "last_reorg": (
                {
                    "fork_number": last_reorg.fork_number,
                    "depth": last_reorg.depth,
                    "at": last_reorg.detected_at.isoformat(),
                    "finality_alarm": last_reorg.finality_alarm,
                }
                if last_reorg
                else None
            ),
            "finality_violated_trades": violated.get(chain.pk, 0),
        }
    return chains


def _violations_by_chain():
    return (
        Trade.objects.filter(state=TradeState.FINALITY_VIOLATED)
        .values("chain_id")
        .annotate(n=Count("id"))
        .values_list("chain_id", "n")
    )
