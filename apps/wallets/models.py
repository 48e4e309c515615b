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


class ScopeStatus(models.TextChoices):
    PROPOSED = "proposed"
    ACTIVE = "active"
    REVOKED = "revoked"
    EXPIRED = "expired"


class AuthorityKey(models.Model):
    """An Ethereum address whose private key lives on one of the owner's devices (a hardware wallet,
    a browser wallet, the phone, a keystore file for development). A scope counts only when one of
    its owner's current authority keys signed it. Written only by `manage.py authority_add` /
    `authority_remove` on the signer's host, through a database role neither the web nor the engine
    has; every other process reads it."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="authority_keys"
    )
    address = models.CharField(max_length=42, help_text="EIP-55 checksummed")
    label = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    removed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "address"],
                condition=models.Q(removed_at__isnull=True),
                name="authority_key_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.address} of {self.owner_id}"


class PermissionScope(models.Model):
    """What the owner allows a wallet to sign on one chain and router: EIP-712 typed data built from
    this row's own frozen fields (apps/wallets/authority.py), signed by one of the owner's authority
    keys. PROPOSED until a valid signature is attached; the signer verifies the signature against the
    row's fields on every request, so an edit after signing signs nothing. Revocation is immediate
    and needs no signature (narrowing); anything wider is a new scope the owner signs."""

    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="scopes")
    chain = models.ForeignKey("chain.Chain", on_delete=models.PROTECT)
    dex = models.ForeignKey("chain.Dex", on_delete=models.PROTECT)
    # Frozen at proposal from the registry rows (display data): these, never a row id, are what the
    # owner signs and what the signer checks.
    router = models.CharField(max_length=42)
    token_in = models.ForeignKey("chain.Token", on_delete=models.PROTECT, related_name="+")
    token_out = models.ForeignKey("chain.Token", on_delete=models.PROTECT, related_name="+")
    wallet_address = models.CharField(max_length=42, default="")
    chain_id_signed = models.PositiveBigIntegerField(default=0, help_text="the chain id the owner signed")
    token_in_address = models.CharField(max_length=42, default="")
    token_out_address = models.CharField(max_length=42, default="")
    token_in_decimals = models.PositiveSmallIntegerField(default=18)
    token_out_decimals = models.PositiveSmallIntegerField(default=18)
    # A USD-pegged token counts one USD per whole token against the USD caps.
    token_in_usd_pegged = models.BooleanField(default=False)
    token_out_usd_pegged = models.BooleanField(default=False)
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
    fee_budget_wei = models.DecimalField(
        **UINT,
        default=0,
        blank=True,
        help_text="the most one transaction may spend on fees: gas limit x max fee per gas (wei)",
    )
    valid_from = models.DateTimeField()
    valid_until = models.DateTimeField()
    revision = models.PositiveIntegerField(default=1)
    signature = models.CharField(max_length=132, blank=True, default="", help_text="0x r s v, 65 bytes")
    signed_by = models.CharField(max_length=42, blank=True, default="", help_text="recovered when attached")
    signed_at = models.DateTimeField(null=True, blank=True)
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

    def status_at(self, now) -> str:
        """proposed (unsigned), active, revoked or expired, as of `now`."""
        if not self.active or self.revoked_at is not None:
            return ScopeStatus.REVOKED
        if not self.signature:
            return ScopeStatus.PROPOSED
        return ScopeStatus.EXPIRED if self.valid_until <= now else ScopeStatus.ACTIVE


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
