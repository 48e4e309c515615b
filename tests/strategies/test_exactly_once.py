"""Each run creates its trade exactly once: two ticks at once, a tick run again (redelivered after a
worker died), a tick whose enqueue fails because Redis is down. The guarantee is in the database: the
unique (strategy, sequence), the run's key derived from both, and the trade's unique idempotency key.
(Real workers killed at each boundary of the run transaction: test_e2e.py.)"""

from __future__ import annotations

import threading
from unittest import mock

import pytest
from django.db import IntegrityError, connection, transaction
from kombu.exceptions import OperationalError as BrokerDown

from apps.strategies.models import StrategyRun
from apps.trades import real_money_transaction_manager as rmtm
from apps.trades.models import Trade
from apps.trades.real_money_transaction_manager.submit import trade_submit_in_transaction
from project.db import serializable_attempts
from tests.strategies.conftest import create, later, runs, tick

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.chain]


def _recurring(wallet, n: int):
    return [
        create(
            wallet, "recurring", {"amount_per_run": "5", "interval_seconds": 60}, total="100", key=f"once-{i}"
        )
        for i in range(n)
    ]


def test_two_ticks_at_once_and_a_redelivered_one_create_each_trade_once(scoped_wallet, deployed_devchain):
    strategies = _recurring(scoped_wallet, 6)
    at = later(strategies[-1], 1)
    barrier = threading.Barrier(2, timeout=30)
    results, errors = [], []

    def one_tick() -> None:
        try:
            barrier.wait()
            results.append(tick(now=at))
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)
        finally:
            connection.close()

    ticks = [threading.Thread(target=one_tick) for _ in range(2)]
    for thread in ticks:
        thread.start()
    for thread in ticks:
        thread.join(timeout=120)
    assert not errors, errors
    assert sum(r.get("create", 0) for r in results) == 6, results
    tick(now=at)  # the same tick delivered again
    for strategy in strategies:
        assert [(r.sequence, r.outcome) for r in runs(strategy)] == [(1, "created")]
    keys = sorted(Trade.objects.filter(wallet=scoped_wallet).values_list("idempotency_key", flat=True))
    assert keys == sorted(f"strategy:{s.pk}:1" for s in strategies)


def test_the_database_refuses_a_second_run_or_trade_for_a_sequence(scoped_wallet, deployed_devchain):
    (strategy,) = _recurring(scoped_wallet, 1)
    tick(now=later(strategy, 1))
    (run,) = runs(strategy)
    with pytest.raises(IntegrityError), transaction.atomic():
        StrategyRun.objects.create(
            strategy=strategy, sequence=1, idempotency_key=run.idempotency_key, outcome="created"
        )
    with pytest.raises(IntegrityError), transaction.atomic():  # a key not derived from the run
        StrategyRun.objects.create(
            strategy=strategy, sequence=2, idempotency_key="strategy:0:2", outcome="created"
        )
    trade = run.trade
    for attempt in serializable_attempts(label="test"):
        with attempt:
            again = trade_submit_in_transaction(
                owner=trade.owner,
                wallet=trade.wallet,
                dex=trade.dex,
                path=list(trade.path),
                amount_in=int(trade.amount_in),
                deadline=trade.deadline,
                idempotency_key=trade.idempotency_key,
                slippage_bps=trade.slippage_bps,
            )
    assert (again.trade.pk, again.created) == (trade.pk, False)


def test_a_tick_whose_enqueue_fails_with_redis_down_commits_the_run_once(
    scoped_wallet, deployed_devchain, settings
):
    (strategy,) = _recurring(scoped_wallet, 1)
    at = later(strategy, 1)
    with mock.patch("celery.app.base.Celery.send_task", side_effect=BrokerDown("redis restarting")):
        with pytest.raises(BrokerDown):
            tick(now=at)
    (run,) = runs(strategy)
    assert run.trade.state == "PENDING"  # committed before the send failed
    assert tick(now=at).get("create") is None  # the tick again: nothing new
    assert Trade.objects.filter(wallet=scoped_wallet).count() == 1
    # trades.tick's recovery sends the trade's first step that never left.
    settings.TRADE_STALL_SECONDS = 0
    with mock.patch("celery.app.base.Celery.send_task") as sent:
        assert rmtm.recover_stalled_trades() == 1
    assert sent.call_args.args[0] == "trades.simulate"
    assert sent.call_args.kwargs["args"] == (run.trade_id,)
