"""The narrowed roles (project/db_roles.py) and the triggers every role meets, proven against the real
PostgreSQL: each forbidden write fails with a permission error (a missing privilege, or a row rule:
SQLSTATE 42501) or the trigger's error (23001), connected as the role; and what each process must do
still works, run through its own code with Django connected as its role.

The premise: the web process, its role and any API token may be in an attacker's hands."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from apps.chain.models import RpcEndpoint
from apps.trades import real_money_transaction_manager as rmtm
from apps.trades import tasks
from apps.trades.audit import audit_verify
from apps.trades.models import ChainTransaction, OwnerRequest, Trade, TradeEvent
from apps.trades.real_money_transaction_manager.transition import transition
from apps.wallets.models import AuthorityKey, PermissionScope
from project.db import serializable_attempts
from project.db_roles import POLICIES, setup_roles
from tests.factories import UserFactory, grant_scope
from tests.gateway.conftest import DAI, USDC, Owner, registry, submitted_trade, trade_body  # noqa: F401
from tests.test_db_roles import as_role  # noqa: F401 - the fixture

pytestmark = pytest.mark.django_db(transaction=True)

ROLES = sorted(POLICIES)
HEX40 = "0x" + "ab" * 20
EVENT_INSERT = (
    "INSERT INTO trades_tradeevent (trade_id, kind, from_state, to_state, data, prev_hash, hash, created_at)"
)
KEY_INSERT = (
    "INSERT INTO wallets_authoritykey (owner_id, address, label, created_at) VALUES (%s, %s, '', now())"
)


# --- helpers --------------------------------------------------------------------------------------


def _denied(conn: psycopg.Connection, sql: str, params=()) -> psycopg.errors.InsufficientPrivilege:
    """A missing privilege, or a row rule refusing the row: both SQLSTATE 42501."""
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
        conn.execute(sql, params)
    return refused.value


def _row_rule_refuses(conn: psycopg.Connection, sql: str, params=()) -> None:
    assert "row-level security" in str(_denied(conn, sql, params))


def _trigger_refuses(conn: psycopg.Connection, sql: str, params=(), *, says: str = "") -> None:
    with pytest.raises(psycopg.errors.RestrictViolation) as refused:
        conn.execute(sql, params)
    assert says in str(refused.value)


@contextmanager
def django_as(role: str) -> Iterator[None]:
    """Django's own connection as `role` (a fresh one), so a process's real code runs with exactly
    that role's rights; the test's database owner again afterwards."""
    db = connection.settings_dict
    saved = db["USER"], db["PASSWORD"]
    connection.close()
    db["USER"], db["PASSWORD"] = role, ""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_user")
            assert cursor.fetchone()[0] == role
        yield
        with connection.cursor() as cursor:  # still that role: nothing reconnected as someone else
            cursor.execute("SELECT current_user")
            assert cursor.fetchone()[0] == role
    finally:
        connection.close()
        db["USER"], db["PASSWORD"] = saved


def _queued(redis_client, queue: str) -> list[tuple[str, list]]:
    out = []
    for raw in redis_client.lrange(queue, 0, -1):
        message = json.loads(raw)
        body = json.loads(base64.b64decode(message["body"]))
        out.append((message["headers"]["task"], list(body[0])))
    return out


def _walk(trade: Trade, *methods: str) -> Trade:
    """Move a trade with the engine's own checked transition primitive (as the owner of the database)."""
    for method in methods:
        for attempt in serializable_attempts(label=f"test {method}"):
            with attempt:
                trade = Trade.objects.get(pk=trade.pk)
                transition(trade, method)
    return Trade.objects.get(pk=trade.pk)


TO_SETTLED = ("start_simulation", "start_validation", "start_signing", "start_confirming", "settle")


@pytest.fixture
def world(db, redis_client, keystore, registry):  # noqa: F811 - the imported fixture
    setup_roles(database=connection.settings_dict["NAME"])
    alice = Owner("alice")
    wallet = alice.active_wallet()
    trade = submitted_trade(alice, registry, wallet)
    endpoint = RpcEndpoint.objects.create(chain=registry["chain"], name="node", url="http://127.0.0.1:1")
    return {"alice": alice, "wallet": wallet, "trade": trade, "endpoint": endpoint, **registry}


