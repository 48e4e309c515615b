"""The signer's writes: create keys inside their backend, and sign a trade's frozen transactions
after re-checking every one of them against the wallet's scope.

The signer trusts nobody. A request names only (trade id, attempt); everything else is loaded from
the database and judged again here, whoever put the request on the queue.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from functools import cache

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, OuterRef, Sum
from django.utils import timezone

from apps.chain.txcodec import payload_hash
from apps.signing.backends import backend_from_settings
from apps.signing.backends.base import KeyBackend, KeyBackendError, KeyBackendUnavailable
from apps.signing.models import SigningRecord, SigningRefusal
from apps.signing.rows import (
    Record,
    Request,
    binary_cursor,
    insert_ledger,
    insert_records,
    load_requests,
    records_at_nonces_query,
)
from apps.signing.txsign import sign_transaction
from apps.trades.models import ChainTransaction, Trade, TradeState
from apps.wallets.models import AuthorityKey, Wallet
from apps.wallets.scope import ScopeState, active_scopes_query, scope_check, spent_usd_query
from project.db import serializable_attempts
from project.locks import Advisory
from project.queues import TaskName, enqueue_on_commit

logger = logging.getLogger(__name__)

# Key-backend failures that heal by themselves; every other backend error refuses the request.
TRANSIENT_KEY_ERRORS = (KeyBackendUnavailable,)


@cache
def backend(name: str) -> KeyBackend:
    """One backend instance per process (the PKCS#11 session is reused across signatures)."""
    return backend_from_settings(name)


class Refused(Exception):
    def __init__(self, code: str, detail: str):
        self.code = code
        self.detail = detail
        super().__init__(f"{code}: {detail}")


@dataclass(frozen=True)
class SignOutcome:
    signed: bool
    records: tuple[int, ...] = ()
    refusal: str = ""


def wallet_key_create(*, wallet_id: int) -> Wallet | None:
    """Generate the wallet's key inside its backend and record its reference and address."""
    wallet = Wallet.objects.filter(pk=wallet_id).first()
    if wallet is None or wallet.status != Wallet.Status.PROVISIONING or wallet.key_id:
        return wallet  # gone, or already done: idempotent
    ref = backend(wallet.key_backend).create_key(label=f"custos-wallet-{wallet.pk}")
    with transaction.atomic():
        updated = Wallet.objects.filter(pk=wallet.pk, key_id="").update(
            key_id=ref.key_id, address=ref.address, status=Wallet.Status.ACTIVE
        )
    if not updated:
        logger.warning("wallet key created twice; the second key is unused", extra={"wallet": wallet.pk})
    wallet.refresh_from_db()
    logger.info("wallet key created", extra={"wallet": wallet.pk, "backend": wallet.key_backend})
    return wallet


def trade_sign(*, trade_id: int, attempt: int) -> SignOutcome:
    """Sign every frozen transaction of (trade, attempt), or refuse them all with the reason recorded."""
    return trade_sign_batch([(trade_id, attempt)])[(trade_id, attempt)]


def trade_sign_batch(requests: list[Request], *, companions: int = 0) -> dict[Request, SignOutcome]:
    """Judge and sign many requests in one SERIALIZABLE transaction: the facts every check reads
    (trades, transactions, nonce cursors, scopes, 24-hour spend, what each nonce already carries)
    are loaded once for the whole batch (four queries at most), the records and ledger entries are
    written with one insert each, and the engine is told with one message. Each request is judged
    exactly as on its own: a refusal refuses that request only, and the batch's own signatures count
    against the caps and nonces of the requests after it.

    With `companions`, up to that many other waiting requests join the batch (pending_requests):
    only requests whose key lives in the HSM, and only when every requested key does too. A backend
    that loads a key into the process (keystore, Vault KV) signs one request per task, so the child
    that held the key is recycled before the signer takes the next request."""
    requests = list(dict.fromkeys((int(t), int(a)) for t, a in requests))
    if companions and (
        Trade.objects.filter(pk__in=[t for t, _ in requests])
        .exclude(wallet__key_backend=Wallet.Backend.PKCS11)
        .exists()
    ):
        companions = 0
    try:
        for tx_attempt in serializable_attempts(label="trade_sign"):
            with tx_attempt:
                _lock_requests(requests)
                batch = requests + pending_requests(limit=companions, exclude=requests)
                outcomes = _sign_batch_in_transaction(batch)
    except IntegrityError:
        if len(requests) > 1:
            # Two requests in the batch, or a concurrent signer, claimed one nonce: judge each
            # request on its own so that the conflict refuses only the one it concerns.
            outcomes = {}
            for request in requests:
                outcomes.update(trade_sign_batch([request]))
            return outcomes
        (trade_id, attempt) = requests[0]
        # A concurrent signer committed the same (wallet, nonce, payload) first: reuse its work.
        existing = SigningRecord.objects.filter(trade_id=trade_id, attempt=attempt)
        if existing.exists():
            return {
                requests[0]: SignOutcome(signed=True, records=tuple(existing.values_list("pk", flat=True)))
            }
        _record_refusal(
            trade_id=trade_id,
            attempt=attempt,
            code="nonce_reused",
            detail="a different payload for this nonce is already signed",
        )
        return {requests[0]: SignOutcome(signed=False, refusal="nonce_reused")}
    for (trade_id, attempt), outcome in outcomes.items():
        if outcome.refusal:
            logger.warning(
                "signing refused", extra={"trade": trade_id, "attempt": attempt, "code": outcome.refusal}
            )
    return outcomes


def _lock_requests(requests: list[Request]) -> None:
    """Wait for any other signer judging the same trades, so each trade is signed by one batch."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_advisory_xact_lock(%s, (t %% 2147483647)::int)) FROM unnest(%s::bigint[]) AS t",
            [int(Advisory.SIGNER_JUDGING), sorted({t for t, _ in requests})],
        )


def pending_requests(*, limit: int, exclude: list[Request]) -> list[Request]:
    """Up to `limit` other requests waiting for the signer: trades of HSM wallets in SIGNING whose
    frozen transactions carry no signature and no refusal yet, and that no other signer is judging. Signing
    one early is exactly what its own request would do (a request names only the ids; everything
    is judged from the database), and its own request, when it arrives, finds the work done."""
    if limit <= 0:
        return []
    refused = SigningRefusal.objects.filter(trade_id=OuterRef("trade_id"), attempt=OuterRef("attempt"))
    rows = list(
        ChainTransaction.objects.filter(
            trade__state=TradeState.SIGNING,
            signing_record__isnull=True,
            # Keys that never enter the process only (trade_sign_batch).
            trade__wallet__key_backend=Wallet.Backend.PKCS11,
        )
        .exclude(trade_id__in={t for t, _ in exclude})
        .exclude(Exists(refused))
        .values_list("trade_id", "attempt")
        .distinct()
        .order_by("trade_id", "attempt")[: 4 * limit]
    )
    if not rows:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT t FROM unnest(%s::bigint[]) WITH ORDINALITY AS u(t, n) "
            "WHERE pg_try_advisory_xact_lock(%s, (t %% 2147483647)::int) ORDER BY n LIMIT %s",
            [sorted({t for t, _ in rows}), int(Advisory.SIGNER_JUDGING), limit],
        )
        locked = {t for (t,) in cursor.fetchall()}
    latest: dict[int, int] = {}
    for trade_id, attempt in rows:
        if trade_id in locked:
            latest[trade_id] = max(attempt, latest.get(trade_id, 0))
    return sorted(latest.items())


# --- The batch's rows -------------------------------------------------------------------------------
# The batch reads and writes its rows with a few statements of fixed text (one array per column, not
# one placeholder per row) on a cursor that binds parameters on the server and moves values in binary.
# Through Django's default cursor (client-side binding, text) psycopg quoted every value into the SQL
# and parsed every timestamp in Python, which cost more than PostgreSQL spent running the statements.


_BEFORE_SIGNING = frozenset({TradeState.PENDING, TradeState.SIMULATING, TradeState.VALIDATING})


class _BatchState(ScopeState):
    """The scope check's facts for a whole batch, read once, plus what the batch itself has signed."""

    def __init__(self, trades: list[Trade], now, next_nonces: dict[tuple[int, int], int]):
        pairs = {(t.wallet_id, t.chain_id) for t in trades}
        wallets, chains = {w for w, _ in pairs}, {c for _, c in pairs}
        self._cursors = next_nonces  # read with the trades, in the same snapshot
        self._scopes: dict[tuple[int, int], list] = {pair: [] for pair in pairs}
        for scope in active_scopes_query(now=now).filter(wallet_id__in=wallets, chain_id__in=chains):
            self._scopes.setdefault((scope.wallet_id, scope.chain_id), []).append(scope)
        owners = {t.wallet.owner_id for t in trades}
        self._authorities: dict[int, set[str]] = {owner: set() for owner in owners}
        keys = AuthorityKey.objects.filter(owner_id__in=owners, removed_at__isnull=True)
        for owner_id, address in keys.values_list("owner_id", "address"):
            self._authorities[owner_id].add(address)
        capped = [s.pk for scopes in self._scopes.values() for s in scopes if s.daily_volume_usd is not None]
        self._spent: dict[tuple[int, int], Decimal] = {}  # (scope, trade) -> notional
        self._spent_total: dict[int, Decimal] = {}
        if capped:
            for scope_id, trade_id, total in (
                spent_usd_query(now=now)
                .filter(scope_id__in=capped)
                .values_list("scope_id", "trade_id")
                .annotate(total=Sum("notional_usd"))
            ):
                self._spent[(scope_id, trade_id)] = total or Decimal(0)
                self._spent_total[scope_id] = self._spent_total.get(scope_id, Decimal(0)) + (total or 0)

    def next_nonce(self, *, wallet, chain) -> int | None:
        return self._cursors.get((wallet.pk, chain.pk))

    def scopes(self, *, wallet, chain, now) -> list:
        return self._scopes.get((wallet.pk, chain.pk), [])

    def authorities(self, *, owner_id: int) -> frozenset[str]:
        return frozenset(self._authorities.get(owner_id, ()))

    def spent_usd(self, *, scope, trade, now) -> Decimal:
        return self._spent_total.get(scope.pk, Decimal(0)) - self._spent.get((scope.pk, trade.pk), Decimal(0))

    def add_spend(self, *, scope, trade, notional: Decimal | None) -> None:
        key = (scope.pk, trade.pk)
        if notional is None or key in self._spent:
            return  # no USD value to count, or the trade's entry already exists (get_or_create)
        self._spent[key] = notional
        self._spent_total[scope.pk] = self._spent_total.get(scope.pk, Decimal(0)) + notional


class _NonceUse:
    """The signing records of every (wallet, chain, nonce) the batch touches, plus the batch's own."""

    def __init__(self, txs_by_request: dict[Request, list[ChainTransaction]], trades: dict[int, Trade]):
        keys = {
            (trades[tid].wallet_id, trades[tid].chain_id, int(tx.nonce))
            for (tid, _), txs in txs_by_request.items()
            for tx in txs
        }
        self._by_nonce: dict[tuple[int, int, int], list[Record]] = {}
        self._by_tx: dict[int, Record] = {}
        self._replaced: set[int] = set()
        if keys:
            with binary_cursor() as cursor:
                cursor.execute(
                    records_at_nonces_query(), [list(column) for column in zip(*keys, strict=True)]
                )
                for row in cursor.fetchall():
                    self.add(Record(*row))

    def add(self, record: Record) -> None:
        self._by_nonce.setdefault((record.wallet_id, record.chain_id, int(record.nonce)), []).append(record)
        self._by_tx[record.chain_transaction_id] = record
        if record.replaces_id is not None:
            self._replaced.add(record.replaces_id)

    def check(self, *, trade: Trade, tx: ChainTransaction) -> Record | None:
        """None for a fresh nonce; the replaced record for a valid replacement; Refused otherwise."""
        used = self._by_nonce.get((trade.wallet_id, trade.chain_id, int(tx.nonce)), [])
        if not used:
            return None
        if tx.replaces_id is None:
            raise Refused("nonce_reused", f"nonce {tx.nonce} already carries a different signed payload")
        target = self._by_tx.get(tx.replaces_id)
        if target is None or target.nonce != tx.nonce:
            raise Refused(
                "replacement_unrecorded", "the transaction it replaces was never signed for this nonce"
            )
        tips = [r for r in used if r.pk is None or r.pk not in self._replaced]
        tip = max(tips, key=lambda r: (r.pk is None, r.pk or 0)) if tips else None  # unsaved = newest
        if tip is None or tip.pk != target.pk:
            raise Refused(
                "replacement_not_latest", "only the latest signed payload of a nonce can be replaced"
            )
        bump = settings.REPLACEMENT_MIN_BUMP_BPS
        for field in ("max_fee_per_gas", "max_priority_fee_per_gas"):
            old, new = int(getattr(target, field)), int(getattr(tx, field))
            if new * 10_000 < old * (10_000 + bump):
                raise Refused(
                    "replacement_fee_too_low",
                    f"{field} {new} is not {bump / 100:g}% above the replaced {old}",
                )
        return target


def _sign_batch_in_transaction(requests: list[Request]) -> dict[Request, SignOutcome]:
    now = timezone.now()
    loaded = load_requests(requests)
    trades, txs_by_request, done = loaded.trades, loaded.transactions, loaded.done
    state = _BatchState(list(trades.values()), now, loaded.next_nonces)
    nonces = _NonceUse(txs_by_request, trades)
    outcomes: dict[Request, SignOutcome] = {}
    new_records: list[Record] = []
    ledger: dict[tuple[int, int], tuple] = {}  # (scope, trade) -> a SpendLedgerEntry row
    refusals: list[SigningRefusal] = []
    signed: list[Request] = []
    told: list[Request] = []  # the engine hears of every request it can act on: signed or refused
    for request in requests:
        trade_id, attempt = request
        trade, txs = trades.get(trade_id), txs_by_request[request]
        try:
            if trade is None:
                raise Refused("trade_unknown", f"no trade {trade_id}")
            if not txs:
                raise Refused(
                    "nothing_to_sign", f"trade {trade_id} has no transactions for attempt {attempt}"
                )
            if all(tx.pk in done for tx in txs):
                outcomes[request] = SignOutcome(signed=True, records=tuple(done[tx.pk] for tx in txs))
                continue  # idempotent
            planned = _judge(
                trade=trade, txs=[tx for tx in txs if tx.pk not in done], now=now, state=state, nonces=nonces
            )
            records = [
                _signed_record(trade=trade, tx=tx, attempt=attempt, digest=digest, replaces=replaces)
                for tx, digest, replaces, _decision in planned
            ]
        except Refused as refused:
            if trade is None or trade.state in _BEFORE_SIGNING:
                # Unknown, or not frozen for signing yet: nothing to answer. A request forged onto
                # the queue (or redelivered very early) must not leave a refusal that the trade's
                # own answer would later be judged by.
                logger.warning(
                    "signing request for no signable trade",
                    extra={"trade": trade_id, "code": refused.code, "state": getattr(trade, "state", None)},
                )
            else:
                refusals.append(
                    SigningRefusal(
                        trade_id=trade_id, attempt=attempt, code=refused.code, detail=refused.detail[:2000]
                    )
                )
                told.append(request)
            outcomes[request] = SignOutcome(signed=False, refusal=str(refused))
            continue
        for record, (tx, _digest, _replaces, decision) in zip(records, planned, strict=True):
            nonces.add(record)
            if decision.scope is not None and tx.kind == ChainTransaction.Kind.SWAP:
                key = (decision.scope.pk, trade.pk)
                if key not in ledger:
                    ledger[key] = (decision.scope.pk, trade.pk, trade.amount_in, decision.notional_usd, now)
                    state.add_spend(scope=decision.scope, trade=trade, notional=decision.notional_usd)
        new_records.extend(records)
        signed.append(request)
        told.append(request)
    insert_records(new_records)
    if ledger:
        insert_ledger(list(ledger.values()))
    if refusals:
        SigningRefusal.objects.bulk_create(refusals)
    done.update((record.chain_transaction_id, record.pk) for record in new_records)
    for request in signed:
        outcomes[request] = SignOutcome(
            signed=True, records=tuple(done[tx.pk] for tx in txs_by_request[request])
        )
    if told:
        enqueue_on_commit(TaskName.TRADES_AFTER_SIGNING, [list(r) for r in told])
    return outcomes


def _judge(*, trade: Trade, txs: list[ChainTransaction], now, state: _BatchState, nonces: _NonceUse):
    """Every transaction of the request passes, or the request is refused: nothing is signed until
    all of them have been judged."""
    # A first attempt is signed in SIGNING; a replacement (gas bump, cancel) of a broadcast
    # transaction while the trade is CONFIRMING; cancels that fill the nonces of a first attempt
    # this signer refused (never signed, so never sent) while the trade is still in SIGNING.
    if any(tx.status == ChainTransaction.Status.REPLACED for tx in txs):
        # Superseded (a refused first attempt whose nonces were filled by cancels): signing it now
        # would put a second payload in line for the same nonce.
        raise Refused("superseded", "a later attempt replaces this transaction")
    replacing = any(tx.replaces_id is not None for tx in txs)
    filling = replacing and all(
        tx.kind == ChainTransaction.Kind.CANCEL
        and tx.replaces is not None
        and int(tx.replaces.nonce) == int(tx.nonce)
        and not tx.replaces.raw_signed
        and not SigningRecord.objects.filter(chain_transaction_id=tx.replaces_id).exists()
        for tx in txs
    )
    expected = TradeState.CONFIRMING if replacing and not filling else TradeState.SIGNING
    planned = []
    for tx in txs:
        decision = scope_check(trade=trade, tx=tx, now=now, expected_state=expected, state=state)
        if not decision.allowed:
            raise Refused(decision.first_code, decision.describe())
        digest = payload_hash(tx.as_unsigned_dict())
        if digest != tx.unsigned_hash:
            raise Refused("payload_tampered", "the frozen fields do not hash to the recorded payload hash")
        planned.append((tx, digest, nonces.check(trade=trade, tx=tx), decision))
    return planned


def _signed_record(*, trade: Trade, tx: ChainTransaction, attempt: int, digest: str, replaces) -> Record:
    try:
        signed = sign_transaction(
            backend(trade.wallet.key_backend), trade.wallet.key_id, tx.as_unsigned_dict()
        )
    except TRANSIENT_KEY_ERRORS:
        raise  # the task retries: a sealed or unreachable Vault comes back
    except KeyBackendError as exc:
        raise Refused("key_unavailable", str(exc)) from exc
    return Record(
        wallet_id=trade.wallet_id,
        chain_id=trade.chain_id,
        nonce=int(tx.nonce),
        chain_transaction_id=tx.pk,
        trade_id=trade.pk,
        attempt=attempt,
        payload_hash=digest,
        tx_hash="0x" + signed.tx_hash.hex(),
        raw_signed=signed.raw,
        max_fee_per_gas=tx.max_fee_per_gas,
        max_priority_fee_per_gas=tx.max_priority_fee_per_gas,
        replaces_id=None if replaces is None else replaces.pk,
        created_at=timezone.now(),
    )


def _record_refusal(*, trade_id: int, attempt: int, code: str, detail: str) -> None:
    if not Trade.objects.filter(pk=trade_id).exists():
        logger.warning("signing refused for unknown trade", extra={"trade": trade_id, "code": code})
        return
    with transaction.atomic():
        SigningRefusal.objects.create(trade_id=trade_id, attempt=attempt, code=code, detail=detail[:2000])
        enqueue_on_commit(TaskName.TRADES_AFTER_SIGNING, [[trade_id, attempt]])
    logger.warning("signing refused", extra={"trade": trade_id, "attempt": attempt, "code": code})
