"""The execution engine, step by step in-process, against the real dev chain and a keystore signer."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone
from web3 import Web3

from apps.chain import devchain
from apps.chain.models import Chain, Dex, Token
from apps.chain.pool import pool_for
from apps.chain.txcodec import payload_hash
from apps.signing import services as signer
from apps.signing.models import SigningRecord
from apps.trades import real_money_transaction_manager as rmtm
from apps.trades.audit import AuditEntry, audit_append, audit_append_many, audit_verify
from apps.trades.models import ChainTransaction, Trade, TradeEvent
from apps.wallets.models import NonceCursor
from apps.wallets.services import wallet_create
from project.db import serializable_attempts
from tests.factories import UserFactory, grant_scope, model_version_row

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.chain]


@pytest.fixture
def funded_wallet(deployed_devchain, keystore):
    Chain.objects.update(confirmations_required=3)
    wallet = wallet_create(owner=UserFactory(), label="engine", key_backend="keystore")
    wallet = signer.wallet_key_create(wallet_id=wallet.pk)
    devchain.fund_address(url=deployed_devchain, address=wallet.address, eth=Decimal(5), token_units=50_000)
    return wallet


@pytest.fixture
def scoped_wallet(funded_wallet):
    grant_scope(funded_wallet)
    return funded_wallet


def _tokens():
    return Token.objects.get(symbol="dUSDC"), Token.objects.get(symbol="dDAI")


def _submit(wallet, *, amount_in=100 * 10**6, slippage_bps=50, key="t1", deadline_minutes=20):
    usdc, dai = _tokens()
    return rmtm.trade_submit(
        owner=wallet.owner,
        wallet=wallet,
        dex=Dex.objects.get(),
        path=[usdc.address, dai.address],
        amount_in=amount_in,
        slippage_bps=slippage_bps,
        idempotency_key=key,
        deadline=timezone.now() + timedelta(minutes=deadline_minutes),
    ).trade


def _run_to_confirming(trade: Trade) -> Trade:
    rmtm.trade_simulate(trade_id=trade.pk)
    rmtm.trade_validate(trade_id=trade.pk)
    signer.trade_sign(trade_id=trade.pk, attempt=1)
    rmtm.trade_after_signing(trade_id=trade.pk, attempt=1)
    rmtm.trade_broadcast(trade_id=trade.pk)
    return Trade.objects.get(pk=trade.pk)


def _to_signing(wallet, key: str) -> Trade:
    trade = _submit(wallet, key=key, amount_in=10 * 10**6)
    rmtm.trade_simulate(trade_id=trade.pk)
    rmtm.trade_validate(trade_id=trade.pk)
    trade.refresh_from_db()
    assert trade.state == "SIGNING", trade.reason
    return trade


def _mine(url: str, blocks: int) -> None:
    w3 = Web3(Web3.HTTPProvider(url))
    for _ in range(blocks):
        w3.provider.make_request("evm_mine", [])


def test_a_swap_runs_from_pending_to_settled_with_the_approval(scoped_wallet, deployed_devchain):
    w3 = Web3(Web3.HTTPProvider(deployed_devchain))
    usdc, dai = _tokens()
    abi = devchain.load_artifact("DevToken")["abi"]
    usdc_c, dai_c = (w3.eth.contract(address=t.address, abi=abi) for t in (usdc, dai))
    usdc_before = usdc_c.functions.balanceOf(scoped_wallet.address).call()
    dai_before = dai_c.functions.balanceOf(scoped_wallet.address).call()

    trade = _run_to_confirming(_submit(scoped_wallet))
    assert trade.state == "CONFIRMING", trade.reason
    kinds = list(trade.transactions.order_by("sequence").values_list("kind", "nonce"))
    assert kinds == [("approve", 0), ("swap", 1)]
    rmtm.trade_confirm(trade_id=trade.pk)
    assert Trade.objects.get(pk=trade.pk).state == "CONFIRMING"  # not deep enough yet
    _mine(deployed_devchain, 3)
    rmtm.trade_confirm(trade_id=trade.pk)
    trade.refresh_from_db()
    assert trade.state == "SETTLED"

    assert usdc_c.functions.balanceOf(scoped_wallet.address).call() == usdc_before - int(trade.amount_in)
    received = dai_c.functions.balanceOf(scoped_wallet.address).call() - dai_before
    assert received == int(trade.quoted_amount_out)  # nothing moved the pool in between
    states = list(
        TradeEvent.objects.filter(trade=trade).exclude(to_state="").values_list("to_state", flat=True)
    )
    assert states == ["PENDING", "SIMULATING", "VALIDATING", "SIGNING", "CONFIRMING", "SETTLED"]
    checked, broken = audit_verify()
    assert broken is None
    assert checked >= 8


def test_replaying_every_step_of_a_settled_trade_changes_nothing(scoped_wallet, deployed_devchain):
    trade = _run_to_confirming(_submit(scoped_wallet, key="replay"))
    _mine(deployed_devchain, 3)
    rmtm.trade_confirm(trade_id=trade.pk)
    trade.refresh_from_db()
    assert trade.state == "SETTLED"
    events = TradeEvent.objects.count()
    snapshot = list(ChainTransaction.objects.values_list("pk", "nonce", "unsigned_hash", "tx_hash", "status"))
    rmtm.trade_simulate(trade_id=trade.pk)
    rmtm.trade_validate(trade_id=trade.pk)
    signer.trade_sign(trade_id=trade.pk, attempt=1)
    rmtm.trade_after_signing(trade_id=trade.pk, attempt=1)
    rmtm.trade_broadcast(trade_id=trade.pk)
    rmtm.trade_confirm(trade_id=trade.pk)
    assert Trade.objects.get(pk=trade.pk).state == "SETTLED"
    assert TradeEvent.objects.count() == events
    assert (
        list(ChainTransaction.objects.values_list("pk", "nonce", "unsigned_hash", "tx_hash", "status"))
        == snapshot
    )


def test_a_trade_never_settles_on_its_approval_alone(scoped_wallet, deployed_devchain):
    trade = _submit(scoped_wallet, key="approval-only")
    rmtm.trade_simulate(trade_id=trade.pk)
    rmtm.trade_validate(trade_id=trade.pk)
    signer.trade_sign(trade_id=trade.pk, attempt=1)
    rmtm.trade_after_signing(trade_id=trade.pk, attempt=1)
    approve = ChainTransaction.objects.get(trade=trade, kind="approve")
    w3 = Web3(Web3.HTTPProvider(deployed_devchain))
    w3.eth.send_raw_transaction(bytes(approve.raw_signed))
    ChainTransaction.objects.filter(pk=approve.pk).update(broadcast_at=timezone.now(), status="broadcast")
    _mine(deployed_devchain, 5)
    rmtm.trade_confirm(trade_id=trade.pk)
    assert Trade.objects.get(pk=trade.pk).state == "CONFIRMING"
    rmtm.trade_broadcast(trade_id=trade.pk)
    _mine(deployed_devchain, 3)
    rmtm.trade_confirm(trade_id=trade.pk)
    assert Trade.objects.get(pk=trade.pk).state == "SETTLED"
    assert set(trade.transactions.values_list("status", flat=True)) == {"mined"}


def test_frozen_transactions_rebuild_byte_for_byte(scoped_wallet):
    trade = _run_to_confirming(_submit(scoped_wallet, key="determinism"))
    for tx in trade.transactions.all():
        expected = (
            rmtm.swap_calldata(trade, int(trade.amount_out_min))
            if tx.kind == "swap"
            else rmtm.approve_calldata(trade)
        )
        assert tx.data == expected
        assert payload_hash(tx.as_unsigned_dict()) == tx.unsigned_hash


def test_out_of_scope_trade_is_rejected_and_signs_nothing(funded_wallet):
    grant_scope(funded_wallet, max_amount_in=50 * 10**6)
    trade = _submit(funded_wallet, amount_in=100 * 10**6, key="too-big")
    rmtm.trade_simulate(trade_id=trade.pk)
    rmtm.trade_validate(trade_id=trade.pk)
    trade.refresh_from_db()
    assert trade.state == "REJECTED"
    assert "amount_over_cap" in trade.reason
    assert not trade.transactions.exists()
    # The refusal rolled back the allocation with everything else: no nonce was consumed.
    cursor = NonceCursor.objects.filter(wallet=funded_wallet).first()
    assert cursor is None or cursor.next_nonce == 0


def test_insufficient_balance_is_rejected(funded_wallet):
    grant_scope(funded_wallet, max_amount_in=10**18)
    trade = _submit(funded_wallet, amount_in=10**6 * 10**6, key="poor")
    rmtm.trade_simulate(trade_id=trade.pk)
    trade.refresh_from_db()
    if trade.state == "VALIDATING":
        rmtm.trade_validate(trade_id=trade.pk)
        trade.refresh_from_db()
    assert trade.state in {"REJECTED", "FAILED"}
    assert (
        "insufficient" in trade.reason or "TRANSFER_FROM_FAILED" in trade.reason or "reverted" in trade.reason
    )


def test_price_far_from_the_reference_is_rejected(funded_wallet):
    grant_scope(funded_wallet, max_amount_in=10**15, max_slippage_bps=10)
    # 40,000 dUSDC into a 1M/1M pool moves the price ~4%: far beyond the scope's 10 bps.
    trade = _submit(funded_wallet, amount_in=40_000 * 10**6, slippage_bps=5, key="impact")
    rmtm.trade_simulate(trade_id=trade.pk)
    rmtm.trade_validate(trade_id=trade.pk)
    trade.refresh_from_db()
    assert trade.state == "REJECTED"
    assert "price_deviation" in trade.reason


def test_passed_deadline_is_rejected(funded_wallet):
    grant_scope(funded_wallet)
    trade = _submit(funded_wallet, key="late")
    Trade.objects.filter(pk=trade.pk).update(deadline=timezone.now() - timedelta(seconds=1))
    rmtm.trade_simulate(trade_id=trade.pk)
    trade.refresh_from_db()
    assert trade.state == "REJECTED"
    assert "deadline" in trade.reason


def test_audit_verify_names_the_first_broken_link(funded_wallet):
    grant_scope(funded_wallet)
    trade = _submit(funded_wallet, key="audit")
    rmtm.trade_simulate(trade_id=trade.pk)
    event = trade.events.order_by("id")[1]
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
        rmtm._transition(stale, "start_simulation")
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


class _StuckChain:
    """Automine off and a base fee just above what the frozen transactions pay: they sit unmined
    while blocks go by, and a 12.5% bump gets them in."""

    def __init__(self, url: str):
        self.w3 = Web3(Web3.HTTPProvider(url))
        self.base_fee = None

    def __enter__(self):
        self.w3.provider.make_request("evm_setAutomine", [False])
        return self

    def __exit__(self, *exc):
        self.w3.provider.make_request("evm_setAutomine", [True])

    def mine(self, blocks: int = 1) -> None:
        for _ in range(blocks):
            if self.base_fee is not None:
                self.w3.provider.make_request("hardhat_setNextBlockBaseFeePerGas", [hex(self.base_fee)])
            self.w3.provider.make_request("evm_mine", [])


def _sign_and_send(trade: Trade, attempt: int) -> None:
    outcome = signer.trade_sign(trade_id=trade.pk, attempt=attempt)
    assert outcome.signed, outcome.refusal
    rmtm.trade_after_signing(trade_id=trade.pk, attempt=attempt)
    rmtm.trade_broadcast(trade_id=trade.pk)


def _assert_bumped(tx: ChainTransaction) -> None:
    """A replacement at its original's nonce with both fees raised by at least 12.5%."""
    assert tx.nonce == tx.replaces.nonce
    assert int(tx.max_fee_per_gas) * 1000 >= int(tx.replaces.max_fee_per_gas) * 1125
    assert int(tx.max_priority_fee_per_gas) * 1000 >= int(tx.replaces.max_priority_fee_per_gas) * 1125


