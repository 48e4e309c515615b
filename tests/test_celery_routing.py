"""Every task has an explicit name and queue, routing agrees, and only apps.signing reaches the signer."""

from __future__ import annotations

from celery_app import ROUTES_BY_APP, UNROUTED_QUEUE, app, queue_for_task_name, route_task
from project.queues import LATE_ACK_QUEUES, Queue


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
