"""The Celery app: JSON only, one queue per trust level, routing by module, beat from the database.

Every task is declared with an explicit `name=` and queue (project.queues.custos_task); `route_task`
maps each app to its queue, and tests/test_celery_routing.py proves the two agree, that each task's
name carries its module's app, and that only apps.signing can reach the signer queue.

Routing decides where a task is sent; it cannot stop anyone who can write to Redis from putting any
task name on any queue. So each worker also runs only its own queue's tasks, in three layers
(tests/test_queue_enforcement.py drives every task name at every real worker):

1. loaded: a worker imports only the task modules of the apps routed to its queue (`task_packages`);
   the signer has no other app's task registered at all.
2. accepted: the worker's consumer (`QueueBoundConsumer`) hands a message on only when it names a
   task declared for the worker's queue; anything else (another queue's task, an unknown name,
   Celery's own canvas tasks) is logged and acknowledged without running, before any request or
   pool process sees it.
3. run: a task's body refuses to run in a worker bound to another queue (project.queues.custos_task),
   whatever path reached it.

The check never trusts the message: the queue a message arrived on is the one queue this worker
consumes, not the routing key written in the message (with Redis that `delivery_info` is part of the
stored message, so a forger chooses it).
"""

from __future__ import annotations

import gc
import logging
import os

from celery import Celery, bootsteps, signals
from django.conf import settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings.base")

# Made before the project's own imports: project/__init__.py loads this module (so that Celery's
# current app is this one in every process), and importing project.* may be what runs it.
app = Celery("custos")
logger = logging.getLogger(__name__)

from project.heartbeat import worker_heartbeat_write  # noqa: E402
from project.queues import Queue, bind_worker_to_queue, log_refused, worker_queue  # noqa: E402

app.config_from_object("django.conf:settings", namespace="CELERY")

# App -> queue: the one place that says which trust level runs which code. A task's name starts with
# its app's label ("signing.sign" lives in apps.signing), so routing by name is routing by module,
# and works in processes that send a task by name without importing its module (send_task).
ROUTES_BY_APP: dict[str, Queue] = {
    "trades": Queue.EXECUTION,
    "wallets": Queue.EXECUTION,
    "signing": Queue.SIGNER,
    "watcher": Queue.WATCHER,
    "chain": Queue.WATCHER,
    "market": Queue.MARKET,
    "ml": Queue.ML,
    "strategies": Queue.EXECUTION,
}
# Nothing consumes this queue: a task without a route waits there instead of running somewhere wrong.
UNROUTED_QUEUE = "unrouted"


def queue_for_task_name(name: str) -> Queue | None:
    return ROUTES_BY_APP.get(name.split(".", 1)[0]) if "." in name else None


def route_task(name, args, kwargs, options, task=None, **kw):
    queue = queue_for_task_name(name)
    return {"queue": str(queue) if queue is not None else UNROUTED_QUEUE}


app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    event_serializer="json",
    task_routes=(route_task,),
    task_default_queue=UNROUTED_QUEUE,
    task_create_missing_queues=True,
    worker_prefetch_multiplier=1,
    task_soft_time_limit=settings.CELERY_TASK_SOFT_TIME_LIMIT,
    task_time_limit=settings.CELERY_TASK_TIME_LIMIT,
    broker_transport_options={"visibility_timeout": settings.CELERY_VISIBILITY_TIMEOUT},
    result_backend=None,
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    beat_scheduler="django_celery_beat.schedulers:DatabaseScheduler",
    timezone="UTC",
    enable_utc=True,
    worker_hijack_root_logger=False,
    worker_consumer="celery_app:QueueBoundConsumer",
)
# A task keeps its process's database connection the way Django keeps one across requests: closed
# only when unusable (health-checked) or older than CONN_MAX_AGE. Celery's Django fixup otherwise
# closes every connection before and after each task unless CELERY_DB_REUSE_MAX is set, and then
# still force-closes after that many; measured on bench/pipeline.py that was one new PostgreSQL
# backend per task (802 connections for 200 trades) and most of PostgreSQL's CPU time.
app.conf.CELERY_DB_REUSE_MAX = 2**62  # the fixup's forced close: never


@signals.task_prerun.connect
@signals.task_postrun.connect
def connections_as_per_request(**_kwargs) -> None:
    from django.db import close_old_connections

    close_old_connections()


if settings.CELERY_VISIBILITY_TIMEOUT <= settings.CELERY_TASK_TIME_LIMIT:
    # Redis would hand a still-running task to a second worker.
    raise RuntimeError("CELERY_VISIBILITY_TIMEOUT must exceed CELERY_TASK_TIME_LIMIT")


