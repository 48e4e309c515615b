"""API tokens: one per owner device, stored only as a SHA-256 hash, revocable, with last use, and a
level (read < trade < manage) that bounds what the token may ask for (apps/gateway/auth.py)."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class TokenLevel(models.TextChoices):
    """What a token may do, each level including the ones below it: `read` every GET; `trade` also
    submits and cancels trades; `manage` also creates wallets, grants and revokes scopes, and issues
    and revokes tokens. Every API view declares the level each of its methods needs."""

    READ = "read", "read"
    TRADE = "trade", "trade (submit and cancel trades)"
    MANAGE = "manage", "manage (wallets, scopes, tokens)"


LEVEL_ORDER: tuple[str, ...] = (TokenLevel.READ, TokenLevel.TRADE, TokenLevel.MANAGE)


def level_allows(have: str, need: str) -> bool:
    """Whether a token of level `have` may do what needs `need`; an unknown level allows nothing."""
    if have not in LEVEL_ORDER or need not in LEVEL_ORDER:
        return False
    return LEVEL_ORDER.index(have) >= LEVEL_ORDER.index(need)


class ApiToken(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=64, help_text="the device, e.g. 'phone' or 'desktop'")
    # The first characters of the raw token, to recognise it in a list; never enough to use it.
    prefix = models.CharField(max_length=16)
    # The raw token has 256 bits of entropy, so a fast hash is enough: nothing to brute-force.
    key_hash = models.CharField(max_length=64, unique=True)
    # Fixed at issue (revoke and issue another to change it); new tokens default to the least.
    level = models.CharField(max_length=8, choices=TokenLevel.choices, default=TokenLevel.READ)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "name"],
                condition=models.Q(revoked_at__isnull=True),
                name="api_token_unique_live_name",
            ),
            models.CheckConstraint(condition=models.Q(level__in=LEVEL_ORDER), name="api_token_level_known"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…, {self.level})"

    @property
    def active(self) -> bool:
        return self.revoked_at is None
