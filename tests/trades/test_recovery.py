"""recovery.py: the beat tick's confirm pass."""

from __future__ import annotations

import pytest

from apps.chain.models import Chain
from apps.chain.pool import pool_for
from apps.signing import services as signer
from apps.trades import real_money_transaction_manager as rmtm
from apps.trades.models import Trade
from tests.trades.steps import _simulated

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.chain]


def test_the_tick_leaves_trades_a_confirm_batch_just_looked_at_for_the_next_tick(scoped_wallet, settings):
    Chain.objects.update(confirmations_required=5)  # mined, not yet deep enough: still CONFIRMING
    trades = _simulated(scoped_wallet, ["looked-a", "looked-b"])
    rmtm.trade_validate(trade_id=trades[0].pk)
    signer.trade_sign_batch([(t.pk, 1) for t in trades])
    rmtm.trade_after_signing(requests=[(t.pk, 1) for t in trades])
    settings.TRADE_TICK_SECONDS = 3600
    assert rmtm.trade_confirm(trade_ids=[t.pk for t in trades], mark_looked=True) == 2
    stats = pool_for(trades[0].chain).stats
    before = stats.http_requests
    assert rmtm.confirm_all() == 0  # just looked at: nothing asked of the node
    assert stats.http_requests == before
    settings.TRADE_TICK_SECONDS = 0  # a tick interval later
    assert rmtm.confirm_all() == 2
    assert [Trade.objects.get(pk=t.pk).state for t in trades] == ["CONFIRMING", "CONFIRMING"]
