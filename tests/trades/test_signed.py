"""signed.py: SIGNING → CONFIRMING (or REJECTED): the signer's answers persisted, a refusal recorded, and
the nonces of a refused first attempt filled by cancels (or handed back at the top)."""

from __future__ import annotations

import pytest
from web3 import Web3

from apps.chain.models import Chain
from apps.signing import services as signer
from apps.signing.models import SigningRecord
from apps.trades import real_money_transaction_manager as rmtm
from apps.trades.models import Trade
from apps.trades.real_money_transaction_manager import payloads
from apps.trades.real_money_transaction_manager import signed as signed_step
from apps.wallets.models import NonceCursor
from tests.trades.steps import (
    _assert_bumped,
    _persisted,
    _sent_nonces,
    _sign_and_send,
    _StuckChain,
    _submit,
    _to_signing,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.chain]


def test_nonces_of_a_trade_the_signer_refused_below_others_are_filled_so_no_gap_jams_the_wallet(
    scoped_wallet, deployed_devchain
):
    """The signer refuses a trade whose nonces lie below another's: handing them back would hold the
    later trade until some next trade takes them. They are filled by zero-value self-transfers
    (signed as cancels of the never-signed transactions), the later trade goes out behind them, and
    the refused trade ends CANCELLED with the refusal as its reason."""
    Chain.objects.update(confirmations_required=1)

    def nonces(trade: Trade, attempt: int) -> list[int]:
        return sorted(
            int(n) for n in trade.transactions.filter(attempt=attempt).values_list("nonce", flat=True)
        )

    refused, above = _to_signing(scoped_wallet, "gap-refused"), _to_signing(scoped_wallet, "gap-above")
    assert (nonces(refused, 1), nonces(above, 1)) == ([0, 1], [2, 3])
    refused.transactions.filter(kind="swap").update(data="0xdeadbeef")  # tampered: the signer refuses
    assert not signer.trade_sign(trade_id=refused.pk, attempt=1).signed
    signed_step.persist_signer_answers([(refused.pk, 1)])
    signed_step.persist_signer_answers([(refused.pk, 1)])  # redelivered: fills nothing twice
    assert Trade.objects.get(pk=refused.pk).state == "SIGNING"
    fillers = list(refused.transactions.filter(attempt=2).order_by("nonce"))
    assert [(tx.kind, int(tx.nonce), int(tx.value), tx.data, tx.to) for tx in fillers] == [
        ("cancel", 0, 0, "0x", scoped_wallet.address),
        ("cancel", 1, 0, "0x", scoped_wallet.address),
    ]
    cursor = NonceCursor.objects.get(wallet=scoped_wallet)
    assert (cursor.next_nonce, cursor.released) == (4, [])  # kept, not handed back

    assert signer.trade_sign(trade_id=refused.pk, attempt=2).signed
    rmtm.trade_after_signing(requests=[(refused.pk, 2)])
    assert signer.trade_sign(trade_id=above.pk, attempt=1).signed
    rmtm.trade_after_signing(requests=[(above.pk, 1)])
    w3 = Web3(Web3.HTTPProvider(deployed_devchain))
    assert w3.eth.get_transaction_count(scoped_wallet.address) == 4
    rmtm.trade_confirm(trade_ids=[refused.pk, above.pk])
    refused.refresh_from_db()
    assert refused.state == "CANCELLED"
    assert refused.reason.startswith("signer refused: calldata_unrecognised")
    assert "filled by zero-value self-transfers" in refused.reason
    assert Trade.objects.get(pk=above.pk).state == "SETTLED"
    assert not SigningRecord.objects.filter(trade=refused, attempt=1).exists()  # the swap never signed


