"""No key outlives its signing: with the keystore and Vault backends, the process that held a key for
a signature is gone before the signer takes the next request.

A real signer worker (`manage.py run_worker signer`, as production starts it: prefork, one child,
SIGNER_MAX_TASKS_PER_CHILD and SIGNER_BATCH_SIZE at their defaults) gets two requests, one for each
of two wallets (two keys), queued back to back. Every backend that loads a key logs, from the process
that held it, the key's id (never the key) and that process's id and its parent's
(apps/signing/backends/base.py: log_key_held). The test holds the second trade's "signer is judging"
lock, so the second request, once a pool child has taken it, waits inside the task before any key is
loaded; at that moment:

- the first key was held by a pool child of the worker (not by the worker's main process, which
  forks every child and must never see a key);
- that child has exited (a pidfd the test opened on it when it appeared says so: no PID-reuse
  ambiguity);
- the request was taken by another child, the only one the worker has.

The lock released, the second key is held by that new child, which is gone after its task too.
The lock also keeps the second trade out of the first task's batch (a batch takes trades already
waiting in SIGNING only when it can lock them), so each request is its own task: the unit the signer
recycles its child after is the task, and a batch signs every trade it took in one child.

Vault runs as the local fake of its HTTP API, and as `vault server -dev` when a `vault` binary is on
PATH (skipped otherwise), as in test_backends.py.
"""

from __future__ import annotations

import os
import re
import select
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import psycopg
import pytest
from django.db import connection

from apps.signing import services
from apps.signing.models import SigningRecord
from apps.wallets.models import Wallet
from project.locks import Advisory
from project.queues import TaskName
from tests.e2e.conftest import Stack, stack  # noqa: F401 - the e2e stack fixture
from tests.factories import UserFactory, grant_scope, signing_trade
from tests.signing.conftest import vault_environment

pytestmark = [pytest.mark.e2e, pytest.mark.chain, pytest.mark.django_db(transaction=True)]

KEY_HELD = re.compile(
    r"(?P<backend>\w+) key (?P<key_id>[0-9a-f]{32}) was held by process (?P<pid>\d+) "
    r"\(parent (?P<ppid>\d+)\) to (?P<purpose>[a-z ]+)$"
)
TIMEOUT = 30.0


# --- processes ----------------------------------------------------------------------------------------


def children_of(pid: int) -> list[int]:
    """The live (non-zombie) child processes of `pid`."""
    found = set()
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found.update(int(child) for child in children.read_text().split())
        except OSError:
            continue  # the thread ended meanwhile
    live = []
    for child in sorted(found):
        try:
            state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue  # reaped meanwhile
        if state != "Z":
            live.append(child)
    return live


def has_exited(pidfd: int) -> bool:
    """A pidfd becomes readable once its process has exited (its memory is released)."""
    return bool(select.select([pidfd], [], [], 0)[0])


class ChildWatch:
    """A pidfd on every child of `parent`, opened as soon as it appears (polled every 10 ms): whether
    a child has exited is then known without PID-reuse ambiguity, even once it is gone."""

    def __init__(self, parent: int):
        self.parent = parent
        self.pidfds: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="child-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in children_of(self.parent):
                if pid not in self.pidfds:
                    try:
                        self.pidfds[pid] = os.pidfd_open(pid)
                    except ProcessLookupError:
                        pass
            self._stop.wait(0.01)

    def seen(self, pid: int) -> bool:
        return pid in self.pidfds

    def exited(self, pid: int) -> bool:
        return has_exited(self.pidfds[pid])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for pidfd in self.pidfds.values():
            os.close(pidfd)


def wait_for(what: str, check: Callable[[], object], stack_: Stack, timeout: float = TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        assert stack_.alive("signer"), f"the signer worker died\n{stack_.log_tail()}"
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}\n{stack_.log_tail()}")


def key_lines(stack_: Stack) -> list[dict]:
    """Every key-held line the signer worker has logged, in order."""
    lines = []
    for line in stack_.logs["signer"].read_text().splitlines():
        match = KEY_HELD.search(line)
        if match:
            lines.append({**match.groupdict(), "pid": int(match["pid"]), "ppid": int(match["ppid"])})
    return lines


# --- the second trade's judging lock, held by the test --------------------------------------------------


def _lock_key(trade_id: int) -> tuple[int, int]:
    # As services._lock_requests takes it: pg_advisory_xact_lock(SIGNER_JUDGING, trade id mod 2**31-1).
    return int(Advisory.SIGNER_JUDGING), trade_id % 2147483647


def hold_judging_lock(trade_id: int) -> psycopg.Connection:
    db = connection.settings_dict
    lock = psycopg.connect(
        dbname=db["NAME"],
        user=db["USER"],
        password=db["PASSWORD"] or None,
        host=db["HOST"] or None,
        port=db["PORT"] or None,
        autocommit=True,
    )
    lock.execute("SELECT pg_advisory_lock(%s, %s)", _lock_key(trade_id))
    return lock


