"""The watcher's tick: keep a window of canonical headers per chain, find reorgs, and hand the trades
they touch to the engine (receipt orphaned → re-check and re-broadcast; settled → finality alarm).

A tick costs a handful of RPC requests whatever the number of trades: one probe per endpoint, one
batch for the new headers, the re-checked tail and every inclusion block of a CONFIRMING trade, and
only on a reorg a few more batches to walk back to the fork point.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.chain.models import Chain
from apps.chain.pool import RpcPool, pool_for
from apps.trades import real_money_transaction_manager as rmtm
from apps.trades.models import ChainTransaction, TradeState
from apps.watcher.models import BlockHeader, Reorg
from project import locks

logger = logging.getLogger(__name__)


class InconsistentChainView(Exception):
    """The headers fetched in one tick do not link into one chain (a reorg in flight, or an
    endpoint lying): nothing is written; the next tick looks again."""


@dataclass(frozen=True)
class Header:
    number: int
    hash: str
    parent_hash: str


@dataclass
class TickReport:
    chain_id: int
    skipped: str = ""
    head: int | None = None
    new_headers: int = 0
    reorg_depth: int = 0
    fork_number: int | None = None
    finality_alarm: bool = False
    reconfirmed: list[int] = field(default_factory=list)
    violated: list[int] = field(default_factory=list)
    rpc_requests: int = 0
    rpc_calls: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


# --- the single-run lock -------------------------------------------------------------------------


@contextmanager
def chain_lock(chain_id: int, *, client: redis.Redis | None = None) -> Iterator[bool]:
    """Yields True if this caller holds the chain's tick lock; released only by its holder."""
    with locks.single_run(
        locks.watcher_tick(chain_id), ttl_seconds=settings.WATCHER_LOCK_TTL_SECONDS, using=client
    ) as held:
        yield held


def chain_due(chain: Chain, *, client: redis.Redis | None = None) -> bool:
    """At most one tick per chain per block time, however often beat wakes the watcher."""
    client = client or locks.client()
    return bool(
        client.set(f"custos:watcher:due:{chain.chain_id}", "1", nx=True, px=max(250, chain.block_time_ms))
    )


# --- reading headers -------------------------------------------------------------------------------


def _fetch(pool: RpcPool, numbers: list[int]) -> dict[int, Header | None]:
    numbers = sorted(set(numbers))
    blocks = pool.batch([("eth_getBlockByNumber", [hex(n), False]) for n in numbers])
    out: dict[int, Header | None] = {}
    for n, block in zip(numbers, blocks, strict=True):
        out[n] = (
            Header(number=n, hash=block["hash"].lower(), parent_hash=block["parentHash"].lower())
            if block
            else None
        )
    return out


def _stored(chain: Chain, low: int) -> dict[int, str]:
    return dict(
        BlockHeader.objects.filter(chain=chain, canonical=True, number__gte=low).values_list("number", "hash")
    )


# --- the tick -------------------------------------------------------------------------------------


def watcher_tick(*, chain_id: int, lock_client: redis.Redis | None = None) -> TickReport:
    """One tick for one chain under its single-run lock; a second overlapping tick returns at once."""
    report = TickReport(chain_id=chain_id)
    with chain_lock(chain_id, client=lock_client) as held:
        if not held:
            report.skipped = "another tick holds the lock"
            return report
        chain = Chain.objects.filter(chain_id=chain_id).first()
        if chain is None:
            report.skipped = "unknown chain"
            return report
        pool = pool_for(chain)
        before = (pool.stats.http_requests, pool.stats.rpc_calls)
        try:
            _tick_trusting(chain, pool, report)
        finally:
            pool.avoid.clear()
            report.rpc_requests = pool.stats.http_requests - before[0]
            report.rpc_calls = pool.stats.rpc_calls - before[1]
    return report


def _tick_trusting(chain: Chain, pool: RpcPool, report: TickReport) -> None:
    """Run the tick; an endpoint whose headers do not link into one chain is set aside for this tick
    and the tick runs again on the next one (a lying or forked endpoint cannot stall the watcher)."""
    for _ in range(max(1, len(pool.endpoints))):
        try:
            _tick(chain, pool, report)
            return
        except InconsistentChainView as exc:
            if not pool.last_url or len(pool.avoid) + 1 >= len(pool.endpoints):
                raise
            pool.distrust(pool.last_url, f"inconsistent chain view: {exc}")
    raise InconsistentChainView(f"chain {chain.chain_id}: no endpoint gave a consistent view")


