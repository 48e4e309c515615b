"""SERIALIZABLE transactions with bounded, jittered retries on serialization failures and deadlocks.

Every connection already runs at SERIALIZABLE (settings), so PostgreSQL may abort a transaction
with SQLSTATE 40001 (serialization_failure) or 40P01 (deadlock_detected) whenever a concurrent one
committed first. The whole transaction is then re-run from the start. `transaction.on_commit`
callbacks of an aborted attempt are discarded by Django, so side effects scheduled that way happen
exactly once, for the attempt that commits.

Two forms, one mechanism:

    @serializable()
    def trade_advance(*, trade_id): ...

    for attempt in serializable_attempts():
        with attempt:
            ...  # the body re-runs until it commits or the cap is reached
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, OperationalError, connections, transaction

logger = logging.getLogger(__name__)

RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})

P = ParamSpec("P")
R = TypeVar("R")


class SerializationRetriesExhausted(Exception):
    """The transaction kept conflicting with concurrent ones and was given up after the cap."""

    def __init__(self, attempts: int, last_error: BaseException | None = None):
        self.attempts = attempts
        self.last_error = last_error
        super().__init__(
            f"transaction aborted by concurrent updates {attempts} times in a row "
            f"(last SQLSTATE {sqlstate_of(last_error) if last_error else '?'}); nothing was committed"
        )

    def __reduce__(self):
        # Picklable for Celery's error reporting: the SQL error itself stays behind.
        return (type(self), (self.attempts,))


def sqlstate_of(exc: BaseException) -> str | None:
    """The SQLSTATE behind a Django database error (psycopg puts it on the cause)."""
    for err in (exc, exc.__cause__, exc.__context__):
        state = getattr(err, "sqlstate", None)
        if state:
            return str(state)
    return None


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, OperationalError) and sqlstate_of(exc) in RETRYABLE_SQLSTATES


def backoff_seconds(attempt: int) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt)]."""
    base = settings.DB_SERIALIZABLE_BACKOFF_BASE_MS / 1000
    cap = settings.DB_SERIALIZABLE_BACKOFF_CAP_MS / 1000
    return random.uniform(0, min(cap, base * (2**attempt)))  # noqa: S311 - jitter, not crypto


class _Attempt:
    """One try of the transaction body; swallows a retryable failure so the loop can re-run."""

    def __init__(self, runner: _Attempts, number: int):
        self._runner = runner
        self.number = number
        self._atomic = transaction.atomic(using=runner.using)

    def __enter__(self) -> _Attempt:
        self._atomic.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            self._atomic.__exit__(exc_type, exc, tb)
        except OperationalError as commit_error:
            # A serialization failure can surface at COMMIT, after the body finished.
            if not is_retryable(commit_error):
                raise
            self._runner.failed(commit_error)
            return False
        if exc is not None and is_retryable(exc):
            self._runner.failed(exc)
            return True
        if exc is None:
            self._runner.succeeded()
        return False


class _Attempts:
    def __init__(self, using: str, max_attempts: int, label: str):
        self.using = using
        self.max_attempts = max_attempts
        self.label = label
        self.retries = 0
        self._done = False
        self._last_error: BaseException | None = None

    def __iter__(self) -> Iterator[_Attempt]:
        if connections[self.using].in_atomic_block:
            # Retrying an inner block cannot undo the outer one's work: the caller must own the
            # transaction for a retry to mean anything.
            raise RuntimeError(f"{self.label}: serializable transaction opened inside another one")
        for number in range(1, self.max_attempts + 1):
            yield _Attempt(self, number)
            if self._done:
                return
            if number < self.max_attempts:
                time.sleep(backoff_seconds(number))
        raise SerializationRetriesExhausted(self.max_attempts, self._last_error)

    def failed(self, exc: BaseException) -> None:
        self.retries += 1
        self._last_error = exc
        logger.info(
            "serialization conflict, retrying",
            extra={"label": self.label, "sqlstate": sqlstate_of(exc), "retry": self.retries},
        )

    def succeeded(self) -> None:
        self._done = True


def serializable_attempts(
    *, using: str = DEFAULT_DB_ALIAS, max_attempts: int | None = None, label: str = "transaction"
) -> _Attempts:
    """Iterate and `with` each item: the body runs in its own SERIALIZABLE transaction until one commits."""
    cap = max_attempts if max_attempts is not None else settings.DB_SERIALIZABLE_MAX_ATTEMPTS
    return _Attempts(using, cap, label)


def serializable(
    *, using: str = DEFAULT_DB_ALIAS, max_attempts: int | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: run the function as one SERIALIZABLE transaction, retried on 40001/40P01."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            for attempt in serializable_attempts(
                using=using, max_attempts=max_attempts, label=fn.__qualname__
            ):
                with attempt:
                    result = fn(*args, **kwargs)
            return result

        return wrapper

    return decorate


@contextmanager
def queued_for(
    namespace: int, key: int, *, wait: bool = True, using: str = DEFAULT_DB_ALIAS
) -> Iterator[bool]:
    """Wait in line for a PostgreSQL session-level advisory lock, taken before (never inside) the
    SERIALIZABLE transactions run in the block, and released after them.

    For transactions that all write one row (a wallet's nonce cursor): run at once, each would do its
    whole body and all but one would then fail with a serialization error and start again. Queued,
    each begins after the previous one committed, so its snapshot already holds that commit. The lock
    only saves wasted attempts: the transactions keep their own isolation and retries, and the
    database's constraints stay the guarantee. A dead process's session ends and its lock with it.
    Waiting longer than DB_LOCK_TIMEOUT_MS is contention like any other: the step comes back later.
    `wait=False` does not wait: the block runs either way and is told (True/False) whether it holds
    the lock."""
    connection = connections[using]
    if connection.in_atomic_block:
        raise RuntimeError("an advisory lock must be taken outside the transaction it orders")
    try:
        with connection.cursor() as cursor:
            if wait:
                cursor.execute("SELECT pg_advisory_lock(%s, %s)", [namespace, key])
                held = True
            else:
                cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [namespace, key])
                held = bool(cursor.fetchone()[0])
    except OperationalError as exc:
        if sqlstate_of(exc) != "55P03":  # lock_not_available: lock_timeout passed
            raise
        raise SerializationRetriesExhausted(0, exc) from exc
    if not held:
        yield False
        return
    try:
        yield True
    finally:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [namespace, key])
        except DatabaseError:
            # The session is gone and its locks with it, or it is in a state that cannot say: close
            # it so a lock never outlives this block on a connection the next task reuses.
            connection.close()
