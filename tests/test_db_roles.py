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
