"""The hash-chained audit trail: each trade's events form a chain, each event hashing the canonical
JSON of itself together with its predecessor's hash, so an edited, removed or reordered event breaks
every link after it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

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


def audit_append(
    *, trade: Trade, kind: str, from_state: str = "", to_state: str = "", data: dict | None = None
) -> TradeEvent:
    """Append one event; call inside the transaction that makes the change it records."""
    data = json.loads(canonical(data or {}))  # store exactly what was hashed
    last = TradeEvent.objects.filter(trade=trade).order_by("-id").values_list("hash", flat=True).first()
    prev = last or genesis_hash(trade.pk)
    created_at = timezone.now()
    digest = event_hash(
        trade_id=trade.pk,
        kind=kind,
        from_state=from_state,
        to_state=to_state,
        data=data,
        created_at=created_at,
        prev_hash=prev,
    )
    return TradeEvent.objects.create(
        trade=trade,
        kind=kind,
        from_state=from_state,
        to_state=to_state,
        data=data,
        prev_hash=prev,
        hash=digest,
        created_at=created_at,
    )


@dataclass(frozen=True)
class BrokenLink:
    trade_id: int
    event_id: int
    problem: str


def audit_verify(*, trade_ids=None) -> tuple[int, BrokenLink | None]:
    """Walk every trade's chain; returns (events checked, the first broken link or None)."""
    checked = 0
    events = TradeEvent.objects.order_by("trade_id", "id")
    if trade_ids is not None:
        events = events.filter(trade_id__in=trade_ids)
    current_trade = None
    prev = ""
    for event in events.iterator(chunk_size=2000):
        if event.trade_id != current_trade:
            current_trade = event.trade_id
            prev = genesis_hash(event.trade_id)
        if event.prev_hash != prev:
            return checked, BrokenLink(event.trade_id, event.pk, "predecessor hash does not match")
        expected = event_hash(
            trade_id=event.trade_id,
            kind=event.kind,
            from_state=event.from_state,
            to_state=event.to_state,
            data=event.data,
            created_at=event.created_at,
            prev_hash=event.prev_hash,
        )
        if expected != event.hash:
            return checked, BrokenLink(event.trade_id, event.pk, "event content does not match its hash")
        prev = event.hash
        checked += 1
    return checked, None
