"""Execution-queue tasks: thin wrappers over the critical path (real_money_transaction_manager), ids in,
nothing out.

Errors that heal are retried: chain errors with exponential backoff and a cap; contention (a
transaction that kept losing to concurrent ones) and a nonce the node cannot take yet after a short
jittered pause. Everything else is decided by the manager (a permanent failure ends the trade
through a transition)."""

import random
import time

from django.conf import settings
from django.db import OperationalError

from apps.trades import real_money_transaction_manager as rmtm
from apps.trades.chainio import ChainUnavailable, NonceNotYetValid
from project import locks
from project.db import SerializationRetriesExhausted, is_retryable
from project.locks import single_run
from project.queues import Queue, TaskName, custos_task

RETRY = {
    "autoretry_for": (ChainUnavailable, ConnectionError),
    "retry_backoff": 1,
    "retry_backoff_max": 30,
    "retry_jitter": True,
    "max_retries": 20,
}


def _run(task, step, **kwargs) -> None:
    for in_place in range(settings.STEP_RETRIES_IN_PLACE + 1):
        try:
            step(**kwargs)
            return
        except (
            SerializationRetriesExhausted,
            NonceNotYetValid,
            rmtm.StaleTrade,
            OperationalError,
        ) as exc:
            # Transient by nature: the competing transaction has committed (or changed the trade
            # since this step read it), or the lower nonce is one step behind. Run the step again
            # here after a moment (every step is idempotent): a retried task goes to the back of
            # the queue, behind a whole burst, and the trades its step holds for others wait with
            # it. Only after STEP_RETRIES_IN_PLACE tries does it come back through the queue.
            if isinstance(exc, OperationalError) and not is_retryable(exc):
                raise
            pause = random.uniform(0.05, 0.4)  # noqa: S311 - jitter, not crypto
            if in_place < settings.STEP_RETRIES_IN_PLACE:
                time.sleep(pause)
                continue
            raise task.retry(exc=exc, countdown=pause, max_retries=600) from exc


@custos_task(name=TaskName.TRADES_SIMULATE, queue=Queue.EXECUTION, **RETRY)
def simulate(self, trade_id: int) -> None:
    _run(self, rmtm.trade_simulate, trade_id=int(trade_id))


@custos_task(name=TaskName.TRADES_VALIDATE, queue=Queue.EXECUTION, **RETRY)
def validate(self, trade_id: int) -> None:
    _run(self, rmtm.trade_validate, trade_id=int(trade_id))


@custos_task(name=TaskName.TRADES_AFTER_SIGNING, queue=Queue.EXECUTION, **RETRY)
def after_signing(self, requests: list) -> None:
    """The signer's answer for one or more (trade, attempt): persisted, then broadcast wallet by
    wallet in nonce order. Idempotent, so a redelivery after a crash redoes nothing that was done."""
    _run(self, rmtm.trade_after_signing, requests=[(int(t), int(a)) for t, a in requests])


@custos_task(name=TaskName.TRADES_BROADCAST, queue=Queue.EXECUTION, **RETRY)
def broadcast(self, trade_id: int) -> None:
    _run(self, rmtm.trade_broadcast, trade_ids=[int(trade_id)])


@custos_task(name=TaskName.TRADES_CONFIRM, queue=Queue.EXECUTION, **RETRY)
def confirm(self, trade_ids: list) -> None:
    """Receipts of every trade a broadcast step sent, in one request."""
    _run(self, rmtm.trade_confirm, trade_ids=[int(t) for t in trade_ids], mark_looked=True)


@custos_task(name=TaskName.TRADES_OWNER_REQUESTS, queue=Queue.EXECUTION, **RETRY)
def owner_requests(self, request_ids: list) -> None:
    """The owner's cancel and retry requests the web recorded (it may not move a trade itself)."""
    _run(self, rmtm.owner_requests_handle, request_ids=[int(r) for r in request_ids])


@custos_task(name=TaskName.TRADES_TICK, queue=Queue.EXECUTION)
def tick(self) -> dict:
    """Beat: carry out owner requests still unhandled (a lost message), check receipts of CONFIRMING
    trades, re-enqueue stalled steps. One at a time: a tick that finds another still running does
    nothing (ticks queued behind a burst would otherwise all run, one after the other, each
    repeating the last one's work)."""
    with single_run(locks.TRADES_TICK, ttl_seconds=settings.TRADE_TICK_LOCK_SECONDS) as held:
        if not held:
            return {"skipped": "another tick is running"}
        return {
            "owner_requests": len(rmtm.owner_requests_handle()),
            "confirming": rmtm.confirm_all(),
            "recovered": rmtm.recover_stalled_trades(),
        }
