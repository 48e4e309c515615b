"""Chain writes: recording what each RPC endpoint answered when probed."""

from __future__ import annotations

import time

from django.utils import timezone

from apps.chain.models import RpcEndpoint
from apps.chain.rpc import RpcError, block_number_of, chain_id_of


def endpoint_probe(*, endpoint: RpcEndpoint, timeout: float) -> RpcEndpoint:
    """Ask the endpoint for its chain id and head; record head, latency and any error."""
    started = time.monotonic()
    error = ""
    head = None
    try:
        reported = chain_id_of(endpoint.url, timeout=timeout)
        if reported != endpoint.chain.chain_id:
            error = f"wrong chain id {reported}, expected {endpoint.chain.chain_id}"
        else:
            head = block_number_of(endpoint.url, timeout=timeout)
    except RpcError as exc:
        error = str(exc)[:300]
    endpoint.last_checked_at = timezone.now()
    endpoint.last_latency_ms = int((time.monotonic() - started) * 1000)
    endpoint.last_head = head
    endpoint.last_error = error
    endpoint.save(update_fields=["last_checked_at", "last_latency_ms", "last_head", "last_error"])
    return endpoint
