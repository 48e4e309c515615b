"""Dev chain epochs: `manage.py devchain up` finds that the node behind a development chain is a
new chain (its block-1 hash differs from the one recorded at deployment, or the watcher's lowest
header does) and starts a new epoch: the old chain's headers and reorgs archived, its trades
explained in their timelines (open ones ended FAILED), nonce cursors restarted and signing records
retired. A chain that is not a development chain is never reset."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from apps.chain.models import Chain, ChainEpoch
from apps.chain.rpc import chain_id_of, rpc_request
from apps.signing.models import SigningRecord
from apps.trades.audit import AuditEntry, audit_append_many
from apps.trades.models import NON_TERMINAL, Trade, TradeState
from apps.trades.real_money_transaction_manager.transition import end_trade
from apps.wallets.models import NonceCursor
from apps.watcher.models import BlockHeader, Reorg
from project.db import serializable_attempts

logger = logging.getLogger(__name__)

# The block whose hash identifies a dev chain: the first above genesis (Hardhat's genesis hash can be
# the same after a restart; block 1 carries its own timestamp, and on a deployed chain the first
# deployment).
ANCHOR_BLOCK = 1
DEV_CHAIN_REPLACED = "dev_chain_replaced"


class RealChainHistoryRefused(RuntimeError):
    """The node differs from what is recorded for a chain that is not a dev chain: a real chain's
    history is never reset; the node (or its URL) is what is wrong."""


@dataclass(frozen=True)
class Divergence:
    """A recorded block the node does not have: another chain answers at this URL."""

    number: int
    recorded: str
    found: str | None  # None: the node has no block at that height (yet)
    source: str

    def describe(self) -> str:
        found = "the node has no such block" if self.found is None else f"the node has {self.found}"
        return f"block {self.number} differs: {self.source} {self.recorded}, {found}"


def _block_hash(url: str, number: int) -> str | None:
    block = rpc_request(
        url, "eth_getBlockByNumber", [hex(number), False], timeout=settings.RPC_TIMEOUT_SECONDS
    )
    return block["hash"].lower() if block else None


def anchor_record(chain: Chain, url: str) -> None:
    """Record the chain's anchor block hash once (after a deployment, there always is a block 1)."""
    if chain.anchor_block_hash:
        return
    found = _block_hash(url, ANCHOR_BLOCK)
    if found:
        Chain.objects.filter(pk=chain.pk).update(anchor_block_number=ANCHOR_BLOCK, anchor_block_hash=found)
        chain.anchor_block_number, chain.anchor_block_hash = ANCHOR_BLOCK, found


def chain_divergence(url: str, chain: Chain) -> Divergence | None:
    """The first recorded early block the node at `url` does not have: the anchor recorded at deploy
    time, then the lowest header the watcher keeps (a window's worth below its tip: no reorg the
    watcher itself handles reaches down there). None when both match, or nothing is recorded."""
    recorded = []
    if chain.anchor_block_hash and chain.anchor_block_number is not None:
        recorded.append((chain.anchor_block_number, chain.anchor_block_hash, "recorded at deploy"))
    lowest = (
        BlockHeader.objects.filter(chain=chain, canonical=True)
        .order_by("number")
        .values_list("number", "hash")
    ).first()
    if lowest is not None:
        recorded.append((lowest[0], lowest[1], "watched"))
    for number, recorded_hash, source in recorded:
        found = _block_hash(url, number)
        if found != recorded_hash.lower():
            return Divergence(number=number, recorded=recorded_hash.lower(), found=found, source=source)
    return None


@dataclass
class EpochReport:
    chain_id: int
    number: int
    divergence: str
    archived_headers: int
    archived_reorgs: int
    archived_trades: int
    ended_failed: int
    nonce_cursors_restarted: int

    def line(self) -> str:
        """The one console line `devchain up` prints."""
        return (
            f"dev chain {self.chain_id} is a new chain ({self.divergence}): started epoch {self.number}; "
            f"archived {self.archived_headers} headers, {self.archived_reorgs} reorgs, "
            f"{self.archived_trades} trades from epoch {self.number - 1} "
            f"(ended FAILED: {self.ended_failed} still open); "
            f"nonce cursors restarted at 0: {self.nonce_cursors_restarted}"
        )


def dev_chain_epoch(*, url: str) -> list[EpochReport]:
    """Before deploying to the node at `url`: if it is not the chain recorded for its chain id (a
    restarted Hardhat node), start a new epoch for that dev chain; then finish any epoch a crashed
    run left unfinished. Returns the epochs finished now (none on the same node: idempotent).
    Raises RealChainHistoryRefused, changing nothing, when the chain is not a dev chain."""
    chain = Chain.objects.filter(chain_id=chain_id_of(url, timeout=settings.RPC_TIMEOUT_SECONDS)).first()
    if chain is None:
        return []
    divergence = chain_divergence(url, chain)
    if divergence is not None:
        if not chain.is_dev:
            raise RealChainHistoryRefused(
                f"chain {chain.chain_id} ({chain.name}) is not a dev chain, and the node at {url} is not "
                f"the chain recorded for it ({divergence.describe()}): a real chain's history is never "
                "reset; nothing was changed. Point the endpoint at the right node."
            )
        _epoch_start(chain, url, divergence)
    return _epochs_finish(chain)