def _tick(chain: Chain, pool: RpcPool, report: TickReport) -> None:
    head = pool.probe()
    if head is None:
        head = int(pool.call("eth_blockNumber"), 16)
    report.head = head
    tip_row = BlockHeader.objects.filter(chain=chain, canonical=True).order_by("-number").first()
    window = settings.WATCHER_WINDOW_BLOCKS
    recheck = max(1, settings.WATCHER_RECHECK_DEPTH)
    if tip_row is None or head - tip_row.number > window:
        start = max(0, head - max(recheck, chain.confirmations_required) + 1)
    else:
        start = tip_row.number + 1
    tip = tip_row.number if tip_row else None
    wanted = set(range(start, head + 1))
    if tip is not None:
        wanted |= set(range(max(0, tip - recheck + 1), tip + 1))
    inclusion = set(
        ChainTransaction.objects.filter(
            chain.in_epoch("trade__created_at"),
            trade__chain=chain,
            trade__state=TradeState.CONFIRMING,
            receipt_block_number__isnull=False,
            receipt_block_number__gt=head - window,
        )
        .exclude(receipt_block_hash="")
        .values_list("receipt_block_number", flat=True)
        .distinct()
    )
    wanted |= inclusion
    fetched = _fetch(pool, sorted(wanted))
    stored = _stored(chain, min(wanted))
    mismatched = [n for n, h in fetched.items() if n in stored and (h is None or h.hash != stored[n])]

    lowest = None
    alarm = False
    if mismatched and min(mismatched) > head:
        # Everything up to the endpoints' head matches; only our newer blocks are unknown to them.
        # A lagging view, not a reorg: a real one shows a different block at some height <= head.
        report.skipped = f"endpoints' head {head} is behind the stored tip {tip}"
        return
    if mismatched:
        lowest, alarm = _walk_back(chain, pool, fetched, stored, min(mismatched), tip)
    # Headers of the (new) canonical chain from the lowest orphaned height, or the stored tip, to head.
    first_new = lowest if lowest is not None else start
    missing = [n for n in range(first_new, head + 1) if n not in fetched]
    if missing:
        fetched.update(_fetch(pool, missing))
    chain_headers = [fetched[n] for n in range(first_new, head + 1)]
    if any(h is None for h in chain_headers):
        raise InconsistentChainView(f"chain {chain.chain_id}: a block up to head {head} is missing")
    # The new headers must hang off the last block both views share (none on a first tick, or when
    # the fork lies beyond the walk).
    anchor = stored.get(first_new - 1) if not alarm else None
    _check_links(chain, chain_headers, anchor)

    old_tip_hash = stored.get(tip, "") if tip is not None else ""
    with transaction.atomic():
        now = timezone.now()
        if lowest is not None:
            report.reorg_depth = BlockHeader.objects.filter(
                chain=chain, canonical=True, number__gte=lowest
            ).update(canonical=False, orphaned_at=now)
            report.fork_number = None if alarm else lowest - 1
            report.finality_alarm = alarm
        _store(chain, chain_headers, now)
        BlockHeader.objects.filter(chain=chain, number__lt=head - window).delete()

    canonical = {h.number: h.hash for h in chain_headers}
    canonical.update({n: h.hash for n, h in fetched.items() if h is not None and n not in canonical})
    reorg_info = {
        "fork_number": report.fork_number,
        "depth": report.reorg_depth,
        "head": head,
        "finality_alarm": alarm,
    }
    _settle_the_affected(chain, canonical, reorg_info, report)
    report.new_headers = len([h for h in chain_headers if h.number > (tip or -1)])
    if lowest is not None:
        Reorg.objects.create(
            chain=chain,
            detected_at=timezone.now(),
            fork_number=report.fork_number,
            depth=report.reorg_depth,
            old_tip_hash=old_tip_hash,
            new_tip_hash=chain_headers[-1].hash if chain_headers else "",
            reconfirmed_trades=report.reconfirmed,
            violated_trades=report.violated,
            finality_alarm=alarm,
        )
        log = logger.critical if alarm or report.violated else logger.warning
        log("reorg detected", extra={"chain": chain.chain_id, **reorg_info})


