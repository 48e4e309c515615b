"""The hash-chained audit trail: each trade's events form a chain, each event hashing the canonical
JSON of itself together with its predecessor's hash, so an edited, removed or reordered event breaks
every link after it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db.models import Case, Value, When
from django.utils import timezone

from apps.trades.models import Trade, TradeEvent


def genesis_hash(trade_id: int) -> str:
    return hashlib.sha256(f"custos-trade-{trade_id}".encode()).hexdigest()


def _default(value):
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return "0x" + value.hex()
    raise TypeError(f"not JSON-serialisable in an audit event: {type(value).__name__}")


def canonical(data) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=_default, ensure_ascii=True)


def event_hash(
    *,
    trade_id: int,
    kind: str,
    from_state: str,
    to_state: str,
    data: dict,
    created_at: datetime,
    prev_hash: str,
) -> str:
    body = {
        "trade": trade_id,
        "kind": kind,
        "from": from_state,
        "to": to_state,
        "data": data,
        "at": created_at.isoformat(),
        "prev": prev_hash,
    }
    return hashlib.sha256(canonical(body).encode()).hexdigest()


def _hash_of(event: TradeEvent) -> str:
    return event_hash(
        trade_id=event.trade_id,
        kind=event.kind,
        from_state=event.from_state,
        to_state=event.to_state,
        data=event.data,
        created_at=event.created_at,
        prev_hash=event.prev_hash,
    )


def audit_append(
    *, trade: Trade, kind: str, from_state: str = "", to_state: str = "", data: dict | None = None
) -> TradeEvent:
    """Append one event; call inside the transaction that makes the change it records."""
    entry = AuditEntry(trade=trade, kind=kind, data=data or {}, from_state=from_state, to_state=to_state)
    return audit_append_many([entry])[0]


@dataclass(frozen=True)
class AuditEntry:
    trade: Trade
    kind: str
    data: dict
    from_state: str = ""
    to_state: str = ""


def chain_events(entries: list[AuditEntry], heads: dict[int, str]) -> list[TradeEvent]:
    """The events for `entries` (not saved), each linked to the one before it on its trade's chain,
    starting from `heads` (trade id -> last hash, "" for a trade without events), which is moved
    along to each chain's new head."""
    events = []
    for entry in entries:
        event = TradeEvent(
            trade=entry.trade,
            kind=entry.kind,
            from_state=entry.from_state,
            to_state=entry.to_state,
            data=json.loads(canonical(entry.data or {})),  # store exactly what is hashed
            prev_hash=heads.get(entry.trade.pk) or genesis_hash(entry.trade.pk),
            created_at=timezone.now(),
        )
        event.hash = _hash_of(event)
        heads[entry.trade.pk] = event.hash
        events.append(event)
    return events


def audit_append_many(entries: list[AuditEntry]) -> list[TradeEvent]:
    """Append events (of one or more trades, in the given order) with one read of the trades' last
    hashes, one INSERT and one UPDATE of the heads; each links to the one before it on its trade's
    chain. Call inside the transaction that makes the changes they record."""
    if not entries:
        return []
    ids = {e.trade.pk for e in entries}
    # The heads live on the trades' rows (one row each, locked as a row), not in a read of the event
    # table's newest entries, which every concurrent append would also be writing next to.
    heads: dict[int, str] = dict(Trade.objects.filter(pk__in=ids).values_list("pk", "audit_head"))
    before = dict(heads)
    events = chain_events(entries, heads)
    # One INSERT: PostgreSQL numbers its rows in the order given, so ids follow each chain's order.
    created = TradeEvent.objects.bulk_create(events)
    moved = {trade_id: head for trade_id, head in heads.items() if head != before.get(trade_id)}
    if moved:
        Trade.objects.filter(pk__in=moved).update(
            audit_head=Case(*(When(pk=trade_id, then=Value(head)) for trade_id, head in moved.items()))
        )
    for entry in entries:  # the callers' objects stay true to their rows
        entry.trade.audit_head = heads[entry.trade.pk]
    return created


@dataclass(frozen=True)
class BrokenLink:
    trade_id: int
    event_id: int
    problem: str


def audit_verify(*, trade_ids=None) -> tuple[int, BrokenLink | None]:
    """Walk every trade's chain; returns (events checked, the first broken link or None). A chain
    must also end at the head its trade records, so an event removed from its end is found too."""
    checked = 0
    events = TradeEvent.objects.order_by("trade_id", "id")
    trades = Trade.objects.all()
    if trade_ids is not None:
        events = events.filter(trade_id__in=trade_ids)
        trades = trades.filter(pk__in=trade_ids)
    heads = dict(trades.values_list("pk", "audit_head"))
    current_trade, last_id = None, None
    prev = ""
    for event in events.iterator(chunk_size=2000):
        if event.trade_id != current_trade:
            if current_trade is not None and heads.get(current_trade) != prev:
                return checked, BrokenLink(current_trade, last_id, _HEAD_MISMATCH)
            current_trade = event.trade_id
            prev = genesis_hash(event.trade_id)
        if event.prev_hash != prev:
            return checked, BrokenLink(event.trade_id, event.pk, "predecessor hash does not match")
        expected = _hash_of(event)
        if expected != event.hash:
            return checked, BrokenLink(event.trade_id, event.pk, "event content does not match its hash")
        prev, last_id = event.hash, event.pk
        checked += 1
    if current_trade is not None and heads.get(current_trade) != prev:
        return checked, BrokenLink(current_trade, last_id, _HEAD_MISMATCH)
    return checked, None


_HEAD_MISMATCH = "the chain does not end at the trade's recorded head (an event was removed from its end)"
