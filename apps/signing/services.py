"""The signer's writes: create keys inside their backend, and sign a trade's frozen transactions
after re-checking every one of them against the wallet's scope.

The signer trusts nobody. A request names only (trade id, attempt); everything else is loaded from
the database and judged again here, whoever put the request on the queue.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from functools import cache

import psycopg
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import DateTimeField, Exists, Field, OuterRef, Sum
from django.utils import timezone
from psycopg.pq import Format

from apps.chain.models import Chain
from apps.chain.txcodec import payload_hash
from apps.signing.backends import backend_from_settings
from apps.signing.backends.base import KeyBackend, KeyBackendError, KeyBackendUnavailable
from apps.signing.models import SigningRecord, SigningRefusal
from apps.signing.txsign import sign_transaction
from apps.trades.models import ChainTransaction, Trade, TradeState
from apps.wallets.models import AuthorityKey, NonceCursor, SpendLedgerEntry, Wallet
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


Request = tuple[int, int]  # (trade id, attempt)


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


def _cursor():
    """A cursor with binary server-side parameters (%b) and binary results, wrapped as Django wraps
    its own: database errors arrive as Django's (IntegrityError) and query logging sees it."""
    connection.ensure_connection()
    cursor = psycopg.Cursor(connection.connection)
    cursor.format = Format.BINARY
    return (
        connection.make_debug_cursor(cursor) if connection.queries_logged else connection.make_cursor(cursor)
    )


def _name(name: str) -> str:
    return connection.ops.quote_name(name)


def _select_list(model, alias: str) -> str:
    """Every concrete column of `model`, in field order (the order Model.from_db takes)."""
    return ", ".join(f"{alias}.{_name(field.column)}" for field in model._meta.concrete_fields)


def _array_of(field) -> str:
    # Cast to the bare type (varchar, numeric): an explicit cast to varchar(66) would truncate an
    # over-long value silently, where the INSERT's own assignment refuses it.
    return field.db_type(connection).split("(")[0] + "[]"


@cache
def _datetime_positions(model) -> tuple[int, ...]:
    """Where `model`'s datetime columns are; refused for a model with a field that converts what
    the database returns (from_db_value), which this loader does not do."""
    for field in model._meta.concrete_fields:
        if hasattr(field, "from_db_value"):
            # Binary results would hand it what it does not expect (a parsed jsonb, say).
            raise NotImplementedError(
                f"{field} converts its database value: load {model.__name__} with the ORM"
            )
    return tuple(i for i, field in enumerate(model._meta.concrete_fields) if isinstance(field, DateTimeField))


def _instance(model, values: tuple):
    """A model instance from its concrete columns read in binary, equal to what the ORM builds."""
    datetimes = _datetime_positions(model)
    if datetimes:
        values = list(values)
        for i in datetimes:
            if values[i] is not None:
                values[i] = values[i].astimezone(connection.timezone)  # the ORM's zone (UTC)
    return model.from_db(connection.alias, None, values)


@cache
def _requests_query() -> tuple[str, tuple[int, ...]]:
    """One row per frozen transaction of each requested (trade, attempt), or one row without a
    transaction when it has none: the transaction's signing record id, the wallet's nonce cursor on
    the chain, and every column of the trade, its wallet, its chain and the transaction. Also the
    offsets where each model's columns begin."""
    models = ((Trade, "t"), (Wallet, "w"), (Chain, "c"), (ChainTransaction, "x"))
    offsets, at = [], 4
    for model, _alias in models:
        offsets.append(at)
        at += len(model._meta.concrete_fields)
    offsets.append(at)
    table = {model: _name(model._meta.db_table) for model in (*dict(models), NonceCursor, SigningRecord)}
    sql = (
        "SELECT r.trade_id, r.attempt, n.next_nonce, s.id, "  # noqa: S608 - names from the models
        + ", ".join(_select_list(model, alias) for model, alias in models)
        + " FROM unnest(%b::bigint[], %b::integer[]) AS r(trade_id, attempt)"
        f" JOIN {table[Trade]} t ON t.id = r.trade_id"
        f" JOIN {table[Wallet]} w ON w.id = t.wallet_id"
        f" JOIN {table[Chain]} c ON c.id = t.chain_id"
        f" LEFT JOIN {table[NonceCursor]} n ON n.wallet_id = t.wallet_id AND n.chain_id = t.chain_id"
        f" LEFT JOIN {table[ChainTransaction]} x ON x.trade_id = r.trade_id AND x.attempt = r.attempt"
        f" LEFT JOIN {table[SigningRecord]} s ON s.chain_transaction_id = x.id"
        " ORDER BY r.trade_id, x.sequence"
    )
    return sql, tuple(offsets)


