"""Real reorgs on the Hardhat dev chain (evm_snapshot / evm_revert): the watcher finds them within one
tick, sends the trades they touch back to CONFIRMING, and a trade settles only on the canonical chain."""

from __future__ import annotations

import base64
import json

import pytest

from apps.chain.models import Chain
from apps.trades import chainio
from apps.trades import real_money_transaction_manager as rmtm
from apps.trades.audit import audit_verify
from apps.trades.models import ChainTransaction, Trade
from apps.watcher.models import BlockHeader, Reorg
from apps.watcher.selectors import chain_truth_health
from apps.watcher.services import watcher_tick
from tests.watcher.conftest import sign_trade, submit_trade

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.chain]

CHAIN_ID = 31337


def _receipts(trade: Trade) -> list[tuple[int | None, str]]:
    return list(
        ChainTransaction.objects.filter(trade=trade)
        .order_by("sequence")
        .values_list("receipt_block_number", "receipt_block_hash")
    )


def _assert_settled_on_the_canonical_chain(trade: Trade, manual_chain) -> None:
    trade.refresh_from_db()
    assert trade.state == "SETTLED", trade.reason
    for number, block_hash in _receipts(trade):
        assert block_hash == manual_chain.block_hash(number)
        header = BlockHeader.objects.get(chain__chain_id=CHAIN_ID, hash=block_hash)
        assert header.canonical


def _queued(redis_client, queue: str) -> list[tuple[str, list]]:
    """The tasks waiting on a Celery queue in the Redis broker: (task name, args)."""
    out = []
    for raw in redis_client.lrange(queue, 0, -1):
        message = json.loads(raw)
        body = json.loads(base64.b64decode(message["body"]))
        out.append((message["headers"]["task"], list(body[0])))
    return out


@pytest.mark.parametrize("depth", [1, 3, 5, 8])
@pytest.mark.parametrize("reincluded", [False, True], ids=["dropped", "reincluded"])
def test_a_reorg_sends_the_trade_back_and_it_settles_on_the_new_chain(
    scoped_wallet, manual_chain, redis_client, depth, reincluded
):
    Chain.objects.filter(chain_id=CHAIN_ID).update(confirmations_required=10)
    trade = sign_trade(submit_trade(scoped_wallet, f"reorg-{depth}-{reincluded}"))
    rmtm.trade_broadcast(trade_ids=[trade.pk])  # approve and swap wait in the mempool
    assert watcher_tick(chain_id=CHAIN_ID).reorg_depth == 0
    fork = manual_chain.head()
    snapshot = manual_chain.snapshot()
    manual_chain.mine(depth)  # the first block holds both transactions
    rmtm.trade_confirm(trade_ids=[trade.pk])
    old_receipts = _receipts(trade)
    assert {number for number, _ in old_receipts} == {fork + 1}
    assert watcher_tick(chain_id=CHAIN_ID).reorg_depth == 0

    manual_chain.revert(snapshot)
    if reincluded:
        # The same transactions land again, in a different block at the same height (another miner;
        # moving the clock instead would leak into later tests' deadlines).
        manual_chain.other_miner()
    else:
        for tx_hash in trade.transactions.values_list("tx_hash", flat=True):
            manual_chain.drop(tx_hash)
    manual_chain.mine(depth + 1)
    assert manual_chain.block_hash(fork + 1) != old_receipts[0][1]

    redis_client.delete("execution")
    report = watcher_tick(chain_id=CHAIN_ID)  # detected within this one tick
    assert report.reorg_depth == depth
    assert _queued(redis_client, "execution") == [("trades.broadcast", [trade.pk])]
    assert report.fork_number == fork
    assert report.reconfirmed == [trade.pk]
    assert not report.finality_alarm
    trade.refresh_from_db()
    assert trade.state == "CONFIRMING"
    assert _receipts(trade) == [(None, "")] * len(old_receipts)
    assert trade.events.filter(kind="reconfirm", data__reorg__fork_number=fork).exists()
    orphaned = BlockHeader.objects.filter(chain__chain_id=CHAIN_ID, canonical=False)
    assert orphaned.count() == depth
    assert set(orphaned.values_list("number", flat=True)) == set(range(fork + 1, fork + depth + 1))
    assert Reorg.objects.get().depth == depth

    # The engine re-checks and re-broadcasts the same raw bytes (the reconfirm's next step).
    raw_before = {tx.pk: bytes(tx.raw_signed) for tx in trade.transactions.all()}
    rmtm.trade_broadcast(trade_ids=[trade.pk])
    manual_chain.mine(1)
    rmtm.trade_confirm(trade_ids=[trade.pk])
    new_receipts = _receipts(trade)
    assert all(number is not None for number, _ in new_receipts)
    assert not {h for _, h in new_receipts} & {h for _, h in old_receipts}
    if reincluded:
        assert {n for n, _ in new_receipts} == {fork + 1}
    assert {tx.pk: bytes(tx.raw_signed) for tx in trade.transactions.all()} == raw_before

    manual_chain.mine(10)
    assert watcher_tick(chain_id=CHAIN_ID).reconfirmed == []
    rmtm.trade_confirm(trade_ids=[trade.pk])
    _assert_settled_on_the_canonical_chain(trade, manual_chain)
    assert audit_verify()[1] is None


