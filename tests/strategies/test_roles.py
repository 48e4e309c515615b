"""The strategies' share of the database roles (project/db_roles.py), proven with real PostgreSQL
refusals: the web inserts a fresh strategy and changes only what the owner controls; the engine
inserts a trade only as the next run of an ACTIVE strategy, within its caps; no role raises a cap,
changes a strategy's pair or brings an ended one back; strategy events are append-only."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone

from apps.chain.models import Chain, Dex, Token
from apps.strategies.models import Strategy
from apps.strategies.transition import event_append
from apps.wallets.models import Wallet
from tests.gateway.conftest import DAI, USDC, alice, registry  # noqa: F401 - fixtures
from tests.test_db_roles import as_role  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def strategy() -> Strategy:
    owner = get_user_model().objects.create(username="owner")
    chain = Chain.objects.create(chain_id=31337, name="dev")
    Token.objects.create(chain=chain, address=USDC, symbol="dUSDC", name="u", decimals=6)
    Token.objects.create(chain=chain, address=DAI, symbol="dDAI", name="d", decimals=18)
    dex = Dex.objects.create(chain=chain, name="dex", router="0x" + "11" * 20, factory="0x" + "22" * 20)
    wallet = Wallet.objects.create(owner=owner, label="w", key_backend="keystore", status="active")
    now = timezone.now()
    strategy = Strategy.objects.create(
        owner=owner,
        wallet=wallet,
        chain=chain,
        dex=dex,
        path=[USDC, DAI],
        kind="recurring",
        params={"amount_per_run": "10", "interval_seconds": 60, "start_at": now.isoformat()},
        idempotency_key="roles-1",
        total_amount_in=100,
        max_per_run=10,
        max_slippage_bps=50,
        max_runs=10,
        anchor_at=now,
        next_run_at=now,
    )
    event_append(strategy, "created", to_state="ACTIVE")
    return strategy


def _refused(conn, sql: str, params=(), error=psycopg.errors.InsufficientPrivilege) -> None:
    with pytest.raises(error):
        conn.execute(sql, params)


def _insert_trade(conn, strategy: Strategy, *, key: str, amount: int = 10):
    return conn.execute(
        "INSERT INTO trades_trade (owner_id, wallet_id, chain_id, dex_id, path, native, amount_in, "
        "slippage_bps, deadline, idempotency_key, state, version, audit_head, reason, created_at, "
        "updated_at) VALUES (%s, %s, %s, %s, %s, '', %s, 50, %s, %s, 'PENDING', 0, '', '', now(), now())",
        [
            strategy.owner_id,
            strategy.wallet_id,
            strategy.chain_id,
            strategy.dex_id,
            list(strategy.path),
            amount,
            timezone.now() + timedelta(minutes=10),
            key,
        ],
    )


def test_the_web_changes_only_what_the_owner_controls(as_role, strategy):  # noqa: F811
    web = as_role("custos_api")
    web.execute(
        "UPDATE strategies_strategy SET state = 'PAUSED', version = version + 1 WHERE id = %s", [strategy.pk]
    )
    web.execute("UPDATE strategies_strategy SET total_amount_in = 50 WHERE id = %s", [strategy.pk])
    for column, value in [
        ("runs_created", 0),
        ("amount_committed", 0),
        ("high_water_mark", 2),
        ("last_sequence", 7),
    ]:
        sql = f"UPDATE strategies_strategy SET {column} = %s WHERE id = %s"  # noqa: S608
        _refused(web, sql, [value, strategy.pk])
    _refused(
        web,
        "INSERT INTO strategies_strategyrun (strategy_id, sequence, idempotency_key, trigger, outcome, "
        "reason, created_at) VALUES (%s, 1, %s, '{}', 'created', '', now())",
        [strategy.pk, f"strategy:{strategy.pk}:1"],
    )
    _refused(web, "DELETE FROM strategies_strategy WHERE id = %s", [strategy.pk])
    # A strategy that arrives with runs already counted: the row rule refuses it.
    _refused(
        web,
        "INSERT INTO strategies_strategy (owner_id, wallet_id, chain_id, dex_id, path, kind, params, "
        "idempotency_key, state, version, total_amount_in, max_per_run, max_slippage_bps, max_runs, "
        "anchor_at, catch_up, awaiting_trade, last_sequence, runs_created, runs_settled, amount_committed, "
        "judge_problem, oco_group, reason, created_at, updated_at) VALUES (%s, %s, %s, %s, %s, 'recurring', "
        "'{}', 'roles-2', 'ACTIVE', 0, 100, 10, 50, 10, now(), false, false, 0, 0, 0, 90, '', '', '', now(), "
        "now())",
        [strategy.owner_id, strategy.wallet_id, strategy.chain_id, strategy.dex_id, list(strategy.path)],
    )
    # The trigger refuses a raised cap or a changed pair to every role, the table's owner included.
    for conn in (web, as_role("custos_engine")):
        _refused(
            conn,
            "UPDATE strategies_strategy SET total_amount_in = 1000 WHERE id = %s",
            [strategy.pk],
            psycopg.errors.RestrictViolation,
        )
    _refused(
        as_role("custos_engine"),
        "UPDATE strategies_strategy SET path = %s WHERE id = %s",
        [[DAI, USDC], strategy.pk],
        psycopg.errors.RestrictViolation,
    )
    _refused(
        as_role("custos_engine"),
        "UPDATE strategies_strategyevent SET kind = 'x'",
        (),
        psycopg.errors.RestrictViolation,
    )


def test_the_engine_inserts_only_the_next_runs_trade_within_the_caps(as_role, strategy):  # noqa: F811
    engine, web = as_role("custos_engine"), as_role("custos_api")
    for key, amount in [
        ("cli-not-a-run", 10),
        (f"strategy:{strategy.pk}:2", 10),  # not the next sequence
        (f"strategy:{strategy.pk}:1", 11),  # over max_per_run
    ]:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            _insert_trade(engine, strategy, key=key, amount=amount)
    web.execute("UPDATE strategies_strategy SET state = 'PAUSED' WHERE id = %s", [strategy.pk])
    with pytest.raises(psycopg.errors.InsufficientPrivilege):  # a paused strategy runs nothing
        _insert_trade(engine, strategy, key=f"strategy:{strategy.pk}:1")
    web.execute("UPDATE strategies_strategy SET state = 'ACTIVE' WHERE id = %s", [strategy.pk])
    assert _insert_trade(engine, strategy, key=f"strategy:{strategy.pk}:1").rowcount == 1


def test_the_owner_services_and_the_tick_work_as_their_own_roles(alice, registry, settings):  # noqa: F811
    """The services as the web process runs them (custos_api), the tick as the execution worker runs it
    (custos_engine): every write they make is one their role may make."""
    from apps.strategies.engine import strategies_tick
    from apps.strategies.services import (
        strategy_cancel,
        strategy_caps_lower,
        strategy_create,
        strategy_pause,
        strategy_resume,
    )
    from project.db_roles import setup_roles
    from tests.factories import grant_scope

    setup_roles(database=connection.settings_dict["NAME"])
    wallet = alice.active_wallet()
    grant_scope(wallet)

    def set_role(role: str):
        with connection.cursor() as cursor:
            cursor.execute(f"SET ROLE {role}")

    try:
        set_role("custos_api")
        strategy = strategy_create(
            owner=alice.user,
            idempotency_key="as-web",
            wallet=wallet,
            dex=registry["dex"],
            path=[USDC, DAI],
            kind="recurring",
            params={"amount_per_run": "5", "interval_seconds": 3600},
            total_amount_in=50 * 10**6,
            max_slippage_bps=50,
        ).strategy
        strategy = strategy_pause(strategy=strategy)
        strategy = strategy_resume(strategy=strategy, catch_up=True)
        strategy = strategy_caps_lower(strategy=strategy, max_runs=3)
        set_role("custos_engine")
        assert strategies_tick().get("create") == 1  # the run, its trade and its first event
        set_role("custos_api")
        strategy = strategy_cancel(strategy=Strategy.objects.get(pk=strategy.pk))
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET ROLE")
    assert strategy.state == "CANCELLED"
    assert strategy.runs.get().trade.idempotency_key == f"strategy:{strategy.pk}:1"
