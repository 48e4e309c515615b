"""Watcher tasks (watcher queue: RPC URLs, never keys). Beat wakes `watcher.tick_all` every
WATCHER_TICK_SECONDS; it enqueues one `watcher.tick` per chain whose block time has passed."""

import logging

from apps.chain.models import Chain
from apps.chain.rpc import RpcError
from apps.watcher.services import InconsistentChainView, chain_due, watcher_tick
from project.queues import Queue, TaskName, custos_task

logger = logging.getLogger(__name__)


@custos_task(name=TaskName.WATCHER_TICK, queue=Queue.WATCHER)
def tick(self, chain_id: int) -> dict:
    """One chain's tick. RPC trouble never crashes the watcher: the tick reports it and the next one
    (a block time later) tries again, with the pool's health steering it to a working endpoint."""
    try:
        return watcher_tick(chain_id=int(chain_id)).as_dict()
    except (ConnectionError, RpcError, InconsistentChainView) as exc:
        logger.warning("watcher tick skipped", extra={"chain": chain_id, "error": str(exc)[:300]})
        return {"chain_id": int(chain_id), "skipped": str(exc)[:300]}


@custos_task(name=TaskName.WATCHER_TICK_ALL, queue=Queue.WATCHER)
def tick_all(self) -> list[int]:
    """Beat: enqueue a tick for every chain that is due (one per block time)."""
    due = [c.chain_id for c in Chain.objects.all() if chain_due(c)]
    for chain_id in due:
        tick.delay(chain_id)
    return due
