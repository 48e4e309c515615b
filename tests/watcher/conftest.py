"""Fixtures for the watcher: a funded, scoped keystore wallet on the session's Hardhat node, and a
manually mined chain (automine off) so a test decides what every block holds."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from web3 import Web3

from apps.chain import devchain
from apps.chain.models import Dex, Token
from apps.chain.pool import pools_reset
from apps.signing import services as signer
from apps.trades import real_money_transaction_manager as rmtm
from apps.trades.models import Trade
from apps.trades.real_money_transaction_manager import signed as signed_step
from apps.wallets.services import wallet_create
from tests.chain.node import node_restored
from tests.factories import UserFactory, grant_scope


@pytest.fixture(autouse=True)
def _fresh_pools():
    pools_reset()
    yield
    pools_reset()


@pytest.fixture(autouse=True)
def _node_restored(hardhat_url):
    """These tests mine, snapshot and revert: the shared node goes back as it was, clock included."""
    with node_restored(hardhat_url):
        yield


@pytest.fixture
def scoped_wallet(deployed_devchain, keystore):
    wallet = wallet_create(owner=UserFactory(), label="watcher", key_backend="keystore")
    wallet = signer.wallet_key_create(wallet_id=wallet.pk)
    devchain.fund_address(url=deployed_devchain, address=wallet.address, eth=Decimal(5), token_units=50_000)
    grant_scope(wallet)
    return wallet


class ManualChain:
    """The session node with automine off: blocks are mined only by `mine`, snapshots and reverts
    make real reorgs (the orphaned block hashes and receipts become 'not found')."""

    def __init__(self, url: str):
        self.url = url
        self.w3 = Web3(Web3.HTTPProvider(url))

    def rpc(self, method: str, params: list | None = None):
        response = self.w3.provider.make_request(method, params or [])
        assert "error" not in response, response
        return response["result"]

    def mine(self, blocks: int = 1) -> None:
        for _ in range(blocks):
            self.rpc("evm_mine")

    def snapshot(self) -> str:
        return self.rpc("evm_snapshot")

    def revert(self, snapshot: str) -> None:
        assert self.rpc("evm_revert", [snapshot]) is True

    def drop(self, tx_hash: str) -> None:
        self.rpc("hardhat_dropTransaction", [tx_hash])

    def other_miner(self) -> None:
        """Blocks mined from now on differ from the orphaned ones even with the same transactions
        and timestamp: another coinbase."""
        self.rpc("hardhat_setCoinbase", ["0x" + "c0" * 20])

    def head(self) -> int:
        return self.w3.eth.block_number

    def block_hash(self, number: int) -> str | None:
        block = self.w3.eth.get_block(number) if number <= self.head() else None
        return "0x" + bytes(block["hash"]).hex() if block else None


@pytest.fixture
def manual_chain(deployed_devchain):
    chain = ManualChain(deployed_devchain)
    coinbase = chain.rpc("eth_coinbase")
    chain.rpc("evm_setAutomine", [False])
    try:
        yield chain
    finally:
        chain.rpc("evm_setAutomine", [True])
        chain.rpc("hardhat_setCoinbase", [coinbase])


def submit_trade(wallet, key: str) -> Trade:
    usdc, dai = Token.objects.get(symbol="dUSDC"), Token.objects.get(symbol="dDAI")
    return rmtm.trade_submit(
        owner=wallet.owner,
        wallet=wallet,
        dex=Dex.objects.get(),
        path=[usdc.address, dai.address],
        amount_in=100 * 10**6,
        slippage_bps=50,
        idempotency_key=key,
        deadline=timezone.now() + timedelta(minutes=30),
    ).trade


def sign_trade(trade: Trade) -> Trade:
    """PENDING → SIGNING → signed and persisted, not yet broadcast."""
    rmtm.trade_simulate(trade_id=trade.pk)
    rmtm.trade_validate(trade_id=trade.pk)
    outcome = signer.trade_sign(trade_id=trade.pk, attempt=1)
    assert outcome.signed, outcome.refusal
    signed_step.persist_signer_answers([(trade.pk, 1)])
    trade.refresh_from_db()
    assert trade.state == "CONFIRMING", trade.reason
    return trade
