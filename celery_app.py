"""The Celery app: JSON only, one queue per trust level, routing by module, beat from the database.

Every task is declared with an explicit `name=` and queue (project.queues.custos_task); `route_task`
maps each app to its queue, and tests/test_celery_routing.py proves the two agree, that each task's
name carries its module's app, and that only apps.signing can reach the signer queue.
"""

from __future__ import annotations

import gc
import os

from celery import Celery, bootsteps, signals
from django.conf import settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings.base")

# Made before the project's own imports: project/__init__.py loads this module (so that Celery's
# current app is this one in every process), and importing project.* may be what runs it.
app = Celery("custos")

from project.heartbeat import worker_heartbeat_write  # noqa: E402
from project.queues import Queue  # noqa: E402

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
app.autodiscover_tasks()


@signals.worker_init.connect
def freeze_before_fork(**_kwargs) -> None:
    """Everything imported so far is moved out of the cyclic collector's reach before the pool forks,
    so the collector never writes to those objects and their pages stay shared with the children
    (copy-on-write) instead of being copied into each one."""
    app.loader.import_default_modules()
    gc.collect()
    gc.freeze()