def test_a_stuck_transaction_is_replaced_with_bumped_fees_and_settles(
    scoped_wallet, deployed_devchain, settings
):
    settings.REPLACE_AFTER_BLOCKS = 3
    with _StuckChain(deployed_devchain) as chain:
        trade = _submit(scoped_wallet, key="stuck")
        rmtm.trade_simulate(trade_id=trade.pk)
        rmtm.trade_validate(trade_id=trade.pk)
        frozen_fee = int(trade.transactions.get(kind="swap").max_fee_per_gas)
        chain.base_fee = frozen_fee + 1  # above what attempt 1 pays, below a 12.5% bump
        _sign_and_send(trade, 1)
        chain.mine(3)
        rmtm.trade_confirm(trade_id=trade.pk)
        replacements = list(trade.transactions.filter(attempt=2).order_by("sequence"))
        assert [tx.kind for tx in replacements] == ["approve", "swap"]
        for tx in replacements:
            assert tx.replaces.attempt == 1
            _assert_bumped(tx)
        _sign_and_send(trade, 2)
        chain.mine(1)
        chain.base_fee = None
        chain.mine(3)
        rmtm.trade_confirm(trade_id=trade.pk)
    trade.refresh_from_db()
    assert trade.state == "SETTLED", trade.reason
    assert set(trade.transactions.filter(attempt=1).values_list("status", flat=True)) == {"replaced"}
    assert set(trade.transactions.filter(attempt=2).values_list("status", flat=True)) == {"mined"}
    assert trade.events.filter(kind="reconfirm").exists()


