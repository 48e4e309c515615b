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


# --- endpoints from the environment ------------------------------------------------------------

ENDPOINT_FIELDS = {
    "chain_id": int,
    "name": str,
    "url": str,
    "kind": str,
    "priority": int,
    "weight": int,
    "rate_limit_per_second": int,
    "active": bool,
}


class EndpointConfigError(ValueError):
    """An RPC_ENDPOINTS entry is malformed; the message names the entry and the field."""


def _endpoint_values(index: int, entry) -> tuple[int, dict]:
    where = f"RPC_ENDPOINTS[{index}]"
    if not isinstance(entry, dict):
        raise EndpointConfigError(f"{where}: each entry is an object, not {type(entry).__name__}")
    unknown = sorted(set(entry) - set(ENDPOINT_FIELDS))
    if unknown:
        raise EndpointConfigError(
            f"{where}.{unknown[0]}: unknown field (known: {', '.join(ENDPOINT_FIELDS)})"
        )
    for required in ("chain_id", "name", "url"):
        if required not in entry:
            raise EndpointConfigError(f"{where}.{required}: required")
    for field, kind in ENDPOINT_FIELDS.items():
        if field in entry and (type(entry[field]) is not kind):
            raise EndpointConfigError(f"{where}.{field}: must be {kind.__name__}, not {entry[field]!r}")
    if not entry["url"].startswith(("http://", "https://")) or len(entry["url"]) > 500:
        raise EndpointConfigError(f"{where}.url: an http(s) URL of at most 500 characters")
    if not 0 < len(entry["name"]) <= 64:
        raise EndpointConfigError(f"{where}.name: 1 to 64 characters")
    if entry.get("kind", "private") not in RpcEndpoint.Kind.values:
        raise EndpointConfigError(f"{where}.kind: one of {', '.join(RpcEndpoint.Kind.values)}")
    for field, low, high in (
        ("priority", 0, 32767),
        ("weight", 1, 32767),
        ("rate_limit_per_second", 0, 10**6),
    ):
        if field in entry and not low <= entry[field] <= high:
            raise EndpointConfigError(f"{where}.{field}: between {low} and {high}")
    values = {k: v for k, v in entry.items() if k not in ("chain_id", "url")}
    return entry["chain_id"], {"url": entry["url"], **values}


def rpc_endpoints_sync(entries) -> dict[str, int]:
    """Create or update the endpoints listed in RPC_ENDPOINTS (matched by chain and URL), all or
    nothing: one malformed entry, or one naming a chain that is not in the database, writes none.
    Endpoints added in the admin are left alone."""
    from django.db import transaction

    from apps.chain.models import Chain

    if not isinstance(entries, list):
        raise EndpointConfigError("RPC_ENDPOINTS: a JSON list of endpoint objects")
    parsed = [_endpoint_values(i, entry) for i, entry in enumerate(entries)]
    chains = {c.chain_id: c for c in Chain.objects.filter(chain_id__in={cid for cid, _ in parsed})}
    for index, (chain_id, _values) in enumerate(parsed):
        if chain_id not in chains:
            raise EndpointConfigError(
                f"RPC_ENDPOINTS[{index}].chain_id: chain {chain_id} is not in the database"
            )
    counts = {"created": 0, "updated": 0, "unchanged": 0}
    with transaction.atomic():
        for chain_id, values in parsed:
            url = values.pop("url")
            endpoint = RpcEndpoint.objects.filter(chain=chains[chain_id], url=url).first()
            if endpoint is None:
                RpcEndpoint.objects.create(chain=chains[chain_id], url=url, **values)
                counts["created"] += 1
            elif any(getattr(endpoint, k) != v for k, v in values.items()):
                for key, value in values.items():
                    setattr(endpoint, key, value)
                endpoint.save(update_fields=list(values))
                counts["updated"] += 1
            else:
                counts["unchanged"] += 1
    return counts
