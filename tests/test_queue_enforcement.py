"""Each worker runs only its own queue's tasks: every task name, delivered to every real worker (the
signer's queue first), runs where its queue is the worker's and is refused everywhere else: logged
with its name and the queue it arrived on, acknowledged, never received for execution.

The workers are started the way production starts them (`manage.py run_worker <queue>`, each as its
own database role, tests/e2e/conftest.py's Stack), one per queue. A message is sent with
`app.send_task(name, queue=...)`, which overrides the route, exactly what anyone who can write to
Redis can do; one more is forged to claim another queue's routing key."""

from __future__ import annotations

import inspect
import json
import re
import time
import uuid

import pytest
from django.conf import settings

from celery_app import app, queue_for_task_name
from project.queues import Queue, TaskName
from tests.e2e.conftest import Stack, stack  # noqa: F401 - the e2e stack fixture, reused

pytestmark = [pytest.mark.e2e, pytest.mark.chain, pytest.mark.django_db(transaction=True)]

ROLES = {
    Queue.EXECUTION: "custos_engine",
    Queue.SIGNER: "custos_signer",
    Queue.WATCHER: "custos_engine",
    Queue.MARKET: "custos_market",
    Queue.ML: "custos_ml",
}
MISSING = 987_654_321  # no trade, wallet, chain or token has this id: an accepted task finds nothing


def own_queue(name: str) -> Queue:
    """Where routing sends the task (tests/test_celery_routing.py: the queue it is declared for)."""
    return queue_for_task_name(name)


