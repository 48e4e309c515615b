"""The watcher and the settlement gate when RPC endpoints fail or lie (a fault-injecting proxy in
front of the real node), and the tick's single-run lock."""

from __future__ import annotations

import json
import threading

import pytest
from django.core.management import call_command
from django.db import connection
from django_celery_beat.models import PeriodicTask

from apps.chain.models import Chain, RpcEndpoint
from apps.chain.pool import pools_reset
from apps.trades import real_money_transaction_manager as rmtm
from apps.watcher import tasks
from apps.watcher.models import BlockHeader
from apps.watcher.services import chain_lock, watcher_tick
from tests.chain.faultproxy import FaultProxy
from tests.watcher.conftest import sign_trade, submit_trade

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.chain]
CHAIN_ID = 31337


@pytest.fixture
def proxy(deployed_devchain):
    p = FaultProxy(deployed_devchain)
    yield p
    p.close()


def _put_first(proxy: FaultProxy) -> RpcEndpoint:
    """The proxy as the chain's preferred endpoint, the direct node second."""
    chain = Chain.objects.get(chain_id=CHAIN_ID)
    return RpcEndpoint.objects.create(
        chain=chain, name="proxied", url=proxy.url, priority=1, rate_limit_per_second=0
    )


def test_a_lying_endpoint_cannot_make_a_trade_settle_while_the_quorum_disagrees(
    scoped_wallet, manual_chain, proxy
):
    Chain.objects.filter(chain_id=CHAIN_ID).update(confirmations_required=3, settlement_quorum=2)
    _put_first(proxy)
    trade = sign_trade(submit_trade(scoped_wallet, "liar"))
    rmtm.trade_broadcast(trade_ids=[trade.pk])
    manual_chain.mine(5)
    proxy.lie_hash = True
    for _ in range(3):
        rmtm.trade_confirm(trade_ids=[trade.pk])
    trade.refresh_from_db()
    assert trade.state == "CONFIRMING"
    assert all(h for h in trade.transactions.values_list("receipt_block_hash", flat=True))
    proxy.honest()
    rmtm.trade_confirm(trade_ids=[trade.pk])
    trade.refresh_from_db()
    assert trade.state == "SETTLED", trade.reason


def test_an_endpoint_stuck_on_an_orphaned_fork_cannot_settle_a_trade_there(
    scoped_wallet, manual_chain, proxy
):
    """The preferred endpoint keeps serving the receipts and block of a fork the chain abandoned: the
    engine records that receipt, but the quorum (the honest node disagrees) refuses to settle on it,
    and the watcher sends the trade back to be re-broadcast onto the real chain."""
    Chain.objects.filter(chain_id=CHAIN_ID).update(confirmations_required=3, settlement_quorum=2)
    _put_first(proxy)
    trade = sign_trade(submit_trade(scoped_wallet, "fork-liar"))
    rmtm.trade_broadcast(trade_ids=[trade.pk])
    watcher_tick(chain_id=CHAIN_ID)
    snapshot = manual_chain.snapshot()
    manual_chain.mine(1)
    number = manual_chain.head()
    hashes = list(trade.transactions.values_list("tx_hash", flat=True))
    for tx_hash in hashes:
        proxy.forged[("eth_getTransactionReceipt", json.dumps([tx_hash]))] = manual_chain.rpc(
            "eth_getTransactionReceipt", [tx_hash]
        )
    orphan = manual_chain.rpc("eth_getBlockByNumber", [hex(number), False])
    proxy.forged[("eth_getBlockByNumber", json.dumps([hex(number), False]))] = orphan
    manual_chain.revert(snapshot)
    for tx_hash in hashes:
        manual_chain.drop(tx_hash)
    manual_chain.mine(6)
    assert manual_chain.block_hash(number) != orphan["hash"]

    rmtm.trade_confirm(trade_ids=[trade.pk])
    trade.refresh_from_db()
    assert trade.state == "CONFIRMING"
    assert set(trade.transactions.values_list("receipt_block_hash", flat=True)) == {orphan["hash"]}

    report = watcher_tick(chain_id=CHAIN_ID)  # the watcher reads through the pool too
    assert report.reconfirmed == [trade.pk]
    proxy.honest()
    rmtm.trade_broadcast(trade_ids=[trade.pk])
    manual_chain.mine(4)
    rmtm.trade_confirm(trade_ids=[trade.pk])
    trade.refresh_from_db()
    assert trade.state == "SETTLED", trade.reason
    for number_, block_hash in trade.transactions.values_list("receipt_block_number", "receipt_block_hash"):
        assert block_hash == manual_chain.block_hash(number_) != orphan["hash"]


def test_an_unreachable_second_endpoint_holds_settlement_until_the_quorum_is_back(
    scoped_wallet, manual_chain, proxy
):
    Chain.objects.filter(chain_id=CHAIN_ID).update(confirmations_required=3, settlement_quorum=2)
    _put_first(proxy)
    trade = sign_trade(submit_trade(scoped_wallet, "half-quorum"))
    rmtm.trade_broadcast(trade_ids=[trade.pk])
    manual_chain.mine(5)
    proxy.drop = True
    rmtm.trade_confirm(trade_ids=[trade.pk])  # reads fail over; the gate waits for a second vote
    assert trade.__class__.objects.get(pk=trade.pk).state == "CONFIRMING"
    assert RpcEndpoint.objects.get(url=proxy.url).health == RpcEndpoint.Health.UNREACHABLE


