"""Chain tasks (watcher queue: they hold RPC URLs, never keys)."""

from apps.chain.models import Chain, RpcEndpoint
from apps.chain.pool import pool_for
from project.queues import Queue, TaskName, custos_task


@custos_task(name=TaskName.CHAIN_PROBE_ENDPOINTS, queue=Queue.WATCHER)
def probe_endpoints(self) -> int:
    """Probe every active endpoint through its chain's pool (chain id, head, lag, latency) and record
    its health; returns how many are alive."""
    for chain in Chain.objects.all():
        pool_for(chain).probe()
    return RpcEndpoint.objects.filter(active=True, health=RpcEndpoint.Health.ALIVE).count()
