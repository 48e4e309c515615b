"""simulate.py: PENDING → SIMULATING → VALIDATING, quote and simulation at a pinned block, and the
reads it makes of the node."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.chain.models import Dex
from apps.chain.pool import pool_for
from apps.trades import real_money_transaction_manager as rmtm
from apps.trades.models import Trade
from tests.factories import grant_scope
from tests.trades.steps import _submit, _to_signing, _tokens

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.chain]


def test_passed_deadline_is_rejected(funded_wallet):
    grant_scope(funded_wallet)
    trade = _submit(funded_wallet, key="late")
    Trade.objects.filter(pk=trade.pk).update(deadline=timezone.now() - timedelta(seconds=1))
    rmtm.trade_simulate(trade_id=trade.pk)
    trade.refresh_from_db()
    assert trade.state == "REJECTED"
    assert "deadline" in trade.reason


def test_a_reverting_swap_fails_with_the_decoded_reason_and_signs_nothing(scoped_wallet):
    usdc, dai = _tokens()
    trade = rmtm.trade_submit(
        owner=scoped_wallet.owner,
        wallet=scoped_wallet,
        dex=Dex.objects.get(),
        path=[usdc.address, dai.address],
        amount_in=100 * 10**6,
        min_amount_out=10**30,
        idempotency_key="reverts",
        deadline=timezone.now() + timedelta(minutes=20),
    ).trade
    rmtm.trade_simulate(trade_id=trade.pk)
    trade.refresh_from_db()
    assert trade.state == "FAILED"
    assert "INSUFFICIENT_OUTPUT_AMOUNT" in trade.reason
    assert not trade.transactions.exists()


def test_a_simulation_is_three_requests_to_the_node_and_validation_two(scoped_wallet):
    """The step's reads go as batches: the pinned block; the quote, reserves and allowance at it; the
    calls and estimates of the approval and the swap. (Through web3.py contract objects, one
    simulation was 17 HTTP requests, 8 of them for the chain id.)"""
    warm = _to_signing(scoped_wallet, key="warm")  # finds the pair and the allowance slot once
    assert warm.state == "SIGNING"
    trade = _submit(scoped_wallet, key="counted", amount_in=10 * 10**6)
    stats = pool_for(trade.chain).stats
    before = stats.http_requests
    rmtm.trade_simulate(trade_id=trade.pk)
    assert stats.http_requests - before == 3
    before = stats.http_requests
    rmtm.trade_validate(trade_id=trade.pk)
    assert stats.http_requests - before == 2  # fees and balances; the pending nonce
    trade.refresh_from_db()
    assert trade.state == "SIGNING", trade.reason
    assert [tx.kind for tx in trade.transactions.order_by("sequence")] == ["approve", "swap"]


def test_a_node_error_in_a_simulation_read_is_retried_and_a_revert_ends_the_trade():
    """Only the contract's own answer (a revert) may fail a trade; a node that fails to answer
    ("header not found", an internal error) is a step to retry."""
    from apps.trades import chainio

    reverted = chainio._failure({"code": 3, "message": "execution reverted", "data": "0x"}, "quote: ")
    assert isinstance(reverted, chainio.SimulationReverted)
    assert reverted.reason.startswith("quote: ")
    for flaky in (
        {"code": -32000, "message": "header not found"},
        {"code": -32603, "message": "internal error"},
    ):
        assert isinstance(chainio._failure(flaky), chainio.ChainUnavailable)
