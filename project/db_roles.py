"""Least-privilege PostgreSQL roles, one per process kind, and the privileges each is granted.

Tables are classified by Django model, so a new model gets no write access anywhere until a line
here grants it. `manage.py setup_db_roles` applies this (idempotently); each process connects as
its own role (`DB_ROLE`).

Three layers, from coarse to fine:

- table privileges (read, write, insert, update, insert_update) and column privileges
  (update_columns): what a role may touch at all;
- row rules (PostgreSQL row-level security, restrictive policies for one role): which rows a role may
  insert or change, e.g. the web may insert only PENDING trades with nothing the engine fills in;
- triggers for every role (migrations: trades 0007, wallets 0005): audit events are append-only, and
  a permission scope can only narrow once written.

The premise: the web process (API and admin), its role `custos_api` and any API token may be in an
attacker's hands. So the web records what the owner asks for (a trade, a cancel or retry request, a
proposed scope, the owner's signature, a revocation) and never moves a trade, writes an RPC endpoint,
an authority key, a nonce, a signing record or the spend ledger.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

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
class RowRule:
    """A restrictive row-level security policy for one role on one table: `check` is what an inserted
    or changed row must satisfy (WITH CHECK), `using` which existing rows an UPDATE may touch."""

    command: str  # "INSERT" or "UPDATE"
    check: str
    using: str | None = None


@dataclass(frozen=True)
class RolePolicy:
    read: frozenset[str]  # app labels or "app.model"; "*" = every table
    write: frozenset[str] = frozenset()  # SELECT, INSERT, UPDATE, DELETE
    insert: frozenset[str] = frozenset()  # SELECT, INSERT
    update: frozenset[str] = frozenset()  # SELECT, UPDATE
    insert_update: frozenset[str] = frozenset()  # SELECT, INSERT, UPDATE
    update_columns: dict[str, tuple[str, ...]] = field(default_factory=dict)  # SELECT, UPDATE (columns)
    row_rules: dict[str, tuple[RowRule, ...]] = field(default_factory=dict)


# Columns of a trade only the engine fills in: a trade the web inserts has none of them.
_ENGINE_FILLS_NOTHING_YET = (
    "state = 'PENDING' AND version = 0 AND quote_block IS NULL AND quoted_amount_out IS NULL"
    " AND amount_out_min IS NULL AND notional_usd IS NULL AND reason = ''"
)

POLICIES: dict[str, RolePolicy] = {
    # web: the API and the admin. Records what the owner asks for: trades (PENDING, with their first
    # audit event), cancel and retry requests (the engine carries them out), wallets (keys come from
    # the signer), proposed scopes, the owner's signature on one and revocations. Keeps its own
    # gateway, auth, session and admin tables and the chain registry's display rows.
    "custos_api": RolePolicy(
        read=frozenset({"*"}),
        write=frozenset(
            {
                "auth",
                "admin",
                "sessions",
                "gateway",
                # Display data: the signer checks the addresses the owner signed into a scope, not these.
                "chain.chain",
                "chain.dex",
                "chain.token",
                "chain.pair",
                # ML advisory (issue 8): the owner turns a scope's advisory gate on and off.
                "ml.advicegate",
            }
        ),
        insert=frozenset(
            {
                "trades.trade",
                "trades.tradeevent",
                "trades.ownerrequest",
                "wallets.wallet",
                "wallets.permissionscope",
            }
        ),
        update_columns={
            "wallets.wallet": ("label", "active"),
            # Attaching the owner's signature, revoking. The scope trigger refuses anything wider.
            "wallets.permissionscope": ("signature", "signed_by", "signed_at", "active", "revoked_at"),
        },
        row_rules={
            "trades.trade": (RowRule("INSERT", _ENGINE_FILLS_NOTHING_YET),),
            # Only a trade's first event, the one its audit head (set on insert) already names.
            "trades.tradeevent": (
                RowRule(
                    "INSERT",
                    "kind = 'submitted' AND from_state = '' AND to_state = 'PENDING'"
                    " AND prev_hash = encode(sha256(convert_to('custos-trade-' || trade_id, 'UTF8')), 'hex')"
                    " AND EXISTS (SELECT 1 FROM trades_trade t WHERE t.id = trade_id"
                    " AND t.audit_head = hash AND t.state = 'PENDING' AND t.version = 0)",
                ),
            ),
            "trades.ownerrequest": (RowRule("INSERT", "handled_at IS NULL AND outcome = ''"),),
            "wallets.wallet": (
                RowRule("INSERT", "key_id = '' AND address IS NULL AND status = 'provisioning'"),
            ),
            "wallets.permissionscope": (
                RowRule(
                    "INSERT",
                    "signature = '' AND signed_by = '' AND signed_at IS NULL"
                    " AND active AND revoked_at IS NULL",
                ),
            ),
        },
    ),
    # execution: moves trades (and creates a strategy's, PENDING like any other), freezes their
    # transactions, appends to their audit trails, allocates nonces, carries out owner requests, keeps
    # RPC endpoints (RPC_ENDPOINTS at start) and their health. Never scopes, authority keys or signing
    # records; never deletes a trade.
    "custos_engine": RolePolicy(
        read=frozenset({"*"}),
        write=frozenset({"chain", "wallets.noncecursor"}),
        insert_update=frozenset({"trades.trade", "trades.chaintransaction"}),
        insert=frozenset({"trades.tradeevent"}),
        update_columns={"trades.ownerrequest": ("handled_at", "outcome")},
        row_rules={"trades.trade": (RowRule("INSERT", _ENGINE_FILLS_NOTHING_YET),)},
    ),
    # watcher: block headers and reorgs, endpoint health (its chain.probe_endpoints), and the verdicts
    # on the trades a reorg touches, which it runs itself (apps/watcher/services.py): a CONFIRMING
    # trade's orphaned receipts cleared and the trade re-checked, a SETTLED one marked
    # FINALITY_VIOLATED. Only those columns, only from those states.
    "custos_watcher": RolePolicy(
        read=frozenset({"watcher", "chain", "trades", "wallets.wallet"} | DJANGO_READ),
        write=frozenset({"watcher"}),
        insert=frozenset({"trades.tradeevent"}),
        update_columns={
            "chain.rpcendpoint": ENDPOINT_HEALTH_COLUMNS,
            "trades.trade": ("state", "version", "updated_at", "audit_head", "reason"),
            "trades.chaintransaction": ("receipt_block_number", "receipt_block_hash", "status"),
        },
        row_rules={
            "trades.trade": (
                RowRule(
                    "UPDATE",
                    using="state IN ('CONFIRMING', 'SETTLED')",
                    check="state IN ('CONFIRMING', 'FINALITY_VIOLATED')",
                ),
            ),
        },
    ),
    # beat: reads and keeps its schedule; sends tasks, runs none.
    "custos_beat": RolePolicy(
        read=frozenset({"django_celery_beat"}),
        write=frozenset({"django_celery_beat"}),
    ),
    # signer: reads trades and scopes, writes only what signing produces.
    "custos_signer": RolePolicy(
        read=frozenset({"trades", "wallets", "chain", "signing"} | DJANGO_READ),
        insert=frozenset({"signing.signingrecord", "signing.signingrefusal", "wallets.spendledgerentry"}),
        update_columns={"wallets.wallet": ("key_id", "address", "status")},
    ),
    # authority: `manage.py authority_add` / `authority_remove`, run on the signer's host; the only role
    # that may register or remove the owner's authority keys.
    "custos_authority": RolePolicy(
        read=frozenset({"auth", "contenttypes", "wallets.authoritykey"}),
        insert=frozenset({"wallets.authoritykey"}),
        update_columns={"wallets.authoritykey": ("removed_at",)},
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

# --- strategies (apps/strategies, docs/strategies.md) ---------------------------------------------
# The web records what the owner asks for: a strategy (with nothing the tick fills in yet) and its
# owner events, and updates only the columns the owner controls (pause, resume and cancel; the caps;
# the next due time on resume). A trigger (strategies 0002) refuses, for every role, a raised cap, a
# changed pair or kind and an ended strategy coming back. The engine runs strategies: it writes them,
# their runs and events, and inserts each run's trade, and only that: a PENDING trade with nothing the
# engine fills in yet, keyed as the next run of an ACTIVE strategy of the same owner, wallet, DEX and
# path, within that strategy's caps. The signer judges the trade against the owner's scope as any.
_STRATEGY_OWNER_COLUMNS = (
    "state",
    "version",
    "updated_at",
    "reason",
    "next_run_at",
    "catch_up",
    "blind_since",
    "judge_problem",
    "total_amount_in",
    "max_per_run",
    "max_slippage_bps",
    "max_runs",
    "expires_at",
)
_STRATEGY_NOTHING_RUN_YET = (
    "state = 'ACTIVE' AND version = 0 AND last_sequence = 0 AND runs_created = 0 AND runs_settled = 0"
    " AND amount_committed = 0 AND NOT awaiting_trade AND high_water_mark IS NULL"
    " AND last_judged_at IS NULL AND blind_since IS NULL AND judge_problem = '' AND reason = ''"
)
_STRATEGY_RUN_TRADE = _ENGINE_FILLS_NOTHING_YET + (  # noqa: S608 - a row rule's constant SQL
    " AND EXISTS (SELECT 1 FROM strategies_strategy s WHERE s.state = 'ACTIVE'"
    " AND trades_trade.idempotency_key = 'strategy:' || s.id || ':' || (s.last_sequence + 1)"
    " AND s.owner_id = trades_trade.owner_id AND s.wallet_id = trades_trade.wallet_id"
    " AND s.dex_id = trades_trade.dex_id AND s.path = trades_trade.path"
    " AND trades_trade.amount_in <= LEAST(s.max_per_run, s.total_amount_in - s.amount_committed))"
)
_api, _engine = POLICIES["custos_api"], POLICIES["custos_engine"]
POLICIES["custos_api"] = replace(
    _api,
    insert=_api.insert | {"strategies.strategy", "strategies.strategyevent"},
    update_columns={**_api.update_columns, "strategies.strategy": _STRATEGY_OWNER_COLUMNS},
    row_rules={
        **_api.row_rules,
        "strategies.strategy": (
            RowRule("INSERT", _STRATEGY_NOTHING_RUN_YET),
            RowRule(
                "UPDATE",
                using="state IN ('ACTIVE', 'PAUSED')",
                check="state IN ('ACTIVE', 'PAUSED', 'CANCELLED')",
            ),
        ),
        "strategies.strategyevent": (
            RowRule("INSERT", "kind IN ('created', 'pause', 'resume', 'cancel', 'caps_lowered')"),
        ),
    },
)
POLICIES["custos_engine"] = replace(
    _engine,
    write=_engine.write | {"strategies"},
    insert=_engine.insert | {"trades.trade"},
    row_rules={**_engine.row_rules, "trades.trade": (RowRule("INSERT", _STRATEGY_RUN_TRADE),)},
)

# The prefix of every row-security policy setup_roles makes (and so may drop and remake).
POLICY_PREFIX = "custos_"


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


def privileges_of(key: str, policy: RolePolicy) -> list[str]:
    """The table privileges `policy` gives on the model `key`, in a fixed order."""
    granted = set()
    if _matches(key, policy.write):
        granted |= {"SELECT", "INSERT", "UPDATE", "DELETE"}
    if _matches(key, policy.insert_update):
        granted |= {"SELECT", "INSERT", "UPDATE"}
    if _matches(key, policy.insert):
        granted |= {"SELECT", "INSERT"}
    if _matches(key, policy.update):
        granted |= {"SELECT", "UPDATE"}
    if _matches(key, policy.read) or key in policy.update_columns:
        granted.add("SELECT")
    return [p for p in ("SELECT", "INSERT", "UPDATE", "DELETE") if p in granted]


def statements_for(role: str, policy: RolePolicy, database: str) -> list[str]:
    stmts = [
        f"GRANT CONNECT ON DATABASE {_q(database)} TO {_q(role)}",
        f"GRANT USAGE ON SCHEMA public TO {_q(role)}",
        # Table-level REVOKE also takes back every column privilege on the table.
        f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {_q(role)}",
        f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {_q(role)}",
        f"GRANT SELECT ON django_migrations TO {_q(role)}",
    ]
    for key, (table, identity) in sorted(_tables().items()):
        privileges = privileges_of(key, policy)
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


def row_security_statements(policies: dict[str, RolePolicy]) -> list[str]:
    """Row-level security for every table some role has a row rule on: enabled, one permissive policy
    letting every role see and write what its privileges allow, and each rule as a restrictive policy
    for its role. The table owner (migrations, tests) is not subject to it."""
    tables = _tables()
    rules: dict[str, list[tuple[str, RowRule]]] = {}
    for role, policy in policies.items():
        for key, role_rules in policy.row_rules.items():
            rules.setdefault(tables[key][0], []).extend((role, rule) for rule in role_rules)
    stmts = []
    for table, table_rules in sorted(rules.items()):
        stmts += [
            f"ALTER TABLE {_q(table)} ENABLE ROW LEVEL SECURITY",
            f"CREATE POLICY {_q(POLICY_PREFIX + 'any')} ON {_q(table)} USING (true) WITH CHECK (true)",
        ]
        for role, rule in table_rules:
            name = f"{POLICY_PREFIX}{role.removeprefix('custos_')}_{rule.command.lower()}"
            using = f" USING ({rule.using})" if rule.using else ""
            stmts.append(
                f"CREATE POLICY {_q(name)} ON {_q(table)} AS RESTRICTIVE FOR {rule.command} "
                f"TO {_q(role)}{using} WITH CHECK ({rule.check})"
            )
    return stmts


def _drop_row_security(cursor) -> None:
    """Undo what row_security_statements made before (on this database), so a rule removed here is gone."""
    cursor.execute(
        "SELECT tablename, policyname FROM pg_policies WHERE schemaname = 'public' AND policyname LIKE %s",
        [POLICY_PREFIX + "%"],
    )
    found = cursor.fetchall()
    for table, name in found:
        cursor.execute(f"DROP POLICY {_q(name)} ON {_q(table)}")
    for table in sorted({table for table, _ in found}):
        cursor.execute(f"ALTER TABLE {_q(table)} DISABLE ROW LEVEL SECURITY")


def setup_roles(*, database: str) -> list[str]:
    """Create missing roles and (re)apply every grant and row rule; returns the roles handled. Run it
    in one transaction (setup_db_roles does): no moment without the rules."""
    with connection.cursor() as cursor:
        for role, policy in POLICIES.items():
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
            if cursor.fetchone() is None:
                cursor.execute(f"CREATE ROLE {_q(role)} LOGIN")
            for stmt in statements_for(role, policy, database):
                cursor.execute(stmt)
        _drop_row_security(cursor)
        for stmt in row_security_statements(POLICIES):
            cursor.execute(stmt)
    return list(POLICIES)
