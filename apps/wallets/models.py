"""Wallets (key references, never keys), their permission scopes, nonce cursors and spend ledger."""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models

UINT = {"max_digits": 78, "decimal_places": 0}


class Wallet(models.Model):
    class Backend(models.TextChoices):
        PKCS11 = "pkcs11"
        VAULT = "vault"
        KEYSTORE = "keystore"

    class Status(models.TextChoices):
        PROVISIONING = "provisioning"  # accepted; the signer has not created the key yet
        ACTIVE = "active"
        FAILED = "failed"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="wallets")
    label = models.CharField(max_length=64)
    # Derived from the key backend's public key by the signer; never typed in.
    address = models.CharField(max_length=42, null=True, blank=True, unique=True)
    key_backend = models.CharField(max_length=16, choices=Backend.choices)
    # Opaque id inside the backend (a PKCS#11 CKA_ID, a Vault path suffix, a keystore file stem).
    key_id = models.CharField(max_length=128, blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PROVISIONING)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["key_backend", "key_id"],
                condition=~models.Q(key_id=""),
                name="wallet_unique_key_ref",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.label} ({self.address or self.status})"


class PermissionScope(models.Model):
    """What the owner allows a wallet to sign on one chain and router. Revocation is immediate."""

    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="scopes")
    chain = models.ForeignKey("chain.Chain", on_delete=models.PROTECT)
    dex = models.ForeignKey("chain.Dex", on_delete=models.PROTECT)
    # Frozen at grant time, so editing a Dex row cannot widen a scope.
    router = models.CharField(max_length=42)
    token_in = models.ForeignKey("chain.Token", on_delete=models.PROTECT, related_name="+")
    token_out = models.ForeignKey("chain.Token", on_delete=models.PROTECT, related_name="+")
    allow_reverse = models.BooleanField(default=False, help_text="also token_out -> token_in")
    allowed_selectors = ArrayField(models.CharField(max_length=10), default=list)
    max_amount_in = models.DecimalField(**UINT, help_text="base units of the input token, per trade")
    max_notional_usd = models.DecimalField(max_digits=20, decimal_places=2, null=True, blank=True)
    daily_volume_usd = models.DecimalField(
        max_digits=20, decimal_places=2, null=True, blank=True, help_text="rolling 24 hours"
    )
    max_slippage_bps = models.PositiveIntegerField(default=100)
    # Without a fresh independent market price (apps.market.reference), validation rejects the trade
    # unless the owner explicitly accepts the pool's own on-chain price as the only reference.
    allow_onchain_only_pricing = models.BooleanField(
        default=False, help_text="accept the pool's on-chain price when no independent price is fresh"
    )
    max_fee_per_gas = models.DecimalField(**UINT, help_text="wei")
    max_priority_fee_per_gas = models.DecimalField(**UINT, help_text="wei")
    valid_from = models.DateTimeField()
    valid_until = models.DateTimeField()
    active = models.BooleanField(default=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(valid_until__gt=models.F("valid_from")), name="scope_valid_window"
            ),
            models.CheckConstraint(condition=models.Q(max_amount_in__gt=0), name="scope_max_amount_positive"),
            models.CheckConstraint(
                condition=models.Q(max_slippage_bps__lte=5000), name="scope_slippage_bounded"
            ),
        ]

    def __str__(self) -> str:
        return f"scope {self.pk} of wallet {self.wallet_id}"


class NonceCursor(models.Model):
    """The next nonce Custos will use for (wallet, chain); advanced only in SERIALIZABLE transactions."""

    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="nonce_cursors")
    chain = models.ForeignKey("chain.Chain", on_delete=models.PROTECT)
    next_nonce = models.PositiveBigIntegerField(default=0)
    released = ArrayField(
        models.PositiveBigIntegerField(),
        default=list,
        blank=True,
        help_text="nonces below next_nonce whose trade will never broadcast: handed out first",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["wallet", "chain"], name="nonce_cursor_unique"),
        ]


class SpendLedgerEntry(models.Model):
    """One signed swap's spend against a scope; the rolling 24-hour volume is the sum of these."""

    scope = models.ForeignKey(PermissionScope, on_delete=models.PROTECT, related_name="ledger")
    trade = models.ForeignKey("trades.Trade", on_delete=models.PROTECT)
    amount_in = models.DecimalField(**UINT)
    notional_usd = models.DecimalField(max_digits=30, decimal_places=6, null=True, blank=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            # One entry per trade: re-signing the same swap (replacement) spends nothing new.
            models.UniqueConstraint(fields=["scope", "trade"], name="ledger_one_entry_per_trade"),
        ]