def _walk_back(
    chain: Chain, pool: RpcPool, fetched: dict, stored: dict, lowest: int, tip: int | None
) -> tuple[int, bool]:
    """From the lowest mismatch, fetch lower stored heights in chunks until one matches: the fork
    point is just below the lowest mismatch. Bounded by WATCHER_MAX_REORG_DEPTH (then: alarm)."""
    max_depth = settings.WATCHER_MAX_REORG_DEPTH
    top = tip if tip is not None else lowest
    step = max(1, settings.WATCHER_RECHECK_DEPTH)
    while True:
        below = lowest - 1
        if below < 0:
            return lowest, False
        if top - below + 1 > max_depth:
            return lowest, True  # deeper than we may walk: finality alarm
        stored.update(_stored(chain, max(0, below - step + 1)))
        if below not in stored:
            return lowest, True  # below our window: the fork point is unknown
        numbers = [n for n in range(max(0, below - step + 1), below + 1) if n in stored and n not in fetched]
        if numbers:
            fetched.update(_fetch(pool, numbers))
        chunk = [n for n in range(max(0, below - step + 1), below + 1) if n in stored]
        bad = [n for n in chunk if fetched.get(n) is None or fetched[n].hash != stored[n]]
        if not bad:
            return lowest, False
        lowest = min(bad)


def _check_links(chain: Chain, headers: list[Header], anchor: str | None) -> None:
    previous = anchor
    for h in headers:
        if previous is not None and h.parent_hash != previous:
            raise InconsistentChainView(
                f"chain {chain.chain_id}: block {h.number} does not link to its parent (reorg in flight?)"
            )
        previous = h.hash


def _store(chain: Chain, headers: list[Header], now) -> None:
    if not headers:
        return
    hashes = [h.hash for h in headers]
    existing = set(BlockHeader.objects.filter(chain=chain, hash__in=hashes).values_list("hash", flat=True))
    # A chain that flips back to blocks it once orphaned: those rows become canonical again.
    if existing:
        BlockHeader.objects.filter(chain=chain, hash__in=existing).update(canonical=True, orphaned_at=None)
    BlockHeader.objects.bulk_create(
        [
            BlockHeader(
                chain=chain,
                number=h.number,
                hash=h.hash,
                parent_hash=h.parent_hash,
                seen_at=now,
                canonical=True,
            )
            for h in headers
            if h.hash not in existing
        ]
    )


def _settle_the_affected(chain: Chain, canonical: dict[int, str], reorg: dict, report: TickReport) -> None:
    """Every recorded receipt whose block hash is no longer the canonical one at its height: the
    CONFIRMING trade goes back to re-check; a SETTLED one raises FINALITY_VIOLATED. Trades of a
    replaced dev chain's earlier epochs (apps/chain/devchain.py) are history, not on this chain."""
    rows = (
        ChainTransaction.objects.filter(
            chain.in_epoch("trade__created_at"),
            trade__chain=chain,
            trade__state__in=[TradeState.CONFIRMING, TradeState.SETTLED],
            receipt_block_number__in=list(canonical),
        )
        .exclude(receipt_block_hash="")
        .values_list("pk", "trade_id", "trade__state", "receipt_block_number", "receipt_block_hash")
    )
    orphaned: dict[tuple[int, str], dict[int, str]] = {}
    for pk, trade_id, state, number, block_hash in rows:
        if canonical.get(number) not in (None, block_hash.lower()):
            orphaned.setdefault((trade_id, state), {})[pk] = block_hash
    for (trade_id, state), txs in sorted(orphaned.items()):
        if state == TradeState.CONFIRMING:
            rmtm.trade_receipts_orphaned(trade_id=trade_id, orphaned=txs, reorg=reorg)
            report.reconfirmed.append(trade_id)
        else:
            rmtm.trade_finality_violate(trade_id=trade_id, orphaned=txs, reorg=reorg)
            report.violated.append(trade_id)
