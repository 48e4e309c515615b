"""The signer's batch rows, read and written with raw SQL in binary (one query per fact for a whole
batch): the requests' trades, wallets, chains and frozen transactions; the signing records at the
nonces they touch; and the inserts of new records and spend-ledger entries."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from functools import cache

import psycopg
from django.db import connection
from django.db.models import DateTimeField, Field
from psycopg.pq import Format

from apps.chain.models import Chain
from apps.signing.models import SigningRecord
from apps.trades.models import ChainTransaction, Trade
from apps.wallets.models import NonceCursor, SpendLedgerEntry, Wallet

Request = tuple[int, int]  # (trade id, attempt)


def binary_cursor():
    """A cursor with binary server-side parameters (%b) and binary results, wrapped as Django wraps
    its own: database errors arrive as Django's (IntegrityError) and query logging sees it."""
    connection.ensure_connection()
    cursor = psycopg.Cursor(connection.connection)
    cursor.format = Format.BINARY
    return (
        connection.make_debug_cursor(cursor) if connection.queries_logged else connection.make_cursor(cursor)
    )


def quoted(name: str) -> str:
    return connection.ops.quote_name(name)


def select_list(model, alias: str) -> str:
    """Every concrete column of `model`, in field order (the order Model.from_db takes)."""
    return ", ".join(f"{alias}.{quoted(field.column)}" for field in model._meta.concrete_fields)


def array_of(field) -> str:
    # Cast to the bare type (varchar, numeric): an explicit cast to varchar(66) would truncate an
    # over-long value silently, where the INSERT's own assignment refuses it.
    return field.db_type(connection).split("(")[0] + "[]"


@cache
def datetime_positions(model) -> tuple[int, ...]:
    """Where `model`'s datetime columns are; refused for a model with a field that converts what
    the database returns (from_db_value), which this loader does not do."""
    for field in model._meta.concrete_fields:
        if hasattr(field, "from_db_value"):
            # Binary results would hand it what it does not expect (a parsed jsonb, say).
            raise NotImplementedError(
                f"{field} converts its database value: load {model.__name__} with the ORM"
            )
    return tuple(i for i, field in enumerate(model._meta.concrete_fields) if isinstance(field, DateTimeField))


def instance(model, values: tuple):
    """A model instance from its concrete columns read in binary, equal to what the ORM builds."""
    datetimes = datetime_positions(model)
    if datetimes:
        values = list(values)
        for i in datetimes:
            if values[i] is not None:
                values[i] = values[i].astimezone(connection.timezone)  # the ORM's zone (UTC)
    return model.from_db(connection.alias, None, values)