def test_a_resend_waiting_for_the_broadcaster_sends_the_replacement_signed_meanwhile_not_its_original(
    scoped_wallet, deployed_devchain, settings, monkeypatch
):
    """A re-send (the broadcast task) waits in line for the wallet's broadcaster; a replacement is
    signed and persisted while it waits. What it sends is read once it holds the lock: the
    replacement, never the original it replaces (a node holding the replacement refuses the
    original as underpriced, and another endpoint could still mine it)."""
    from project.db import LOCK_WALLET_BROADCAST
    from tests.signing.test_batch import _other_connection

    settings.REPLACE_AFTER_BLOCKS = 3
    with _StuckChain(deployed_devchain) as chain:
        trade = _submit(scoped_wallet, key="resend-wait")
        rmtm.trade_simulate(trade_id=trade.pk)
        rmtm.trade_validate(trade_id=trade.pk)
        chain.base_fee = int(trade.transactions.get(kind="swap").max_fee_per_gas) + 1
        _sign_and_send(trade, 1)
        chain.mine(3)
        rmtm.trade_confirm(trade_id=trade.pk)  # attempt 2 frozen
        assert signer.trade_sign(trade_id=trade.pk, attempt=2).signed
        real_send, sent = rmtm._send, []
        monkeypatch.setattr(rmtm, "_send", lambda tx: sent.append(tx.attempt) or real_send(tx))
        with _other_connection() as other:
            other.execute("SELECT pg_advisory_lock(%s, %s)", [LOCK_WALLET_BROADCAST, scoped_wallet.pk])
            waiting = threading.Thread(target=lambda: rmtm.trade_broadcast(trade_id=trade.pk))
            waiting.start()
            time.sleep(0.5)  # in line for the lock
            assert waiting.is_alive()
            _persisted_attempt(trade, 2)  # the replacement's answer, committed meanwhile
        waiting.join(30)
        assert sent == [2, 2]
        chain.base_fee = None
        chain.mine(4)
        rmtm.trade_confirm(trade_id=trade.pk)
    assert Trade.objects.get(pk=trade.pk).state == "SETTLED"


def test_a_passed_deadline_while_unmined_produces_a_cancel(scoped_wallet, deployed_devchain):
    import time

    usdc, _dai = _tokens()
    w3 = Web3(Web3.HTTPProvider(deployed_devchain))
    token = w3.eth.contract(address=usdc.address, abi=devchain.load_artifact("DevToken")["abi"])
    before = token.functions.balanceOf(scoped_wallet.address).call()
    with _StuckChain(deployed_devchain) as chain:
        usdc_dai = _tokens()
        trade = rmtm.trade_submit(
            owner=scoped_wallet.owner,
            wallet=scoped_wallet,
            dex=Dex.objects.get(),
            path=[t.address for t in usdc_dai],
            amount_in=100 * 10**6,
            slippage_bps=50,
            idempotency_key="late-cancel",
            deadline=timezone.now() + timedelta(seconds=6),
        ).trade
        rmtm.trade_simulate(trade_id=trade.pk)
        rmtm.trade_validate(trade_id=trade.pk)
        chain.base_fee = int(trade.transactions.get(kind="swap").max_fee_per_gas) + 1
        _sign_and_send(trade, 1)
        chain.mine(1)
        time.sleep(max(0.0, (trade.deadline - timezone.now()).total_seconds()) + 0.5)
        rmtm.trade_confirm(trade_id=trade.pk)
        cancels = list(trade.transactions.filter(attempt=2))
        assert {tx.kind for tx in cancels} == {"cancel"}
        assert all(
            tx.to == scoped_wallet.address and int(tx.value) == 0 and tx.data == "0x" for tx in cancels
        )
        _sign_and_send(trade, 2)
        chain.mine(1)
        chain.base_fee = None
        chain.mine(3)
        rmtm.trade_confirm(trade_id=trade.pk)
    trade.refresh_from_db()
    assert trade.state == "CANCELLED", trade.reason
    assert token.functions.balanceOf(scoped_wallet.address).call() == before  # nothing was swapped


def test_a_reverting_swap_fails_with_the_decoded_reason_and_signs_nothing(scoped_wallet):
    usdc, dai = _tokens()
    trade = rmtm.trade_submit(
        owner=scoped_wallet.owner,
        wallet=scoped_wallet,
        dex=Dex.objects.get(),
        path=[usdc.address, dai.address],
        amount_in=100 * 10**6,
        min_amount_out=10**30,
        idempotency_key="reverts",
        deadline=timezone.now() + timedelta(minutes=20),
    ).trade
    rmtm.trade_simulate(trade_id=trade.pk)
    trade.refresh_from_db()
    assert trade.state == "FAILED"
    assert "INSUFFICIENT_OUTPUT_AMOUNT" in trade.reason
    assert not trade.transactions.exists()


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


