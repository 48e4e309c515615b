"""Gateway writes: API tokens (create, authenticate, revoke)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, OperationalError, transaction
from django.utils import timezone

from apps.gateway.models import LEVEL_ORDER, ApiToken
from project.db import is_retryable

TOKEN_PREFIX = "cst_"  # noqa: S105 - a public marker, not a secret


class TokenNameTaken(ValueError):
    field = "name"


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    raw: str  # shown to the owner once, never stored


def token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def api_token_create(*, user, name: str, level: str) -> IssuedToken:
    """Issue a token of `level` (a TokenLevel; every caller names it, there is no default) for one
    device; the raw value exists only in the return value. Whether the caller may issue that level is
    the caller's check (the API: apps.gateway.api.serializers.ApiTokenCreateInput)."""
    if level not in LEVEL_ORDER:
        raise ValueError(f"unknown token level {level!r}")
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    try:
        with transaction.atomic():
            token = ApiToken.objects.create(
                user=user,
                name=name,
                level=level,
                prefix=raw[: len(TOKEN_PREFIX) + 6],
                key_hash=token_hash(raw),
            )
    except IntegrityError as exc:
        raise TokenNameTaken(f"a live token named {name!r} already exists") from exc
    return IssuedToken(token=token, raw=raw)


def api_token_revoke(*, token: ApiToken) -> ApiToken:
    """Effective for the next request: authentication only accepts unrevoked tokens."""
    ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    token.refresh_from_db()
    return token


def api_token_authenticate(*, raw: str) -> ApiToken | None:
    """The live token `raw` stands for (its user active), recording its use; None otherwise."""
    if not raw.startswith(TOKEN_PREFIX) or len(raw) > 128:
        return None
    token = (
        ApiToken.objects.select_related("user")
        .filter(key_hash=token_hash(raw), revoked_at__isnull=True)
        .first()
    )
    if token is None or not token.user.is_active:
        return None
    now = timezone.now()
    # One write per token per resolution window, not one per request.
    resolution = timedelta(seconds=settings.API_TOKEN_LAST_USED_RESOLUTION_SECONDS)
    if token.last_used_at is None or now - token.last_used_at >= resolution:
        try:
            with transaction.atomic():
                ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
            token.last_used_at = now
        except OperationalError as exc:
            # A concurrent request of the same token recorded the use first (SERIALIZABLE makes
            # the second update fail): that is the same fact, so the request goes on.
            if not is_retryable(exc):
                raise
    return token