def waiting_for_judging_lock(trade_id: int) -> bool:
    """A signer has taken the trade's request and waits for its lock (before loading any key)."""
    classid, objid = _lock_key(trade_id)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND classid = %s AND objid = %s AND objsubid = 2",
            [classid, objid],
        )
        return cursor.fetchone()[0] > 0


# --- backends -----------------------------------------------------------------------------------------


@pytest.fixture(params=["keystore", "vault-fake", "vault-real"])
def key_backend(request, stack, settings, tmp_path) -> Iterator[tuple[str, dict[str, str]]]:  # noqa: F811
    """The backend's name and the signer's environment for it; this process is configured alike
    (it creates the wallets' keys)."""
    if request.param == "keystore":
        yield "keystore", {}  # the stack's keystore (settings and the signer's environment)
        return
    with ExitStack() as cleanup:
        vault = cleanup.enter_context(vault_environment(request.param.removeprefix("vault-"), tmp_path))
        role_id, secret_id = vault.roles["custos"]
        secret_file = tmp_path / "vault-secret-id"
        secret_file.write_text(secret_id + "\n")
        secret_file.chmod(0o600)
        env = {
            "VAULT_ADDR": vault.addr,
            "VAULT_AUTH_METHOD": "approle",
            "VAULT_ROLE_ID": role_id,
            "VAULT_SECRET_ID_FILE": str(secret_file),
            "VAULT_KV_MOUNT": "secret",
            "VAULT_KV_PREFIX": "custos/keys",
        }
        for name, value in env.items():
            setattr(settings, name, value)
        services.backend.cache_clear()
        yield "vault", env
        services.backend.cache_clear()


def wallet_with_key(backend: str, label: str) -> Wallet:
    # Not wallet_create: it also queues a create_key task the signer would run first.
    wallet = Wallet.objects.create(owner=UserFactory(), label=label, key_backend=backend)
    wallet = services.wallet_key_create(wallet_id=wallet.pk)
    assert wallet.status == Wallet.Status.ACTIVE
    grant_scope(wallet)
    return wallet


def signed(trade) -> Callable[[], bool]:
    return lambda: SigningRecord.objects.filter(trade=trade).exists()


# --- the test -----------------------------------------------------------------------------------------


def test_the_process_that_held_a_key_is_gone_before_the_signer_takes_the_next_request(
    stack,  # noqa: F811
    key_backend,
    monkeypatch,
):
    from celery_app import app

    backend, backend_env = key_backend
    wallets = [wallet_with_key(backend, "first"), wallet_with_key(backend, "second")]
    first, second = (signing_trade(wallet, with_approve=False) for wallet in wallets)

    # The production defaults, whatever this shell exports: one task per child, batches of 64.
    monkeypatch.delenv("SIGNER_MAX_TASKS_PER_CHILD", raising=False)
    monkeypatch.delenv("SIGNER_BATCH_SIZE", raising=False)
    main = stack.start("signer", "signer", "custos_signer", **backend_env).pid
    with ExitStack() as cleanup:
        watch = ChildWatch(main)
        cleanup.callback(watch.close)
        wait_for("the signer's pool child", lambda: children_of(main), stack)
        lock = hold_judging_lock(second.pk)
        cleanup.callback(lock.close)  # ends its session: releases the lock

        # Back to back: the second request waits in the queue while the first is signed.
        app.send_task(str(TaskName.SIGNING_SIGN), args=[first.pk, 1])
        app.send_task(str(TaskName.SIGNING_SIGN), args=[second.pk, 1])
        wait_for("the first signature", signed(first), stack)
        wait_for("a child to take the second request", lambda: waiting_for_judging_lock(second.pk), stack)

        # The second request has been taken and waits inside its task, before any key is loaded.
        taker = children_of(main)
        held = key_lines(stack)
        assert [(k["key_id"], k["purpose"]) for k in held] == [(wallets[0].key_id, "sign")]
        first_pid = held[0]["pid"]
        assert held[0]["backend"] == backend
        assert first_pid != main, "a key entered the signer worker's main process"
        assert held[0]["ppid"] == main, "the first key's process is not the signer worker's child"
        assert watch.seen(first_pid), f"process {first_pid} was never a child of the signer worker"
        assert watch.exited(first_pid), (
            f"process {first_pid}, which held the first key, is still alive while the signer has "
            f"taken the next request\n{stack.log_tail()}"
        )
        assert len(taker) == 1, f"one signer child expected, found {taker}"
        assert taker[0] != first_pid
        wait_for("a pidfd on that child", lambda: watch.seen(taker[0]), stack)
        lock.close()  # the second request is judged and signed

        wait_for("the second signature", signed(second), stack)
        held = key_lines(stack)
        assert [(k["key_id"], k["purpose"]) for k in held] == [
            (wallets[0].key_id, "sign"),
            (wallets[1].key_id, "sign"),
        ]
        assert held[1]["pid"] == taker[0], "the second key was not held by the child that took it"
        assert held[1]["ppid"] == main
        # That child is replaced after its task as well; the worker's main process lives on.
        wait_for("the second key's process to exit", lambda: watch.exited(taker[0]), stack, timeout=10)
        assert stack.alive("signer")
