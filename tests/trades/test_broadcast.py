"""broadcast.py: after signing, one broadcaster per wallet sends the signed bytes in nonce order."""

from __future__ import annotations

import threading
import time

import pytest
from web3 import Web3

from apps.chain.models import Chain
from apps.chain.pool import pool_for
from apps.signing import services as signer
from apps.trades import chainio
from apps.trades import real_money_transaction_manager as rmtm
from apps.trades.audit import audit_verify
from apps.trades.models import ChainTransaction, Trade, TradeEvent
from apps.trades.real_money_transaction_manager import broadcast as broadcast_step
from apps.trades.real_money_transaction_manager import signed as signed_step
from tests.trades.steps import (
    _mine,
    _persisted,
    _persisted_attempt,
    _sent_nonces,
    _sign_and_send,
    _simulated,
    _statuses,
    _StuckChain,
    _submit,
    _to_signing,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.chain]


def test_a_resend_waiting_for_the_broadcaster_sends_the_replacement_signed_meanwhile_not_its_original(
    scoped_wallet, deployed_devchain, settings, monkeypatch
):
    """A re-send (the broadcast task) waits in line for the wallet's broadcaster; a replacement is
    signed and persisted while it waits. What it sends is read once it holds the lock: the
    replacement, never the original it replaces (a node holding the replacement refuses the
    original as underpriced, and another endpoint could still mine it)."""
    from project.locks import Advisory
    from tests.signing.test_batch import _other_connection

    settings.REPLACE_AFTER_BLOCKS = 3
    with _StuckChain(deployed_devchain) as chain:
        trade = _submit(scoped_wallet, key="resend-wait")
        rmtm.trade_simulate(trade_id=trade.pk)
        rmtm.trade_validate(trade_id=trade.pk)
        chain.base_fee = int(trade.transactions.get(kind="swap").max_fee_per_gas) + 1
        _sign_and_send(trade, 1)
        chain.mine(3)
        rmtm.trade_confirm(trade_ids=[trade.pk])  # attempt 2 frozen
        assert signer.trade_sign(trade_id=trade.pk, attempt=2).signed
        real_send, sent = broadcast_step._send, []
        monkeypatch.setattr(broadcast_step, "_send", lambda tx: sent.append(tx.attempt) or real_send(tx))
        with _other_connection() as other:
            other.execute(
                "SELECT pg_advisory_lock(%s, %s)", [int(Advisory.WALLET_BROADCAST), scoped_wallet.pk]
            )
            waiting = threading.Thread(target=lambda: rmtm.trade_broadcast(trade_ids=[trade.pk]))
            waiting.start()
            time.sleep(0.5)  # in line for the lock
            assert waiting.is_alive()
            _persisted_attempt(trade, 2)  # the replacement's answer, committed meanwhile
        waiting.join(30)
        assert sent == [2, 2]
        chain.base_fee = None
        chain.mine(4)
        rmtm.trade_confirm(trade_ids=[trade.pk])
    assert Trade.objects.get(pk=trade.pk).state == "SETTLED"


def test_a_confirm_that_races_a_broadcast_keeps_its_mined_verdict(
    scoped_wallet, deployed_devchain, monkeypatch
):
    """The interleaving CI once hit: a redelivered broadcast sends, a concurrent confirm records the
    receipt, then the broadcast marks the row sent. The row must stay MINED."""
    trade = _submit(scoped_wallet, key="race-broadcast")
    rmtm.trade_simulate(trade_id=trade.pk)
    rmtm.trade_validate(trade_id=trade.pk)
    signer.trade_sign(trade_id=trade.pk, attempt=1)
    signed_step.persist_signer_answers([(trade.pk, 1)])
    raced = []

    def confirm_in_between(point: str) -> None:  # the other worker, exactly at the boundary
        if point == "broadcast.after_send" and not raced:
            raced.append(point)
            rmtm.trade_confirm(trade_ids=[trade.pk])

    monkeypatch.setattr(broadcast_step, "crash_point", confirm_in_between)
    rmtm.trade_broadcast(trade_ids=[trade.pk])
    assert raced
    assert _statuses(trade, kind="approve") == {"mined"}
    _mine(deployed_devchain, 3)
    rmtm.trade_confirm(trade_ids=[trade.pk])
    trade.refresh_from_db()
    assert trade.state == "SETTLED", trade.reason
    assert _statuses(trade) == {"mined"}