class WorkerHeartbeat(bootsteps.StartStopStep):
    """Writes `custos:worker:<queue>:<hostname>` to Redis every few seconds with a TTL, so health
    can tell which queues have a live consumer without a broadcast round trip."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self.tref = None

    def start(self, worker):
        queues = [q.name for q in worker.app.amqp.queues.consume_from.values()]

        def beat():
            worker_heartbeat_write(hostname=worker.hostname, queues=queues)

        beat()
        self.tref = worker.timer.call_repeatedly(settings.WORKER_HEARTBEAT_SECONDS, beat)

    def stop(self, worker):
        if self.tref is not None:
            self.tref.cancel()


app.steps["worker"].add(WorkerHeartbeat)


def task_packages() -> list[str]:
    """The apps whose `tasks` modules this process loads: in a worker, only those routed to its queue
    (ROUTES_BY_APP); elsewhere (web, beat, shell, tests) every installed app, as Celery's Django
    autodiscovery would. Evaluated when Celery first loads task modules, after run_worker bound the
    process to its queue."""
    from django.apps import apps as django_apps

    queue = worker_queue()
    return [
        config.name
        for config in django_apps.get_app_configs()
        if queue is None or ROUTES_BY_APP.get(config.label) is queue
    ]


app.autodiscover_tasks(task_packages)


def foreign_tasks(queue: Queue) -> list[str]:
    """Registered Custos tasks that belong to another queue than `queue` (none, in a worker started by
    run_worker: anything here means some module imported another app's tasks)."""
    app.loader.import_default_modules()
    return sorted(
        name
        for name, task in app.tasks.items()
        if getattr(task, "custos_queue", None) is not None and task.custos_queue != str(queue)
    )


def _queue_bound_consumer():
    """Made on first use (`__getattr__` below): Celery resolves `worker_consumer` by name in a worker,
    and the web and beat processes never load the worker's consumer machinery (~2.5 MiB)."""
    from celery.worker.consumer import Consumer

    class LookupSafeStrategies(dict):
        """A name that cannot be looked up (a list, say) is unknown, not a crash of the consumer
        every time the message is redelivered."""

        def __getitem__(self, name):
            try:
                return super().__getitem__(name)
            except TypeError:
                raise KeyError(name) from None

    class QueueBoundConsumer(Consumer):
        """A worker's consumer that hands on only messages naming a task of its own queue.

        Celery looks every message's task up by name in `strategies` and sends a name it does not
        find to `on_unknown_task`. Here `strategies` holds only the tasks declared for this worker's
        queue, and `on_unknown_task` logs the refusal (name, id, queue; never the arguments) and
        acknowledges the message without requeueing: not run, not retried, not redelivered. The
        lookup is the one Celery dispatches on, so a message cannot name one task to the check and
        another to the pool.
        """

        Strategies = LookupSafeStrategies

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            consumed = sorted(q.name for q in self.app.amqp.queues.consume_from.values())
            bound = worker_queue()
            if bound is None and len(consumed) == 1 and consumed[0] in set(Queue):
                # Started without run_worker (`celery worker -Q <queue>`): bound before the pool forks.
                bound = bind_worker_to_queue(Queue(consumed[0]))
            if bound is None or consumed != [str(bound)]:
                raise RuntimeError(
                    "a Custos worker consumes exactly one queue and runs only its tasks; "
                    f"bound to {bound}, consuming {consumed}: start it with `manage.py run_worker <queue>`"
                )
            self.custos_queue = bound

        def update_strategies(self):
            super().update_strategies()
            own = str(self.custos_queue)
            for name in list(self.strategies):
                if getattr(self.app.tasks.get(name), "custos_queue", None) != own:
                    del self.strategies[name]

        def on_unknown_task(self, body, message, exc):
            name = exc.args[0] if isinstance(exc, KeyError) and exc.args else None
            task = self.app.tasks.get(name) if isinstance(name, str) else None  # str: hashable
            log_refused(
                task=name,
                task_id=_message_id(message),
                queue=self.custos_queue,
                task_queue=getattr(task, "custos_queue", None),
                stage="receive",
            )
            message.reject_log_error(logger, self.connection_errors)  # requeue=False: acked, gone
            signals.task_rejected.send(sender=self, message=message, exc=None)

        def add_task_queue(self, queue, *args, **kwargs):
            # The `add_consumer` remote-control command: a worker never consumes another queue.
            if queue != str(self.custos_queue):
                logger.warning(
                    "add_consumer refused: the %s worker consumes only its own queue, not %s",
                    self.custos_queue,
                    str(queue)[:200].encode("unicode_escape").decode("ascii"),
                )
                return
            super().add_task_queue(queue, *args, **kwargs)

    return QueueBoundConsumer


def __getattr__(name: str):
    if name == "QueueBoundConsumer":
        globals()[name] = consumer = _queue_bound_consumer()
        return consumer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _message_id(message):
    headers = message.headers
    if isinstance(headers, dict) and "id" in headers:
        return headers["id"]
    try:  # protocol 1: the id is in the body
        payload = message.payload
    except Exception:  # noqa: BLE001 - an undecodable body has no id to report
        return None
    return payload.get("id") if isinstance(payload, dict) else None


@signals.worker_init.connect
def freeze_before_fork(**_kwargs) -> None:
    """Everything imported so far is moved out of the cyclic collector's reach before the pool forks,
    so the collector never writes to those objects and their pages stay shared with the children
    (copy-on-write) instead of being copied into each one."""
    app.loader.import_default_modules()
    gc.collect()
    gc.freeze()
