"""Plain JSON-RPC access to a chain endpoint: single and batched calls with a timeout.

Light on purpose (httpx, no web3 middleware): health probes and worker start checks must be quick
and must not ask for the chain id several times per call.
"""

from __future__ import annotations

import itertools
from typing import Any

import httpx

_ids = itertools.count(1)


class RpcError(Exception):
    """The endpoint could not be reached or answered with a JSON-RPC error."""

    def __init__(self, url: str, message: str, *, code: int | None = None):
        self.url = url
        self.code = code
        super().__init__(f"{url}: {message}")


def rpc_request(url: str, method: str, params: list | tuple = (), *, timeout: float) -> Any:
    """One JSON-RPC call; returns `result` or raises RpcError naming what went wrong."""
    body = {"jsonrpc": "2.0", "id": next(_ids), "method": method, "params": list(params)}
    try:
        response = httpx.post(url, json=body, timeout=timeout)
    except httpx.HTTPError as exc:
        raise RpcError(url, f"{method}: {type(exc).__name__}: {exc}") from exc
    if response.status_code != 200:
        raise RpcError(url, f"{method}: HTTP {response.status_code}", code=response.status_code)
    try:
        payload = response.json()
    except ValueError as exc:
        raise RpcError(url, f"{method}: response is not JSON") from exc
    if not isinstance(payload, dict):
        raise RpcError(url, f"{method}: unexpected response shape")
    if payload.get("error"):
        err = payload["error"]
        raise RpcError(url, f"{method}: {err.get('message', err)}", code=err.get("code"))
    return payload.get("result")


def chain_id_of(url: str, *, timeout: float) -> int:
    return int(rpc_request(url, "eth_chainId", timeout=timeout), 16)


def block_number_of(url: str, *, timeout: float) -> int:
    return int(rpc_request(url, "eth_blockNumber", timeout=timeout), 16)
