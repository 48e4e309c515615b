"""payloads.py: the pure builders of what a trade sends."""

from __future__ import annotations

import pytest

from apps.chain.txcodec import payload_hash
from apps.trades.real_money_transaction_manager import payloads
from tests.trades.steps import _run_to_confirming, _submit

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.chain]


def test_frozen_transactions_rebuild_byte_for_byte(scoped_wallet):
    trade = _run_to_confirming(_submit(scoped_wallet, key="determinism"))
    for tx in trade.transactions.all():
        expected = (
            payloads.swap_calldata(trade, int(trade.amount_out_min))
            if tx.kind == "swap"
            else payloads.approve_calldata(trade)
        )
        assert tx.data == expected
        assert payload_hash(tx.as_unsigned_dict()) == tx.unsigned_hash
