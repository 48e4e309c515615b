"""Block headers the watcher has seen per chain, and the reorgs it found among them."""

from django.contrib.postgres.fields import ArrayField
from django.db import models


class BlockHeader(models.Model):
    chain = models.ForeignKey("chain.Chain", on_delete=models.CASCADE, related_name="headers")
    number = models.PositiveBigIntegerField()
    hash = models.CharField(max_length=66)
    parent_hash = models.CharField(max_length=66)
    seen_at = models.DateTimeField()
    canonical = models.BooleanField(default=True)
    orphaned_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["chain_id", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["chain", "hash"], name="blockheader_unique_hash"),
            # At most one canonical header per height: the window is one chain, never a fork.
            models.UniqueConstraint(
                fields=["chain", "number"],
                condition=models.Q(canonical=True),
                name="blockheader_one_canonical_per_height",
            ),
        ]
        indexes = [models.Index(fields=["chain", "canonical", "number"], name="blockheader_tip")]

    def __str__(self) -> str:
        return f"{self.chain_id}#{self.number} {self.hash[:10]}{'' if self.canonical else ' (orphaned)'}"


class Reorg(models.Model):
    """One reorg as the watcher saw it: where the chains forked and what it touched."""

    chain = models.ForeignKey("chain.Chain", on_delete=models.CASCADE, related_name="reorgs")
    detected_at = models.DateTimeField()
    # The last block both chains share (None when the fork lies beyond WATCHER_MAX_REORG_DEPTH).
    fork_number = models.PositiveBigIntegerField(null=True, blank=True)
    depth = models.PositiveIntegerField(help_text="orphaned blocks")
    old_tip_hash = models.CharField(max_length=66)
    new_tip_hash = models.CharField(max_length=66)
    reconfirmed_trades = ArrayField(models.BigIntegerField(), default=list, blank=True)
    violated_trades = ArrayField(models.BigIntegerField(), default=list, blank=True)
    finality_alarm = models.BooleanField(default=False)

    class Meta:
        ordering = ["-detected_at"]

    def __str__(self) -> str:
        return f"reorg on {self.chain_id} at {self.fork_number} (depth {self.depth})"