def _signed_scope(wallet) -> PermissionScope:
    return grant_scope(wallet)  # proposed, then signed by a registered authority key of its owner


# --- every role: the audit trail is append-only --------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_no_role_can_update_or_delete_an_audit_event(as_role, world, role):  # noqa: F811
    conn = as_role(role)
    event = world["trade"].events.get()
    _denied(conn, "UPDATE trades_tradeevent SET data = '{}' WHERE id = %s", [event.pk])
    _denied(conn, "DELETE FROM trades_tradeevent WHERE id = %s", [event.pk])
    _denied(conn, "DELETE FROM trades_tradeevent")
    _denied(conn, "TRUNCATE trades_tradeevent")
    assert TradeEvent.objects.get(pk=event.pk).hash == event.hash


def test_not_even_the_tables_owner_can_update_or_delete_an_audit_event(world):
    """The trigger stands behind the privileges: the database owner (a process started without
    DB_ROLE, a mistaken script) is refused too. TRUNCATE fires no row trigger: the test framework's
    flush keeps working."""
    db = connection.settings_dict
    with psycopg.connect(
        host=db["HOST"],
        port=db["PORT"],
        dbname=db["NAME"],
        user=db["USER"],
        password=db["PASSWORD"] or None,
        autocommit=True,
    ) as owner:
        event = world["trade"].events.get()
        _trigger_refuses(
            owner, "UPDATE trades_tradeevent SET kind = 'x' WHERE id = %s", [event.pk], says="append-only"
        )
        _trigger_refuses(owner, "DELETE FROM trades_tradeevent WHERE id = %s", [event.pk], says="append-only")
        assert audit_verify()[1] is None
        owner.execute("TRUNCATE trades_tradeevent")
    assert not TradeEvent.objects.exists()


# --- the web (custos_api) ------------------------------------------------------------------------


def test_web_cannot_move_a_trade_or_touch_its_engine_columns(as_role, world):  # noqa: F811
    api = as_role("custos_api")
    trade = _walk(world["trade"], *TO_SETTLED)
    assert trade.state == "SETTLED"
    _denied(api, "UPDATE trades_trade SET state = 'SIGNING' WHERE id = %s", [trade.pk])
    _denied(api, "UPDATE trades_trade SET audit_head = '' WHERE id = %s", [trade.pk])
    _denied(api, "UPDATE trades_trade SET amount_out_min = 0 WHERE id = %s", [trade.pk])
    _denied(api, "DELETE FROM trades_trade WHERE id = %s", [trade.pk])
    _denied(api, "UPDATE trades_chaintransaction SET nonce = 1")
    _denied(api, "UPDATE trades_ownerrequest SET handled_at = now(), outcome = 'cancelled'")
    assert Trade.objects.get(pk=trade.pk).state == "SETTLED"


def test_web_inserts_only_pending_trades_with_nothing_the_engine_fills_in(as_role, world):  # noqa: F811
    api = as_role("custos_api")
    insert = (
        "INSERT INTO trades_trade (owner_id, wallet_id, chain_id, dex_id, path, native, amount_in,"
        " slippage_bps, deadline, idempotency_key, state, version, audit_head, reason, quoted_amount_out,"
        " created_at, updated_at) VALUES (%s, %s, %s, %s, %s, '', 1, 50, now() + interval '1 hour', %s,"
        " %s, %s, '', '', %s, now(), now())"
    )
    rows = [world["alice"].user.pk, world["wallet"].pk, world["chain"].pk, world["dex"].pk, [USDC, DAI]]
    _row_rule_refuses(api, insert, [*rows, "settled", "SETTLED", 0, None])
    _row_rule_refuses(api, insert, [*rows, "versioned", "PENDING", 7, None])
    _row_rule_refuses(api, insert, [*rows, "quoted", "PENDING", 0, 10**30])


