"""project.db.serializable under real contention: two PostgreSQL connections racing on one row."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, transaction

from apps.chain.models import Chain
from project.db import SerializationRetriesExhausted, queued_for, serializable, serializable_attempts

pytestmark = pytest.mark.django_db(transaction=True)

OPS_PER_THREAD = 10


def _race(body, threads: int = 2) -> list[BaseException]:
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            body(index)
        except BaseException as exc:  # noqa: BLE001 - surfaced to the test below
            errors.append(exc)
        finally:
            connection.close()

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    return errors


def test_concurrent_increments_commit_exactly_once_and_losers_leak_nothing():
    row = Chain.objects.create(chain_id=900_001, name="counter", confirmations_required=0)
    barrier = threading.Barrier(2, timeout=10)
    lock = threading.Lock()
    attempts: list[tuple[int, int, int]] = []  # (thread, op, attempt)
    committed_effects: list[tuple[int, int, int]] = []

    def body(thread: int) -> None:
        for op in range(OPS_PER_THREAD):
            for attempt in serializable_attempts(label="test increment"):
                with attempt:
                    current = Chain.objects.get(pk=row.pk).confirmations_required
                    with lock:
                        attempts.append((thread, op, attempt.number))
                    if attempt.number == 1:
                        barrier.wait()  # both have read the same value before either writes
                    Chain.objects.filter(pk=row.pk).update(confirmations_required=current + 1)
                    effect = (thread, op, attempt.number)
                    transaction.on_commit(lambda e=effect: committed_effects.append(e))

    errors = _race(body)

    assert errors == []
    row.refresh_from_db()
    # No lost update: every logical increment landed once.
    assert row.confirmations_required == 2 * OPS_PER_THREAD
    # Serialization failures really happened and were retried.
    retried = [a for a in attempts if a[2] > 1]
    assert len(retried) >= OPS_PER_THREAD
    # Exactly one side effect per logical operation, and only from the attempt that committed.
    assert len(committed_effects) == 2 * OPS_PER_THREAD
    assert len({(t, o) for t, o, _ in committed_effects}) == 2 * OPS_PER_THREAD
    for thread, op, number in committed_effects:
        later = [a for a in attempts if a[0] == thread and a[1] == op and a[2] > number]
        assert later == [], "an attempt after the committed one ran: its effect leaked twice"


def test_decorator_retries_and_returns_the_committed_result():
    row = Chain.objects.create(chain_id=900_002, name="counter", confirmations_required=0)
    barrier = threading.Barrier(2, timeout=10)
    calls = []
    results = []

    @serializable()
    def increment(thread: int) -> int:
        calls.append(thread)
        current = Chain.objects.get(pk=row.pk).confirmations_required
        if calls.count(thread) == 1:
            barrier.wait()
        Chain.objects.filter(pk=row.pk).update(confirmations_required=current + 1)
        return current + 1

    errors = _race(lambda thread: results.append(increment(thread)))

    assert errors == []
    assert sorted(results) == [1, 2]
    assert len(calls) == 3  # one of the two was re-run once
    row.refresh_from_db()
    assert row.confirmations_required == 2


def test_cap_reached_raises_a_clear_error_and_commits_nothing():
    row = Chain.objects.create(chain_id=900_003, name="counter", confirmations_required=0)
    barrier = threading.Barrier(2, timeout=10)
    effects = []

    @serializable(max_attempts=1)
    def increment(thread: int) -> None:
        current = Chain.objects.get(pk=row.pk).confirmations_required
        barrier.wait()
        Chain.objects.filter(pk=row.pk).update(confirmations_required=current + 1)
        transaction.on_commit(lambda: effects.append(thread))

    errors = _race(increment)

    assert len(errors) == 1
    assert isinstance(errors[0], SerializationRetriesExhausted)
    assert "1 times" in str(errors[0])
    assert "nothing was committed" in str(errors[0])
    row.refresh_from_db()
    assert row.confirmations_required == 1
    assert len(effects) == 1


def test_non_retryable_errors_propagate_without_retry():
    calls = []

    @serializable()
    def broken() -> None:
        calls.append(1)
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        broken()
    assert calls == [1]


def test_refuses_to_nest_inside_an_open_transaction():
    @serializable()
    def inner() -> None:
        pass

    with transaction.atomic(), pytest.raises(RuntimeError, match="inside another"):
        inner()


def test_connection_runs_serializable_with_timeouts():
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SHOW transaction_isolation")
        in_atomic = cursor.fetchone()[0]
    with connection.cursor() as cursor:
        cursor.execute("SHOW transaction_isolation")
        autocommit = cursor.fetchone()[0]
        cursor.execute("SHOW statement_timeout")
        statement = cursor.fetchone()[0]
        cursor.execute("SHOW lock_timeout")
        lock = cursor.fetchone()[0]
        cursor.execute("SHOW idle_in_transaction_session_timeout")
        idle = cursor.fetchone()[0]
    assert in_atomic == "serializable"
    assert autocommit == "serializable"
    assert statement == "15s"
    assert lock == "5s"
    assert idle == "1min"


def test_transactions_queued_for_one_lock_do_not_conflict_on_the_row_they_all_write():
    """Both read, then write, one row; the second starts while the first is inside its transaction.
    Unqueued, the second would fail with a serialization error and re-run; queued, it begins after
    the first committed, sees its write, and commits at the first attempt."""
    row = Chain.objects.create(chain_id=900_003, name="queued", confirmations_required=0)
    first_inside = threading.Event()
    attempts: dict[int, int] = {}

    def body(thread: int) -> None:
        if thread == 1:
            assert first_inside.wait(10)
        with queued_for(99, row.pk):
            for attempt in serializable_attempts(label=f"queued {thread}"):
                with attempt:
                    attempts[thread] = attempt.number
                    current = Chain.objects.get(pk=row.pk).confirmations_required
                    if thread == 0:
                        first_inside.set()
                        time.sleep(0.5)  # the other one is waiting at the lock by now
                    Chain.objects.filter(pk=row.pk).update(confirmations_required=current + 1)

    errors = _race(body)

    assert errors == []
    assert attempts == {0: 1, 1: 1}
    row.refresh_from_db()
    assert row.confirmations_required == 2


def test_the_queue_lock_is_refused_inside_a_transaction():
    with transaction.atomic(), pytest.raises(RuntimeError, match="outside the transaction"):
        with queued_for(99, 1):
            pass
