"""The tick's two queries are answered from their partial indexes, whose predicates match the queries:
their cost follows the number of strategies due and runs in flight, not the number that exist."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.utils import timezone

from apps.strategies.models import RunOutcome, StrategyRun
from apps.strategies.selectors import due_query, strategy_rows
from apps.trades.models import TERMINAL

pytestmark = pytest.mark.django_db


def _plan(queryset) -> str:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # a tiny test table would be scanned anyway
        return queryset.explain()


def test_the_due_query_and_the_ended_runs_query_use_their_partial_indexes():
    due = strategy_rows().filter(due_query(timezone.now())).order_by("next_run_at", "pk")[:50]
    assert "strategy_due" in _plan(due)
    ended = StrategyRun.objects.filter(outcome=RunOutcome.CREATED, trade__state__in=TERMINAL)
    assert "strategyrun_in_flight" in _plan(ended.values_list("pk", "strategy_id")[:50])