def test_web_appends_only_a_trades_first_event(as_role, world):  # noqa: F811
    """A forged event on an existing trade's timeline (here, a fake settlement) is refused: the web may
    insert only the `submitted` event its new trade's audit head already names."""
    api = as_role("custos_api")
    trade = world["trade"]
    _row_rule_refuses(
        api,
        f"{EVENT_INSERT} VALUES (%s, 'settle', 'CONFIRMING', 'SETTLED', '{{}}', %s, %s, now())",
        [trade.pk, trade.audit_head, "f" * 64],
    )
    _row_rule_refuses(
        api,
        f"{EVENT_INSERT} VALUES (%s, 'submitted', '', 'PENDING', '{{}}', %s, %s, now())",
        [trade.pk, trade.audit_head, "e" * 64],
    )


def test_web_cannot_write_rpc_endpoints_authority_keys_nonces_or_the_ledger(as_role, world):  # noqa: F811
    api = as_role("custos_api")
    chain, endpoint = world["chain"], world["endpoint"]
    _denied(api, "UPDATE chain_rpcendpoint SET url = 'http://evil' WHERE id = %s", [endpoint.pk])
    _denied(api, "UPDATE chain_rpcendpoint SET health = 'alive'")
    _denied(api, "DELETE FROM chain_rpcendpoint")
    _denied(
        api,
        "INSERT INTO chain_rpcendpoint (chain_id, name, url, kind, priority, weight, rate_limit_per_second,"
        " active, last_error, health, consecutive_failures) VALUES (%s, 'evil', 'http://evil', 'private',"
        " 0, 1, 0, true, '', 'alive', 0)",
        [chain.pk],
    )
    _denied(
        api,
        KEY_INSERT,
        [world["alice"].user.pk, HEX40],
    )
    _denied(api, "UPDATE wallets_authoritykey SET removed_at = NULL")
    _denied(api, "UPDATE wallets_noncecursor SET next_nonce = 0")
    _denied(api, "DELETE FROM wallets_spendledgerentry")
    _denied(api, "UPDATE wallets_wallet SET key_id = 'someone-elses-key'")
    _denied(api, "UPDATE wallets_wallet SET owner_id = %s", [world["alice"].user.pk])
    _denied(
        api,
        "INSERT INTO django_celery_beat_intervalschedule (every, period) VALUES (1, 'seconds')",
    )
    # What stays the web's: the registry's display rows, a wallet's label.
    assert (
        api.execute("UPDATE chain_token SET name = 'Dev USDC!' WHERE chain_id = %s", [chain.pk]).rowcount == 2
    )
    api.execute(
        "INSERT INTO chain_dex (chain_id, name, kind, router, factory)"
        " VALUES (%s, 'other', 'uniswap_v2', %s, %s)",
        [chain.pk, HEX40, HEX40],
    )
    assert api.execute("UPDATE wallets_wallet SET label = 'renamed', active = false").rowcount == 1
    _row_rule_refuses(
        api,
        "INSERT INTO wallets_wallet (owner_id, label, key_backend, key_id, status, active, created_at)"
        " VALUES (%s, 'copy', 'keystore', %s, 'active', true, now())",
        [world["alice"].user.pk, world["wallet"].key_id],
    )


def test_web_cannot_un_revoke_a_scope_or_edit_a_signed_one(as_role, world):  # noqa: F811
    api = as_role("custos_api")
    scope = _signed_scope(world["wallet"])
    # Its limits are not even a column the web may update; the trigger stands behind that.
    _denied(api, "UPDATE wallets_permissionscope SET max_amount_in = 10 WHERE id = %s", [scope.pk])
    _denied(api, "UPDATE wallets_permissionscope SET valid_until = now() + interval '9 years'")
    _trigger_refuses(
        api,
        "UPDATE wallets_permissionscope SET signature = %s WHERE id = %s",
        ["0x" + "11" * 65, scope.pk],
        says="signature",
    )
    # Revoking is the web's (the owner narrows without a signature); un-revoking is nobody's.
    assert (
        api.execute(
            "UPDATE wallets_permissionscope SET active = false, revoked_at = now() WHERE id = %s", [scope.pk]
        ).rowcount
        == 1
    )
    _trigger_refuses(
        api,
        "UPDATE wallets_permissionscope SET revoked_at = NULL WHERE id = %s",
        [scope.pk],
        says="un-revoked",
    )
    _trigger_refuses(
        api, "UPDATE wallets_permissionscope SET active = true WHERE id = %s", [scope.pk], says="active again"
    )
    # Revoking again (the endpoint is idempotent) moves nothing back.
    assert (
        api.execute(
            "UPDATE wallets_permissionscope SET active = false, revoked_at = now() WHERE id = %s", [scope.pk]
        ).rowcount
        == 1
    )
    scope.refresh_from_db()
    assert scope.status_at(timezone.now()) == "revoked"


