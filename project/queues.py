"""The Celery queues, one per trust level, and the name of every task. Routing lives in celery_app.py."""

import functools
from enum import StrEnum

from celery import current_app, shared_task
from django.db import transaction


class Queue(StrEnum):
    EXECUTION = "execution"
    SIGNER = "signer"
    WATCHER = "watcher"
    MARKET = "market"
    ML = "ml"


class TaskName(StrEnum):
    """Every task's name: tasks are declared and sent by these (a task's name starts with its app's
    label, which is how celery_app routes it to its queue)."""

    TRADES_SIMULATE = "trades.simulate"
    TRADES_VALIDATE = "trades.validate"
    TRADES_AFTER_SIGNING = "trades.after_signing_batch"
    TRADES_BROADCAST = "trades.broadcast"
    TRADES_CONFIRM = "trades.confirm_batch"
    TRADES_TICK = "trades.tick"
    SIGNING_SIGN = "signing.sign"
    SIGNING_CREATE_KEY = "signing.create_key"
    WATCHER_TICK = "watcher.tick"
    WATCHER_TICK_ALL = "watcher.tick_all"
    CHAIN_PROBE_ENDPOINTS = "chain.probe_endpoints"
    MARKET_REFRESH = "market.refresh"
    ML_ADVISE_ALL = "ml.advise_all"
    ML_ADVISE_PAIR = "ml.advise_pair"


# Queues whose tasks move money: a task is acknowledged only after it ran, and re-delivered if the
# worker died under it (every task is idempotent, so a re-run is safe).
LATE_ACK_QUEUES = frozenset({Queue.EXECUTION, Queue.SIGNER})


def custos_task(*, name: TaskName, queue: Queue, **options):
    """The one way to declare a task: bound, explicitly named and queued, late-acked where money moves.

    The queue is recorded as `custos_queue` (Celery's own `queue` task attribute is deprecated);
    celery_app.route_task is what sends the task there, and a test proves the two agree.
    """
    late = queue in LATE_ACK_QUEUES
    return shared_task(
        bind=True,
        name=str(name),
        custos_queue=str(queue),
        acks_late=late,
        reject_on_worker_lost=late,
        **options,
    )


def enqueue_on_commit(task_name: TaskName, *args) -> None:
    """Send a task by name once the current transaction commits (never for an aborted attempt), through
    Celery's current app (celery_app, which project/__init__.py loads in every process)."""
    transaction.on_commit(functools.partial(current_app.send_task, str(task_name), args=args))


def enqueue_now(task_name: TaskName, *args) -> None:
    """Send a task by name now, or after the enclosing transaction if one is open."""
    with transaction.atomic():
        enqueue_on_commit(task_name, *args)
