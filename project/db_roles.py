"""Least-privilege PostgreSQL roles, one per process kind, and the privileges each is granted.

Tables are classified by Django model, so a new model gets no write access anywhere until a line
here grants it. `manage.py setup_db_roles` applies this (idempotently); each process connects as
its own role (`DB_ROLE`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.apps import apps
from django.db import connection

# What the RPC pool writes about an endpoint (apps/chain/pool.py), from any process that reads a chain.
ENDPOINT_HEALTH_COLUMNS = (
    "health",
    "health_until",
    "consecutive_failures",
    "latency_ewma_ms",
    "last_error",
    "last_head",
    "last_checked_at",
)

# Django's own bookkeeping tables every process may read.
DJANGO_READ = {"contenttypes", "auth", "sessions", "admin", "django_celery_beat"}


@dataclass(frozen=True)
class RolePolicy:
    read: frozenset[str]  # app labels or "app.model"; "*" = every table
    write: frozenset[str] = frozenset()  # SELECT, INSERT, UPDATE, DELETE
    insert: frozenset[str] = frozenset()  # SELECT, INSERT only
    update_columns: dict[str, tuple[str, ...]] = field(default_factory=dict)


POLICIES: dict[str, RolePolicy] = {
    # web: the API and the admin. Creates wallets (keys come from the signer), grants and revokes
    # scopes, creates and cancels trades; never writes signing records.
    "custos_api": RolePolicy(
        read=frozenset({"*"}),
        write=frozenset(
            {
                "auth",
                "admin",
                "sessions",
                "django_celery_beat",
                "gateway",
                "wallets.wallet",
                "wallets.permissionscope",
                "chain",
                "trades.trade",
                "trades.tradeevent",
                # ML advisory (issue 8): the owner turns a scope's advisory gate on and off.
                "ml.advicegate",
            }
        ),
    ),
    # execution, watcher and beat: move trades, allocate nonces, probe endpoints, keep headers.
    "custos_engine": RolePolicy(
        read=frozenset({"*"}),
        write=frozenset({"trades", "wallets.noncecursor", "chain", "watcher", "django_celery_beat"}),
    ),
    # signer: reads trades and scopes, writes only what signing produces.
    "custos_signer": RolePolicy(
        read=frozenset({"trades", "wallets", "chain", "signing"} | DJANGO_READ),
        insert=frozenset({"signing.signingrecord", "signing.signingrefusal", "wallets.spendledgerentry"}),
        update_columns={"wallets.wallet": ("key_id", "address", "status")},
    ),
    # market: reads chains, tokens and which scopes are active (to refresh only their assets), writes
    # prices; never trades. On-chain prices go through the RPC pool, which records endpoint health.
    "custos_market": RolePolicy(
        read=frozenset({"market", "chain", "wallets.permissionscope"} | DJANGO_READ),
        write=frozenset({"market"}),
        update_columns={"chain.rpcendpoint": ENDPOINT_HEALTH_COLUMNS},
    ),
    # ml: reads market data, writes model versions and advice (issue 8). Not the advisory gates: a
    # gate is the owner's setting on a scope, written from the web (custos_api).
    "custos_ml": RolePolicy(
        read=frozenset({"market", "chain", "ml"} | DJANGO_READ),
        write=frozenset({"ml.modelversion", "ml.advice"}),
    ),
}


def _tables() -> dict[str, tuple[str, str | None]]:
    """'app.model' -> (table, identity column or None), including many-to-many tables."""
    out = {}
    for model in apps.get_models(include_auto_created=True):
        pk = model._meta.pk
        identity = pk.column if pk.get_internal_type() in {"AutoField", "BigAutoField"} else None
        out[f"{model._meta.app_label}.{model._meta.model_name}"] = (model._meta.db_table, identity)
    return out


def _matches(key: str, selectors: frozenset[str]) -> bool:
    return "*" in selectors or key in selectors or key.split(".")[0] in selectors


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def statements_for(role: str, policy: RolePolicy, database: str) -> list[str]:
    stmts = [
        f"GRANT CONNECT ON DATABASE {_q(database)} TO {_q(role)}",
        f"GRANT USAGE ON SCHEMA public TO {_q(role)}",
        f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {_q(role)}",
        f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {_q(role)}",
        f"GRANT SELECT ON django_migrations TO {_q(role)}",
    ]
    for key, (table, identity) in sorted(_tables().items()):
        privileges = []
        if _matches(key, policy.write):
            privileges = ["SELECT", "INSERT", "UPDATE", "DELETE"]
        elif _matches(key, policy.insert):
            privileges = ["SELECT", "INSERT"]
        elif _matches(key, policy.read) or key in policy.update_columns:
            privileges = ["SELECT"]
        if privileges:
            stmts.append(f"GRANT {', '.join(privileges)} ON {_q(table)} TO {_q(role)}")
        if "INSERT" in privileges and identity:
            stmts.append(
                f"DO $$ DECLARE s text := pg_get_serial_sequence('{table}', '{identity}'); BEGIN "
                f"IF s IS NOT NULL THEN EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE %s TO {role}', s); "
                f"END IF; END $$"
            )
        columns = policy.update_columns.get(key)
        if columns:
            stmts.append(f"GRANT UPDATE ({', '.join(_q(c) for c in columns)}) ON {_q(table)} TO {_q(role)}")
    return stmts


def setup_roles(*, database: str) -> list[str]:
    """Create missing roles and (re)apply every grant; returns the roles handled."""
    with connection.cursor() as cursor:
        for role, policy in POLICIES.items():
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
            if cursor.fetchone() is None:
                cursor.execute(f"CREATE ROLE {_q(role)} LOGIN")
            for stmt in statements_for(role, policy, database):
                cursor.execute(stmt)
    return list(POLICIES)