def test_web_inserts_only_proposed_scopes(as_role, world):  # noqa: F811
    api = as_role("custos_api")
    proposed = grant_scope(world["wallet"], signed=False)
    columns = [
        f.column
        for f in PermissionScope._meta.concrete_fields
        if f.column not in {"id", "signature", "signed_by"}
    ]
    listed = ", ".join(columns)  # the model's own column names
    copy = (
        f"INSERT INTO wallets_permissionscope ({listed}, signature, signed_by)"  # noqa: S608
        f" SELECT {listed}, %s, %s FROM wallets_permissionscope WHERE id = %s"
    )
    _row_rule_refuses(api, copy, ["0x" + "22" * 65, HEX40, proposed.pk])
    api.execute(copy, ["", "", proposed.pk])  # another proposal, for the owner to sign
    assert PermissionScope.objects.count() == 2


def test_no_role_edits_a_scope_once_proposed_not_even_the_owner(world):
    """The trigger holds for the database owner too: a signed scope's limits, window, addresses and
    signature never change, and a revoked one is never active again."""
    scope = _signed_scope(world["wallet"])
    for change in (
        {"max_amount_in": 10**30},
        {"valid_until": scope.valid_until + timedelta(days=365)},
        {"router": HEX40},
        {"allowed_selectors": ["0x12345678"]},
        {"fee_budget_wei": 10**30},
        {"wallet_address": HEX40},
        {"signed_by": HEX40},
    ):
        with pytest.raises(Exception, match="cannot change") as refused:
            PermissionScope.objects.filter(pk=scope.pk).update(**change)
        assert refused.value.__cause__.sqlstate == "23001", change
    PermissionScope.objects.filter(pk=scope.pk).update(active=False, revoked_at=timezone.now())
    with pytest.raises(Exception, match="un-revoked"):
        PermissionScope.objects.filter(pk=scope.pk).update(revoked_at=None)


# --- the web's own work, as the web role: submit, ask for a cancel; the engine carries it out -----


def test_the_web_role_submits_and_asks_for_a_cancel_and_the_engine_role_cancels(world, redis_client):
    alice, wallet = world["alice"], world["wallet"]
    redis_client.delete("execution")
    body = trade_body(world, wallet)
    with django_as("custos_api"):
        created = alice.client.post("/api/v1/trades", body, format="json", HTTP_IDEMPOTENCY_KEY="as-web-1")
        assert created.status_code == 201, created.json()
        trade_id = created.json()["id"]
        replayed = alice.client.post("/api/v1/trades", body, format="json", HTTP_IDEMPOTENCY_KEY="as-web-1")
        assert replayed.status_code == 201, replayed.json()
        asked = alice.client.post(f"/api/v1/trades/{trade_id}/cancel", format="json")
        assert asked.status_code == 202, asked.json()
    trade = Trade.objects.get(pk=trade_id)
    assert trade.state == "PENDING"
    assert replayed.json()["id"] == trade_id
    assert audit_verify(trade_ids=[trade_id])[1] is None  # the insert-only submission is one link
    request_id = asked.json()["request"]["id"]
    assert ("trades.owner_requests", [[request_id]]) in _queued(redis_client, "execution")

    with django_as("custos_engine"):
        tasks.owner_requests.apply(args=[[request_id]], throw=True)
    trade.refresh_from_db()
    assert trade.state == "CANCELLED"
    request = OwnerRequest.objects.get(pk=request_id)
    assert (request.outcome, request.handled_at is not None) == ("cancelled", True)
    assert [e.kind for e in trade.events.order_by("id")] == ["submitted", "cancel"]
    assert audit_verify()[1] is None