@dataclass
class _Requests:
    trades: dict[int, Trade]  # requested trades that exist, with their wallet and chain
    transactions: dict[Request, list[ChainTransaction]]  # in sequence order
    done: dict[int, int]  # transaction id -> its signing record's id
    next_nonces: dict[tuple[int, int], int]  # (wallet, chain) -> the nonce cursor's next_nonce


def _load_requests(requests: list[Request]) -> _Requests:
    """The requests' trades (one instance per wallet and per chain, shared), frozen transactions,
    existing records and nonce cursors, with one query."""
    sql, (t, w, c, x, end) = _requests_query()
    unique = list(dict.fromkeys(requests))
    loaded = _Requests(trades={}, transactions={r: [] for r in unique}, done={}, next_nonces={})
    wallets: dict[int, Wallet] = {}
    chains: dict[int, Chain] = {}
    with _cursor() as cursor:
        cursor.execute(sql, [[trade_id for trade_id, _ in unique], [attempt for _, attempt in unique]])
        rows = cursor.fetchall()
    for row in rows:
        trade_id, attempt, next_nonce, record_id = row[:4]
        trade = loaded.trades.get(trade_id)
        if trade is None:
            trade = loaded.trades[trade_id] = _instance(Trade, row[t:w])
            wallet = wallets.get(trade.wallet_id)
            if wallet is None:
                wallet = wallets[trade.wallet_id] = _instance(Wallet, row[w:c])
            chain = chains.get(trade.chain_id)
            if chain is None:
                chain = chains[trade.chain_id] = _instance(Chain, row[c:x])
            Trade.wallet.field.set_cached_value(trade, wallet)
            Trade.chain.field.set_cached_value(trade, chain)
            if next_nonce is not None:
                loaded.next_nonces[(trade.wallet_id, trade.chain_id)] = next_nonce
        if row[x] is not None:
            tx = _instance(ChainTransaction, row[x:end])
            loaded.transactions[(trade_id, attempt)].append(tx)
            if record_id is not None:
                loaded.done[tx.pk] = record_id
    return loaded


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


@dataclass(slots=True, eq=False)
class _Record:
    """A SigningRecord row as the batch uses it: one already written (read for the nonce checks,
    without its raw bytes) or one this batch signs (pk None until it is inserted)."""

    wallet_id: int
    chain_id: int
    nonce: int
    chain_transaction_id: int
    trade_id: int
    attempt: int
    payload_hash: str
    tx_hash: str
    raw_signed: bytes | None
    max_fee_per_gas: Decimal
    max_priority_fee_per_gas: Decimal
    replaces_id: int | None
    created_at: datetime
    pk: int | None = None


RECORD_COLUMNS = tuple(f.name for f in fields(_Record) if f.name != "pk")  # SigningRecord attnames


@cache
def _record_columns() -> list[Field]:
    by_attname = {field.attname: field for field in SigningRecord._meta.concrete_fields}
    return [by_attname[name] for name in RECORD_COLUMNS]


@cache
def _records_at_nonces_query() -> str:
    """The signing records of a list of (wallet, chain, nonce), oldest first."""
    columns = ", ".join(
        "NULL" if field.attname == "raw_signed" else f"s.{_name(field.column)}" for field in _record_columns()
    )
    return (
        f"SELECT {columns}, s.id FROM {_name(SigningRecord._meta.db_table)} s"  # noqa: S608 - as above
        " WHERE (s.wallet_id, s.chain_id, s.nonce) IN"
        " (SELECT * FROM unnest(%b::bigint[], %b::bigint[], %b::bigint[]))"
        " AND NOT s.retired"  # signed for a replaced dev chain (manage.py devchain up)
        " ORDER BY s.id"
    )