def test_a_later_broadcast_catches_up_a_signed_trade_whose_signer_message_was_lost(
    scoped_wallet, deployed_devchain
):
    lower, upper = _to_signing(scoped_wallet, "lost-lower"), _to_signing(scoped_wallet, "lost-upper")
    # Both signed; the engine hears only of the upper one (the lower one's message is lost: no
    # worker runs here, and the test never calls its after-signing step).
    assert signer.trade_sign(trade_id=lower.pk, attempt=1).signed
    assert signer.trade_sign(trade_id=upper.pk, attempt=1).signed
    signed_step.persist_signer_answers([(upper.pk, 1)])
    with pytest.raises(chainio.NonceNotYetValid):  # the lower nonces are not on the wire yet
        rmtm.trade_broadcast(trade_ids=[upper.pk])
    lower.refresh_from_db()
    assert lower.state == "CONFIRMING"  # caught up: bytes persisted, its broadcast enqueued
    assert lower.events.filter(kind="start_confirming").count() == 1
    rmtm.trade_broadcast(trade_ids=[upper.pk])  # sends the lower trade's bytes first, then its own
    stats = pool_for(lower.chain).stats
    before = stats.http_requests
    rmtm.trade_after_signing(requests=[(lower.pk, 1)])  # its own answer, late: sent already, not again
    assert stats.http_requests == before
    _mine(deployed_devchain, 2)
    for trade in (lower, upper):
        rmtm.trade_confirm(trade_ids=[trade.pk])
        assert Trade.objects.get(pk=trade.pk).state == "SETTLED"
    w3 = Web3(Web3.HTTPProvider(deployed_devchain))
    assert w3.eth.get_transaction_count(scoped_wallet.address) == 4


def test_the_signers_answer_is_persisted_and_broadcast_in_one_step_then_confirmed_together(
    scoped_wallet,
):
    """trade_after_signing_batch: the signed bytes persisted, every trade's transactions sent in
    nonce order in the same step (no broadcast task in between), and one confirm with one receipts
    request settles them all."""
    Chain.objects.update(confirmations_required=1)
    trades = _simulated(scoped_wallet, ["answer-a", "answer-b", "answer-c"])
    rmtm.trade_validate(trade_id=trades[0].pk)
    outcomes = signer.trade_sign_batch([(t.pk, 1) for t in trades])
    assert all(o.signed for o in outcomes.values())
    rmtm.trade_after_signing(requests=[(t.pk, 1) for t in reversed(trades)])
    sent = ChainTransaction.objects.filter(trade__in=trades).order_by("nonce")
    assert [int(tx.nonce) for tx in sent] == list(range(6))
    assert all(tx.broadcast_at is not None for tx in sent)
    stats = pool_for(trades[0].chain).stats
    before = stats.http_requests
    assert rmtm.trade_confirm(trade_ids=[t.pk for t in trades]) == 3
    assert {Trade.objects.get(pk=t.pk).state for t in trades} == {"SETTLED"}
    # The head, one receipts request for all six, the settlement gate's block hash per block.
    blocks = len(set(sent.values_list("receipt_block_number", flat=True)))
    assert stats.http_requests - before <= 2 + blocks
    assert audit_verify(trade_ids=[t.pk for t in trades])[1] is None