def test_the_web_role_asks_for_a_retry_and_the_engine_role_re_enqueues_the_step(
    world, redis_client, settings
):
    from apps.trades.services import admin_trades_retry

    settings.TRADE_STALL_SECONDS = 60
    trade = world["trade"]
    Trade.objects.filter(pk=trade.pk).update(updated_at=timezone.now() - timedelta(minutes=5))
    staff = UserFactory(username="operator", is_staff=True)
    with django_as("custos_api"):
        assert admin_trades_retry(trade_ids=[trade.pk], staff=staff) == [trade.pk]
    redis_client.delete("execution")
    with django_as("custos_engine"):
        assert rmtm.recovery.owner_requests_handle() == {OwnerRequest.objects.get().pk: "retried"}
    assert ("trades.simulate", [trade.pk]) in _queued(redis_client, "execution")
    event = trade.events.order_by("-id").first()
    assert (event.kind, event.data) == ("retry_requested", {"by": "operator", "state": "PENDING"})
    assert audit_verify()[1] is None


def test_the_web_role_runs_the_admin_consoles_cancel(world):
    from django.test import Client

    staff = UserFactory(username="operator", is_staff=True, is_superuser=True)
    staff.set_password("staff-password-for-tests")
    staff.save()
    trade = world["trade"]
    client = Client()
    with django_as("custos_api"):
        assert client.login(username="operator", password="staff-password-for-tests")
        action = {"action": "cancel_trades", "_selected_action": [trade.pk], "confirmed": "yes"}
        assert client.post("/admin/trades/trade/", action).status_code == 302
        assert client.get(f"/admin/trades/trade/{trade.pk}/change/").status_code == 200
    request = OwnerRequest.objects.get(trade=trade)
    with django_as("custos_engine"):
        tasks.owner_requests.apply(args=[[request.pk]], throw=True)
    assert Trade.objects.get(pk=trade.pk).state == "CANCELLED"


# --- the engine ----------------------------------------------------------------------------------


def test_engine_cannot_write_scopes_authority_keys_or_audit_history(as_role, world):  # noqa: F811
    engine = as_role("custos_engine")
    scope = _signed_scope(world["wallet"])
    PermissionScope.objects.filter(pk=scope.pk).update(active=False, revoked_at=timezone.now())
    _denied(engine, "UPDATE wallets_permissionscope SET revoked_at = NULL, active = true")
    _denied(engine, "UPDATE wallets_permissionscope SET signature = ''")
    _denied(engine, "DELETE FROM wallets_permissionscope")
    _denied(
        engine,
        KEY_INSERT,
        [world["alice"].user.pk, HEX40],
    )
    _denied(engine, "UPDATE wallets_authoritykey SET removed_at = now()")
    _denied(engine, "UPDATE trades_ownerrequest SET kind = 'retry'")
    _denied(engine, "DELETE FROM trades_ownerrequest")
    _denied(engine, "DELETE FROM trades_trade")
    # A trade it creates (a strategy's run) starts PENDING like any other.
    _row_rule_refuses(
        engine,
        "INSERT INTO trades_trade (owner_id, wallet_id, chain_id, dex_id, path, native, amount_in, deadline,"
        " idempotency_key, state, version, audit_head, reason, created_at, updated_at) VALUES (%s, %s, %s,"
        " %s, %s, '', 1, now() + interval '1 hour', 'engine-settled', 'SETTLED', 0, '', '', now(), now())",
        [world["alice"].user.pk, world["wallet"].pk, world["chain"].pk, world["dex"].pk, [USDC, DAI]],
    )
    _denied(engine, "DELETE FROM watcher_blockheader")
    _denied(engine, "UPDATE django_celery_beat_periodictask SET enabled = false")
    _denied(engine, "UPDATE wallets_wallet SET key_id = 'x'")


