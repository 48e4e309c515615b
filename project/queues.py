"""The Celery queues, one per trust level, and the name of every task. Routing lives in celery_app.py.

Each worker process serves exactly one queue and runs only that queue's tasks (docs/operations.md,
"Workers"). This module holds the process's queue (`bind_worker_to_queue`, called once by
`manage.py run_worker` before Celery starts) and the guard every task body runs behind.
"""

import functools
import inspect
import logging
from enum import StrEnum

from celery import current_app, shared_task
from celery.exceptions import Reject
from django.db import transaction

logger = logging.getLogger(__name__)


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
    TRADES_OWNER_REQUESTS = "trades.owner_requests"
    SIGNING_SIGN = "signing.sign"
    SIGNING_CREATE_KEY = "signing.create_key"
    WATCHER_TICK = "watcher.tick"
    WATCHER_TICK_ALL = "watcher.tick_all"
    CHAIN_PROBE_ENDPOINTS = "chain.probe_endpoints"
    MARKET_REFRESH = "market.refresh"
    ML_ADVISE_ALL = "ml.advise_all"
    ML_ADVISE_PAIR = "ml.advise_pair"
    STRATEGIES_TICK = "strategies.tick"


# Queues whose tasks move money: a task is acknowledged only after it ran, and re-delivered if the
# worker died under it (every task is idempotent, so a re-run is safe).
LATE_ACK_QUEUES = frozenset({Queue.EXECUTION, Queue.SIGNER})

# The queue this process serves as a worker; None in every other process (web, beat, shell, tests).
_worker_queue: Queue | None = None


def bind_worker_to_queue(queue: Queue) -> Queue:
    """Make this process the worker of `queue`, once, before Celery loads any task module: from then
    on it imports only that queue's task modules (celery_app.task_packages), accepts only that
    queue's tasks (celery_app.QueueBoundConsumer) and runs no other task's body (custos_task)."""
    global _worker_queue
    queue = Queue(queue)
    if _worker_queue is not None and _worker_queue is not queue:
        raise RuntimeError(f"this process is already the {_worker_queue} worker, not {queue}")
    _worker_queue = queue
    return queue


def worker_queue() -> Queue | None:
    return _worker_queue


def _printable(value, limit: int = 200) -> str:
    """A message field fit for one log line (names and ids can be forged: no newlines, bounded)."""
    return str(value)[:limit].encode("unicode_escape").decode("ascii").replace(" ", "\\x20")


def log_refused(*, task, task_id, queue, task_queue, stage: str) -> None:
    """The one log line of a refused task: its name, id, the queue it arrived on and the queue it
    belongs to (None: not a Custos task, or not loaded here). Never its arguments."""
    fields = {
        "task": _printable(task),
        "task_id": _printable(task_id),
        "queue": str(queue),
        "task_queue": None if task_queue is None else str(task_queue),
        "stage": stage,
    }
    logger.warning(
        "task refused, not run (acknowledged, not requeued): task=%s id=%s queue=%s task_queue=%s stage=%s",
        *fields.values(),
        extra={"custos_refused": fields},
    )


def custos_task(*, name: TaskName, queue: Queue, **options):
    """The one way to declare a task: bound, explicitly named and queued, late-acked where money moves.

    The queue is recorded as `custos_queue` (Celery's own `queue` task attribute is deprecated);
    celery_app.route_task is what sends the task there, and a test proves the two agree.

    The body runs behind a guard: in a worker process bound to another queue it is refused without
    running, however it was reached (a message the consumer let through, or an in-process call such
    as a canvas primitive or an errback). The consumer refuses such messages before this point;
    the guard is the last line.
    """
    late = queue in LATE_ACK_QUEUES
    queue = Queue(queue)

    def declare(body):
        @functools.wraps(body)
        def run(self, *args, **kwargs):
            serving = _worker_queue
            if serving is not None and serving is not queue:
                log_refused(task=name, task_id=self.request.id, queue=serving, task_queue=queue, stage="run")
                raise Reject(f"{name} is a {queue} task, not run by the {serving} worker", requeue=False)
            return body(self, *args, **kwargs)

        # Celery checks a call's arguments against the signature it reads here (not __wrapped__).
        run.__signature__ = inspect.signature(body)
        return shared_task(
            bind=True,
            name=str(name),
            custos_queue=str(queue),
            acks_late=late,
            reject_on_worker_lost=late,
            **options,
        )(run)

    return declare


def enqueue_on_commit(task_name: TaskName, *args) -> None:
    """Send a task by name once the current transaction commits (never for an aborted attempt), through
    Celery's current app (celery_app, which project/__init__.py loads in every process)."""
    transaction.on_commit(functools.partial(current_app.send_task, str(task_name), args=args))


def enqueue_now(task_name: TaskName, *args) -> None:
    """Send a task by name now, or after the enclosing transaction if one is open."""
    with transaction.atomic():
        enqueue_on_commit(task_name, *args)