def _statuses(trade: Trade, **filters) -> set[str]:
    return set(trade.transactions.filter(**filters).values_list("status", flat=True))


def test_a_confirm_that_races_a_broadcast_keeps_its_mined_verdict(
    scoped_wallet, deployed_devchain, monkeypatch
):
    """The interleaving CI once hit: a redelivered broadcast sends, a concurrent confirm records the
    receipt, then the broadcast marks the row sent. The row must stay MINED."""
    trade = _submit(scoped_wallet, key="race-broadcast")
    rmtm.trade_simulate(trade_id=trade.pk)
    rmtm.trade_validate(trade_id=trade.pk)
    signer.trade_sign(trade_id=trade.pk, attempt=1)
    rmtm.trade_after_signing(trade_id=trade.pk, attempt=1)
    raced = []

    def confirm_in_between(point: str) -> None:  # the other worker, exactly at the boundary
        if point == "broadcast.after_send" and not raced:
            raced.append(point)
            rmtm.trade_confirm(trade_id=trade.pk)

    monkeypatch.setattr(rmtm, "crash_point", confirm_in_between)
    rmtm.trade_broadcast(trade_id=trade.pk)
    assert raced
    assert _statuses(trade, kind="approve") == {"mined"}
    _mine(deployed_devchain, 3)
    rmtm.trade_confirm(trade_id=trade.pk)
    trade.refresh_from_db()
    assert trade.state == "SETTLED", trade.reason
    assert _statuses(trade) == {"mined"}


def test_a_replacement_frozen_after_its_original_was_mined_is_retired(
    scoped_wallet, deployed_devchain, settings
):
    """Two confirms race: one decides the transactions are stuck while the other records them mined.
    The late replacement is signed, its send finds the nonce used, and it must end REPLACED."""
    settings.REPLACE_AFTER_BLOCKS = 0
    trade = _run_to_confirming(_submit(scoped_wallet, key="race-replace"))
    stuck = list(trade.transactions.filter(attempt=1))
    w3 = Web3(Web3.HTTPProvider(deployed_devchain))
    rmtm.trade_confirm(trade_id=trade.pk)  # records both receipts; one block deep, not final
    assert _statuses(trade, attempt=1) == {"mined"}
    rmtm._replace_stuck(Trade.objects.get(pk=trade.pk), stuck, w3.eth.block_number)  # the slower confirm
    assert trade.transactions.filter(attempt=2).count() == 2
    _sign_and_send(trade, 2)
    _mine(deployed_devchain, 3)
    rmtm.trade_confirm(trade_id=trade.pk)
    trade.refresh_from_db()
    assert trade.state == "SETTLED", trade.reason
    assert _statuses(trade, attempt=1) == {"mined"}
    assert _statuses(trade, attempt=2) == {"replaced"}
    assert trade.events.filter(kind="mined").count() == 2  # one per transaction, not per pass


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
    rmtm.trade_after_signing(trade_id=refused.pk, attempt=1)
    rmtm.trade_after_signing(trade_id=refused.pk, attempt=1)  # redelivered: fills nothing twice
    assert Trade.objects.get(pk=refused.pk).state == "SIGNING"
    fillers = list(refused.transactions.filter(attempt=2).order_by("nonce"))
    assert [(tx.kind, int(tx.nonce), int(tx.value), tx.data, tx.to) for tx in fillers] == [
        ("cancel", 0, 0, "0x", scoped_wallet.address),
        ("cancel", 1, 0, "0x", scoped_wallet.address),
    ]
    cursor = NonceCursor.objects.get(wallet=scoped_wallet)
    assert (cursor.next_nonce, cursor.released) == (4, [])  # kept, not handed back

    assert signer.trade_sign(trade_id=refused.pk, attempt=2).signed
    rmtm.trade_after_signing_batch([(refused.pk, 2)])
    assert signer.trade_sign(trade_id=above.pk, attempt=1).signed
    rmtm.trade_after_signing_batch([(above.pk, 1)])
    w3 = Web3(Web3.HTTPProvider(deployed_devchain))
    assert w3.eth.get_transaction_count(scoped_wallet.address) == 4
    rmtm.trade_confirm_many([refused.pk, above.pk])
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
    rmtm.trade_after_signing(trade_id=refused.pk, attempt=1)
    with _StuckChain(deployed_devchain) as chain:
        chain.base_fee = int(refused.transactions.get(attempt=2, sequence=0).max_fee_per_gas) + 1
        _sign_and_send(refused, 2)
        chain.mine(3)
        rmtm.trade_confirm(trade_id=refused.pk)
        bumped = list(refused.transactions.filter(attempt=3).order_by("sequence"))
        assert [tx.kind for tx in bumped] == ["cancel", "cancel"]
        for tx in bumped:
            _assert_bumped(tx)
        _sign_and_send(refused, 3)
        chain.base_fee = None
        chain.mine(4)
        rmtm.trade_confirm(trade_id=refused.pk)
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
    cancel = rmtm.replacement_of(original, attempt=2, cancel=True)
    cancel.save()
    outcome = signer.trade_sign(trade_id=trade.pk, attempt=2)
    assert not outcome.signed
    assert outcome.refusal.startswith("trade_not_in_state")
    assert "not CONFIRMING" in outcome.refusal


