"""Start checks for every process: the database, the broker and (where used) each chain's RPC."""

from __future__ import annotations

from django.conf import settings
from django.db import connection

from apps.chain.models import Chain
from apps.chain.rpc import RpcError, chain_id_of
from project.redis import redis_client


class PreflightError(Exception):
    """A dependency the process needs does not answer as configured."""


def check_database() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:
        settings_db = settings.DATABASES["default"]
        where = f"{settings_db.get('HOST') or 'local socket'}:{settings_db.get('PORT') or 5432}"
        raise PreflightError(f"database at {where} (DATABASE_URL) does not answer: {exc}".strip()) from exc


def check_broker() -> None:
    try:
        redis_client(settings.CELERY_BROKER_URL, timeout=2.0).ping()
    except Exception as exc:
        raise PreflightError(
            f"broker at {settings.CELERY_BROKER_URL} (CELERY_BROKER_URL/REDIS_URL) does not answer: {exc}"
        ) from exc


def check_chains() -> None:
    """Every configured chain must have an active endpoint reporting the right chain id."""
    for chain_id in settings.CHAIN_IDS:
        chain = Chain.objects.filter(chain_id=chain_id).prefetch_related("rpc_endpoints").first()
        if chain is None:
            raise PreflightError(
                f"chain {chain_id} (CHAIN_IDS) is not in the database: run `manage.py devchain up` "
                "or add it in the admin"
            )
        problems = []
        for endpoint in chain.rpc_endpoints.all():
            if not endpoint.active:
                continue
            try:
                reported = chain_id_of(endpoint.url, timeout=settings.HEALTH_RPC_TIMEOUT_SECONDS)
            except RpcError as exc:
                problems.append(str(exc))
                continue
            if reported == chain_id:
                break
            problems.append(f"{endpoint.url} reports chain id {reported}, expected {chain_id}")
        else:
            detail = "; ".join(problems) or "no active RPC endpoint"
            raise PreflightError(f"chain {chain_id}: no endpoint answers correctly ({detail})")
