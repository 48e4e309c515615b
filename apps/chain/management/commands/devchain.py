"""`manage.py devchain up|serve|down|status|fund`: the Hardhat dev chain with Uniswap V2.

`up` (and `serve`) first checks that the node is the chain recorded for its chain id: a restarted
Hardhat node is a new chain, and a dev chain then starts a new epoch (apps/chain/devchain.py:
dev_chain_epoch), said in one console line; a chain that is not a dev chain is refused."""

from __future__ import annotations

import signal
import time
from decimal import Decimal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.chain import devchain
from apps.chain.epochs import RealChainHistoryRefused, dev_chain_epoch


class Command(BaseCommand):
    help = "Start, deploy, attach to, stop or fund the local Hardhat dev chain."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["up", "serve", "down", "status", "fund"])
        parser.add_argument("--port", type=int, default=None, help="default: DEVCHAIN_PORT")
        parser.add_argument("--block-ms", type=int, default=None, help="default: DEVCHAIN_BLOCK_MS")
        parser.add_argument("--address", help="fund: the address to fund")
        parser.add_argument("--eth", default="10", help="fund: ETH to send (default 10)")
        parser.add_argument("--tokens", type=int, default=100_000, help="fund: whole units per token")

    def handle(self, *args, action, port, block_ms, **options):
        self.port = port or settings.DEVCHAIN_PORT
        self.block_ms = settings.DEVCHAIN_BLOCK_MS if block_ms is None else block_ms
        self.url = devchain.devchain_url(self.port)
        var = settings.BASE_DIR / "var"
        self.pid_file = var / "run" / f"devchain-{self.port}.pid"
        self.log_file = var / "log" / f"devchain-{self.port}.log"
        getattr(self, f"do_{action}")(**options)

    def say(self, message: str) -> None:
        self.stdout.write(message)
        self.stdout.flush()

    def ensure_node(self) -> None:
        chain_id = devchain.node_answers(self.url)
        if chain_id is not None:
            if chain_id != settings.DEVCHAIN_CHAIN_ID:
                raise CommandError(
                    f"{self.url} answers with chain id {chain_id}, expected "
                    f"{settings.DEVCHAIN_CHAIN_ID}: another node holds the port"
                )
            self.say(f"hardhat node already answering on {self.url} (chain id {chain_id})")
            return
        self.say(f"starting hardhat node on {self.url} (block every {self.block_ms} ms)")
        pid = devchain.node_start(
            port=self.port, block_ms=self.block_ms, pid_file=self.pid_file, log_file=self.log_file
        )
        self.say(f"hardhat node up, pid {pid}, log {self.log_file}")

    def do_up(self, **_options) -> None:
        self.ensure_node()
        # A restarted node is a new chain: a new epoch for a dev chain, before anything is deployed.
        try:
            epochs = dev_chain_epoch(url=self.url)
        except RealChainHistoryRefused as exc:
            raise CommandError(str(exc)) from exc
        for epoch in epochs:
            self.say(self.style.WARNING(epoch.line()))
        report = devchain.deploy_devchain(url=self.url, log=self.say)
        state = "deployed" if report.deployed else "unchanged"
        self.say(self.style.SUCCESS(f"dev chain ready on {self.url}: {state}"))

    def do_serve(self, **_options) -> None:
        """Foreground process for honcho: adopt or start the node, deploy, stop it on SIGTERM."""
        self.do_up()
        stopping = False

        def stop(_signum, _frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        pid = devchain.read_pid(self.pid_file)
        self.say(f"serving dev chain (pid {pid or 'external'}); Ctrl-C stops it")
        while not stopping:
            if pid is not None and not devchain.pid_alive(pid):
                raise CommandError(f"hardhat node (pid {pid}) died; see {self.log_file}")
            time.sleep(1)
        if devchain.node_stop(self.pid_file):
            self.say("hardhat node stopped")

    def do_down(self, **_options) -> None:
        if devchain.node_stop(self.pid_file):
            self.say("hardhat node stopped")
        else:
            self.say("no hardhat node started by Custos is running")

    def do_status(self, **_options) -> None:
        chain_id = devchain.node_answers(self.url)
        if chain_id is None:
            raise CommandError(f"nothing answers on {self.url}")
        self.say(f"{self.url}: chain id {chain_id}")

    def do_fund(self, *, address, eth, tokens, **_options) -> None:
        if not address:
            raise CommandError("--address is required for fund")
        sent = devchain.fund_address(url=self.url, address=address, eth=Decimal(eth), token_units=tokens)
        self.say(f"funded {address} with {eth} ETH and {tokens} of each dev token ({sent} txs)")
