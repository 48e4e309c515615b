"""A fault-injecting JSON-RPC proxy for tests: a real HTTP server in front of the real Hardhat node
that can drop connections, delay, answer 429, report a wrong chain id, a stale head, a lower nonce
or lie about block hashes. Every fault is a switch on the proxy object, flipped by the test."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

FAKE_HASH = "0x" + "ab" * 32


class FaultProxy:
    def __init__(self, upstream: str):
        self.upstream = upstream
        self.drop = False
        self.delay = 0.0
        self.http_429: str | None = None  # the Retry-After value to send ('' for none)
        self.rpc_rate_limit = False  # HTTP 200 with JSON-RPC error -32005
        self.chain_id: int | None = None
        self.stale_head: int | None = None
        self.lie_hash = False
        self.nonce_behind = 0
        # An endpoint stuck on a fork: canned results for exact (method, params) requests.
        self.forged: dict[tuple[str, str], object] = {}
        self.methods: list[str] = []
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=10)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                items = body if isinstance(body, list) else [body]
                with proxy._lock:
                    proxy.methods.extend(item.get("method", "") for item in items)
                if proxy.drop:
                    self.close_connection = True
                    self.connection.close()
                    return
                if proxy.delay:
                    time.sleep(proxy.delay)
                if proxy.http_429 is not None:
                    self.send_response(429)
                    if proxy.http_429:
                        self.send_header("Retry-After", proxy.http_429)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if proxy.rpc_rate_limit:
                    answer = [
                        {
                            "jsonrpc": "2.0",
                            "id": i.get("id"),
                            "error": {"code": -32005, "message": "rate limited"},
                        }
                        for i in items
                    ]
                else:
                    answer = [proxy._forward(item) for item in items]
                data = json.dumps(answer if isinstance(body, list) else answer[0]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def count(self, method: str) -> int:
        with self._lock:
            return self.methods.count(method)

    def honest(self) -> None:
        self.drop = self.lie_hash = self.rpc_rate_limit = False
        self.delay = 0.0
        self.http_429 = None
        self.chain_id = self.stale_head = None
        self.nonce_behind = 0
        self.forged = {}

    def _forward(self, item: dict) -> dict:
        method, params = item.get("method"), list(item.get("params", []))
        forged = self.forged.get((method, json.dumps(params)))
        if forged is not None:
            return {"jsonrpc": "2.0", "id": item.get("id"), "result": forged}
        if self.stale_head is not None and method == "eth_blockNumber":
            return {"jsonrpc": "2.0", "id": item.get("id"), "result": hex(self.stale_head)}
        if self.stale_head is not None and method == "eth_getBlockByNumber" and params[0] == "latest":
            params[0] = hex(self.stale_head)
        answer = self._client.post(self.upstream, json={**item, "params": params}).json()
        result = answer.get("result")
        if self.chain_id is not None and method == "eth_chainId":
            answer["result"] = hex(self.chain_id)
        if self.lie_hash and method in ("eth_getBlockByNumber", "eth_getBlockByHash") and result:
            answer["result"] = {**result, "hash": FAKE_HASH}
        if self.nonce_behind and method == "eth_getTransactionCount" and result:
            answer["result"] = hex(max(0, int(result, 16) - self.nonce_behind))
        return answer

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()
