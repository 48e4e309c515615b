"""Chain tasks (watcher queue: they hold RPC URLs, never keys)."""

from django.conf import settings

from apps.chain.models import RpcEndpoint
from apps.chain.services import endpoint_probe
from project.queues import Queue, custos_task


@custos_task(name="chain.probe_endpoints", queue=Queue.WATCHER)
def probe_endpoints(self) -> int:
    """Probe every active endpoint; returns how many answered correctly."""
    healthy = 0
    for endpoint in RpcEndpoint.objects.filter(active=True).select_related("chain"):
        probed = endpoint_probe(endpoint=endpoint, timeout=settings.HEALTH_RPC_TIMEOUT_SECONDS)
        healthy += not probed.last_error
    return healthy