def test_a_trade_never_settles_on_a_block_that_was_orphaned(scoped_wallet, manual_chain):
    """The reorg happens after the receipt is recorded and before the watcher sees it: the settlement
    gate's own canonical check refuses the orphaned block even though it looks deep enough."""
    Chain.objects.filter(chain_id=CHAIN_ID).update(confirmations_required=3)
    trade = sign_trade(submit_trade(scoped_wallet, "gate"))
    rmtm.trade_broadcast(trade_ids=[trade.pk])
    snapshot = manual_chain.snapshot()
    manual_chain.mine(1)
    rmtm.trade_confirm(trade_ids=[trade.pk])  # receipt recorded at the soon-orphaned block
    manual_chain.revert(snapshot)
    for tx_hash in trade.transactions.values_list("tx_hash", flat=True):
        manual_chain.drop(tx_hash)
    manual_chain.mine(5)
    rmtm.trade_confirm(trade_ids=[trade.pk])
    trade.refresh_from_db()
    assert trade.state == "CONFIRMING"
    assert not trade.events.filter(kind="settle").exists()


def test_a_confirm_racing_the_watcher_never_settles_a_cleared_receipt(
    scoped_wallet, manual_chain, monkeypatch
):
    """The confirm passed its quorum check; before its settle transaction, the watcher cleared the
    receipt for a reorg. The settle must see that and leave the trade CONFIRMING."""
    Chain.objects.filter(chain_id=CHAIN_ID).update(confirmations_required=2)
    trade = sign_trade(submit_trade(scoped_wallet, "race-watcher"))
    rmtm.trade_broadcast(trade_ids=[trade.pk])
    manual_chain.mine(3)
    rmtm.trade_confirm(trade_ids=[trade.pk])  # records the receipts; deep enough, so it settles...
    trade.refresh_from_db()
    assert trade.state == "SETTLED"  # ...as the control run shows; now the race on a fresh trade

    racing = sign_trade(submit_trade(scoped_wallet, "race-watcher-2"))
    rmtm.trade_broadcast(trade_ids=[racing.pk])
    manual_chain.mine(3)
    real_quorum = chainio.quorum_block_hashes
    raced = []

    def quorum_then_watcher(chain, numbers):
        answer = real_quorum(chain, numbers)
        if not raced:
            raced.append(numbers)
            txs = dict(racing.transactions.values_list("pk", "receipt_block_hash"))
            assert all(txs.values())  # the gate is asked only after the receipts are recorded
            rmtm.trade_receipts_orphaned(trade_id=racing.pk, orphaned=txs, reorg={"test": "race"})
        return answer

    monkeypatch.setattr(chainio, "quorum_block_hashes", quorum_then_watcher)
    rmtm.trade_confirm(trade_ids=[racing.pk])
    assert raced
    racing.refresh_from_db()
    assert racing.state == "CONFIRMING"
    assert not racing.events.filter(kind="settle").exists()


def test_a_reorg_after_settlement_raises_finality_violated(scoped_wallet, manual_chain, caplog):
    Chain.objects.filter(chain_id=CHAIN_ID).update(confirmations_required=3)
    trade = sign_trade(submit_trade(scoped_wallet, "finality"))
    rmtm.trade_broadcast(trade_ids=[trade.pk])
    watcher_tick(chain_id=CHAIN_ID)
    snapshot = manual_chain.snapshot()
    manual_chain.mine(4)
    rmtm.trade_confirm(trade_ids=[trade.pk])
    trade.refresh_from_db()
    assert trade.state == "SETTLED", trade.reason
    watcher_tick(chain_id=CHAIN_ID)

    manual_chain.revert(snapshot)
    for tx_hash in trade.transactions.values_list("tx_hash", flat=True):
        manual_chain.drop(tx_hash)
    manual_chain.mine(6)
    with caplog.at_level("CRITICAL"):
        report = watcher_tick(chain_id=CHAIN_ID)
    assert report.violated == [trade.pk]
    trade.refresh_from_db()
    assert trade.state == "FINALITY_VIOLATED"
    event = trade.events.get(kind="violate_finality")
    assert (event.from_state, event.to_state) == ("SETTLED", "FINALITY_VIOLATED")
    assert Reorg.objects.get().violated_trades == [trade.pk]
    assert any(r.levelname == "CRITICAL" and "FINALITY" in r.getMessage() for r in caplog.records)
    health = chain_truth_health()[str(CHAIN_ID)]
    assert health["finality_violated_trades"] == 1
    assert health["ok"] is False
    assert health["last_reorg"]["depth"] == 4
    # A later tick does not raise it twice.
    assert watcher_tick(chain_id=CHAIN_ID).violated == []
    assert audit_verify()[1] is None


def test_a_reorg_deeper_than_the_walk_raises_the_finality_alarm(scoped_wallet, manual_chain, settings):
    settings.WATCHER_MAX_REORG_DEPTH = 4
    watcher_tick(chain_id=CHAIN_ID)
    snapshot = manual_chain.snapshot()
    manual_chain.mine(6)
    watcher_tick(chain_id=CHAIN_ID)
    manual_chain.revert(snapshot)
    manual_chain.other_miner()
    manual_chain.mine(7)
    report = watcher_tick(chain_id=CHAIN_ID)
    assert report.finality_alarm
    assert report.fork_number is None
    assert Reorg.objects.get().finality_alarm
