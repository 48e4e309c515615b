"""Signing records (one per signature) and refusals (one per refused request), written by the signer only."""

from __future__ import annotations

from django.db import models


class SigningRecord(models.Model):
    """A signature the signer produced. The database refuses a second, different payload for a
    (wallet, chain, nonce) unless it names the record it replaces, and a record can be replaced
    only once, so the replacements of a nonce form a single recorded chain."""

    wallet = models.ForeignKey("wallets.Wallet", on_delete=models.PROTECT)
    chain = models.ForeignKey("chain.Chain", on_delete=models.PROTECT)
    nonce = models.PositiveBigIntegerField()
    chain_transaction = models.OneToOneField(
        "trades.ChainTransaction", on_delete=models.PROTECT, related_name="signing_record"
    )
    trade = models.ForeignKey("trades.Trade", on_delete=models.PROTECT)
    attempt = models.PositiveSmallIntegerField()
    payload_hash = models.CharField(max_length=66, help_text="keccak of the unsigned transaction")
    tx_hash = models.CharField(max_length=66)
    raw_signed = models.BinaryField()
    max_fee_per_gas = models.DecimalField(max_digits=78, decimal_places=0)
    max_priority_fee_per_gas = models.DecimalField(max_digits=78, decimal_places=0)
    replaces = models.OneToOneField(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="replaced_by"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Set only by `manage.py devchain up` (as the database's owner; no process role may write it)
    # when a development chain was replaced by a new one: the new chain counts every nonce from 0
    # again, so what was signed for the old one no longer holds its nonce.
    retired = models.BooleanField(default=False, db_default=False)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["wallet", "chain", "nonce"],
                condition=models.Q(replaces__isnull=True, retired=False),
                name="signing_one_original_payload_per_nonce",
            ),
            models.UniqueConstraint(
                fields=["wallet", "chain", "nonce", "payload_hash"],
                condition=models.Q(retired=False),
                name="signing_payload_once",
            ),
        ]


class SigningRefusal(models.Model):
    trade = models.ForeignKey("trades.Trade", on_delete=models.PROTECT, related_name="signing_refusals")
    attempt = models.PositiveSmallIntegerField()
    code = models.CharField(max_length=48)
    detail = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