# --- the watcher ---------------------------------------------------------------------------------


def test_watcher_moves_only_what_its_verdicts_move(as_role, world):  # noqa: F811
    watcher = as_role("custos_watcher")
    pending = world["trade"]
    settled = _walk(
        submitted_trade(world["alice"], world, world["wallet"], key="settled"),
        *TO_SETTLED,
    )
    # Not a verdict: another state, or a trade the watcher has no verdict on.
    _row_rule_refuses(watcher, "UPDATE trades_trade SET state = 'SIGNING' WHERE id = %s", [settled.pk])
    assert (
        watcher.execute("UPDATE trades_trade SET state = 'CONFIRMING' WHERE id = %s", [pending.pk]).rowcount
        == 0
    )
    _denied(watcher, "UPDATE trades_trade SET amount_in = 1 WHERE id = %s", [settled.pk])
    _denied(watcher, "UPDATE trades_trade SET amount_out_min = 0")
    _denied(
        watcher,
        "INSERT INTO trades_ownerrequest (trade_id, kind, requested_by_id, reason, created_at, outcome)"
        " VALUES (%s, 'cancel', %s, '', now(), '')",
        [pending.pk, world["alice"].user.pk],
    )
    _denied(watcher, "UPDATE trades_chaintransaction SET nonce = 1, raw_signed = NULL")
    _denied(watcher, "UPDATE chain_rpcendpoint SET url = 'http://evil'")
    _denied(watcher, "UPDATE wallets_permissionscope SET revoked_at = NULL")
    _denied(watcher, "UPDATE wallets_noncecursor SET next_nonce = 0")
    _denied(watcher, "UPDATE django_celery_beat_periodictask SET enabled = false")
    _denied(watcher, "SELECT count(*) FROM signing_signingrecord")
    # Its own: headers and endpoint health.
    watcher.execute(
        "INSERT INTO watcher_blockheader (chain_id, number, hash, parent_hash, seen_at, canonical)"
        " VALUES (%s, 1, %s, %s, now(), true)",
        [world["chain"].pk, "0x" + "01" * 32, "0x" + "00" * 32],
    )
    assert watcher.execute("UPDATE chain_rpcendpoint SET health = 'unreachable'").rowcount == 1


def test_the_watcher_role_runs_its_verdicts(world, redis_client):
    """Both verdicts, through the engine's own functions, as the watcher process runs them."""
    settled = _walk(world["trade"], *TO_SETTLED)
    confirming = _walk(
        submitted_trade(world["alice"], world, world["wallet"], key="confirming"), *TO_SETTLED[:-1]
    )
    tx = ChainTransaction.objects.create(
        trade=confirming,
        sequence=0,
        kind="swap",
        chain_id=31337,
        sender=world["wallet"].address,
        nonce=0,
        to=HEX40,
        data="0x",
        gas=21000,
        max_fee_per_gas=1,
        max_priority_fee_per_gas=1,
        unsigned_hash="0x" + "02" * 32,
        tx_hash="0x" + "03" * 32,
        receipt_block_number=7,
        receipt_block_hash="0x" + "04" * 32,
        status="mined",
    )
    redis_client.delete("execution")
    with django_as("custos_watcher"):
        rmtm.trade_receipts_orphaned(
            trade_id=confirming.pk, orphaned={tx.pk: tx.receipt_block_hash}, reorg={}
        )
        rmtm.trade_finality_violate(trade_id=settled.pk, orphaned={}, reorg={"depth": 3})
    tx.refresh_from_db()
    assert (tx.receipt_block_number, tx.receipt_block_hash, tx.status) == (None, "", "broadcast")
    assert Trade.objects.get(pk=confirming.pk).events.order_by("-id").first().kind == "reconfirm"
    assert ("trades.broadcast", [confirming.pk]) in _queued(redis_client, "execution")
    assert Trade.objects.get(pk=settled.pk).state == "FINALITY_VIOLATED"
    assert audit_verify()[1] is None


# --- beat, market, ml, signer, authority ---------------------------------------------------------