def bogus_args(name: str) -> list:
    """Arguments a task accepts that name nothing: a missing id for each id, an empty list for each list."""
    parameters = inspect.signature(app.tasks[name]).parameters.values()  # as called: no `self`
    return [
        [] if "list" in str(p.annotation) else MISSING
        for p in parameters
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


# Celery's own canvas task calls the task it is given in its own process: a way around a check made
# only on the outer name. It is no Custos task, so no worker takes it.
CANVAS_MAP = (
    "celery.map",
    [{"task": str(TaskName.SIGNING_CREATE_KEY), "args": [], "kwargs": {}, "options": {}}, [[MISSING]]],
)
TERMINAL = re.compile(r" (succeeded in|raised unexpected|raised expected|retry:)")


def test_each_worker_runs_only_its_own_queues_tasks(stack: Stack, redis_client):  # noqa: F811
    queues = [Queue.SIGNER, *(q for q in Queue if q is not Queue.SIGNER)]
    if not settings.ML_ENABLED:
        queues.remove(Queue.ML)  # the t3.micro profile: no ml worker (its tasks are still sent elsewhere)
    app.loader.import_default_modules()
    for queue in queues:
        stack.start(str(queue), str(queue), ROLES[queue])

    # Sent before the workers are up: the messages wait in Redis, the signer's queue filled first.
    sent: dict[str, tuple[str, Queue]] = {}  # task id -> (task name, queue it was put on)
    for queue in queues:
        for name in TaskName:
            task_id = f"qe-{queue}-{name}-{uuid.uuid4().hex[:6]}"
            app.send_task(str(name), args=bogus_args(name), queue=str(queue), task_id=task_id)
            sent[task_id] = (str(name), queue)
    # Crafted by hand: a market task whose message claims the market routing key; a task name Celery
    # cannot even look up (a poison message would crash a plain consumer on every redelivery); and
    # Celery's canvas map, told to call a signer task in-process.
    claims_market = {"exchange": str(Queue.MARKET), "routing_key": str(Queue.MARKET)}
    forged = _forge(redis_client, TaskName.MARKET_REFRESH, properties={"delivery_info": claims_market})
    sent[forged] = (str(TaskName.MARKET_REFRESH), Queue.SIGNER)
    poison = _forge(redis_client, TaskName.SIGNING_SIGN, headers={"task": [str(TaskName.SIGNING_SIGN)]})
    sent[poison] = ("['signing.sign']", Queue.SIGNER)
    canvas_id = f"qe-signer-celery.map-{uuid.uuid4().hex[:6]}"
    app.send_task(CANVAS_MAP[0], args=CANVAS_MAP[1], queue=str(Queue.SIGNER), task_id=canvas_id)
    sent[canvas_id] = (CANVAS_MAP[0], Queue.SIGNER)
    crafted = {forged, poison, canvas_id}

    logs = _await_every_outcome(stack, queues, sent, timeout=150)

    for task_id, (name, queue) in sent.items():
        log = logs[str(queue)]
        # Celery logs "Task <name>[<id>] received" only for a message it hands on to run.
        taken_by = [q for q, other_log in logs.items() if f"[{task_id}]" in other_log]
        refusals = [line for line in log.splitlines() if f" id={task_id} " in line]
        if own_queue(name) is queue and task_id not in crafted:
            assert f"Task {name}[{task_id}] received" in log, f"{name} not run on its own queue {queue}"
            assert re.search(re.escape(f"Task {name}[{task_id}]") + TERMINAL.pattern, log), name
            assert taken_by == [str(queue)], (name, queue, taken_by)
            assert not refusals, refusals
        else:
            assert taken_by == [], f"{name} put on {queue} was taken up for execution by {taken_by}"
            assert len(refusals) == 1, f"{name} put on {queue}: {refusals}\n{log[-3000:]}"
            assert (
                f"task refused, not run (acknowledged, not requeued): task={name} id={task_id} queue={queue} "
                in refusals[0]
            ), refusals[0]
            assert refusals[0].endswith(" stage=receive"), refusals[0]
            assert str(MISSING) not in refusals[0], "a refusal logged the task's arguments"

    # The signer never ran, nor even loaded, another queue's task.
    signer_log = logs[str(Queue.SIGNER)]
    for name in TaskName:
        if own_queue(name) is not Queue.SIGNER:
            assert f"Task {name}[" not in signer_log, name
    for queue in queues:
        loaded = re.findall(r"^  \. (\S+)$", logs[str(queue)], flags=re.MULTILINE)  # the start banner
        assert sorted(loaded) == sorted(str(n) for n in TaskName if own_queue(n) is queue), (queue, loaded)

    # Acknowledged, not left to be redelivered: every queue and the unacked set end empty.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and redis_client.hlen("unacked"):
        time.sleep(0.2)
    assert redis_client.hlen("unacked") == 0, redis_client.hkeys("unacked")
    assert all(redis_client.llen(str(q)) == 0 for q in Queue)


def _forge(redis_client, name: TaskName, *, properties=None, headers=None) -> str:
    """A message for `name` built by Celery on a queue nobody consumes, edited and pushed onto the
    signer's queue by hand, as a forger with Redis access would. With Redis the routing key in
    `delivery_info` is part of the stored message: a check on `request.delivery_info["routing_key"]`
    would trust it."""
    task_id = f"qe-forged-{name}-{uuid.uuid4().hex[:6]}"
    holding = f"qe-holding-{uuid.uuid4().hex[:6]}"
    app.send_task(str(name), args=bogus_args(name), queue=holding, task_id=task_id)
    raw = json.loads(redis_client.rpop(holding))
    raw["properties"].update(properties or {})
    raw["headers"].update(headers or {})
    redis_client.lpush(str(Queue.SIGNER), json.dumps(raw))
    return task_id


def _await_every_outcome(workers: Stack, queues, sent, *, timeout: float) -> dict[str, str]:
    """Each worker's log once every message sent to its queue has a refusal or a finished run."""
    deadline = time.monotonic() + timeout
    while True:
        logs = {str(q): _read(workers.logs[str(q)]) for q in queues}
        for queue in queues:
            assert workers.alive(str(queue)), f"the {queue} worker exited\n{workers.log_tail()}"
        pending = [
            task_id
            for task_id, (name, queue) in sent.items()
            if f"id={task_id} " not in logs[str(queue)]
            and not re.search(re.escape(f"[{task_id}]") + TERMINAL.pattern, logs[str(queue)])
        ]
        if not pending:
            return logs
        if time.monotonic() > deadline:
            raise AssertionError(f"no outcome for {pending}\n{workers.log_tail()}")
        time.sleep(0.5)


def _read(path) -> str:
    return path.read_text() if path.exists() else ""
