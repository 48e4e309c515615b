"""The one checked transition primitive every step moves a trade with, the terminal endings, and the
loaders the steps share. Imports nothing of the other steps."""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.utils import timezone

from apps.signing.models import SigningRecord
from apps.trades import chainio
from apps.trades.audit import AuditEntry, audit_append, chain_events
from apps.trades.models import Trade, TradeState
from apps.wallets.services import nonce_release
from project.db import SerializationRetriesExhausted, backoff_seconds, is_retryable, serializable_attempts
from project.queues import enqueue_on_commit

logger = logging.getLogger(__name__)
S = TradeState


class StaleTrade(Exception):
    """Another transaction changed the trade since it was read (its version or audit head moved): the
    step runs again from a fresh read (its task retries at once; every step is idempotent)."""


def heals(exc: BaseException) -> bool:
    """An error a step heals from by trying again: contention with concurrent transactions, a trade
    changed since it was read, or a chain that did not answer."""
    return isinstance(
        exc, SerializationRetriesExhausted | StaleTrade | chainio.ChainUnavailable | ConnectionError
    ) or is_retryable(exc)


def _holder_retry_or_raise(exc: Exception, failures: int, *, label: str, wallet_id: int) -> None:
    """For the holder of a wallet's lock (its validator, its broadcaster), after its `failures`-th
    failure in a row: raise `exc` unless it heals and HOLDER_RETRIES_IN_PLACE allows one more try,
    else pause (full-jitter backoff) for the holder to try again without letting go. The other
    steps of the wallet found the lock held and left their trades to this holder: one that gave up
    on a passing error (its task retried behind every task queued meanwhile) left them to the
    recovery timer."""
    if not heals(exc) or failures > settings.HOLDER_RETRIES_IN_PLACE:
        raise exc
    logger.info(
        "holder tries again",
        extra={"what": label, "wallet": wallet_id, "failures": failures, "error": repr(exc)},
    )
    time.sleep(backoff_seconds(failures))


def held_retrying(work, *, label: str, wallet_id: int):
    """`work()` for the holder of a wallet's lock, tried again in place while it fails on an error
    that heals (_holder_retry_or_raise); its result."""
    failures = 0
    while True:
        try:
            return work()
        except Exception as exc:  # noqa: BLE001 - what does not heal is raised again
            failures += 1
            _holder_retry_or_raise(exc, failures, label=label, wallet_id=wallet_id)


def transition(
    trade: Trade,
    method: str,
    *,
    data: dict | None = None,
    fields: dict | None = None,
    next_task: tuple | None = None,
) -> Trade:
    """Call `method` (a django-fsm transition) and persist it with a version check, inside the
    caller's SERIALIZABLE transaction; append the audit event; enqueue `next_task` on commit.

    One UPDATE moves the state, the version and the audit head together, checked against the
    version and head `trade` was read with: a trade changed since (a transition, or an event appended
    without one) raises StaleTrade, and the step runs again from a fresh read."""
    from_state, version, head = trade.state, trade.version, trade.audit_head
    getattr(trade, method)()
    fields = fields or {}
    for name, value in fields.items():
        setattr(trade, name, value)
    heads = {trade.pk: head}
    (event,) = chain_events(
        [AuditEntry(trade=trade, kind=method, data=data or {}, from_state=from_state, to_state=trade.state)],
        heads,
    )
    updated = Trade.objects.filter(pk=trade.pk, version=version, audit_head=head).update(
        state=trade.state,
        version=version + 1,
        updated_at=timezone.now(),
        audit_head=heads[trade.pk],
        **fields,
    )
    if updated != 1:
        raise StaleTrade(f"trade {trade.pk} changed under {method}")
    event.save(force_insert=True)
    trade.version, trade.audit_head = version + 1, heads[trade.pk]
    if next_task:
        enqueue_on_commit(*next_task)
    logger.info("trade transition", extra={"trade": trade.pk, "from": from_state, "to": trade.state})
    return trade


def trade_rows():
    return Trade.objects.select_related("wallet", "chain", "dex")


def load(trade_id: int) -> Trade | None:
    return trade_rows().filter(pk=trade_id).first()


def attempts_reusing(trade: Trade, *, label: str):
    """serializable_attempts, each with a function giving the trade to work on: the first attempt the
    object already read (by an earlier transaction of the same step), later ones a fresh read, since
    a failed attempt may have moved the object along. No re-read is needed the first time: every
    transition's UPDATE is checked against the version and audit head the object carries, so a trade
    changed meanwhile (cancelled) raises StaleTrade rather than being overwritten."""
    for number, attempt in enumerate(serializable_attempts(label=label)):
        yield attempt, (lambda: trade) if number == 0 else (lambda: load(trade.pk))


def end_trade(trade_id: int, method: str, reason: str, *, expect: set[str]) -> Trade | None:
    """Move a trade to REJECTED/FAILED/CANCELLED with its reason, if it is still in `expect`."""
    for attempt in serializable_attempts(label=method):
        with attempt:
            trade = load(trade_id)
            if trade is None or trade.state not in expect:
                return trade
            transition(trade, method, data={"reason": reason}, fields={"reason": reason[:4000]})
            release_unbroadcast_nonces(trade)
    return trade


def release_unbroadcast_nonces(trade: Trade) -> None:
    """Hand back the nonces of a trade that will never broadcast: the cursor rewinds when they are
    its top, otherwise the next allocation on the wallet takes them first, so no gap jams it."""
    txs = list(trade.transactions.filter(broadcast_at__isnull=True, replaces__isnull=True))
    if not txs:
        return
    if SigningRecord.objects.filter(chain_transaction__in=txs).exists():
        return  # signed: it may be broadcast by someone holding the bytes; never re-use
    nonces = sorted(int(tx.nonce) for tx in txs)
    outcome = nonce_release(wallet=trade.wallet, chain=trade.chain, nonces=nonces)
    audit_append(trade=trade, kind="nonces_released", data={"nonces": nonces, "how": outcome})


def audit_and_log(trade: Trade, kind: str, data: dict) -> None:
    for attempt in serializable_attempts(label=f"audit {kind}"):
        with attempt:
            audit_append(trade=trade, kind=kind, data=data)
    logger.warning(kind, extra={"trade": trade.pk, **{k: str(v) for k, v in data.items()}})