def test_beat_keeps_its_schedule_and_touches_nothing_else(as_role, world):  # noqa: F811
    call_command("setup_schedules", verbosity=0)
    beat = as_role("custos_beat")
    assert beat.execute("UPDATE django_celery_beat_periodictask SET last_run_at = now()").rowcount > 0
    beat.execute("INSERT INTO django_celery_beat_intervalschedule (every, period) VALUES (7, 'seconds')")
    _denied(beat, "SELECT count(*) FROM trades_trade")
    _denied(beat, "UPDATE trades_trade SET state = 'SETTLED'")
    _denied(beat, "SELECT count(*) FROM wallets_permissionscope")
    _denied(beat, "UPDATE chain_rpcendpoint SET url = 'http://evil'")
    _denied(beat, "DELETE FROM watcher_blockheader")


@pytest.mark.parametrize("role", ["custos_market", "custos_ml"])
def test_market_and_ml_write_no_trade_wallet_scope_endpoint_or_authority_key(as_role, world, role):  # noqa: F811
    conn = as_role(role)
    _denied(conn, "UPDATE trades_trade SET state = 'SETTLED'")
    _denied(
        conn,
        "INSERT INTO trades_ownerrequest (trade_id, kind, requested_by_id, reason, created_at, outcome)"
        " VALUES (1, 'cancel', 1, '', now(), '')",
    )
    _denied(conn, "UPDATE wallets_permissionscope SET revoked_at = NULL")
    _denied(conn, "UPDATE wallets_authoritykey SET removed_at = NULL")
    _denied(conn, "UPDATE chain_rpcendpoint SET url = 'http://evil'")
    _denied(conn, "UPDATE chain_token SET address = %s", [HEX40])
    _denied(conn, "UPDATE django_celery_beat_periodictask SET enabled = false")


def test_signer_keeps_what_it_had_and_no_more(as_role, world):  # noqa: F811
    signer = as_role("custos_signer")
    signer.execute("SELECT count(*) FROM wallets_authoritykey").fetchone()  # it verifies scope signatures
    signer.execute("SELECT count(*) FROM trades_ownerrequest").fetchone()
    _denied(
        signer,
        KEY_INSERT,
        [world["alice"].user.pk, HEX40],
    )
    _denied(signer, "UPDATE wallets_permissionscope SET revoked_at = NULL")
    _denied(signer, "UPDATE trades_trade SET state = 'SETTLED'")
    _denied(signer, "UPDATE chain_rpcendpoint SET url = 'http://evil'")


def test_only_the_authority_role_registers_and_removes_authority_keys(as_role, world):  # noqa: F811
    owner = world["alice"].user
    with django_as("custos_authority"):
        call_command("authority_add", owner=owner.username, address=HEX40, label="ledger")
        call_command("authority_remove", owner=owner.username, address=HEX40)
    key = AuthorityKey.objects.get(owner=owner, label="ledger")
    assert key.removed_at is not None
    authority = as_role("custos_authority")
    _denied(authority, "UPDATE wallets_authoritykey SET address = %s", [HEX40.replace("ab", "cd")])
    _denied(authority, "UPDATE wallets_authoritykey SET owner_id = %s", [owner.pk])
    _denied(authority, "DELETE FROM wallets_authoritykey")
    _denied(authority, "SELECT count(*) FROM trades_trade")
    _denied(authority, "UPDATE wallets_permissionscope SET revoked_at = NULL")
    for role in set(POLICIES) - {"custos_authority"}:
        _denied(
            as_role(role),
            KEY_INSERT,
            [owner.pk, HEX40],
        )


def test_setup_roles_is_idempotent_and_leaves_one_set_of_row_rules(world):
    database = connection.settings_dict["NAME"]
    setup_roles(database=database)
    setup_roles(database=database)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tablename, policyname FROM pg_policies WHERE policyname LIKE 'custos_%%' ORDER BY 1, 2"
        )
        policies = cursor.fetchall()
    assert ("trades_tradeevent", "custos_api_insert") in policies
    assert ("trades_trade", "custos_watcher_update") in policies
    assert len(policies) == len(set(policies))
