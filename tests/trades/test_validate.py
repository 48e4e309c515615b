"""validate.py: VALIDATING → SIGNING (or REJECTED): scope, price, balances, allowance, the advisory gate;
one validation round per wallet, nonces allocated and every transaction frozen by its holder."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.conf import settings
from django.utils import timezone
from web3 import Web3

from apps.chain import devchain
from apps.chain.models import Chain, Dex, Token
from apps.chain.pool import pool_for
from apps.signing import services as signer
from apps.signing.models import SigningRecord
from apps.trades import chainio
from apps.trades import real_money_transaction_manager as rmtm
from apps.trades.models import ChainTransaction, Trade
from apps.trades.real_money_transaction_manager import validate as validate_step
from apps.wallets.models import NonceCursor
from tests.factories import grant_scope, model_version_row
from tests.trades.steps import _simulated, _submit, _tokens

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.chain]


def test_out_of_scope_trade_is_rejected_and_signs_nothing(funded_wallet):
    grant_scope(funded_wallet, max_amount_in=50 * 10**6)
    trade = _submit(funded_wallet, amount_in=100 * 10**6, key="too-big")
    rmtm.trade_simulate(trade_id=trade.pk)
    rmtm.trade_validate(trade_id=trade.pk)
    trade.refresh_from_db()
    assert trade.state == "REJECTED"
    assert "amount_over_cap" in trade.reason
    assert not trade.transactions.exists()
    # The refusal rolled back the allocation with everything else: no nonce was consumed.
    cursor = NonceCursor.objects.filter(wallet=funded_wallet).first()
    assert cursor is None or cursor.next_nonce == 0


def test_insufficient_balance_is_rejected(funded_wallet):
    grant_scope(funded_wallet, max_amount_in=10**18)
    trade = _submit(funded_wallet, amount_in=10**6 * 10**6, key="poor")
    rmtm.trade_simulate(trade_id=trade.pk)
    trade.refresh_from_db()
    if trade.state == "VALIDATING":
        rmtm.trade_validate(trade_id=trade.pk)
        trade.refresh_from_db()
    assert trade.state in {"REJECTED", "FAILED"}
    assert (
        "insufficient" in trade.reason or "TRANSFER_FROM_FAILED" in trade.reason or "reverted" in trade.reason
    )


def test_price_far_from_the_reference_is_rejected(funded_wallet):
    grant_scope(funded_wallet, max_amount_in=10**15, max_slippage_bps=10)
    # 40,000 dUSDC into a 1M/1M pool moves the price ~4%: far beyond the scope's 10 bps.
    trade = _submit(funded_wallet, amount_in=40_000 * 10**6, slippage_bps=5, key="impact")
    rmtm.trade_simulate(trade_id=trade.pk)
    rmtm.trade_validate(trade_id=trade.pk)
    trade.refresh_from_db()
    assert trade.state == "REJECTED"
    assert "price_deviation" in trade.reason


def test_an_enabled_advisory_gate_rejects_a_trade_the_advice_opposes_and_signs_nothing(scoped_wallet):
    from apps.ml.services import advice_gate_set, advice_record

    usdc, dai = _tokens()
    version = model_version_row()  # the gate reads advice rows only, never weights
    opposed = _submit(scoped_wallet, key="gate-off")
    advice_record(  # dDAI very likely falls against dUSDC: the trade buys dDAI with dUSDC
        token_id=dai.pk,
        quote_token_id=usdc.pk,
        model_version_id=version.pk,
        horizon_bars=1,
        created_at=timezone.now(),
        data_until=timezone.now(),
        p_up=Decimal("0.05"),
        confidence=Decimal("0.9"),
    )
    rmtm.trade_simulate(trade_id=opposed.pk)
    rmtm.trade_validate(trade_id=opposed.pk)
    assert Trade.objects.get(pk=opposed.pk).state == "SIGNING"  # no gate: advice alone never blocks

    advice_gate_set(scope_id=scoped_wallet.scopes.get().pk, refuse_at_probability=Decimal("0.75"))
    gated = _submit(scoped_wallet, key="gate-on")
    rmtm.trade_simulate(trade_id=gated.pk)
    rmtm.trade_validate(trade_id=gated.pk)
    gated.refresh_from_db()
    assert gated.state == "REJECTED"
    assert gated.reason.startswith("advice_disagrees:"), gated.reason
    assert not gated.transactions.filter(raw_signed__isnull=False).exists()
    assert not SigningRecord.objects.filter(trade=gated).exists()


def test_one_validation_judges_every_waiting_trade_of_the_wallet_with_one_balance_read(scoped_wallet):
    """The trade whose task runs first judges the others waiting in VALIDATING too: one read of
    balances and fees for all of them, nonces handed out in trade order, and what an earlier trade
    may spend no longer there for a later one. Their own validations then find nothing to do."""
    trades = _simulated(scoped_wallet, [f"round-{i}" for i in range(4)])
    stats = pool_for(trades[0].chain).stats
    before = stats.http_requests
    rmtm.trade_validate(trade_id=trades[0].pk)
    assert (
        stats.http_requests - before == 2
    )  # one balances-and-fees batch and the pending nonce, for all four
    states = {t.pk: Trade.objects.get(pk=t.pk).state for t in trades}
    assert set(states.values()) == {"SIGNING"}, states
    nonces = [sorted(int(n) for n in t.transactions.values_list("nonce", flat=True)) for t in trades]
    assert nonces == [[0, 1], [2, 3], [4, 5], [6, 7]]
    before = stats.http_requests
    for trade in trades[1:]:
        rmtm.trade_validate(trade_id=trade.pk)
    assert stats.http_requests == before  # nothing left to do, nothing asked of the node


def test_a_trade_the_round_cannot_fund_is_rejected_alone(scoped_wallet, deployed_devchain):
    """25 dUSDC, three trades of 10: each alone fits the balance, together they do not. The third is
    rejected with the reason, its savepoint undone (no nonce, no transaction); the others frozen."""
    w3 = Web3(Web3.HTTPProvider(deployed_devchain))
    usdc = Token.objects.get(symbol="dUSDC")
    erc20 = w3.eth.contract(address=usdc.address, abi=devchain.load_artifact("DevToken")["abi"])
    # Leave the wallet 25 dUSDC (the dev node lets the test move the rest away as the wallet).
    keep = 25 * 10**6
    extra = erc20.functions.balanceOf(scoped_wallet.address).call() - keep
    w3.provider.make_request("hardhat_impersonateAccount", [scoped_wallet.address])
    sent = erc20.functions.transfer("0x000000000000000000000000000000000000dEaD", extra).transact(
        {"from": scoped_wallet.address}
    )
    w3.eth.wait_for_transaction_receipt(sent)
    w3.provider.make_request("hardhat_stopImpersonatingAccount", [scoped_wallet.address])
    first, second, third = _simulated(scoped_wallet, ["fund-a", "fund-b", "fund-c"], amount_in=10 * 10**6)
    rmtm.trade_validate(trade_id=first.pk)
    first, second, third = (Trade.objects.get(pk=t.pk) for t in (first, second, third))
    assert (first.state, second.state, third.state) == ("SIGNING", "SIGNING", "REJECTED")
    assert third.reason.startswith("insufficient_balance")
    assert not third.transactions.exists()
    # Nonce 0 went to the transfer above: the chain's pending count moves the cursor past it.
    frozen = sorted(
        int(n)
        for n in ChainTransaction.objects.filter(trade__in=[first, second]).values_list("nonce", flat=True)
    )
    assert frozen == [1, 2, 3, 4]
    assert NonceCursor.objects.get(wallet=scoped_wallet).next_nonce == 5


def test_an_allowance_another_in_flight_trade_will_spend_is_not_relied_on(scoped_wallet, deployed_devchain):
    """The wallet's allowance covers exactly one trade; two are simulated (each sees it as enough).
    Only the first may use it: the second gets its own exact approve, and both settle. Before, the
    second went out as a bare swap and reverted on chain once the first had spent the allowance."""
    Chain.objects.update(confirmations_required=1)
    w3 = Web3(Web3.HTTPProvider(deployed_devchain))
    usdc, dex = Token.objects.get(symbol="dUSDC"), Dex.objects.get()
    erc20 = w3.eth.contract(address=usdc.address, abi=devchain.load_artifact("DevToken")["abi"])
    w3.provider.make_request("hardhat_impersonateAccount", [scoped_wallet.address])
    sent = erc20.functions.approve(dex.router, 10 * 10**6).transact({"from": scoped_wallet.address})
    w3.eth.wait_for_transaction_receipt(sent)
    w3.provider.make_request("hardhat_stopImpersonatingAccount", [scoped_wallet.address])
    first, second = _simulated(scoped_wallet, ["allow-a", "allow-b"])
    assert [t.events.get(kind="start_validation").data["approve_gas"] for t in (first, second)] == [0, 0]
    rmtm.trade_validate(trade_id=first.pk)
    kinds = {
        t.pk: list(t.transactions.order_by("sequence").values_list("kind", flat=True))
        for t in (first, second)
    }
    assert kinds == {first.pk: ["swap"], second.pk: ["approve", "swap"]}
    assert int(second.transactions.get(kind="approve").gas) >= settings.APPROVE_GAS_WITHOUT_ESTIMATE
    outcomes = signer.trade_sign_batch([(t.pk, 1) for t in (first, second)])
    assert all(o.signed for o in outcomes.values())
    rmtm.trade_after_signing(requests=[(t.pk, 1) for t in (first, second)])
    rmtm.trade_confirm(trade_ids=[first.pk, second.pk])
    assert [Trade.objects.get(pk=t.pk).state for t in (first, second)] == ["SETTLED", "SETTLED"]


def test_an_allowance_the_simulation_saw_but_gone_by_validation_gets_an_approve(
    scoped_wallet, deployed_devchain
):
    """The simulation's block still had the allowance (another trade's exact approve, mined before
    its swap); by validation that swap has spent it and is recorded mined, so nothing in flight
    speaks for it. Validation reads the allowance again: the trade gets its own approve and settles.
    Before, it went out as a bare swap and reverted on chain (seen once in bench/pipeline.py)."""
    Chain.objects.update(confirmations_required=1)
    w3 = Web3(Web3.HTTPProvider(deployed_devchain))
    usdc, dex = Token.objects.get(symbol="dUSDC"), Dex.objects.get()
    erc20 = w3.eth.contract(address=usdc.address, abi=devchain.load_artifact("DevToken")["abi"])

    def approve(amount: int) -> None:
        w3.provider.make_request("hardhat_impersonateAccount", [scoped_wallet.address])
        sent = erc20.functions.approve(dex.router, amount).transact({"from": scoped_wallet.address})
        w3.eth.wait_for_transaction_receipt(sent)
        w3.provider.make_request("hardhat_stopImpersonatingAccount", [scoped_wallet.address])

    approve(10 * 10**6)
    (trade,) = _simulated(scoped_wallet, ["allow-gone"])
    assert trade.events.get(kind="start_validation").data["approve_gas"] == 0
    approve(0)  # spent meanwhile
    rmtm.trade_validate(trade_id=trade.pk)
    assert list(trade.transactions.order_by("sequence").values_list("kind", flat=True)) == ["approve", "swap"]
    assert signer.trade_sign(trade_id=trade.pk, attempt=1).signed
    rmtm.trade_after_signing(requests=[(trade.pk, 1)])
    rmtm.trade_confirm(trade_ids=[trade.pk])
    assert Trade.objects.get(pk=trade.pk).state == "SETTLED"


def test_a_round_looks_for_swaps_speaking_for_the_allowance_before_it_reads_the_chain(
    scoped_wallet, monkeypatch
):
    """The order matters: looked up after the chain read, a swap recorded mined in between spoke for
    nothing while the read still showed the allowance it had just spent."""
    order = []
    real_spoken, real_state = validate_step._allowance_spoken_for, chainio.wallet_state

    def spoken(trade, memo):
        order.append("spoken_for")
        return real_spoken(trade, memo)

    def state(**kwargs):
        order.append("chain")
        return real_state(**kwargs)

    monkeypatch.setattr(validate_step, "_allowance_spoken_for", spoken)
    monkeypatch.setattr(chainio, "wallet_state", state)
    (trade,) = _simulated(scoped_wallet, ["order"])
    rmtm.trade_validate(trade_id=trade.pk)
    assert order[:2] == ["spoken_for", "chain"]


def test_a_validation_that_finds_the_wallet_busy_leaves_its_trade_to_the_holder(scoped_wallet):
    """Another worker holds the wallet's validation lock: the step returns at once (no idle worker,
    no task coming back) with its trade still VALIDATING, for the holder to judge."""
    from project.locks import Advisory
    from tests.signing.test_batch import _other_connection

    (trade,) = _simulated(scoped_wallet, ["busy"])
    with _other_connection() as other:
        other.execute("SELECT pg_advisory_lock(%s, %s)", [int(Advisory.WALLET_NONCES), scoped_wallet.pk])
        assert rmtm.trade_validate(trade_id=trade.pk) is None
        assert Trade.objects.get(pk=trade.pk).state == "VALIDATING"
        # Let go explicitly: a closed session's lock lingers until its backend has seen the close.
        other.execute("SELECT pg_advisory_unlock(%s, %s)", [int(Advisory.WALLET_NONCES), scoped_wallet.pk])
    rmtm.trade_validate(trade_id=trade.pk)
    assert Trade.objects.get(pk=trade.pk).state == "SIGNING"


def test_the_holder_looks_again_after_letting_go_for_a_trade_that_arrived_meanwhile(
    scoped_wallet, monkeypatch
):
    """A trade turns VALIDATING after the holder's last round found none and before it let go; its
    own validation found the lock held and left it. The holder's look after letting go finds it."""
    first, late = (
        _submit(scoped_wallet, key="holder"),
        _submit(scoped_wallet, key="late", amount_in=10 * 10**6),
    )
    rmtm.trade_simulate(trade_id=first.pk)
    real_round, arrived = validate_step._validation_round, []

    def round_then_arrival(wallet_id):
        waiting = real_round(wallet_id)
        if not waiting and not arrived:
            arrived.append(late.pk)
            rmtm.trade_simulate(trade_id=late.pk)  # committed VALIDATING just after the read above
        return waiting

    monkeypatch.setattr(validate_step, "_validation_round", round_then_arrival)
    rmtm.trade_validate(trade_id=first.pk)
    assert arrived
    assert [Trade.objects.get(pk=t.pk).state for t in (first, late)] == ["SIGNING", "SIGNING"]