def test_with_every_endpoint_down_the_engine_waits_and_retries(scoped_wallet, manual_chain, proxy):
    """No endpoint: the step raises the retryable error (its task retries with backoff) and the
    trade stays where it was; once one is back, the same step completes."""
    from apps.trades import tasks as trade_tasks
    from apps.trades.chainio import ChainUnavailable

    Chain.objects.filter(chain_id=CHAIN_ID).update(confirmations_required=1)
    trade = sign_trade(submit_trade(scoped_wallet, "all-down"))
    rmtm.trade_broadcast(trade_ids=[trade.pk])
    manual_chain.mine(2)
    RpcEndpoint.objects.filter(chain__chain_id=CHAIN_ID).update(active=False)
    _put_first(proxy)
    proxy.drop = True
    with pytest.raises((ConnectionError, ChainUnavailable)) as info:
        rmtm.trade_confirm(trade_ids=[trade.pk])
    assert isinstance(info.value, trade_tasks.RETRY["autoretry_for"])
    assert trade.__class__.objects.get(pk=trade.pk).state == "CONFIRMING"
    proxy.honest()
    pools_reset()  # the endpoint's recorded rest is over (a real worker waits it out)
    RpcEndpoint.objects.filter(url=proxy.url).update(health="alive", health_until=None)
    rmtm.trade_confirm(trade_ids=[trade.pk])
    assert trade.__class__.objects.get(pk=trade.pk).state == "SETTLED"


def test_the_watcher_keeps_running_through_rpc_failures(deployed_devchain, proxy, manual_chain, settings):
    settings.RPC_BACKOFF_BASE_SECONDS = 0
    proxied = _put_first(proxy)
    proxy.drop = True
    first = watcher_tick(chain_id=CHAIN_ID)
    assert first.skipped == ""
    assert first.head == manual_chain.head()
    assert BlockHeader.objects.filter(number=first.head, canonical=True).exists()
    assert RpcEndpoint.objects.get(pk=proxied.pk).health == RpcEndpoint.Health.UNREACHABLE

    # Every endpoint down: the tick reports it and returns; nothing crashes, nothing is written.
    RpcEndpoint.objects.exclude(pk=proxied.pk).update(active=False)
    manual_chain.mine(2)
    result = tasks.tick.run(CHAIN_ID)
    assert "no RPC endpoint available" in result["skipped"]
    assert not BlockHeader.objects.filter(number=first.head + 2).exists()

    proxy.honest()  # recovered: the next tick picks up where the last good one stopped
    result = tasks.tick.run(CHAIN_ID)
    assert result["skipped"] == ""
    assert result["new_headers"] == 2
    assert RpcEndpoint.objects.get(pk=proxied.pk).health == RpcEndpoint.Health.ALIVE


def test_two_overlapping_ticks_never_both_run(deployed_devchain, proxy, redis_client):
    RpcEndpoint.objects.filter(chain__chain_id=CHAIN_ID).update(active=False)
    _put_first(proxy)
    proxy.delay = 0.4  # every request slow: the first tick is still running when the second starts
    reports = []
    barrier = threading.Barrier(2)

    def run():
        barrier.wait()
        try:
            reports.append(watcher_tick(chain_id=CHAIN_ID))
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(bool(r.skipped) for r in reports) == [False, True]
    assert next(r for r in reports if r.skipped).skipped == "another tick holds the lock"
    # The lock is released after the tick: the next one runs.
    proxy.delay = 0
    assert watcher_tick(chain_id=CHAIN_ID).skipped == ""


def test_a_held_lock_is_released_only_by_its_holder(redis_client, settings):
    with chain_lock(CHAIN_ID, client=redis_client) as held:
        assert held
        with chain_lock(CHAIN_ID, client=redis_client) as second:
            assert not second
        assert redis_client.get(f"custos:watcher:tick:{CHAIN_ID}") is not None  # the loser freed nothing
    assert redis_client.get(f"custos:watcher:tick:{CHAIN_ID}") is None
    assert 0 < settings.WATCHER_LOCK_TTL_SECONDS


def test_beat_wakes_the_watcher_and_each_chain_ticks_once_per_block_time(deployed_devchain, redis_client):
    call_command("setup_schedules")
    entry = PeriodicTask.objects.get(task="watcher.tick_all")
    assert entry.enabled
    Chain.objects.filter(chain_id=CHAIN_ID).update(block_time_ms=60_000)
    assert tasks.tick_all.run() == [CHAIN_ID]
    assert tasks.tick_all.run() == []  # not due again within the block time


def test_health_shows_endpoints_the_watched_tip_and_a_finality_alarm(deployed_devchain, proxy, settings):
    from apps.trades.models import Trade
    from apps.watcher.selectors import chain_truth_health

    settings.RPC_BACKOFF_BASE_SECONDS = 30
    _put_first(proxy)
    proxy.drop = True
    report = watcher_tick(chain_id=CHAIN_ID)
    health = chain_truth_health()[str(CHAIN_ID)]
    assert health["ok"]
    assert health["endpoints_alive"] == 1
    assert {e["name"]: e["health"] for e in health["endpoints"]}["proxied"] == "unreachable"
    assert health["watched_tip"] == report.head
    assert health["finality_violated_trades"] == 0
    assert Trade.objects.count() == 0