def test_an_answer_above_an_unsigned_nonce_waits_without_a_retry_then_both_go_in_order(
    scoped_wallet, deployed_devchain
):
    """One broadcaster per wallet: the upper trade's answer meets the gap (the node refuses future
    nonces) and ends without raising (no task retried); the lower trade's answer sends its own
    transactions and then the upper ones, lowest nonce first, in one step."""
    w3 = Web3(Web3.HTTPProvider(deployed_devchain))
    lower, upper = _to_signing(scoped_wallet, "gap-lower"), _to_signing(scoped_wallet, "gap-upper")
    assert signer.trade_sign(trade_id=upper.pk, attempt=1).signed
    rmtm.trade_after_signing(requests=[(upper.pk, 1)])
    assert Trade.objects.get(pk=upper.pk).state == "CONFIRMING"
    assert w3.eth.get_transaction_count(scoped_wallet.address) == 0
    assert _sent_nonces(scoped_wallet) == []

    assert signer.trade_sign(trade_id=lower.pk, attempt=1).signed
    rmtm.trade_after_signing(requests=[(lower.pk, 1)])
    assert w3.eth.get_transaction_count(scoped_wallet.address) == 4
    assert _sent_nonces(scoped_wallet) == [0, 1, 2, 3]
    order = TradeEvent.objects.filter(trade__in=[lower, upper], kind="broadcast").order_by("pk")
    assert [e.data["nonce"] for e in order] == [0, 1, 2, 3]
    # One run sent all four; each keeps the moment it was sent.
    times = list(
        ChainTransaction.objects.filter(trade__in=[lower, upper])
        .order_by("nonce")
        .values_list("broadcast_at", flat=True)
    )
    assert times == sorted(times)
    assert len(set(times)) == 4


def test_a_step_that_finds_the_wallets_broadcaster_busy_leaves_its_sending_to_it(scoped_wallet):
    from project.locks import Advisory
    from tests.signing.test_batch import _other_connection

    first, second = _to_signing(scoped_wallet, "busy-a"), _to_signing(scoped_wallet, "busy-b")
    assert signer.trade_sign(trade_id=first.pk, attempt=1).signed
    assert signer.trade_sign(trade_id=second.pk, attempt=1).signed
    with _other_connection() as other:
        other.execute("SELECT pg_advisory_lock(%s, %s)", [int(Advisory.WALLET_BROADCAST), scoped_wallet.pk])
        rmtm.trade_after_signing(requests=[(first.pk, 1)])  # returns at once: someone is sending
        assert Trade.objects.get(pk=first.pk).state == "CONFIRMING"
        assert _sent_nonces(scoped_wallet) == []
        # Let go explicitly: a closed session's lock lingers until its backend has seen the close.
        other.execute("SELECT pg_advisory_unlock(%s, %s)", [int(Advisory.WALLET_BROADCAST), scoped_wallet.pk])
    rmtm.trade_after_signing(requests=[(second.pk, 1)])  # the next broadcaster sends both, in order
    assert _sent_nonces(scoped_wallet) == [0, 1, 2, 3]


def test_the_broadcaster_looks_again_after_letting_go_for_an_answer_that_arrived_meanwhile(
    scoped_wallet, monkeypatch
):
    """Another trade's answer is committed after the broadcaster's last look found nothing new and
    before it let go (that trade's own step found the lock held and returned): the look after
    letting go finds it and sends it."""
    first, late = _to_signing(scoped_wallet, "bc-first"), _to_signing(scoped_wallet, "bc-late")
    assert signer.trade_sign(trade_id=first.pk, attempt=1).signed
    assert signer.trade_sign(trade_id=late.pk, attempt=1).signed
    real, looks = broadcast_step._unsent_of, []

    def unsent_then_arrival(wallet_id, *, ids_only=False):
        rows = real(wallet_id, ids_only=ids_only)
        looks.append((ids_only, len(rows)))
        if len(looks) == 2:  # the holder's look that found nothing new, just before it lets go
            _persisted(late)
        return rows

    monkeypatch.setattr(broadcast_step, "_unsent_of", unsent_then_arrival)
    rmtm.trade_after_signing(requests=[(first.pk, 1)])
    assert looks[:3] == [(False, 2), (False, 0), (True, 2)]
    assert _sent_nonces(scoped_wallet) == [0, 1, 2, 3]
