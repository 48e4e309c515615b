"""submit.py: the owner's side of the path (trade_submit, trade_cancel)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.chain.models import Dex
from apps.trades import real_money_transaction_manager as rmtm
from apps.trades.audit import audit_verify, genesis_hash
from apps.trades.models import Trade
from tests.trades.steps import _submit, _tokens

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.chain]


def test_the_owner_cancels_freely_before_signing_and_not_after(scoped_wallet):
    pending = _submit(scoped_wallet, key="cancel-early")
    rmtm.trade_cancel(trade_id=pending.pk)
    pending.refresh_from_db()
    assert pending.state == "CANCELLED"
    assert pending.events.filter(kind="cancel", to_state="CANCELLED").exists()
    rmtm.trade_simulate(trade_id=pending.pk)  # a late task for it does nothing
    assert Trade.objects.get(pk=pending.pk).state == "CANCELLED"

    signing = _submit(scoped_wallet, key="cancel-late")
    rmtm.trade_simulate(trade_id=signing.pk)
    rmtm.trade_validate(trade_id=signing.pk)
    assert Trade.objects.get(pk=signing.pk).state == "SIGNING"
    rmtm.trade_cancel(trade_id=signing.pk)
    assert Trade.objects.get(pk=signing.pk).state == "SIGNING"  # needs a cancel replacement instead


def test_submission_only_inserts_one_trade_and_its_first_event(scoped_wallet):
    """The web process submits, and its database role may not UPDATE a trade: the id comes from the
    sequence first, so the row is inserted with its audit head already naming the first event."""
    usdc, dai = _tokens()
    inputs = {
        "owner": scoped_wallet.owner,
        "wallet": scoped_wallet,
        "dex": Dex.objects.get(),
        "path": [usdc.address, dai.address],
        "amount_in": 10**6,
        "slippage_bps": 50,
        "idempotency_key": "insert-only",
        "deadline": timezone.now() + timedelta(minutes=20),
    }
    with CaptureQueriesContext(connection) as queries:
        trade = rmtm.trade_submit(**inputs).trade
    writes = [
        q["sql"].split()[:3] for q in queries.captured_queries if q["sql"].startswith(("INSERT", "UPDATE"))
    ]
    assert writes == [["INSERT", "INTO", '"trades_trade"'], ["INSERT", "INTO", '"trades_tradeevent"']]
    trade = Trade.objects.get(pk=trade.pk)
    (event,) = trade.events.all()
    assert (event.kind, event.to_state, event.prev_hash) == ("submitted", "PENDING", genesis_hash(trade.pk))
    assert trade.audit_head == event.hash
    assert (trade.state, trade.version) == ("PENDING", 0)
    assert audit_verify(trade_ids=[trade.pk]) == (1, None)
    # The same key and inputs again: the same trade, nothing written.
    with CaptureQueriesContext(connection) as again:
        replayed = rmtm.trade_submit(**inputs)
    assert (replayed.trade.pk, replayed.created) == (trade.pk, False)
    assert not [q for q in again.captured_queries if q["sql"].startswith(("INSERT", "UPDATE"))]