def test_a_later_broadcast_catches_up_a_signed_trade_whose_signer_message_was_lost(
    scoped_wallet, deployed_devchain
):
    lower, upper = _to_signing(scoped_wallet, "lost-lower"), _to_signing(scoped_wallet, "lost-upper")
    # Both signed; the engine hears only of the upper one (the lower one's message is lost: no
    # worker runs here, and the test never calls its after-signing step).
    assert signer.trade_sign(trade_id=lower.pk, attempt=1).signed
    assert signer.trade_sign(trade_id=upper.pk, attempt=1).signed
    rmtm.trade_after_signing(trade_id=upper.pk, attempt=1)
    with pytest.raises(rmtm.chainio.NonceNotYetValid):  # the lower nonces are not on the wire yet
        rmtm.trade_broadcast(trade_id=upper.pk)
    lower.refresh_from_db()
    assert lower.state == "CONFIRMING"  # caught up: bytes persisted, its broadcast enqueued
    assert lower.events.filter(kind="start_confirming").count() == 1
    rmtm.trade_broadcast(trade_id=upper.pk)  # sends the lower trade's bytes first, then its own
    stats = pool_for(lower.chain).stats
    before = stats.http_requests
    rmtm.trade_after_signing_batch([(lower.pk, 1)])  # its own answer, late: sent already, not again
    assert stats.http_requests == before
    _mine(deployed_devchain, 2)
    for trade in (lower, upper):
        rmtm.trade_confirm(trade_id=trade.pk)
        assert Trade.objects.get(pk=trade.pk).state == "SETTLED"
    w3 = Web3(Web3.HTTPProvider(deployed_devchain))
    assert w3.eth.get_transaction_count(scoped_wallet.address) == 4


def test_nonces_released_at_the_top_rewind_the_cursor(scoped_wallet):
    trade = _submit(scoped_wallet, key="top")
    rmtm.trade_simulate(trade_id=trade.pk)
    rmtm.trade_validate(trade_id=trade.pk)
    trade.transactions.filter(kind="swap").update(data="0xdeadbeef")
    signer.trade_sign(trade_id=trade.pk, attempt=1)
    rmtm.trade_after_signing(trade_id=trade.pk, attempt=1)
    cursor = NonceCursor.objects.get(wallet=scoped_wallet)
    assert (cursor.next_nonce, cursor.released) == (0, [])
    assert trade.events.filter(kind="nonces_released", data__how="rewound").exists()


def test_an_enabled_advisory_gate_rejects_a_trade_the_advice_opposes_and_signs_nothing(scoped_wallet):
    from apps.ml.services import advice_gate_set, advice_record

    usdc, dai = _tokens()
    version = model_version_row()  # the gate reads advice rows only, never weights
    opposed = _submit(scoped_wallet, key="gate-off")
    advice_record(  # dDAI very likely falls against dUSDC: the trade buys dDAI with dUSDC
        token_id=dai.pk,
        quote_token_id=usdc.pk,
        model_version_id=version.pk,
        horizon_bars=1,
        created_at=timezone.now(),
        data_until=timezone.now(),
        p_up=Decimal("0.05"),
        confidence=Decimal("0.9"),
    )
    rmtm.trade_simulate(trade_id=opposed.pk)
    rmtm.trade_validate(trade_id=opposed.pk)
    assert Trade.objects.get(pk=opposed.pk).state == "SIGNING"  # no gate: advice alone never blocks

    advice_gate_set(scope_id=scoped_wallet.scopes.get().pk, refuse_at_probability=Decimal("0.75"))
    gated = _submit(scoped_wallet, key="gate-on")
    rmtm.trade_simulate(trade_id=gated.pk)
    rmtm.trade_validate(trade_id=gated.pk)
    gated.refresh_from_db()
    assert gated.state == "REJECTED"
    assert gated.reason.startswith("advice_disagrees:"), gated.reason
    assert not gated.transactions.filter(raw_signed__isnull=False).exists()
    assert not SigningRecord.objects.filter(trade=gated).exists()


def test_a_simulation_is_three_requests_to_the_node_and_validation_two(scoped_wallet):
    """The step's reads go as batches: the pinned block; the quote, reserves and allowance at it; the
    calls and estimates of the approval and the swap. (Through web3.py contract objects, one
    simulation was 17 HTTP requests, 8 of them for the chain id.)"""
    warm = _to_signing(scoped_wallet, key="warm")  # finds the pair and the allowance slot once
    assert warm.state == "SIGNING"
    trade = _submit(scoped_wallet, key="counted", amount_in=10 * 10**6)
    stats = pool_for(trade.chain).stats
    before = stats.http_requests
    rmtm.trade_simulate(trade_id=trade.pk)
    assert stats.http_requests - before == 3
    before = stats.http_requests
    rmtm.trade_validate(trade_id=trade.pk)
    assert stats.http_requests - before == 2  # fees and balances; the pending nonce
    trade.refresh_from_db()
    assert trade.state == "SIGNING", trade.reason
    assert [tx.kind for tx in trade.transactions.order_by("sequence")] == ["approve", "swap"]


def _simulated(wallet, keys: list[str], amount_in: int = 10 * 10**6) -> list[Trade]:
    trades = [_submit(wallet, key=key, amount_in=amount_in) for key in keys]
    for trade in trades:
        rmtm.trade_simulate(trade_id=trade.pk)
    return trades


def test_one_validation_judges_every_waiting_trade_of_the_wallet_with_one_balance_read(scoped_wallet):
    """The trade whose task runs first judges the others waiting in VALIDATING too: one read of
    balances and fees for all of them, nonces handed out in trade order, and what an earlier trade
    may spend no longer there for a later one. Their own validations then find nothing to do."""
    trades = _simulated(scoped_wallet, [f"round-{i}" for i in range(4)])
    stats = pool_for(trades[0].chain).stats
    before = stats.http_requests
    rmtm.trade_validate(trade_id=trades[0].pk)
    assert (
        stats.http_requests - before == 2
    )  # one balances-and-fees batch and the pending nonce, for all four
    states = {t.pk: Trade.objects.get(pk=t.pk).state for t in trades}
    assert set(states.values()) == {"SIGNING"}, states
    nonces = [sorted(int(n) for n in t.transactions.values_list("nonce", flat=True)) for t in trades]
    assert nonces == [[0, 1], [2, 3], [4, 5], [6, 7]]
    before = stats.http_requests
    for trade in trades[1:]:
        rmtm.trade_validate(trade_id=trade.pk)
    assert stats.http_requests == before  # nothing left to do, nothing asked of the node


