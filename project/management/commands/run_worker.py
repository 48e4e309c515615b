"""`manage.py run_worker <queue|beat>`: check dependencies, then run that process in the foreground.

Each trust level is its own process with its own queue; a worker refuses to start when the database,
the broker or (for queues that use RPC) a chain does not answer as configured.

A worker is bound to its queue before Celery loads any task module (project.queues.bind_worker_to_queue):
it loads only the tasks of the apps routed to that queue, accepts and runs only those (celery_app), and
refuses to start if another queue's task is registered all the same.
"""

import os

from django.conf import settings
from django.core.checks import Tags
from django.core.management.base import BaseCommand, CommandError

from apps.chain.services import EndpointConfigError, rpc_endpoints_sync
from project import preflight
from project.queues import Queue, bind_worker_to_queue

RPC_QUEUES = {Queue.EXECUTION, Queue.WATCHER}


class Command(BaseCommand):
    help = "Run one Custos worker (execution, signer, watcher, market, ml) or beat after start checks."
    # The system checks a worker's work depends on. Not the URL, admin, template and static-file
    # checks: they import the whole API and admin (DRF, drf-spectacular, every view), ~13 MiB in
    # each worker process that serves no URL. `migrate` (run before every start by `make run`) and
    # `manage.py check` run them all.
    requires_system_checks = [Tags.models, Tags.signals, Tags.caches, Tags.compatibility, Tags.database]

    def add_arguments(self, parser):
        parser.add_argument("process", choices=[*[str(q) for q in Queue], "beat"])
        parser.add_argument("--loglevel", default="INFO")

    def handle(self, *args, process, loglevel, **options):
        if process == str(Queue.ML) and not settings.ML_ENABLED:
            # The t3.micro profile: PyTorch is not installed and health expects no ml worker. A clean
            # exit, so systemd and compose (restart: on-failure) leave it stopped.
            self.stdout.write("ml: ML_ENABLED is off; the ml worker does not run")
            return
        if process != "beat":
            pool_of(Queue(process))  # a configuration error first, before any connection
        try:
            preflight.check_database()
            preflight.check_broker()
            if process in RPC_QUEUES:
                if settings.RPC_ENDPOINTS:
                    rpc_endpoints_sync(settings.RPC_ENDPOINTS)
                preflight.check_chains()
        except (preflight.PreflightError, EndpointConfigError) as exc:
            raise CommandError(f"{process}: not starting: {exc}") from exc

        # Celery's Django fixup would run every system check again in the worker, URLs included.
        os.environ["CELERY_SKIP_CHECKS"] = "1"
        from celery_app import app

        if process == "beat":
            argv = [
                "beat",
                "--loglevel",
                loglevel,
                "--scheduler",
                "django_celery_beat.schedulers:DatabaseScheduler",
            ]
        else:
            queue = bind_worker_to_queue(Queue(process))
            refuse_foreign_tasks(queue)
            concurrency = getattr(settings, f"WORKER_CONCURRENCY_{queue.name}")
            argv = [
                "worker",
                "--queues",
                str(queue),
                "--hostname",
                f"{queue}@%h",
                "--concurrency",
                str(concurrency),
                "--loglevel",
                loglevel,
                "--without-gossip",
                "--without-mingle",
            ]
            if pool_of(queue) == "solo":
                argv += ["--pool", "solo"]
            if queue is Queue.SIGNER and settings.SIGNER_MAX_TASKS_PER_CHILD > 0:
                # 0 keeps children alive: only safe when every wallet's key lives in an HSM.
                argv += ["--max-tasks-per-child", str(settings.SIGNER_MAX_TASKS_PER_CHILD)]
        self.stdout.write(f"{process}: checks passed, starting")
        self.stdout.flush()
        app.worker_main(argv) if process != "beat" else app.start(argv)


def refuse_foreign_tasks(queue: Queue) -> None:
    """Load this worker's task modules now (only its queue's apps) and refuse to start when a task of
    another queue got registered anyway (a module importing another app's tasks), or when tasks would
    run in the process that sends them (task_always_eager): either would let this process run code
    that is not its queue's."""
    from celery_app import app, foreign_tasks

    if app.conf.task_always_eager:
        raise CommandError(f"{queue}: not starting: CELERY_TASK_ALWAYS_EAGER is on (tasks run where sent)")
    foreign = foreign_tasks(queue)
    if foreign:
        raise CommandError(f"{queue}: not starting: tasks of other queues are loaded: {', '.join(foreign)}")


def pool_of(queue: Queue) -> str:
    """prefork, or solo where WORKER_POOL_<QUEUE> allows it. Execution and signer are always prefork:
    hard time limits, losing a child without losing its task and the signer's child recycling all
    need a process pool."""
    if queue not in (Queue.WATCHER, Queue.MARKET, Queue.ML):
        return "prefork"
    name = f"WORKER_POOL_{queue.name}"
    pool = getattr(settings, name)
    if pool not in ("prefork", "solo"):
        raise CommandError(f"{queue}: not starting: {name} must be prefork or solo, not {pool!r}")
    return pool
