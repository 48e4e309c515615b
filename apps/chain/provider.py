"""A web3.py provider that sends every request through a chain's RPC pool."""

from __future__ import annotations

from typing import Any

from web3.providers.base import JSONBaseProvider

from apps.chain.pool import RpcPool


class PoolProvider(JSONBaseProvider):
    """Failover and health for web3.py calls; a JSON-RPC error is the node's answer and is passed on."""

    def __init__(self, pool: RpcPool):
        super().__init__()
        self.pool = pool

    def make_request(self, method, params) -> Any:
        return self.pool.request(str(method), list(params or []))

    def make_batch_request(self, requests) -> Any:
        return [self.make_request(method, params) for method, params in requests]

    def is_connected(self, show_traceback: bool = False) -> bool:
        try:
            self.pool.best_url()
        except ConnectionError:
            if show_traceback:
                raise
            return False
        return True
