"""confirm.py: CONFIRMING → SETTLED / FAILED / CANCELLED: receipts, depth, the settlement gate, and
stuck transactions replaced."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from web3 import Web3

from apps.chain import devchain
from apps.chain.models import Chain, Dex
from apps.signing import services as signer
from apps.trades import real_money_transaction_manager as rmtm
from apps.trades.models import ChainTransaction, Trade
from apps.trades.real_money_transaction_manager import confirm as confirm_step
from apps.trades.real_money_transaction_manager import signed as signed_step
from tests.trades.steps import (
    _assert_bumped,
    _mine,
    _run_to_confirming,
    _sign_and_send,
    _statuses,
    _StuckChain,
    _submit,
    _to_signing,
    _tokens,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.chain]


def test_a_trade_never_settles_on_its_approval_alone(scoped_wallet, deployed_devchain):
    trade = _submit(scoped_wallet, key="approval-only")
    rmtm.trade_simulate(trade_id=trade.pk)
    rmtm.trade_validate(trade_id=trade.pk)
    signer.trade_sign(trade_id=trade.pk, attempt=1)
    signed_step.persist_signer_answers([(trade.pk, 1)])
    approve = ChainTransaction.objects.get(trade=trade, kind="approve")
    w3 = Web3(Web3.HTTPProvider(deployed_devchain))
    w3.eth.send_raw_transaction(bytes(approve.raw_signed))
    ChainTransaction.objects.filter(pk=approve.pk).update(broadcast_at=timezone.now(), status="broadcast")
    _mine(deployed_devchain, 5)
    rmtm.trade_confirm(trade_ids=[trade.pk])
    assert Trade.objects.get(pk=trade.pk).state == "CONFIRMING"
    rmtm.trade_broadcast(trade_ids=[trade.pk])
    _mine(deployed_devchain, 3)
    rmtm.trade_confirm(trade_ids=[trade.pk])
    assert Trade.objects.get(pk=trade.pk).state == "SETTLED"
    assert set(trade.transactions.values_list("status", flat=True)) == {"mined"}


def test_a_stuck_transaction_is_replaced_with_bumped_fees_and_settles(
    scoped_wallet, deployed_devchain, settings
):
    settings.REPLACE_AFTER_BLOCKS = 3
    with _StuckChain(deployed_devchain) as chain:
        trade = _submit(scoped_wallet, key="stuck")
        rmtm.trade_simulate(trade_id=trade.pk)
        rmtm.trade_validate(trade_id=trade.pk)
        frozen_fee = int(trade.transactions.get(kind="swap").max_fee_per_gas)
        chain.base_fee = frozen_fee + 1  # above what attempt 1 pays, below a 12.5% bump
        _sign_and_send(trade, 1)
        chain.mine(3)
        rmtm.trade_confirm(trade_ids=[trade.pk])
        replacements = list(trade.transactions.filter(attempt=2).order_by("sequence"))
        assert [tx.kind for tx in replacements] == ["approve", "swap"]
        for tx in replacements:
            assert tx.replaces.attempt == 1
            _assert_bumped(tx)
        _sign_and_send(trade, 2)
        chain.mine(1)
        chain.base_fee = None
        chain.mine(3)
        rmtm.trade_confirm(trade_ids=[trade.pk])
    trade.refresh_from_db()
    assert trade.state == "SETTLED", trade.reason
    assert set(trade.transactions.filter(attempt=1).values_list("status", flat=True)) == {"replaced"}
    assert set(trade.transactions.filter(attempt=2).values_list("status", flat=True)) == {"mined"}
    assert trade.events.filter(kind="reconfirm").exists()


def test_a_passed_deadline_while_unmined_produces_a_cancel(scoped_wallet, deployed_devchain):
    import time

    usdc, _dai = _tokens()
    w3 = Web3(Web3.HTTPProvider(deployed_devchain))
    token = w3.eth.contract(address=usdc.address, abi=devchain.load_artifact("DevToken")["abi"])
    before = token.functions.balanceOf(scoped_wallet.address).call()
    with _StuckChain(deployed_devchain) as chain:
        usdc_dai = _tokens()
        trade = rmtm.trade_submit(
            owner=scoped_wallet.owner,
            wallet=scoped_wallet,
            dex=Dex.objects.get(),
            path=[t.address for t in usdc_dai],
            amount_in=100 * 10**6,
            slippage_bps=50,
            idempotency_key="late-cancel",
            deadline=timezone.now() + timedelta(seconds=6),
        ).trade
        rmtm.trade_simulate(trade_id=trade.pk)
        rmtm.trade_validate(trade_id=trade.pk)
        chain.base_fee = int(trade.transactions.get(kind="swap").max_fee_per_gas) + 1
        _sign_and_send(trade, 1)
        chain.mine(1)
        time.sleep(max(0.0, (trade.deadline - timezone.now()).total_seconds()) + 0.5)
        rmtm.trade_confirm(trade_ids=[trade.pk])
        cancels = list(trade.transactions.filter(attempt=2))
        assert {tx.kind for tx in cancels} == {"cancel"}
        assert all(
            tx.to == scoped_wallet.address and int(tx.value) == 0 and tx.data == "0x" for tx in cancels
        )
        _sign_and_send(trade, 2)
        chain.mine(1)
        chain.base_fee = None
        chain.mine(3)
        rmtm.trade_confirm(trade_ids=[trade.pk])
    trade.refresh_from_db()
    assert trade.state == "CANCELLED", trade.reason
    assert token.functions.balanceOf(scoped_wallet.address).call() == before  # nothing was swapped


def test_a_replacement_frozen_after_its_original_was_mined_is_retired(
    scoped_wallet, deployed_devchain, settings
):
    """Two confirms race: one decides the transactions are stuck while the other records them mined.
    The late replacement is signed, its send finds the nonce used, and it must end REPLACED."""
    settings.REPLACE_AFTER_BLOCKS = 0
    trade = _run_to_confirming(_submit(scoped_wallet, key="race-replace"))
    stuck = list(trade.transactions.filter(attempt=1))
    w3 = Web3(Web3.HTTPProvider(deployed_devchain))
    rmtm.trade_confirm(trade_ids=[trade.pk])  # records both receipts; one block deep, not final
    assert _statuses(trade, attempt=1) == {"mined"}
    # the slower confirm
    confirm_step._replace_stuck(Trade.objects.get(pk=trade.pk), stuck, w3.eth.block_number)
    assert trade.transactions.filter(attempt=2).count() == 2
    _sign_and_send(trade, 2)
    _mine(deployed_devchain, 3)
    rmtm.trade_confirm(trade_ids=[trade.pk])
    trade.refresh_from_db()
    assert trade.state == "SETTLED", trade.reason
    assert _statuses(trade, attempt=1) == {"mined"}
    assert _statuses(trade, attempt=2) == {"replaced"}
    assert trade.events.filter(kind="mined").count() == 2  # one per transaction, not per pass


def test_a_swap_that_reverts_on_chain_fails_with_the_replayed_reason(scoped_wallet, deployed_devchain):
    """Receipt status 0: FAILED with the revert reason (the same call replayed on its block's parent
    state), its nonce consumed. Here a large swap by someone else moves the pool between the
    trade's simulation and its broadcast, beyond the trade's 0.5% slippage."""
    from tests.chain.node import node_restored

    Chain.objects.update(confirmations_required=1)
    with node_restored(deployed_devchain) as w3:
        trade = _to_signing(scoped_wallet, "moved")
        assert signer.trade_sign(trade_id=trade.pk, attempt=1).signed
        signed_step.persist_signer_answers([(trade.pk, 1)])
        usdc, dai = _tokens()
        whale = w3.eth.accounts[1]  # a funded dev account
        router = w3.eth.contract(
            address=Dex.objects.get().router, abi=devchain.load_artifact("UniswapV2Router02")["abi"]
        )
        erc20 = w3.eth.contract(address=usdc.address, abi=devchain.load_artifact("DevToken")["abi"])
        big = 50_000 * 10**6  # 5% of the pool's dUSDC side
        erc20.functions.approve(router.address, big).transact({"from": whale})
        router.functions.swapExactTokensForTokens(big, 0, [usdc.address, dai.address], whale, 2**40).transact(
            {"from": whale}
        )
        rmtm.trade_broadcast(trade_ids=[trade.pk])  # Hardhat mines it, then answers with the revert
        assert not trade.transactions.filter(broadcast_at__isnull=True).exists()  # both count as sent
        rmtm.trade_confirm(trade_ids=[trade.pk])
        trade.refresh_from_db()
        assert trade.state == "FAILED"
        assert "(swap) reverted on chain in block" in trade.reason
        assert trade.reason.endswith("UniswapV2Router: INSUFFICIENT_OUTPUT_AMOUNT")
        assert trade.events.get(kind="fail").data["reason"] == trade.reason  # in the timeline
        assert w3.eth.get_transaction_count(scoped_wallet.address) == 2  # both nonces consumed
