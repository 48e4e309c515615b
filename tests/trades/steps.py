"""Helpers shared by the critical path's tests: a trade submitted and driven step by step in-process,
against the real dev chain and a keystore signer (fixtures: tests/trades/conftest.py)."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from web3 import Web3

from apps.chain.models import Dex, Token
from apps.signing import services as signer
from apps.trades import real_money_transaction_manager as rmtm
from apps.trades.models import ChainTransaction, Trade
from apps.trades.real_money_transaction_manager import signed as signed_step
from project.db import serializable_attempts


def _tokens():
    return Token.objects.get(symbol="dUSDC"), Token.objects.get(symbol="dDAI")


def _submit(wallet, *, amount_in=100 * 10**6, slippage_bps=50, key="t1", deadline_minutes=20):
    usdc, dai = _tokens()
    return rmtm.trade_submit(
        owner=wallet.owner,
        wallet=wallet,
        dex=Dex.objects.get(),
        path=[usdc.address, dai.address],
        amount_in=amount_in,
        slippage_bps=slippage_bps,
        idempotency_key=key,
        deadline=timezone.now() + timedelta(minutes=deadline_minutes),
    ).trade


def _run_to_confirming(trade: Trade) -> Trade:
    rmtm.trade_simulate(trade_id=trade.pk)
    rmtm.trade_validate(trade_id=trade.pk)
    signer.trade_sign(trade_id=trade.pk, attempt=1)
    signed_step.persist_signer_answers([(trade.pk, 1)])
    rmtm.trade_broadcast(trade_ids=[trade.pk])
    return Trade.objects.get(pk=trade.pk)


def _to_signing(wallet, key: str) -> Trade:
    trade = _submit(wallet, key=key, amount_in=10 * 10**6)
    rmtm.trade_simulate(trade_id=trade.pk)
    rmtm.trade_validate(trade_id=trade.pk)
    trade.refresh_from_db()
    assert trade.state == "SIGNING", trade.reason
    return trade


def _mine(url: str, blocks: int) -> None:
    w3 = Web3(Web3.HTTPProvider(url))
    for _ in range(blocks):
        w3.provider.make_request("evm_mine", [])


class _StuckChain:
    """Automine off and a base fee just above what the frozen transactions pay: they sit unmined
    while blocks go by, and a 12.5% bump gets them in."""

    def __init__(self, url: str):
        self.w3 = Web3(Web3.HTTPProvider(url))
        self.base_fee = None

    def __enter__(self):
        self.w3.provider.make_request("evm_setAutomine", [False])
        return self

    def __exit__(self, *exc):
        self.w3.provider.make_request("evm_setAutomine", [True])

    def mine(self, blocks: int = 1) -> None:
        for _ in range(blocks):
            if self.base_fee is not None:
                self.w3.provider.make_request("hardhat_setNextBlockBaseFeePerGas", [hex(self.base_fee)])
            self.w3.provider.make_request("evm_mine", [])


def _sign_and_send(trade: Trade, attempt: int) -> None:
    outcome = signer.trade_sign(trade_id=trade.pk, attempt=attempt)
    assert outcome.signed, outcome.refusal
    signed_step.persist_signer_answers([(trade.pk, attempt)])
    rmtm.trade_broadcast(trade_ids=[trade.pk])


def _assert_bumped(tx: ChainTransaction) -> None:
    """A replacement at its original's nonce with both fees raised by at least 12.5%."""
    assert tx.nonce == tx.replaces.nonce
    assert int(tx.max_fee_per_gas) * 1000 >= int(tx.replaces.max_fee_per_gas) * 1125
    assert int(tx.max_priority_fee_per_gas) * 1000 >= int(tx.replaces.max_priority_fee_per_gas) * 1125


def _statuses(trade: Trade, **filters) -> set[str]:
    return set(trade.transactions.filter(**filters).values_list("status", flat=True))


def _simulated(wallet, keys: list[str], amount_in: int = 10 * 10**6) -> list[Trade]:
    trades = [_submit(wallet, key=key, amount_in=amount_in) for key in keys]
    for trade in trades:
        rmtm.trade_simulate(trade_id=trade.pk)
    return trades


def _sent_nonces(wallet) -> list[int]:
    sent = ChainTransaction.objects.filter(trade__wallet=wallet, broadcast_at__isnull=False)
    return sorted(int(n) for n in sent.values_list("nonce", flat=True))


def _persisted(trade: Trade) -> None:
    """The trade's signer answer committed by another worker's step (which then found the wallet's
    broadcaster busy and left its sending to it)."""
    _persisted_attempt(trade, 1)


def _persisted_attempt(trade: Trade, number: int) -> None:
    for attempt in serializable_attempts(label="test"):
        with attempt:
            signed_step._persist_answer(trade.pk, number)
