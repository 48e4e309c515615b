"""transition.py: the checked transition primitive (version and audit head) and the hash-chained
audit trail it appends to."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import transaction

from apps.trades import real_money_transaction_manager as rmtm
from apps.trades.audit import AuditEntry, audit_append, audit_append_many, audit_verify
from apps.trades.models import Trade, TradeEvent
from apps.trades.real_money_transaction_manager import transition as transition_step
from tests.factories import grant_scope, tampering
from tests.trades.steps import _submit

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.chain]


def test_audit_verify_names_the_first_broken_link(funded_wallet):
    grant_scope(funded_wallet)
    trade = _submit(funded_wallet, key="audit")
    rmtm.trade_simulate(trade_id=trade.pk)
    event = trade.events.order_by("id")[1]
    with tampering("trades_tradeevent"):
        TradeEvent.objects.filter(pk=event.pk).update(data={"tampered": True})
    checked, broken = audit_verify()
    assert broken is not None
    assert broken.event_id == event.pk
    from io import StringIO

    out = StringIO()
    with pytest.raises(SystemExit):
        call_command("audit_verify", stdout=out)
    assert f"event {event.pk}" in out.getvalue()


def test_audit_verify_finds_an_event_removed_from_the_end_of_a_chain(funded_wallet):
    """Each link only names its predecessor, so the chain alone cannot tell that its newest event
    is gone: the head kept on the trade's row can."""
    grant_scope(funded_wallet)
    trade = _submit(funded_wallet, key="audit-tail")
    rmtm.trade_simulate(trade_id=trade.pk)
    assert audit_verify(trade_ids=[trade.pk])[1] is None
    newest = trade.events.order_by("-id").first()
    with tampering("trades_tradeevent"):
        TradeEvent.objects.filter(pk=newest.pk).delete()
    _checked, broken = audit_verify(trade_ids=[trade.pk])
    assert broken is not None
    assert broken.trade_id == trade.pk
    assert "recorded head" in broken.problem


def test_a_transition_on_a_trade_read_before_another_event_raises_stale_and_forks_nothing(funded_wallet):
    """A transition moves state, version and audit head in one UPDATE checked against what its trade
    object was read with: an event appended since (here by another process's object) makes it
    StaleTrade, never a second event linked to the same predecessor."""
    trade = _submit(funded_wallet, key="stale-head")
    stale = Trade.objects.get(pk=trade.pk)
    audit_append(trade=Trade.objects.get(pk=trade.pk), kind="note", data={"by": "someone else"})
    events_before = trade.events.count()
    with pytest.raises(rmtm.StaleTrade), transaction.atomic():
        transition_step.transition(stale, "start_simulation")
    assert trade.events.count() == events_before
    assert Trade.objects.get(pk=trade.pk).state == "PENDING"
    # The step itself reads afresh and goes on.
    rmtm.trade_simulate(trade_id=trade.pk)
    assert audit_verify(trade_ids=[trade.pk])[1] is None


def test_one_append_for_several_trades_moves_every_head(funded_wallet):
    trades = [_submit(funded_wallet, key=f"heads-{i}") for i in range(3)]
    with transaction.atomic():
        audit_append_many([AuditEntry(trade=t, kind="note", data={"i": i}) for i, t in enumerate(trades * 2)])
    for t in trades:
        assert Trade.objects.get(pk=t.pk).audit_head == t.events.order_by("-id").first().hash
    assert audit_verify(trade_ids=[t.pk for t in trades])[1] is None
