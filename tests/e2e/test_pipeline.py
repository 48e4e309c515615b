"""The whole pipeline with real Celery workers: a swap settles; crashes at each step boundary lose
nothing and double nothing; two execution workers share one wallet without a nonce gap or reuse."""

from __future__ import annotations

import threading
from collections import defaultdict
from datetime import timedelta

import pytest
from django.utils import timezone
from web3 import Web3

from apps.chain.models import Dex, Token
from apps.signing.models import SigningRecord
from apps.trades import real_money_transaction_manager as rmtm
from apps.trades.audit import audit_verify
from apps.trades.models import ChainTransaction, Trade
from tests.e2e.conftest import drive, make_wallet

pytestmark = [pytest.mark.e2e, pytest.mark.chain, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def submit(wallet, n: int, prefix: str) -> list[int]:
    usdc, dai = Token.objects.get(symbol="dUSDC"), Token.objects.get(symbol="dDAI")
    ids = []
    for i in range(n):
        ids.append(
            rmtm.trade_submit(
                owner=wallet.owner,
                wallet=wallet,
                dex=Dex.objects.get(),
                path=[usdc.address, dai.address],
                amount_in=(10 + i) * 10**6,
                slippage_bps=100,
                idempotency_key=f"{prefix}-{i}",
                deadline=timezone.now() + timedelta(minutes=20),
            ).trade.pk
        )
    return ids


def assert_exactly_once(stack, wallet, trade_ids: list[int]) -> None:
    """Each trade's transactions are mined once, one payload per nonce, nonces contiguous from 0."""
    w3 = Web3(Web3.HTTPProvider(stack.hardhat_url))
    payloads = defaultdict(set)
    for record in SigningRecord.objects.filter(wallet=wallet):
        payloads[int(record.nonce)].add(record.payload_hash)
    assert all(len(p) == 1 for p in payloads.values()), "two different payloads signed for one nonce"
    broadcast = defaultdict(set)
    for tx in ChainTransaction.objects.filter(trade_id__in=trade_ids, broadcast_at__isnull=False):
        broadcast[int(tx.nonce)].add(tx.unsigned_hash)
    assert all(len(p) == 1 for p in broadcast.values()), "two different payloads broadcast for one nonce"
    nonces = sorted(payloads)
    assert nonces == list(range(len(nonces))), f"nonce gap or reuse: {nonces}"
    assert w3.eth.get_transaction_count(wallet.address) == len(nonces)
    for trade_id in trade_ids:
        swaps = ChainTransaction.objects.filter(trade_id=trade_id, kind="swap", status="mined")
        assert swaps.count() == 1, list(
            ChainTransaction.objects.filter(trade_id=trade_id).values_list(
                "kind", "status", "nonce", "attempt"
            )
        )
        receipt = w3.eth.get_transaction_receipt(swaps.get().tx_hash)
        assert receipt["status"] == 1
        statuses = set(ChainTransaction.objects.filter(trade_id=trade_id).values_list("status", flat=True))
        assert statuses == {"mined"}, (trade_id, statuses)
    assert audit_verify(trade_ids=trade_ids)[1] is None


def test_a_swap_settles_through_real_workers(stack):
    wallet = make_wallet(stack)
    stack.start("execution", "execution", "custos_engine", TRADE_STALL_SECONDS="3")
    stack.start("signer", "signer", "custos_signer")
    ids = submit(wallet, 1, "one")
    states = drive(stack, ids)
    assert states == {ids[0]: "SETTLED"}, stack.log_tail()
    assert_exactly_once(stack, wallet, ids)


@pytest.mark.parametrize(
    "point", ["validate.inside_transaction", "after_signing.committed_before_enqueue", "broadcast.after_send"]
)
def test_a_crash_at_each_step_boundary_loses_nothing_and_doubles_nothing(stack, point, tmp_path):
    wallet = make_wallet(stack)
    marker = tmp_path / "crashed"
    crash_env = {"CUSTOS_CRASH_AT": point, "CUSTOS_CRASH_MARKER": str(marker), "TRADE_STALL_SECONDS": "3"}
    stack.start("execution", "execution", "custos_engine", **crash_env)
    stack.start("signer", "signer", "custos_signer")
    restarts = []

    def supervise():
        if not stack.alive("execution"):
            restarts.append(point)
            stack.start("execution", "execution", "custos_engine", **crash_env)

    ids = submit(wallet, 3, point)
    states = drive(stack, ids, timeout=180, on_tick=supervise)
    assert marker.exists(), f"the worker never reached {point}"
    assert restarts == [point]
    assert set(states.values()) == {"SETTLED"}, stack.log_tail()
    assert_exactly_once(stack, wallet, ids)


class CursorHolder(threading.Thread):
    """Holds the wallet's nonce cursor row in a transaction of its own for a moment, over and over:
    a validation that writes the cursor meanwhile fails with a serialization error (40001), and the
    worker must retry it. The engine's own steps now collide only now and then (short
    transactions, one broadcaster per wallet), so this makes sure the retry path runs under real
    workers in every run, not only when the steps happen to collide."""

    def __init__(self, wallet_id: int):
        super().__init__(daemon=True)
        self.wallet_id = wallet_id
        self.done = threading.Event()
        self.held = 0

    def run(self) -> None:
        from tests.signing.test_batch import _other_connection

        with _other_connection() as conn:
            while not self.done.wait(0.1):
                with conn.transaction():
                    held = conn.execute(
                        "UPDATE wallets_noncecursor SET updated_at = now() WHERE wallet_id = %s",
                        [self.wallet_id],
                    ).rowcount
                    self.done.wait(0.1)
                self.held += held


def test_two_execution_workers_share_one_wallet_without_gaps(stack):
    wallet = make_wallet(stack)
    stack.start("execution-1", "execution", "custos_engine", TRADE_STALL_SECONDS="5")
    stack.start("execution-2", "execution", "custos_engine", TRADE_STALL_SECONDS="5")
    stack.start("signer", "signer", "custos_signer", WORKER_CONCURRENCY_SIGNER="2")
    holder = CursorHolder(wallet.pk)
    holder.start()
    ids = submit(wallet, 50, "many")
    try:
        states = drive(stack, ids, timeout=400)
    finally:
        holder.done.set()
        holder.join()
    assert holder.held > 0
    assert set(states.values()) == {"SETTLED"}, stack.log_tail()
    assert_exactly_once(stack, wallet, ids)
    logs = stack.log_tail() + "".join(p.read_text() for p in stack.logs.values())
    assert "serialization conflict, retrying" in logs
    assert Trade.objects.filter(pk__in=ids).count() == 50