def test_a_trade_the_round_cannot_fund_is_rejected_alone(scoped_wallet, deployed_devchain):
    """25 dUSDC, three trades of 10: each alone fits the balance, together they do not. The third is
    rejected with the reason, its savepoint undone (no nonce, no transaction); the others frozen."""
    w3 = Web3(Web3.HTTPProvider(deployed_devchain))
    usdc = Token.objects.get(symbol="dUSDC")
    erc20 = w3.eth.contract(address=usdc.address, abi=devchain.load_artifact("DevToken")["abi"])
    # Leave the wallet 25 dUSDC (the dev node lets the test move the rest away as the wallet).
    keep = 25 * 10**6
    extra = erc20.functions.balanceOf(scoped_wallet.address).call() - keep
    w3.provider.make_request("hardhat_impersonateAccount", [scoped_wallet.address])
    sent = erc20.functions.transfer("0x000000000000000000000000000000000000dEaD", extra).transact(
        {"from": scoped_wallet.address}
    )
    w3.eth.wait_for_transaction_receipt(sent)
    w3.provider.make_request("hardhat_stopImpersonatingAccount", [scoped_wallet.address])
    first, second, third = _simulated(scoped_wallet, ["fund-a", "fund-b", "fund-c"], amount_in=10 * 10**6)
    rmtm.trade_validate(trade_id=first.pk)
    first, second, third = (Trade.objects.get(pk=t.pk) for t in (first, second, third))
    assert (first.state, second.state, third.state) == ("SIGNING", "SIGNING", "REJECTED")
    assert third.reason.startswith("insufficient_balance")
    assert not third.transactions.exists()
    # Nonce 0 went to the transfer above: the chain's pending count moves the cursor past it.
    frozen = sorted(
        int(n)
        for n in ChainTransaction.objects.filter(trade__in=[first, second]).values_list("nonce", flat=True)
    )
    assert frozen == [1, 2, 3, 4]
    assert NonceCursor.objects.get(wallet=scoped_wallet).next_nonce == 5


def test_an_allowance_another_in_flight_trade_will_spend_is_not_relied_on(scoped_wallet, deployed_devchain):
    """The wallet's allowance covers exactly one trade; two are simulated (each sees it as enough).
    Only the first may use it: the second gets its own exact approve, and both settle. Before, the
    second went out as a bare swap and reverted on chain once the first had spent the allowance."""
    Chain.objects.update(confirmations_required=1)
    w3 = Web3(Web3.HTTPProvider(deployed_devchain))
    usdc, dex = Token.objects.get(symbol="dUSDC"), Dex.objects.get()
    erc20 = w3.eth.contract(address=usdc.address, abi=devchain.load_artifact("DevToken")["abi"])
    w3.provider.make_request("hardhat_impersonateAccount", [scoped_wallet.address])
    sent = erc20.functions.approve(dex.router, 10 * 10**6).transact({"from": scoped_wallet.address})
    w3.eth.wait_for_transaction_receipt(sent)
    w3.provider.make_request("hardhat_stopImpersonatingAccount", [scoped_wallet.address])
    first, second = _simulated(scoped_wallet, ["allow-a", "allow-b"])
    assert [t.events.get(kind="start_validation").data["approve_gas"] for t in (first, second)] == [0, 0]
    rmtm.trade_validate(trade_id=first.pk)
    kinds = {
        t.pk: list(t.transactions.order_by("sequence").values_list("kind", flat=True))
        for t in (first, second)
    }
    assert kinds == {first.pk: ["swap"], second.pk: ["approve", "swap"]}
    assert int(second.transactions.get(kind="approve").gas) >= settings.APPROVE_GAS_WITHOUT_ESTIMATE
    outcomes = signer.trade_sign_batch([(t.pk, 1) for t in (first, second)])
    assert all(o.signed for o in outcomes.values())
    rmtm.trade_after_signing_batch([(t.pk, 1) for t in (first, second)])
    rmtm.trade_confirm_many([first.pk, second.pk])
    assert [Trade.objects.get(pk=t.pk).state for t in (first, second)] == ["SETTLED", "SETTLED"]


def test_an_allowance_the_simulation_saw_but_gone_by_validation_gets_an_approve(
    scoped_wallet, deployed_devchain
):
    """The simulation's block still had the allowance (another trade's exact approve, mined before
    its swap); by validation that swap has spent it and is recorded mined, so nothing in flight
    speaks for it. Validation reads the allowance again: the trade gets its own approve and settles.
    Before, it went out as a bare swap and reverted on chain (seen once in bench/pipeline.py)."""
    Chain.objects.update(confirmations_required=1)
    w3 = Web3(Web3.HTTPProvider(deployed_devchain))
    usdc, dex = Token.objects.get(symbol="dUSDC"), Dex.objects.get()
    erc20 = w3.eth.contract(address=usdc.address, abi=devchain.load_artifact("DevToken")["abi"])

    def approve(amount: int) -> None:
        w3.provider.make_request("hardhat_impersonateAccount", [scoped_wallet.address])
        sent = erc20.functions.approve(dex.router, amount).transact({"from": scoped_wallet.address})
        w3.eth.wait_for_transaction_receipt(sent)
        w3.provider.make_request("hardhat_stopImpersonatingAccount", [scoped_wallet.address])

    approve(10 * 10**6)
    (trade,) = _simulated(scoped_wallet, ["allow-gone"])
    assert trade.events.get(kind="start_validation").data["approve_gas"] == 0
    approve(0)  # spent meanwhile
    rmtm.trade_validate(trade_id=trade.pk)
    assert list(trade.transactions.order_by("sequence").values_list("kind", flat=True)) == ["approve", "swap"]
    assert signer.trade_sign(trade_id=trade.pk, attempt=1).signed
    rmtm.trade_after_signing_batch([(trade.pk, 1)])
    rmtm.trade_confirm_many([trade.pk])
    assert Trade.objects.get(pk=trade.pk).state == "SETTLED"


