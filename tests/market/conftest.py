"""A local HTTP server standing in for CoinCap and CoinLore (no network here), replaying scripted
responses shaped as their documentation shows, and recording what it was asked."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest


@dataclass
class Reply:
    status: int = 200
    body: str = ""
    headers: dict = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Seen:
    path: str
    query: dict
    headers: dict


class ScriptedServer:
    def __init__(self):
        self.script: dict[str, list[Reply]] = {}
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                parts = urlsplit(self.path)
                with server.lock:
                    server.seen.append(Seen(parts.path, parse_qs(parts.query), dict(self.headers)))
                    replies = server.script.get(parts.path) or [Reply(404, '{"error": "unscripted"}')]
                    reply = replies.pop(0) if len(replies) > 1 else replies[0]
                if reply.delay:
                    time.sleep(reply.delay)
                payload = reply.body.encode()
                try:
                    self.send_response(reply.status)
                    for name, value in {"Content-Type": "application/json", **reply.headers}.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def on(self, path: str, *replies: Reply) -> None:
        with self.lock:
            self.script[path] = list(replies)

    def calls(self, path: str | None = None) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if path is None or s.path == path]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def api_server(redis_client) -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.stop()


@dataclass
class World:
    chain: object
    usdc: object
    dai: object
    weth: object
    dex: object
    wallet: object
    scope: object


@pytest.fixture
def market_sources(db) -> None:
    """CoinCap, CoinLore and on-chain rows (a transactional test's flush removes the migration's)."""
    from apps.market.services import sources_ensure

    sources_ensure()


@pytest.fixture
def market_world(market_sources) -> World:
    """Rows only (no node): a chain with USDC, DAI and WETH, a DEX, a wallet with one active
    USDC -> DAI scope, and an expired WETH -> USDC scope."""
    from datetime import timedelta

    from django.utils import timezone

    from apps.chain.models import Chain, Dex, Token
    from apps.wallets.models import Wallet
    from apps.wallets.services import scope_propose
    from tests.factories import GWEI, UserFactory

    chain = Chain.objects.create(chain_id=990_007, name="market test chain")

    def token(symbol, decimals, n, **kw):
        return Token.objects.create(
            chain=chain, address="0x" + f"{n:040x}", symbol=symbol, name=symbol, decimals=decimals, **kw
        )

    usdc = token("USDC", 6, 0xA1, is_stablecoin=True)
    dai = token("DAI", 18, 0xB2, is_stablecoin=True)
    weth = token("WETH", 18, 0xC3, is_wrapped_native=True)
    dex = Dex.objects.create(chain=chain, name="uni", router="0x" + "d4" * 20, factory="0x" + "e5" * 20)
    wallet = Wallet.objects.create(
        owner=UserFactory(), label="w", address="0x" + "f6" * 20, key_backend="keystore", status="active"
    )
    now = timezone.now()
    common = {
        "wallet": wallet,
        "dex": dex,
        "max_amount_in": 10**30,
        "max_slippage_bps": 100,
        "max_fee_per_gas": 100 * GWEI,
        "max_priority_fee_per_gas": 5 * GWEI,
    }
    scope = scope_propose(
        token_in=usdc,
        token_out=dai,
        valid_from=now - timedelta(minutes=1),
        valid_until=now + timedelta(days=1),
        **common,
    )
    scope_propose(
        token_in=weth,
        token_out=usdc,
        valid_from=now - timedelta(days=2),
        valid_until=now - timedelta(days=1),  # expired: refreshing its assets would waste the budget
        **common,
    )
    return World(chain, usdc, dai, weth, dex, wallet, scope)
