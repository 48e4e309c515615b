"""A worker keeps its database connection across tasks (as Django does across requests), and still
drops one that is too old or broken."""

from __future__ import annotations

import time

import psycopg
import pytest
from celery import signals
from celery.fixups.django import DjangoWorkerFixup
from django.conf import settings
from django.db import connection

from celery_app import app

pytestmark = pytest.mark.django_db(transaction=True)


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def run_task_hooks(fixup: DjangoWorkerFixup) -> None:
    """What a worker does around each task: Celery's Django fixup, then every other receiver."""
    app.loader.import_default_modules()
    task = app.tasks["trades.tick"]
    for hook, signal in (
        (fixup.on_task_prerun, signals.task_prerun),
        (fixup.on_task_postrun, signals.task_postrun),
    ):
        hook(sender=task)
        signal.send(sender=task, task_id="t", task=task, args=(), kwargs={})


def test_tasks_reuse_the_connection_until_it_is_too_old():
    fixup = DjangoWorkerFixup(app)
    first = backend_pid()
    for _ in range(5):
        run_task_hooks(fixup)
        assert backend_pid() == first  # no new PostgreSQL backend per task
    connection.close_at = time.monotonic() - 1  # past CONN_MAX_AGE
    run_task_hooks(fixup)
    assert backend_pid() != first


def test_a_connection_with_errors_that_no_longer_answers_is_dropped():
    fixup = DjangoWorkerFixup(app)
    first = backend_pid()
    # Another session ends this one, as a restarted server would.
    db = settings.DATABASES["default"]
    with psycopg.connect(
        host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"], dbname=db["NAME"], autocommit=True
    ) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [first])
    connection.errors_occurred = True  # as Django marks it when a query fails
    run_task_hooks(fixup)
    assert backend_pid() != first