def test_a_round_looks_for_swaps_speaking_for_the_allowance_before_it_reads_the_chain(
    scoped_wallet, monkeypatch
):
    """The order matters: looked up after the chain read, a swap recorded mined in between spoke for
    nothing while the read still showed the allowance it had just spent."""
    order = []
    real_spoken, real_state = rmtm._allowance_spoken_for, rmtm.chainio.wallet_state

    def spoken(trade, memo):
        order.append("spoken_for")
        return real_spoken(trade, memo)

    def state(**kwargs):
        order.append("chain")
        return real_state(**kwargs)

    monkeypatch.setattr(rmtm, "_allowance_spoken_for", spoken)
    monkeypatch.setattr(rmtm.chainio, "wallet_state", state)
    (trade,) = _simulated(scoped_wallet, ["order"])
    rmtm.trade_validate(trade_id=trade.pk)
    assert order[:2] == ["spoken_for", "chain"]


def test_the_tick_leaves_trades_a_confirm_batch_just_looked_at_for_the_next_tick(scoped_wallet, settings):
    Chain.objects.update(confirmations_required=5)  # mined, not yet deep enough: still CONFIRMING
    trades = _simulated(scoped_wallet, ["looked-a", "looked-b"])
    rmtm.trade_validate(trade_id=trades[0].pk)
    signer.trade_sign_batch([(t.pk, 1) for t in trades])
    rmtm.trade_after_signing_batch([(t.pk, 1) for t in trades])
    settings.TRADE_TICK_SECONDS = 3600
    assert rmtm.trade_confirm_many([t.pk for t in trades], mark_looked=True) == 2
    stats = pool_for(trades[0].chain).stats
    before = stats.http_requests
    assert rmtm.confirm_all() == 0  # just looked at: nothing asked of the node
    assert stats.http_requests == before
    settings.TRADE_TICK_SECONDS = 0  # a tick interval later
    assert rmtm.confirm_all() == 2
    assert [Trade.objects.get(pk=t.pk).state for t in trades] == ["CONFIRMING", "CONFIRMING"]


def test_a_validation_that_finds_the_wallet_busy_leaves_its_trade_to_the_holder(scoped_wallet):
    """Another worker holds the wallet's validation lock: the step returns at once (no idle worker,
    no task coming back) with its trade still VALIDATING, for the holder to judge."""
    from project.db import LOCK_WALLET_NONCES
    from tests.signing.test_batch import _other_connection

    (trade,) = _simulated(scoped_wallet, ["busy"])
    with _other_connection() as other:
        other.execute("SELECT pg_advisory_lock(%s, %s)", [LOCK_WALLET_NONCES, scoped_wallet.pk])
        assert rmtm.trade_validate(trade_id=trade.pk) is None
        assert Trade.objects.get(pk=trade.pk).state == "VALIDATING"
    rmtm.trade_validate(trade_id=trade.pk)
    assert Trade.objects.get(pk=trade.pk).state == "SIGNING"


def test_the_holder_looks_again_after_letting_go_for_a_trade_that_arrived_meanwhile(
    scoped_wallet, monkeypatch
):
    """A trade turns VALIDATING after the holder's last round found none and before it let go; its
    own validation found the lock held and left it. The holder's look after letting go finds it."""
    first, late = (
        _submit(scoped_wallet, key="holder"),
        _submit(scoped_wallet, key="late", amount_in=10 * 10**6),
    )
    rmtm.trade_simulate(trade_id=first.pk)
    real_round, arrived = rmtm._validation_round, []

    def round_then_arrival(wallet_id):
        waiting = real_round(wallet_id)
        if not waiting and not arrived:
            arrived.append(late.pk)
            rmtm.trade_simulate(trade_id=late.pk)  # committed VALIDATING just after the read above
        return waiting

    monkeypatch.setattr(rmtm, "_validation_round", round_then_arrival)
    rmtm.trade_validate(trade_id=first.pk)
    assert arrived
    assert [Trade.objects.get(pk=t.pk).state for t in (first, late)] == ["SIGNING", "SIGNING"]


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
    rmtm.trade_after_signing_batch([(t.pk, 1) for t in reversed(trades)])
    sent = ChainTransaction.objects.filter(trade__in=trades).order_by("nonce")
    assert [int(tx.nonce) for tx in sent] == list(range(6))
    assert all(tx.broadcast_at is not None for tx in sent)
    stats = pool_for(trades[0].chain).stats
    before = stats.http_requests
    assert rmtm.trade_confirm_many([t.pk for t in trades]) == 3
    assert {Trade.objects.get(pk=t.pk).state for t in trades} == {"SETTLED"}
    # The head, one receipts request for all six, the settlement gate's block hash per block.
    blocks = len(set(sent.values_list("receipt_block_number", flat=True)))
    assert stats.http_requests - before <= 2 + blocks
    assert audit_verify(trade_ids=[t.pk for t in trades])[1] is None


def test_a_node_error_in_a_simulation_read_is_retried_and_a_revert_ends_the_trade():
    """Only the contract's own answer (a revert) may fail a trade; a node that fails to answer
    ("header not found", an internal error) is a step to retry."""
    from apps.trades import chainio

    reverted = chainio._failure({"code": 3, "message": "execution reverted", "data": "0x"}, "quote: ")
    assert isinstance(reverted, chainio.SimulationReverted)
    assert reverted.reason.startswith("quote: ")
    for flaky in (
        {"code": -32000, "message": "header not found"},
        {"code": -32603, "message": "internal error"},
    ):
        assert isinstance(chainio._failure(flaky), chainio.ChainUnavailable)


def _sent_nonces(wallet) -> list[int]:
    sent = ChainTransaction.objects.filter(trade__wallet=wallet, broadcast_at__isnull=False)
    return sorted(int(n) for n in sent.values_list("nonce", flat=True))


def _persisted(trade: Trade) -> None:
    """The trade's signer answer committed by another worker's step (which then found the wallet's
    broadcaster busy and left its sending to it)."""
    _persisted_attempt(trade, 1)


def _persisted_attempt(trade: Trade, number: int) -> None:
    for attempt in serializable_attempts(label="test"):
        with attempt:
            rmtm._after_signing(trade.pk, number)