@cache
def requests_query() -> tuple[str, tuple[int, ...]]:
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
    table = {model: quoted(model._meta.db_table) for model in (*dict(models), NonceCursor, SigningRecord)}
    sql = (
        "SELECT r.trade_id, r.attempt, n.next_nonce, s.id, "  # noqa: S608 - names from the models
        + ", ".join(select_list(model, alias) for model, alias in models)
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
class LoadedRequests:
    trades: dict[int, Trade]  # requested trades that exist, with their wallet and chain
    transactions: dict[Request, list[ChainTransaction]]  # in sequence order
    done: dict[int, int]  # transaction id -> its signing record's id
    next_nonces: dict[tuple[int, int], int]  # (wallet, chain) -> the nonce cursor's next_nonce


def load_requests(requests: list[Request]) -> LoadedRequests:
    """The requests' trades (one instance per wallet and per chain, shared), frozen transactions,
    existing records and nonce cursors, with one query."""
    sql, (t, w, c, x, end) = requests_query()
    unique = list(dict.fromkeys(requests))
    loaded = LoadedRequests(trades={}, transactions={r: [] for r in unique}, done={}, next_nonces={})
    wallets: dict[int, Wallet] = {}
    chains: dict[int, Chain] = {}
    with binary_cursor() as cursor:
        cursor.execute(sql, [[trade_id for trade_id, _ in unique], [attempt for _, attempt in unique]])
        rows = cursor.fetchall()
    for row in rows:
        trade_id, attempt, next_nonce, record_id = row[:4]
        trade = loaded.trades.get(trade_id)
        if trade is None:
            trade = loaded.trades[trade_id] = instance(Trade, row[t:w])
            wallet = wallets.get(trade.wallet_id)
            if wallet is None:
                wallet = wallets[trade.wallet_id] = instance(Wallet, row[w:c])
            chain = chains.get(trade.chain_id)
            if chain is None:
                chain = chains[trade.chain_id] = instance(Chain, row[c:x])
            Trade.wallet.field.set_cached_value(trade, wallet)
            Trade.chain.field.set_cached_value(trade, chain)
            if next_nonce is not None:
                loaded.next_nonces[(trade.wallet_id, trade.chain_id)] = next_nonce
        if row[x] is not None:
            tx = instance(ChainTransaction, row[x:end])
            loaded.transactions[(trade_id, attempt)].append(tx)
            if record_id is not None:
                loaded.done[tx.pk] = record_id
    return loaded


@dataclass(slots=True, eq=False)
class Record:
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


RECORD_COLUMNS = tuple(f.name for f in fields(Record) if f.name != "pk")  # SigningRecord attnames


@cache
def record_columns() -> list[Field]:
    by_attname = {field.attname: field for field in SigningRecord._meta.concrete_fields}
    return [by_attname[name] for name in RECORD_COLUMNS]


@cache
def records_at_nonces_query() -> str:
    """The signing records of a list of (wallet, chain, nonce), oldest first."""
    columns = ", ".join(
        "NULL" if field.attname == "raw_signed" else f"s.{quoted(field.column)}" for field in record_columns()
    )
    return (
        f"SELECT {columns}, s.id FROM {quoted(SigningRecord._meta.db_table)} s"  # noqa: S608 - as above
        " WHERE (s.wallet_id, s.chain_id, s.nonce) IN"
        " (SELECT * FROM unnest(%b::bigint[], %b::bigint[], %b::bigint[]))"
        " AND NOT s.retired"  # signed for a replaced dev chain (manage.py devchain up)
        " ORDER BY s.id"
    )


def insert_from_arrays(model, columns: list[Field], tail: str) -> str:
    """An INSERT of one row per element of one array per column: the same text whatever the count."""
    names = ", ".join(quoted(field.column) for field in columns)
    arrays = ", ".join(f"%b::{array_of(field)}" for field in columns)
    table = quoted(model._meta.db_table)
    return f"INSERT INTO {table} ({names}) SELECT * FROM unnest({arrays}) {tail}"  # noqa: S608 - names from the models


@cache
def insert_records_query() -> str:
    return insert_from_arrays(SigningRecord, record_columns(), "RETURNING id, chain_transaction_id")


def insert_records(records: list[Record]) -> None:
    """One INSERT for the batch's records. The table's constraints judge every row as they would one
    by one (a conflict is an IntegrityError); the ids come back keyed by transaction."""
    if not records:
        return
    with binary_cursor() as cursor:
        cursor.execute(
            insert_records_query(),
            [[getattr(record, name) for record in records] for name in RECORD_COLUMNS],
        )
        ids = {tx_id: pk for pk, tx_id in cursor.fetchall()}
    for record in records:
        record.pk = ids[record.chain_transaction_id]


LEDGER_COLUMNS = ("scope_id", "trade_id", "amount_in", "notional_usd", "created_at")


@cache
def insert_ledger_query() -> str:
    columns = [SpendLedgerEntry._meta.get_field(name) for name in LEDGER_COLUMNS]
    # An entry for this (scope, trade) already there is the same trade's earlier attempt: keep it.
    return insert_from_arrays(
        SpendLedgerEntry, columns, "ON CONFLICT ON CONSTRAINT ledger_one_entry_per_trade DO NOTHING"
    )


def insert_ledger(rows: list[tuple]) -> None:
    """SpendLedgerEntry rows (LEDGER_COLUMNS), one per (scope, trade), with one INSERT."""
    with binary_cursor() as cursor:
        cursor.execute(insert_ledger_query(), [list(column) for column in zip(*rows, strict=True)])