def _epoch_start(chain: Chain, url: str, divergence: Divergence) -> None:
    """Archive the replaced chain and start the next epoch, in one transaction: its headers and reorg
    records are deleted (summarised in the ChainEpoch row), its trades get a `dev_chain_replaced`
    audit event. Ending the open ones and restarting nonces is `_epochs_finish`."""
    anchor = _block_hash(url, ANCHOR_BLOCK)
    old = chain.epoch
    for attempt in serializable_attempts(label="dev chain epoch"):
        with attempt:
            locked = Chain.objects.select_for_update().get(pk=chain.pk)
            if locked.epoch != old:
                return  # another run started it meanwhile
            now = timezone.now()
            reason = (
                f"dev chain {locked.chain_id} was replaced by a new chain ({divergence.describe()}); "
                f"epoch {old} ended: what happened on it is history, not state on the new chain"
            )
            trades = list(
                Trade.objects.filter(chain=locked, created_at__lt=now)
                .filter(locked.in_epoch())
                .order_by("pk")
            )
            headers = BlockHeader.objects.filter(chain=locked)
            tip = headers.filter(canonical=True).order_by("-number").values("number", "hash").first()
            reorgs = [
                {**row, "detected_at": row["detected_at"].isoformat()}
                for row in Reorg.objects.filter(chain=locked)
                .order_by("detected_at")
                .values(
                    "detected_at",
                    "fork_number",
                    "depth",
                    "old_tip_hash",
                    "new_tip_hash",
                    "reconfirmed_trades",
                    "violated_trades",
                    "finality_alarm",
                )
            ]
            archived_headers = headers.count()
            headers.delete()
            Reorg.objects.filter(chain=locked).delete()
            Chain.objects.filter(pk=locked.pk).update(
                epoch=old + 1,
                epoch_started_at=now,
                anchor_block_number=ANCHOR_BLOCK if anchor else None,
                anchor_block_hash=anchor or "",
            )
            ChainEpoch.objects.create(
                chain=locked,
                number=old + 1,
                started_at=now,
                reason=reason[:500],
                archived_headers=archived_headers,
                archived_trades=[t.pk for t in trades],
                archive={
                    "divergence": {
                        "block": divergence.number,
                        "recorded": divergence.recorded,
                        "found": divergence.found,
                        "source": divergence.source,
                    },
                    "anchor": {"block": locked.anchor_block_number, "hash": locked.anchor_block_hash},
                    "watched_tip": tip,
                    "reorgs": reorgs,
                },
            )
            audit_append_many(
                [
                    AuditEntry(
                        trade=trade,
                        kind=DEV_CHAIN_REPLACED,
                        data={
                            "reason": reason,
                            "epoch": old,
                            "new_epoch": old + 1,
                            "state": trade.state,
                            "block": divergence.number,
                            "recorded_hash": divergence.recorded,
                            "node_hash": divergence.found,
                        },
                    )
                    for trade in trades
                ]
            )
    chain.refresh_from_db()
    logger.warning("dev chain replaced", extra={"chain": chain.chain_id, "epoch": chain.epoch})


def _epochs_finish(chain: Chain) -> list[EpochReport]:
    """For epochs started but not finished (just now, or by a run that crashed halfway): every open
    trade of an earlier epoch ends FAILED through the engine's ending (which hands back its unsent
    nonces), then the chain's nonce cursors restart at 0 (a new chain counts every account's nonces
    from 0). Runs before the workers start (`make run`), so no engine step allocates meanwhile."""
    pending = list(ChainEpoch.objects.filter(chain=chain, completed_at__isnull=True).order_by("number"))
    if not pending:
        return []
    chain.refresh_from_db()
    epochs = list(ChainEpoch.objects.filter(chain=chain).order_by("number"))
    ended = 0
    open_trades = Trade.objects.filter(
        chain=chain, created_at__lt=chain.epoch_started_at, state__in=NON_TERMINAL
    ).values_list("pk", "created_at")
    for trade_id, created_at in list(open_trades):
        # The epoch that replaced the trade's chain: the first one started after the trade.
        epoch = next((e for e in epochs if e.started_at > created_at), epochs[-1])
        trade = end_trade(trade_id, "fail", epoch.reason, expect=set(NON_TERMINAL))
        if trade is not None and trade.state == TradeState.FAILED:
            ended += 1
    reports = []
    for attempt in serializable_attempts(label="dev chain epoch finish"):
        with attempt:
            restarted = NonceCursor.objects.filter(chain=chain).update(next_nonce=0, released=[])
            # What was signed for the replaced chain no longer holds its nonce on the new one.
            SigningRecord.objects.filter(chain=chain, retired=False).update(retired=True)
            now = timezone.now()
            reports = []
            for epoch in pending:
                epoch.archive = {**epoch.archive, "ended_failed": ended, "nonce_cursors_restarted": restarted}
                epoch.completed_at = now
                epoch.save(update_fields=["archive", "completed_at"])
                reports.append(
                    EpochReport(
                        chain_id=chain.chain_id,
                        number=epoch.number,
                        divergence=_short(epoch.archive.get("divergence") or {}),
                        archived_headers=epoch.archived_headers,
                        archived_reorgs=len(epoch.archive.get("reorgs", [])),
                        archived_trades=len(epoch.archived_trades),
                        ended_failed=ended,
                        nonce_cursors_restarted=restarted,
                    )
                )
    return reports


def _short(divergence: dict) -> str:
    if not divergence:
        return "its early blocks differ"
    if divergence.get("found") is None:
        return f"no block {divergence.get('block')} on the node"
    return f"block {divergence.get('block')} differs"