class _NonceUse:
    """The signing records of every (wallet, chain, nonce) the batch touches, plus the batch's own."""

    def __init__(self, txs_by_request: dict[Request, list[ChainTransaction]], trades: dict[int, Trade]):
        keys = {
            (trades[tid].wallet_id, trades[tid].chain_id, int(tx.nonce))
            for (tid, _), txs in txs_by_request.items()
            for tx in txs
        }
        self._by_nonce: dict[tuple[int, int, int], list[_Record]] = {}
        self._by_tx: dict[int, _Record] = {}
        self._replaced: set[int] = set()
        if keys:
            with _cursor() as cursor:
                cursor.execute(
                    _records_at_nonces_query(), [list(column) for column in zip(*keys, strict=True)]
                )
                for row in cursor.fetchall():
                    self.add(_Record(*row))

    def add(self, record: _Record) -> None:
        self._by_nonce.setdefault((record.wallet_id, record.chain_id, int(record.nonce)), []).append(record)
        self._by_tx[record.chain_transaction_id] = record
        if record.replaces_id is not None:
            self._replaced.add(record.replaces_id)

    def check(self, *, trade: Trade, tx: ChainTransaction) -> _Record | None:
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
    loaded = _load_requests(requests)
    trades, txs_by_request, done = loaded.trades, loaded.transactions, loaded.done
    state = _BatchState(list(trades.values()), now, loaded.next_nonces)
    nonces = _NonceUse(txs_by_request, trades)
    outcomes: dict[Request, SignOutcome] = {}
    new_records: list[_Record] = []
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
    _insert_records(new_records)
    if ledger:
        _insert_ledger(list(ledger.values()))
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


def _insert_from_arrays(model, columns: list[Field], tail: str) -> str:
    """An INSERT of one row per element of one array per column: the same text whatever the count."""
    names = ", ".join(_name(field.column) for field in columns)
    arrays = ", ".join(f"%b::{_array_of(field)}" for field in columns)
    table = _name(model._meta.db_table)
    return f"INSERT INTO {table} ({names}) SELECT * FROM unnest({arrays}) {tail}"  # noqa: S608 - names from the models


@cache
def _insert_records_query() -> str:
    return _insert_from_arrays(SigningRecord, _record_columns(), "RETURNING id, chain_transaction_id")


def _insert_records(records: list[_Record]) -> None:
    """One INSERT for the batch's records. The table's constraints judge every row as they would one
    by one (a conflict is an IntegrityError); the ids come back keyed by transaction."""
    if not records:
        return
    with _cursor() as cursor:
        cursor.execute(
            _insert_records_query(),
            [[getattr(record, name) for record in records] for name in RECORD_COLUMNS],
        )
        ids = {tx_id: pk for pk, tx_id in cursor.fetchall()}
    for record in records:
        record.pk = ids[record.chain_transaction_id]


LEDGER_COLUMNS = ("scope_id", "trade_id", "amount_in", "notional_usd", "created_at")


@cache
def _insert_ledger_query() -> str:
    columns = [SpendLedgerEntry._meta.get_field(name) for name in LEDGER_COLUMNS]
    # An entry for this (scope, trade) already there is the same trade's earlier attempt: keep it.
    return _insert_from_arrays(
        SpendLedgerEntry, columns, "ON CONFLICT ON CONSTRAINT ledger_one_entry_per_trade DO NOTHING"
    )


def _insert_ledger(rows: list[tuple]) -> None:
    """SpendLedgerEntry rows (LEDGER_COLUMNS), one per (scope, trade), with one INSERT."""
    with _cursor() as cursor:
        cursor.execute(_insert_ledger_query(), [list(column) for column in zip(*rows, strict=True)])


def _signed_record(*, trade: Trade, tx: ChainTransaction, attempt: int, digest: str, replaces) -> _Record:
    try:
        signed = sign_transaction(
            backend(trade.wallet.key_backend), trade.wallet.key_id, tx.as_unsigned_dict()
        )
    except TRANSIENT_KEY_ERRORS:
        raise  # the task retries: a sealed or unreachable Vault comes back
    except KeyBackendError as exc:
        raise Refused("key_unavailable", str(exc)) from exc
    return _Record(
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