def test_an_answer_above_an_unsigned_nonce_waits_without_a_retry_then_both_go_in_order(
    scoped_wallet, deployed_devchain
):
    """One broadcaster per wallet: the upper trade's answer meets the gap (the node refuses future
    nonces) and ends without raising (no task retried); the lower trade's answer sends its own
    transactions and then the upper ones, lowest nonce first, in one step."""
    w3 = Web3(Web3.HTTPProvider(deployed_devchain))
    lower, upper = _to_signing(scoped_wallet, "gap-lower"), _to_signing(scoped_wallet, "gap-upper")
    assert signer.trade_sign(trade_id=upper.pk, attempt=1).signed
    rmtm.trade_after_signing_batch([(upper.pk, 1)])
    assert Trade.objects.get(pk=upper.pk).state == "CONFIRMING"
    assert w3.eth.get_transaction_count(scoped_wallet.address) == 0
    assert _sent_nonces(scoped_wallet) == []

    assert signer.trade_sign(trade_id=lower.pk, attempt=1).signed
    rmtm.trade_after_signing_batch([(lower.pk, 1)])
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
    from project.db import LOCK_WALLET_BROADCAST
    from tests.signing.test_batch import _other_connection

    first, second = _to_signing(scoped_wallet, "busy-a"), _to_signing(scoped_wallet, "busy-b")
    assert signer.trade_sign(trade_id=first.pk, attempt=1).signed
    assert signer.trade_sign(trade_id=second.pk, attempt=1).signed
    with _other_connection() as other:
        other.execute("SELECT pg_advisory_lock(%s, %s)", [LOCK_WALLET_BROADCAST, scoped_wallet.pk])
        rmtm.trade_after_signing_batch([(first.pk, 1)])  # returns at once: someone is sending
        assert Trade.objects.get(pk=first.pk).state == "CONFIRMING"
        assert _sent_nonces(scoped_wallet) == []
    rmtm.trade_after_signing_batch([(second.pk, 1)])  # the next broadcaster sends both, in order
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
    real, looks = rmtm._unsent_of, []

    def unsent_then_arrival(wallet_id, *, ids_only=False):
        rows = real(wallet_id, ids_only=ids_only)
        looks.append((ids_only, len(rows)))
        if len(looks) == 2:  # the holder's look that found nothing new, just before it lets go
            _persisted(late)
        return rows

    monkeypatch.setattr(rmtm, "_unsent_of", unsent_then_arrival)
    rmtm.trade_after_signing_batch([(first.pk, 1)])
    assert looks[:3] == [(False, 2), (False, 0), (True, 2)]
    assert _sent_nonces(scoped_wallet) == [0, 1, 2, 3]


def test_an_answer_another_step_persisted_after_it_was_read_is_judged_afresh_once(scoped_wallet, monkeypatch):
    """The answer is read once, before each trade's own transaction: a trade persisted meanwhile
    (a broadcaster's catch-up) is read again, not moved twice, and the other trades of the answer
    go on."""
    first, second = _to_signing(scoped_wallet, "afresh-a"), _to_signing(scoped_wallet, "afresh-b")
    outcomes = signer.trade_sign_batch([(first.pk, 1), (second.pk, 1)])
    assert all(o.signed for o in outcomes.values())
    real, reads = rmtm._answers_of, []

    def read_then_persisted_elsewhere(requests):
        answers = real(requests)
        reads.append(requests)
        if len(reads) == 1:
            _persisted(first)  # committed after the read above
        return answers

    monkeypatch.setattr(rmtm, "_answers_of", read_then_persisted_elsewhere)
    rmtm.trade_after_signing_batch([(first.pk, 1), (second.pk, 1)])
    assert [(first.pk, 1)] in reads[1:]  # the stale one read again
    for trade in (first, second):
        assert Trade.objects.get(pk=trade.pk).state == "CONFIRMING"
        assert trade.events.filter(kind="start_confirming").count() == 1
    assert _sent_nonces(scoped_wallet) == [0, 1, 2, 3]


def test_a_swap_that_reverts_on_chain_fails_with_the_replayed_reason(scoped_wallet, deployed_devchain):
    """Receipt status 0: FAILED with the revert reason (the same call replayed on its block's parent
    state), its nonce consumed. Here a large swap by someone else moves the pool between the
    trade's simulation and its broadcast, beyond the trade's 0.5% slippage."""
    from tests.chain.node import node_restored

    Chain.objects.update(confirmations_required=1)
    with node_restored(deployed_devchain) as w3:
        trade = _to_signing(scoped_wallet, "moved")
        assert signer.trade_sign(trade_id=trade.pk, attempt=1).signed
        rmtm.trade_after_signing(trade_id=trade.pk, attempt=1)
        usdc, dai = _tokens()
        whale = w3.eth.accounts[1]  # a funded dev account
        router = w3.eth.contract(
            address=Dex.objects.get().router, abi=devchain.load_artifact("UniswapV2Router02")["abi"]
        )
        erc20 = w3.eth.contract(address=usdc.address, abi=devchain.load_artifact("DevToken")["abi"])
        big = 50_000 * 10**6  # 5% of the pool's dUSDC side
        erc20.functions.approve(router.address, big).transact({"from": whale})
        router.functions.swapExactTokensForTokens(big, 0, [usdc.address, dai.address], whale, 2**40).transact(
            {"from": whale}
        )
        rmtm.trade_broadcast(trade_id=trade.pk)  # Hardhat mines it, then answers with the revert
        assert not trade.transactions.filter(broadcast_at__isnull=True).exists()  # both count as sent
        rmtm.trade_confirm(trade_id=trade.pk)
        trade.refresh_from_db()
        assert trade.state == "FAILED"
        assert "(swap) reverted on chain in block" in trade.reason
        assert trade.reason.endswith("UniswapV2Router: INSUFFICIENT_OUTPUT_AMOUNT")
        assert trade.events.get(kind="fail").data["reason"] == trade.reason  # in the timeline
        assert w3.eth.get_transaction_count(scoped_wallet.address) == 2  # both nonces consumed