def test_filling_cancels_that_sit_unmined_are_bumped_and_the_refused_attempt_is_never_signed(
    scoped_wallet, deployed_devchain, settings
):
    """The filling cancels pay the refused attempt's fees; when the base fee has risen above them
    they are stuck like any transaction and get a bumped replacement. And a redelivered request for
    the refused attempt is refused as superseded: nothing else is ever put in line for its nonces."""
    settings.REPLACE_AFTER_BLOCKS = 3
    refused, _above = _to_signing(scoped_wallet, "stuck-fill"), _to_signing(scoped_wallet, "stuck-above")
    refused.transactions.filter(kind="swap").update(data="0xdeadbeef")
    assert not signer.trade_sign(trade_id=refused.pk, attempt=1).signed
    signed_step.persist_signer_answers([(refused.pk, 1)])
    with _StuckChain(deployed_devchain) as chain:
        chain.base_fee = int(refused.transactions.get(attempt=2, sequence=0).max_fee_per_gas) + 1
        _sign_and_send(refused, 2)
        chain.mine(3)
        rmtm.trade_confirm(trade_ids=[refused.pk])
        bumped = list(refused.transactions.filter(attempt=3).order_by("sequence"))
        assert [tx.kind for tx in bumped] == ["cancel", "cancel"]
        for tx in bumped:
            _assert_bumped(tx)
        _sign_and_send(refused, 3)
        chain.base_fee = None
        chain.mine(4)
        rmtm.trade_confirm(trade_ids=[refused.pk])
    assert Trade.objects.get(pk=refused.pk).state == "CANCELLED"
    again = signer.trade_sign(trade_id=refused.pk, attempt=1)
    assert not again.signed
    assert again.refusal.startswith("superseded")


def test_a_cancel_of_a_transaction_already_signed_is_not_signed_while_the_trade_is_in_signing(scoped_wallet):
    """Only a never-signed transaction's nonce is filled in SIGNING: a cancel replacing a signed one
    is a replacement like any other, judged only once the trade is CONFIRMING."""
    trade = _to_signing(scoped_wallet, "fill-signed")
    assert signer.trade_sign(trade_id=trade.pk, attempt=1).signed
    original = trade.transactions.get(attempt=1, kind="swap")
    cancel = payloads.replacement_of(original, attempt=2, cancel=True)
    cancel.save()
    outcome = signer.trade_sign(trade_id=trade.pk, attempt=2)
    assert not outcome.signed
    assert outcome.refusal.startswith("trade_not_in_state")
    assert "not CONFIRMING" in outcome.refusal


def test_nonces_released_at_the_top_rewind_the_cursor(scoped_wallet):
    trade = _submit(scoped_wallet, key="top")
    rmtm.trade_simulate(trade_id=trade.pk)
    rmtm.trade_validate(trade_id=trade.pk)
    trade.transactions.filter(kind="swap").update(data="0xdeadbeef")
    signer.trade_sign(trade_id=trade.pk, attempt=1)
    signed_step.persist_signer_answers([(trade.pk, 1)])
    cursor = NonceCursor.objects.get(wallet=scoped_wallet)
    assert (cursor.next_nonce, cursor.released) == (0, [])
    assert trade.events.filter(kind="nonces_released", data__how="rewound").exists()


def test_an_answer_another_step_persisted_after_it_was_read_is_judged_afresh_once(scoped_wallet, monkeypatch):
    """The answer is read once, before each trade's own transaction: a trade persisted meanwhile
    (a broadcaster's catch-up) is read again, not moved twice, and the other trades of the answer
    go on."""
    first, second = _to_signing(scoped_wallet, "afresh-a"), _to_signing(scoped_wallet, "afresh-b")
    outcomes = signer.trade_sign_batch([(first.pk, 1), (second.pk, 1)])
    assert all(o.signed for o in outcomes.values())
    real, reads = signed_step._answers_of, []

    def read_then_persisted_elsewhere(requests):
        answers = real(requests)
        reads.append(requests)
        if len(reads) == 1:
            _persisted(first)  # committed after the read above
        return answers

    monkeypatch.setattr(signed_step, "_answers_of", read_then_persisted_elsewhere)
    rmtm.trade_after_signing(requests=[(first.pk, 1), (second.pk, 1)])
    assert [(first.pk, 1)] in reads[1:]  # the stale one read again
    for trade in (first, second):
        assert Trade.objects.get(pk=trade.pk).state == "CONFIRMING"
        assert trade.events.filter(kind="start_confirming").count() == 1
    assert _sent_nonces(scoped_wallet) == [0, 1, 2, 3]
