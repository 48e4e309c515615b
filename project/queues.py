"""The Celery queues, one per trust level. Routing lives in celery_app.py."""

import functools
from enum import StrEnum


class Queue(StrEnum):
    EXECUTION = "execution"
    SIGNER = "signer"
    WATCHER = "watcher"
    MARKET = "market"
    ML = "ml"


# Queues whose tasks move money: a task is acknowledged only after it ran, and re-delivered if the
# worker died under it (every task is idempotent, so a re-run is safe).
LATE_ACK_QUEUES = frozenset({Queue.EXECUTION, Queue.SIGNER})


def custos_task(*, name: str, queue: Queue, **options):
    """The one way to declare a task: bound, explicitly named and queued, late-acked where money moves.

    The queue is recorded as `custos_queue` (Celery's own `queue` task attribute is deprecated);
    celery_app.route_task is what sends the task there, and a test proves the two agree.
    """
    from celery import shared_task

    late = queue in LATE_ACK_QUEUES
    return shared_task(
        bind=True,
        name=name,
        custos_queue=str(queue),
        acks_late=late,
        reject_on_worker_lost=late,
        **options,
    )


def enqueue_on_commit(task_name: str, *args) -> None:
    """Send a task by name once the current transaction commits (never for an aborted attempt)."""
    from django.db import transaction

    from celery_app import app

    transaction.on_commit(functools.partial(app.send_task, task_name, args=args))
