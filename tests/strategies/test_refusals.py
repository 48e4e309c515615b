"""A strategy never widens what may be signed: a run whose trade falls outside the owner-signed scope
is refused by the engine and the strategy stops with the reason, nothing signed; a strategy whose
caps are reached stops with the reason; a run whose inputs the engine would refuse is refused before
any trade exists."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.signing.models import SigningRecord
from apps.strategies.kinds import StrategyInputError
from apps.strategies.models import StrategyEvent
from apps.strategies.services import strategy_caps_lower, strategy_resume
from apps.trades import real_money_transaction_manager as rmtm
from apps.trades.models import Trade
from apps.wallets.models import PermissionScope, Wallet
from apps.wallets.services import scope_revoke
from tests.strategies.conftest import create, later, reload, runs, settle, tick

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.chain]


def _engine_runs(trade: Trade) -> Trade:
    rmtm.trade_simulate(trade_id=trade.pk)
    rmtm.trade_validate(trade_id=trade.pk)
    return Trade.objects.get(pk=trade.pk)


def test_a_slice_over_the_scope_is_rejected_and_the_twap_pauses_without_signing(
    scoped_wallet, deployed_devchain
):
    # The scope lets one trade sell at most 1,000 dUSDC; each slice is 1,500.
    strategy = create(scoped_wallet, "twap", {"slices": 2, "duration_seconds": 120}, total="3000")
    assert tick(now=later(strategy, 1)).get("create") == 1
    trade = _engine_runs(runs(strategy)[0].trade)
    assert trade.state == "REJECTED", trade.reason
    tick(now=later(strategy, 2))

    run = runs(strategy)[0]
    strategy = reload(strategy)
    assert run.outcome == "refused"
    assert f"trade {trade.pk} ended REJECTED: {trade.reason}" in run.reason
    assert strategy.state == "PAUSED"
    assert trade.reason in strategy.reason
    assert (strategy.runs_created, int(strategy.amount_committed)) == (0, 0)  # nothing swapped
    assert not SigningRecord.objects.filter(wallet=scoped_wallet).exists()
    assert StrategyEvent.objects.filter(strategy=strategy, kind="run_refused", to_state="PAUSED").exists()
    # Paused, it piles nothing up however long it waits.
    for minutes in (2, 5, 10):
        tick(now=later(strategy, minutes * 60))
    assert len(runs(strategy)) == 1


def test_a_revoked_scope_refuses_the_next_run_and_the_strategy_stops(scoped_wallet, deployed_devchain):
    strategy = create(
        scoped_wallet, "recurring", {"amount_per_run": "5", "interval_seconds": 60}, total="100"
    )
    for scope in PermissionScope.objects.filter(wallet=scoped_wallet):
        scope_revoke(scope=scope)
    tick(now=later(strategy, 1))
    trade = _engine_runs(runs(strategy)[0].trade)
    assert trade.state == "REJECTED"
    assert "no_active_scope" in trade.reason
    tick(now=later(strategy, 2))
    strategy = reload(strategy)
    assert strategy.state == "PAUSED"
    assert "no_active_scope" in strategy.reason
    assert "no_active_scope" in runs(strategy)[0].reason
    assert not SigningRecord.objects.filter(wallet=scoped_wallet).exists()


def test_caps_reached_stop_the_strategy_with_the_reason_and_no_trade(scoped_wallet, deployed_devchain):
    strategy = create(
        scoped_wallet, "recurring", {"amount_per_run": "10", "interval_seconds": 60}, total="100"
    )
    tick(now=later(strategy, 1))
    settle(deployed_devchain, runs(strategy)[0].trade)
    tick(now=later(strategy, 2))
    signed_before = SigningRecord.objects.filter(wallet=scoped_wallet).count()

    with pytest.raises(StrategyInputError) as raised:
        strategy_caps_lower(strategy=reload(strategy), total_amount_in=200 * 10**6)
    assert raised.value.field == "total_amount_in"
    strategy = strategy_caps_lower(strategy=reload(strategy), total_amount_in=10 * 10**6, max_runs=5)
    assert (int(strategy.total_amount_in), strategy.max_runs) == (10 * 10**6, 5)

    assert tick(now=later(strategy, 61)).get("complete") == 1
    strategy = reload(strategy)
    assert strategy.state == "COMPLETED"
    assert strategy.reason == "caps reached: total_amount_in reached (10000000 of 10000000 committed)"
    assert len(runs(strategy)) == 1
    assert Trade.objects.filter(strategy_run__strategy=strategy).count() == 1
    assert SigningRecord.objects.filter(wallet=scoped_wallet).count() == signed_before


def test_a_run_the_engine_would_refuse_is_refused_before_any_trade_exists(scoped_wallet, deployed_devchain):
    strategy = create(
        scoped_wallet, "recurring", {"amount_per_run": "5", "interval_seconds": 60}, total="100"
    )
    Wallet.objects.filter(pk=scoped_wallet.pk).update(active=False)
    assert tick(now=later(strategy, 1)).get("refuse") == 1
    run = runs(strategy)[0]
    strategy = reload(strategy)
    assert (run.outcome, run.trade) == ("refused", None)
    assert "wallet: wallet is not active" in run.reason
    assert strategy.state == "PAUSED"
    assert "wallet is not active" in strategy.reason
    assert not Trade.objects.filter(wallet=scoped_wallet).exists()

    # Resumed once the wallet is active again: the next run goes ahead with the next sequence.
    Wallet.objects.filter(pk=scoped_wallet.pk).update(active=True)
    strategy = strategy_resume(strategy=strategy, now=later(strategy, 30))
    assert tick(now=later(strategy, 61)).get("create") == 1
    assert [(r.sequence, r.outcome) for r in runs(strategy)] == [(1, "refused"), (2, "created")]


def test_a_limit_order_expires_completed_without_a_trade(scoped_wallet, deployed_devchain):
    expiry = timezone.now() + timedelta(hours=1)
    strategy = create(
        scoped_wallet,
        "limit",
        {"trigger": "at_or_below", "limit_price": "0.000001", "twap_window_seconds": 10},
        expires_at=expiry,
    )
    assert tick(now=expiry + timedelta(seconds=1)).get("complete") == 1
    strategy = reload(strategy)
    assert strategy.state == "COMPLETED"
    assert strategy.reason == f"expired at {expiry.isoformat()} before its price was reached"
    assert runs(strategy) == []
