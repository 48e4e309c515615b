"""No trade waits for the recovery timer: the holder of a wallet's lock (its validator, its
broadcaster) that meets an error which heals tries again without letting go, so the trades whose own
steps found the lock held and left them to it are judged and sent at once.

Each test sets TRADE_STALL_SECONDS far above its own duration, so recovery cannot be what moves the
trades, and reproduces the moment deterministically: another step arrives while the holder holds the
lock, then the holder's round fails once."""

from __future__ import annotations

import threading

import pytest

from apps.signing import services as signer
from apps.trades import chainio
from apps.trades import real_money_transaction_manager as rmtm
from apps.trades.models import ChainTransaction, Trade
from apps.trades.real_money_transaction_manager import validate as validate_step
from project.db import SerializationRetriesExhausted
from tests.trades.steps import _simulated

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.chain]


@pytest.fixture(autouse=True)
def _no_recovery(settings):
    settings.TRADE_STALL_SECONDS = 3600


def _in_other_thread(step, **kwargs) -> None:
    """Run a step as another worker would, now, and wait for it (its own database connection)."""
    from django.db import connection

    def run():
        try:
            step(**kwargs)
        finally:
            connection.close()

    other = threading.Thread(target=run)
    other.start()
    other.join(timeout=30)
    assert not other.is_alive()


def _states(trades: list[Trade]) -> list[str]:
    return [Trade.objects.get(pk=t.pk).state for t in trades]


@pytest.mark.parametrize(
    "error",
    [chainio.ChainUnavailable("no endpoint answered"), SerializationRetriesExhausted(8, None)],
    ids=["chain-read", "contention"],
)
def test_a_validation_round_that_fails_once_is_judged_again_by_its_holder_with_the_trades_left_to_it(
    scoped_wallet, monkeypatch, error
):
    first, waiting = _simulated(scoped_wallet, ["holder", "left-to-holder"])
    # Judge one trade per round: the second round is the one that fails.
    monkeypatch.setattr(validate_step.settings, "VALIDATE_BATCH_SIZE", 1)
    real_state, calls = chainio.wallet_state, []

    def state_then_failure(**kwargs):
        calls.append(kwargs)
        if len(calls) == 2:
            # The waiting trade's own step runs now, finds the wallet's lock held and leaves its
            # trade to the holder; then the holder's read fails.
            _in_other_thread(rmtm.trade_validate, trade_id=waiting.pk)
            assert Trade.objects.get(pk=waiting.pk).state == "VALIDATING"
            raise error
        return real_state(**kwargs)

    monkeypatch.setattr(chainio, "wallet_state", state_then_failure)
    rmtm.trade_validate(trade_id=first.pk)  # returns normally: no task retry, no timer
    assert len(calls) == 3
    assert _states([first, waiting]) == ["SIGNING", "SIGNING"]


def test_a_validation_holder_lets_go_of_an_error_that_does_not_heal(scoped_wallet, monkeypatch):
    (trade,) = _simulated(scoped_wallet, ["bug"])

    def broken(**_kwargs):
        raise ValueError("a bug, not a passing fault")

    monkeypatch.setattr(chainio, "wallet_state", broken)
    with pytest.raises(ValueError, match="a bug"):
        rmtm.trade_validate(trade_id=trade.pk)
    assert _states([trade]) == ["VALIDATING"]


def test_a_validation_holder_gives_up_after_its_retries_in_place(scoped_wallet, monkeypatch, settings):
    """A chain that stays down: the holder tries HOLDER_RETRIES_IN_PLACE times more, then lets go and
    its task is retried with backoff, like any step that meets a dead chain."""
    settings.HOLDER_RETRIES_IN_PLACE = 2
    (trade,) = _simulated(scoped_wallet, ["down"])
    calls = []

    def down(**_kwargs):
        calls.append(1)
        raise chainio.ChainUnavailable("down")

    monkeypatch.setattr(chainio, "wallet_state", down)
    with pytest.raises(chainio.ChainUnavailable):
        rmtm.trade_validate(trade_id=trade.pk)
    assert len(calls) == 3


def test_a_broadcast_that_fails_once_is_sent_again_by_its_holder_with_the_answers_left_to_it(
    scoped_wallet, monkeypatch
):
    first, second = _simulated(scoped_wallet, ["send-first", "send-second"])
    rmtm.trade_validate(trade_id=first.pk)
    outcomes = signer.trade_sign_batch([(first.pk, 1), (second.pk, 1)])
    assert all(o.signed for o in outcomes.values())
    real_send, sends = chainio.send_raw, []

    def send_then_failure(chain, raw):
        sends.append(raw)
        if len(sends) == 2:
            # The second answer's step persists its trade, finds the broadcaster's lock held and
            # leaves the sending to the holder; then the holder's send fails.
            _in_other_thread(rmtm.trade_after_signing, requests=[(second.pk, 1)])
            assert Trade.objects.get(pk=second.pk).state == "CONFIRMING"
            raise chainio.ChainUnavailable("the node dropped the connection")
        return real_send(chain, raw)

    monkeypatch.setattr(chainio, "send_raw", send_then_failure)
    rmtm.trade_after_signing(requests=[(first.pk, 1)])  # returns normally
    sent = ChainTransaction.objects.filter(trade__in=[first, second]).order_by("nonce")
    assert [int(tx.nonce) for tx in sent] == [0, 1, 2, 3]
    assert all(tx.broadcast_at is not None for tx in sent)


def test_a_validation_round_whose_read_is_cancelled_is_read_again_by_its_holder(scoped_wallet, monkeypatch):
    """Under SERIALIZABLE a lone read can be cancelled on a conflict ("could not serialize access
    ... conflict out to old pivot"): the round's own read is retried in place like the round."""
    from django.db import OperationalError

    first, waiting = _simulated(scoped_wallet, ["read-holder", "read-left"])
    monkeypatch.setattr(validate_step.settings, "VALIDATE_BATCH_SIZE", 1)
    real_round, reads = validate_step._validation_round, []

    def round_then_cancelled(wallet_id):
        reads.append(wallet_id)
        if len(reads) == 2:
            _in_other_thread(rmtm.trade_validate, trade_id=waiting.pk)  # left to the holder
            error = OperationalError("could not serialize access due to read/write dependencies")
            error.sqlstate = "40001"  # as psycopg's error carries it
            raise error
        return real_round(wallet_id)

    monkeypatch.setattr(validate_step, "_validation_round", round_then_cancelled)
    rmtm.trade_validate(trade_id=first.pk)
    assert _states([first, waiting]) == ["SIGNING", "SIGNING"]


def test_a_step_that_meets_contention_runs_again_in_its_own_task_not_behind_the_queue(
    scoped_wallet, monkeypatch
):
    """A retried task goes to the back of the queue, behind a whole burst: a step that meets
    contention runs again in place first (every step is idempotent)."""
    from apps.trades import tasks

    (trade,) = _simulated(scoped_wallet, ["in-place"])
    real, calls = rmtm.trade_validate, []

    def contended_once(**kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            raise SerializationRetriesExhausted(8, None)
        return real(**kwargs)

    monkeypatch.setattr(rmtm, "trade_validate", contended_once)
    tasks.validate.run(trade.pk)  # returns: no retry through the queue
    assert len(calls) == 2
    assert _states([trade]) == ["SIGNING"]
