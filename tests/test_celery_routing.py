"""Every task has an explicit name and queue, routing agrees, and only apps.signing reaches the signer;
a worker loads only its own queue's tasks, refuses to start otherwise, and no task body runs in
another queue's worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from celery.exceptions import Reject
from django.conf import settings
from django.core.management.base import CommandError

from celery_app import ROUTES_BY_APP, UNROUTED_QUEUE, app, queue_for_task_name, route_task
from project import queues
from project.queues import LATE_ACK_QUEUES, Queue, TaskName


def custos_tasks():
    app.loader.import_default_modules()
    tasks = {name: task for name, task in app.tasks.items() if not name.startswith("celery.")}
    assert tasks, "no task registered: autodiscovery is broken"
    return tasks


def test_every_task_has_an_explicit_name_and_a_queue_that_routing_agrees_with():
    for name, task in custos_tasks().items():
        automatic = f"{task.__module__}.{task.run.__name__}"
        assert name != automatic, f"{automatic} has no explicit name="
        assert task.custos_queue in {str(q) for q in Queue}, f"{name} has no queue="
        routed = route_task(name, (), {}, {}, task=task)
        assert routed == {"queue": task.custos_queue}, f"{name}: declared {task.custos_queue}, got {routed}"
        # Routing by name is routing by module: the name starts with the module's app label.
        app_label = task.__module__.split(".")[1]
        assert task.__module__.startswith("apps."), name
        assert name.startswith(f"{app_label}."), name


def test_only_apps_signing_routes_to_the_signer_queue():
    for name, task in custos_tasks().items():
        on_signer = app.amqp.router.route({}, name)["queue"].name == Queue.SIGNER
        assert on_signer == task.__module__.startswith("apps.signing."), name
    signer_apps = [label for label, q in ROUTES_BY_APP.items() if q is Queue.SIGNER]
    assert signer_apps == ["signing"]


def test_money_queues_ack_late_and_reject_on_worker_lost():
    for name, task in custos_tasks().items():
        late = task.custos_queue in LATE_ACK_QUEUES
        assert bool(task.acks_late) is late, name
        assert bool(task.reject_on_worker_lost) is late, name


def test_unknown_modules_are_not_routed_to_any_worker():
    assert queue_for_task_name("signingevil.sign") is None
    assert queue_for_task_name("sign") is None
    assert route_task("x.y", (), {}, {}) == {"queue": UNROUTED_QUEUE}
    assert UNROUTED_QUEUE not in {str(q) for q in Queue}


def test_serialization_is_json_only_and_workers_prefetch_one():
    conf = app.conf
    assert conf.task_serializer == "json"
    assert conf.result_serializer == "json"
    assert list(conf.accept_content) == ["json"]
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_soft_time_limit < conf.task_time_limit
    assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit
    assert conf.beat_scheduler == "django_celery_beat.schedulers:DatabaseScheduler"


# --- each worker runs only its own queue's tasks (tests/test_queue_enforcement.py: real workers) ----

WORKER_REGISTRY = """
import json, os
os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings.base"
os.environ["CELERY_SKIP_CHECKS"] = "1"
import django
django.setup()
from project.management.commands.run_worker import refuse_foreign_tasks
from project.queues import Queue, bind_worker_to_queue
refuse_foreign_tasks(bind_worker_to_queue(Queue(QUEUE)))
from celery_app import app
import sys
print(json.dumps({
    "tasks": sorted(n for n in app.tasks if not n.startswith("celery.")),
    "modules": sorted(m for m in sys.modules if m.startswith("apps.") and m.endswith(".tasks")),
}))
"""


def test_a_worker_loads_only_the_tasks_of_its_own_queue():
    """What run_worker does before Celery starts, in a fresh interpreter per queue."""
    root = Path(settings.BASE_DIR)
    runs = {
        queue: subprocess.Popen(
            [sys.executable, "-c", f"QUEUE = {str(queue)!r}\n" + WORKER_REGISTRY],
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(root)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for queue in Queue
    }
    for queue, run in runs.items():
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err[-3000:]
        loaded = json.loads(out.strip().splitlines()[-1])
        assert loaded["tasks"] == sorted(str(n) for n in TaskName if queue_for_task_name(n) is queue), queue
        apps_of_queue = {label for label, q in ROUTES_BY_APP.items() if q is queue}
        assert {m.split(".")[1] for m in loaded["modules"]} <= apps_of_queue, (queue, loaded["modules"])


def test_run_worker_refuses_to_start_with_another_queues_tasks_loaded_or_eager_tasks(monkeypatch):
    from project.management.commands.run_worker import refuse_foreign_tasks

    # This process (like web or beat) loads every app's tasks: as a signer it would not start.
    with pytest.raises(
        CommandError, match=r"signer: not starting: tasks of other queues are loaded: .*market\.refresh"
    ):
        refuse_foreign_tasks(Queue.SIGNER)
    monkeypatch.setitem(app.conf, "task_always_eager", True)
    with pytest.raises(CommandError, match="CELERY_TASK_ALWAYS_EAGER"):
        refuse_foreign_tasks(Queue.MARKET)


def test_a_task_body_never_runs_in_a_worker_of_another_queue(monkeypatch):
    """The last line, behind the consumer: however a task is reached in a worker process (a canvas
    primitive, an errback, a direct call), its body runs only in its own queue's worker."""
    from apps.market import tasks as market_tasks

    ran = []
    report = SimpleNamespace(ticks={}, errors={}, skipped=[])
    monkeypatch.setattr(market_tasks, "market_refresh", lambda: ran.append(1) or report)
    monkeypatch.setattr(market_tasks, "candles_build", lambda **_kw: None)
    monkeypatch.setattr(market_tasks, "redis_client", lambda: SimpleNamespace(set=lambda *_a, **_k: False))
    refresh = custos_tasks()[str(TaskName.MARKET_REFRESH)]

    logged = []
    monkeypatch.setattr(queues.logger, "warning", lambda msg, *args, **_kw: logged.append(msg % args))

    monkeypatch.setattr(queues, "_worker_queue", Queue.SIGNER)
    with pytest.raises(Reject):
        refresh()
    assert ran == []
    assert logged[0].endswith("task=market.refresh id=None queue=signer task_queue=market stage=run")
    result = refresh.apply()  # through Celery's tracer, as a worker runs it
    assert result.state == "REJECTED"
    assert ran == []

    monkeypatch.setattr(queues, "_worker_queue", Queue.MARKET)
    refresh()
    assert ran == [1]
    monkeypatch.setattr(queues, "_worker_queue", None)  # web, beat, shell, tests: no guard
    refresh()
    assert ran == [1, 1]
