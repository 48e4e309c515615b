"""The whole critical path in-process, PENDING to SETTLED, against the real dev chain and a keystore
signer: every step in order, and every step replayed."""

from __future__ import annotations

import pytest
from web3 import Web3

from apps.chain import devchain
from apps.signing import services as signer
from apps.trades import real_money_transaction_manager as rmtm
from apps.trades.audit import audit_verify
from apps.trades.models import ChainTransaction, Trade, TradeEvent
from apps.trades.real_money_transaction_manager import signed as signed_step
from tests.trades.steps import _mine, _run_to_confirming, _submit, _tokens

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.chain]


def test_a_swap_runs_from_pending_to_settled_with_the_approval(scoped_wallet, deployed_devchain):
    w3 = Web3(Web3.HTTPProvider(deployed_devchain))
    usdc, dai = _tokens()
    abi = devchain.load_artifact("DevToken")["abi"]
    usdc_c, dai_c = (w3.eth.contract(address=t.address, abi=abi) for t in (usdc, dai))
    usdc_before = usdc_c.functions.balanceOf(scoped_wallet.address).call()
    dai_before = dai_c.functions.balanceOf(scoped_wallet.address).call()

    trade = _run_to_confirming(_submit(scoped_wallet))
    assert trade.state == "CONFIRMING", trade.reason
    kinds = list(trade.transactions.order_by("sequence").values_list("kind", "nonce"))
    assert kinds == [("approve", 0), ("swap", 1)]
    rmtm.trade_confirm(trade_ids=[trade.pk])
    assert Trade.objects.get(pk=trade.pk).state == "CONFIRMING"  # not deep enough yet
    _mine(deployed_devchain, 3)
    rmtm.trade_confirm(trade_ids=[trade.pk])
    trade.refresh_from_db()
    assert trade.state == "SETTLED"

    assert usdc_c.functions.balanceOf(scoped_wallet.address).call() == usdc_before - int(trade.amount_in)
    received = dai_c.functions.balanceOf(scoped_wallet.address).call() - dai_before
    assert received == int(trade.quoted_amount_out)  # nothing moved the pool in between
    states = list(
        TradeEvent.objects.filter(trade=trade).exclude(to_state="").values_list("to_state", flat=True)
    )
    assert states == ["PENDING", "SIMULATING", "VALIDATING", "SIGNING", "CONFIRMING", "SETTLED"]
    checked, broken = audit_verify()
    assert broken is None
    assert checked >= 8


def test_replaying_every_step_of_a_settled_trade_changes_nothing(scoped_wallet, deployed_devchain):
    trade = _run_to_confirming(_submit(scoped_wallet, key="replay"))
    _mine(deployed_devchain, 3)
    rmtm.trade_confirm(trade_ids=[trade.pk])
    trade.refresh_from_db()
    assert trade.state == "SETTLED"
    events = TradeEvent.objects.count()
    snapshot = list(ChainTransaction.objects.values_list("pk", "nonce", "unsigned_hash", "tx_hash", "status"))
    rmtm.trade_simulate(trade_id=trade.pk)
    rmtm.trade_validate(trade_id=trade.pk)
    signer.trade_sign(trade_id=trade.pk, attempt=1)
    signed_step.persist_signer_answers([(trade.pk, 1)])
    rmtm.trade_broadcast(trade_ids=[trade.pk])
    rmtm.trade_confirm(trade_ids=[trade.pk])
    assert Trade.objects.get(pk=trade.pk).state == "SETTLED"
    assert TradeEvent.objects.count() == events
    assert (
        list(ChainTransaction.objects.values_list("pk", "nonce", "unsigned_hash", "tx_hash", "status"))
        == snapshot
    )
