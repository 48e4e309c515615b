"""`manage.py devchain up` after the Hardhat node was restarted (`make run`, Ctrl-C, `make run`): the
node is a new chain from block 0 while the database remembers the old one. A dev chain starts a new
epoch (the old chain's trades explained in their timelines, never watched or alarmed on the new
chain, the nonce cursors restarted); a real chain is never reset; the same node changes nothing."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from rest_framework.test import APIClient
from web3 import Web3

from apps.chain import devchain
from apps.chain.models import Chain, ChainEpoch, Dex
from apps.chain.pool import pools_reset
from apps.trades.audit import audit_verify
from apps.trades.models import ChainTransaction, Trade, TradeEvent
from apps.wallets.models import NonceCursor, Wallet
from apps.watcher.models import BlockHeader, Reorg
from apps.watcher.services import watcher_tick
from tests.conftest import free_port
from tests.factories import UserFactory, signing_trade

pytestmark = [pytest.mark.chain, pytest.mark.django_db(transaction=True)]

CHAIN_ID = 31337


@pytest.fixture(autouse=True)
def _fresh_pools():
    pools_reset()
    yield
    pools_reset()


@pytest.fixture
def port(redis_client):
    """A port of our own for the nodes `devchain up` starts (the session's node is never replaced)."""
    port = free_port()
    yield port
    call_command("devchain", "down", "--port", str(port), stdout=io.StringIO())


def up(port: int) -> str:
    out = io.StringIO()
    call_command("devchain", "up", "--port", str(port), "--block-ms", "0", stdout=out)
    return out.getvalue()


def node_replaced(port: int) -> None:
    """What Ctrl-C and the next `make run` do to the node: stopped, then `up` starts a fresh one."""
    call_command("devchain", "down", "--port", str(port), stdout=io.StringIO())
    pools_reset()


def w3_of(port: int) -> Web3:
    return Web3(Web3.HTTPProvider(devchain.devchain_url(port)))


def block_hash(w3: Web3, number: int) -> str | None:
    block = w3.provider.make_request("eth_getBlockByNumber", [hex(number), False])["result"]
    return block["hash"].lower() if block else None


def mine_to(w3: Web3, height: int) -> None:
    while w3.eth.block_number < height:
        w3.provider.make_request("evm_mine", [])


def _on_chain(trade: Trade, w3: Web3, number: int, *, block: str | None = None) -> None:
    """The trade's transactions broadcast and included at block `number` (its hash on the node, or
    `block`)."""
    ChainTransaction.objects.filter(trade=trade).update(
        tx_hash="0x" + f"{trade.pk:064x}",
        broadcast_at=timezone.now(),
        receipt_block_number=number,
        receipt_block_hash=block or block_hash(w3, number),
        status=ChainTransaction.Status.MINED,
    )


def first_run(port: int) -> dict:
    """`make run` once: the chain deployed, a settled trade, an open one in CONFIRMING with its
    receipt, one the signer never answered, one FINALITY_VIOLATED (what the second run showed before
    epochs), nonces allocated; the watcher has recorded the chain's headers."""
    assert "deployed" in up(port)
    w3 = w3_of(port)
    wallet = Wallet.objects.create(
        owner=UserFactory(), label="w", key_backend="keystore", address="0x" + "11" * 20, status="active"
    )
    included_at = w3.eth.block_number
    settled = signing_trade(wallet, state="CONFIRMING")
    _on_chain(settled, w3, included_at)
    settled.settle()
    settled.save()
    confirming = signing_trade(wallet, state="CONFIRMING")
    _on_chain(confirming, w3, included_at)
    signing = signing_trade(wallet, state="SIGNING")
    violated = signing_trade(wallet, state="CONFIRMING")
    Trade.objects.filter(pk=violated.pk).update(state="FINALITY_VIOLATED")
    report = watcher_tick(chain_id=CHAIN_ID)
    assert report.head == included_at
    assert not report.skipped
    assert report.violated == report.reconfirmed == []
    assert BlockHeader.objects.filter(number=included_at).exists()
    assert NonceCursor.objects.get(wallet=wallet).next_nonce == 8
    return {
        "w3": w3,
        "wallet": wallet,
        "included_at": included_at,
        "settled": settled,
        "confirming": confirming,
        "signing": signing,
        "violated": violated,
    }


def health() -> dict:
    return APIClient().get("/api/v1/health").json()


def _state() -> dict:
    """Everything an epoch would change."""
    chain = Chain.objects.get(chain_id=CHAIN_ID)
    return {
        "chain": (chain.epoch, chain.epoch_started_at, chain.anchor_block_number, chain.anchor_block_hash),
        "headers": sorted(BlockHeader.objects.values_list("number", "hash", "canonical")),
        "reorgs": Reorg.objects.count(),
        "epochs": ChainEpoch.objects.count(),
        "trades": sorted(Trade.objects.values_list("pk", "state", "reason", "audit_head")),
        "events": TradeEvent.objects.count(),
        "cursors": sorted(NonceCursor.objects.values_list("wallet_id", "next_nonce", "released")),
    }


def test_a_restarted_dev_node_starts_a_new_epoch_and_health_stays_free_of_the_old_chain(port):
    world = first_run(port)
    included_at = world["included_at"]
    recorded = block_hash(world["w3"], included_at)
    headers_before = BlockHeader.objects.count()
    old_trades = [world[name] for name in ("settled", "confirming", "signing", "violated")]

    node_replaced(port)
    out = up(port)

    assert (
        f"dev chain {CHAIN_ID} is a new chain (no block 1 on the node): "
        f"started epoch 2; archived {headers_before} headers, 0 reorgs, 4 trades from epoch 1 "
        "(ended FAILED: 2 still open); nonce cursors restarted at 0: 1"
    ) in out
    assert "deployed" in out
    chain = Chain.objects.get(chain_id=CHAIN_ID)
    assert chain.epoch == 2
    assert chain.epoch_started_at is not None
    w3 = w3_of(port)
    assert chain.anchor_block_hash == block_hash(w3, 1)  # the new chain's, recorded after deploying
    epoch = ChainEpoch.objects.get()
    assert (epoch.number, epoch.archived_headers) == (2, headers_before)
    assert sorted(epoch.archived_trades) == sorted(t.pk for t in old_trades)
    assert epoch.completed_at is not None
    assert epoch.archive["watched_tip"]["number"] == included_at
    assert not BlockHeader.objects.exists()
    assert not Reorg.objects.exists()
    assert list(NonceCursor.objects.values_list("next_nonce", "released")) == [(0, [])]

    # The new chain has a different block at the settled trade's height, inside the watcher's window:
    # without epochs, this tick would find the settled trade's block gone (FINALITY_VIOLATED).
    mine_to(w3, included_at + 3)
    assert block_hash(w3, included_at) != recorded
    report = watcher_tick(chain_id=CHAIN_ID)
    assert report.head - chain.confirmations_required < included_at <= report.head
    assert not report.skipped
    assert not report.finality_alarm
    assert report.violated == report.reconfirmed == []
    assert BlockHeader.objects.filter(number=included_at, hash=block_hash(w3, included_at)).exists()

    body = health()
    assert "finality:31337" not in body["failing"], body["failing"]
    truth = body["chain_truth"][str(CHAIN_ID)]
    assert truth["finality_violated_trades"] == 0
    assert truth["finality_violated_earlier_epochs"] == 1
    assert truth["last_reorg"] is None

    # Every trade of the first run explains itself in its timeline.
    states = {t.pk: t.state for t in Trade.objects.filter(pk__in=[t.pk for t in old_trades])}
    assert states == {
        world["settled"].pk: "SETTLED",  # what happened on the old chain, never settled on this one
        world["confirming"].pk: "FAILED",
        world["signing"].pk: "FAILED",
        world["violated"].pk: "FINALITY_VIOLATED",
    }
    for trade in old_trades:
        event = TradeEvent.objects.get(trade=trade, kind="dev_chain_replaced")
        assert event.data["epoch"] == 1
        assert event.data["new_epoch"] == 2
        assert event.data["reason"].startswith(f"dev chain {CHAIN_ID} was replaced by a new chain (block 1")
    for name in ("confirming", "signing"):
        trade = Trade.objects.get(pk=world[name].pk)
        kinds = list(trade.events.order_by("id").values_list("kind", flat=True))
        assert kinds.index("dev_chain_replaced") < kinds.index("fail")
        fail = trade.events.get(kind="fail")
        assert (fail.from_state, fail.to_state) == (world[name].state, "FAILED")
        assert trade.reason == epoch.reason
        assert "replaced by a new chain" in trade.reason
    assert audit_verify()[1] is None

    # Running `up` again on this node changes nothing.
    state = _state()
    assert "new chain" not in up(port)
    assert _state() == state

    # The watcher still watches this epoch's trades: one settled at a block the node does not have
    # raises the alarm, as it must.
    fresh = signing_trade(world["wallet"], state="CONFIRMING")
    _on_chain(fresh, w3, report.head - 1, block="0x" + "ab" * 32)
    fresh.settle()
    fresh.save()
    assert watcher_tick(chain_id=CHAIN_ID).violated == [fresh.pk]
    assert "finality:31337" in health()["failing"]


def test_a_real_chain_is_never_reset_and_its_watcher_keeps_the_alarm(port):
    world = first_run(port)
    Chain.objects.filter(chain_id=CHAIN_ID).update(is_dev=False)
    state = _state()

    node_replaced(port)
    with pytest.raises(CommandError, match="is not a dev chain.*never reset; nothing was changed"):
        up(port)

    assert _state() == state
    assert not TradeEvent.objects.filter(kind="dev_chain_replaced").exists()
    # Nothing was deployed to the other node; when it grows past the recorded tip, the watcher sees the
    # settled trade's block gone: on a real chain that is the alarm it should be.
    w3 = w3_of(port)
    assert w3.eth.get_code(Dex.objects.get().router) == b""
    mine_to(w3, max(BlockHeader.objects.values_list("number", flat=True)) + 3)
    report = watcher_tick(chain_id=CHAIN_ID)
    assert world["settled"].pk in report.violated
    assert report.finality_alarm
    assert "finality:31337" in health()["failing"]


def test_devchain_up_twice_on_the_same_node_changes_nothing(port):
    world = first_run(port)
    state = _state()
    head = world["w3"].eth.block_number

    out = up(port)

    assert "already answering" in out
    assert "nothing to do" in out
    assert "new chain" not in out
    assert _state() == state
    assert world["w3"].eth.block_number == head
    assert Chain.objects.get(chain_id=CHAIN_ID).anchor_block_hash == block_hash(world["w3"], 1)
