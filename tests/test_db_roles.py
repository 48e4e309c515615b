"""Each process's PostgreSQL role, proven with real permission errors."""

from __future__ import annotations

import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from apps.chain.models import Chain
from apps.wallets.models import Wallet
from project.db_roles import setup_roles

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def as_role():
    setup_roles(database=connection.settings_dict["NAME"])
    db = connection.settings_dict
    opened = []

    def connect(role: str) -> psycopg.Connection:
        conn = psycopg.connect(
            host=db["HOST"], port=db["PORT"], dbname=db["NAME"], user=role, autocommit=True
        )
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        conn.close()


@pytest.fixture
def rows():
    owner = get_user_model().objects.create(username="owner")
    chain = Chain.objects.create(chain_id=31337, name="dev")
    wallet = Wallet.objects.create(owner=owner, label="w", key_backend="keystore")
    return {"owner": owner, "chain": chain, "wallet": wallet}


def _denied(conn: psycopg.Connection, sql: str, params=()) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(sql, params)


def test_signer_cannot_touch_trades_or_scopes_but_can_record_signing(as_role, rows):
    signer = as_role("custos_signer")
    _denied(signer, "UPDATE trades_trade SET state = 'SETTLED'")
    _denied(signer, "DELETE FROM trades_trade")
    _denied(signer, "UPDATE wallets_permissionscope SET max_amount_in = 10")
    _denied(signer, "UPDATE wallets_wallet SET owner_id = %s", [rows["owner"].pk])
    _denied(signer, "UPDATE wallets_wallet SET active = true")
    _denied(signer, "UPDATE trades_chaintransaction SET nonce = 1")
    # What it may do: read trades and scopes, record a wallet's key reference.
    signer.execute("SELECT count(*) FROM trades_trade").fetchone()
    signer.execute("SELECT count(*) FROM wallets_permissionscope").fetchone()
    updated = signer.execute(
        "UPDATE wallets_wallet SET key_id = 'k1', status = 'active' WHERE id = %s", [rows["wallet"].pk]
    ).rowcount
    assert updated == 1


def test_ml_cannot_write_trades_wallets_or_scopes(as_role, rows):
    ml = as_role("custos_ml")
    _denied(ml, "UPDATE trades_trade SET state = 'SETTLED'")
    _denied(ml, "UPDATE wallets_wallet SET label = 'x'")
    _denied(ml, "UPDATE wallets_permissionscope SET active = true")
    _denied(
        ml,
        "INSERT INTO wallets_wallet (owner_id, label, key_backend, key_id, status, active, created_at) "
        "VALUES (%s, 'x', 'keystore', '', 'active', true, now())",
        [rows["owner"].pk],
    )
    _denied(ml, "SELECT * FROM wallets_wallet")  # not even a read
    assert ml.execute("SELECT count(*) FROM chain_chain").fetchone()[0] == 1


def test_api_cannot_write_signing_records(as_role, rows):
    api = as_role("custos_api")
    _denied(api, "DELETE FROM signing_signingrecord")
    _denied(api, "UPDATE signing_signingrecord SET tx_hash = '0x'")
    _denied(
        api,
        "INSERT INTO signing_signingrefusal (trade_id, attempt, code, detail, created_at) "
        "VALUES (1, 1, 'x', 'x', now())",
    )
    # It does create wallets (the key comes later from the signer).
    api.execute(
        "INSERT INTO wallets_wallet (owner_id, label, key_backend, key_id, status, active, created_at) "
        "VALUES (%s, 'new', 'keystore', '', 'provisioning', true, now())",
        [rows["owner"].pk],
    )


def test_engine_cannot_write_scopes_or_signing_records(as_role, rows):
    engine = as_role("custos_engine")
    _denied(engine, "UPDATE wallets_permissionscope SET max_amount_in = 10")
    _denied(engine, "DELETE FROM signing_signingrecord")
    _denied(engine, "UPDATE wallets_wallet SET address = NULL")


# --- ML advisory (issue 8) ----------------------------------------------------------------------
def test_ml_writes_model_versions_and_advice_but_not_advisory_gates(as_role, rows):
    ml = as_role("custos_ml")
    version_id = ml.execute(
        "INSERT INTO ml_modelversion (name, architecture, horizon_bars, bar_seconds, features, feature_spec,"
        " feature_stats, hidden_units, trained_on, train_start, train_end, samples, metrics, seed, device,"
        " weights_file, weights_sha256, active, created_at) VALUES ('m', 'mlp', 1, 3600, '[]', '{}', '{}', 8,"
        " '[]', now(), now(), '{}', '{}', 1, 'cpu', 'm.pt', repeat('0', 64), false, now()) RETURNING id"
    ).fetchone()[0]
    assert ml.execute("UPDATE ml_modelversion SET active = true WHERE id = %s", [version_id]).rowcount == 1
    ml.execute("DELETE FROM ml_advice")
    # A scope's advisory gate is the owner's setting: the ml process can neither change nor add one.
    _denied(ml, "UPDATE ml_advicegate SET enabled = false")
    _denied(ml, "DELETE FROM ml_advicegate")
    _denied(ml, "UPDATE wallets_permissionscope SET max_amount_in = 10")
    _denied(ml, "DELETE FROM trades_trade")


def test_web_and_engine_read_advice_and_only_the_web_sets_advisory_gates(as_role, rows):
    api, engine = as_role("custos_api"), as_role("custos_engine")
    for conn in (api, engine):
        conn.execute("SELECT count(*) FROM ml_advice").fetchone()
        conn.execute("SELECT count(*) FROM ml_advicegate").fetchone()
        conn.execute("SELECT count(*) FROM ml_modelversion").fetchone()
        _denied(conn, "DELETE FROM ml_advice")
        _denied(conn, "UPDATE ml_modelversion SET active = false")
    api.execute("UPDATE ml_advicegate SET enabled = false")
    _denied(engine, "UPDATE ml_advicegate SET enabled = false")
    _denied(as_role("custos_signer"), "SELECT count(*) FROM ml_advice")


# --- market data (issue 7) ----------------------------------------------------------------------
def test_market_reads_active_scopes_records_endpoint_health_and_writes_nothing_else(as_role, rows):
    from apps.chain.models import RpcEndpoint

    endpoint = RpcEndpoint.objects.create(chain=rows["chain"], name="dev", url="http://127.0.0.1:1")
    market = as_role("custos_market")
    market.execute("SELECT count(*) FROM wallets_permissionscope WHERE active").fetchone()
    updated = market.execute(
        "UPDATE chain_rpcendpoint SET health = 'unreachable', consecutive_failures = 1 WHERE id = %s",
        [endpoint.pk],
    ).rowcount
    assert updated == 1
    _denied(market, "UPDATE chain_rpcendpoint SET url = 'http://evil' WHERE id = %s", [endpoint.pk])
    _denied(market, "UPDATE wallets_permissionscope SET max_amount_in = 10")
    _denied(market, "SELECT count(*) FROM wallets_wallet")
    _denied(market, "SELECT count(*) FROM signing_signingrecord")
    _denied(market, "DELETE FROM trades_trade")
