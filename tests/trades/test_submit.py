"""submit.py: the owner's side of the path (trade_submit, trade_cancel)."""

from __future__ import annotations

import pytest

from apps.trades import real_money_transaction_manager as rmtm
from apps.trades.models import Trade
from tests.trades.steps import _submit

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
