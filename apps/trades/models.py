"""Trades (a django-fsm-2 state machine), their chain transactions and the hash-chained audit trail.

The state field is protected: it changes only through the transitions below, each called from
apps/trades/real_money_transaction_manager.py inside one SERIALIZABLE transaction that also checks
and bumps `version` (optimistic locking).
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django_fsm import FSMField, FSMModelMixin, transition

UINT = {"max_digits": 78, "decimal_places": 0}  # uint256 base units fit in 78 digits


class TradeState(models.TextChoices):
    PENDING = "PENDING"
    SIMULATING = "SIMULATING"
    VALIDATING = "VALIDATING"
    SIGNING = "SIGNING"
    CONFIRMING = "CONFIRMING"
    SETTLED = "SETTLED"
    REJECTED = "REJECTED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    FINALITY_VIOLATED = "FINALITY_VIOLATED"


S = TradeState
NON_TERMINAL = [S.PENDING, S.SIMULATING, S.VALIDATING, S.SIGNING, S.CONFIRMING]
TERMINAL = frozenset({S.SETTLED, S.REJECTED, S.FAILED, S.CANCELLED, S.FINALITY_VIOLATED})
# Where the owner's cancel is free (real_money_transaction_manager.trade_cancel); later a trade needs a
# cancel replacement on chain.
CANCELLABLE = frozenset({S.PENDING, S.SIMULATING, S.VALIDATING})


class Trade(FSMModelMixin, models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="trades")
    wallet = models.ForeignKey("wallets.Wallet", on_delete=models.PROTECT, related_name="trades")
    chain = models.ForeignKey("chain.Chain", on_delete=models.PROTECT)
    dex = models.ForeignKey("chain.Dex", on_delete=models.PROTECT)

    # Frozen inputs.
    class Native(models.TextChoices):
        NONE = "", "tokens only"
        IN = "in", "native ETH in (path starts at the wrapped native token)"
        OUT = "out", "native ETH out (path ends at the wrapped native token)"

    path = ArrayField(models.CharField(max_length=42), help_text="token addresses, in to out")
    native = models.CharField(
        max_length=3,
        choices=Native.choices,
        default=Native.NONE,
        blank=True,
        help_text="which end of the path is native ETH, wrapped and unwrapped by the router",
    )
    amount_in = models.DecimalField(**UINT)
    slippage_bps = models.PositiveIntegerField(null=True, blank=True)
    min_amount_out = models.DecimalField(**UINT, null=True, blank=True)
    deadline = models.DateTimeField()
    idempotency_key = models.CharField(max_length=128)
    state = FSMField(default=S.PENDING, choices=S.choices, protected=True, db_index=True)
    version = models.PositiveIntegerField(default=0)
    # The hash of the trade's newest audit event: an append reads and moves it on this row, so
    # concurrent appends to different trades never read each other's event pages.
    audit_head = models.CharField(max_length=64, blank=True, default="")
    # Filled by the steps.
    quote_block = models.PositiveBigIntegerField(null=True, blank=True)
    quoted_amount_out = models.DecimalField(**UINT, null=True, blank=True)
    amount_out_min = models.DecimalField(**UINT, null=True, blank=True)
    notional_usd = models.DecimalField(max_digits=30, decimal_places=6, null=True, blank=True)
    reason = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "idempotency_key"], name="trade_unique_idempotency"),
            models.CheckConstraint(condition=models.Q(amount_in__gt=0), name="trade_amount_in_positive"),
        ]

    def __str__(self) -> str:
        return f"trade {self.pk} [{self.state}]"

    # --- the happy path, one step at a time ---------------------------------------------------
    @transition(field=state, source=S.PENDING, target=S.SIMULATING)
    def start_simulation(self) -> None: ...

    @transition(field=state, source=S.SIMULATING, target=S.VALIDATING)
    def start_validation(self) -> None: ...

    @transition(field=state, source=S.VALIDATING, target=S.SIGNING)
    def start_signing(self) -> None: ...

    @transition(field=state, source=S.SIGNING, target=S.CONFIRMING)
    def start_confirming(self) -> None: ...

    @transition(field=state, source=S.CONFIRMING, target=S.CONFIRMING)
    def reconfirm(self) -> None:
        """A receipt was orphaned by a reorg: check again, re-broadcast the same raw bytes."""

    @transition(field=state, source=S.CONFIRMING, target=S.SETTLED)
    def settle(self) -> None: ...

    @transition(field=state, source=S.SETTLED, target=S.FINALITY_VIOLATED)
    def violate_finality(self) -> None: ...

    # --- the ends --------------------------------------------------------------------------------
    @transition(field=state, source=[S.PENDING, S.SIMULATING, S.VALIDATING, S.SIGNING], target=S.REJECTED)
    def reject(self) -> None: ...

    @transition(field=state, source=NON_TERMINAL, target=S.FAILED)
    def fail(self) -> None: ...

    @transition(field=state, source=NON_TERMINAL, target=S.CANCELLED)
    def cancel(self) -> None: ...


class ChainTransaction(models.Model):
    """One transaction of a trade, frozen before signing; `unsigned_hash` identifies the payload."""

    class Kind(models.TextChoices):
        APPROVE = "approve"
        SWAP = "swap"
        CANCEL = "cancel"

    class Status(models.TextChoices):
        FROZEN = "frozen"
        SIGNED = "signed"
        BROADCAST = "broadcast"
        MINED = "mined"
        REVERTED = "reverted"
        REPLACED = "replaced"
        DROPPED = "dropped"

    trade = models.ForeignKey(Trade, on_delete=models.PROTECT, related_name="transactions")
    sequence = models.PositiveSmallIntegerField(help_text="order within the trade")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    attempt = models.PositiveSmallIntegerField(default=1)
    replaces = models.ForeignKey("self", on_delete=models.PROTECT, null=True, blank=True)
    # The unsigned EIP-1559 transaction, every field frozen.
    chain_id = models.PositiveBigIntegerField()
    sender = models.CharField(max_length=42)
    nonce = models.PositiveBigIntegerField()
    to = models.CharField(max_length=42)
    value = models.DecimalField(**UINT, default=0)
    data = models.TextField(help_text="0x-prefixed calldata")
    gas = models.PositiveBigIntegerField()
    max_fee_per_gas = models.DecimalField(**UINT)
    max_priority_fee_per_gas = models.DecimalField(**UINT)
    unsigned_hash = models.CharField(max_length=66)
    # Filled after signing; raw bytes are persisted before any broadcast.
    raw_signed = models.BinaryField(null=True, blank=True)
    tx_hash = models.CharField(max_length=66, blank=True, default="")
    broadcast_at = models.DateTimeField(null=True, blank=True)
    broadcast_block = models.PositiveBigIntegerField(null=True, blank=True, help_text="head when first sent")
    receipt_block_number = models.PositiveBigIntegerField(null=True, blank=True)
    receipt_block_hash = models.CharField(max_length=66, blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.FROZEN)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["trade_id", "sequence", "attempt"]
        constraints = [
            models.UniqueConstraint(fields=["trade", "sequence", "attempt"], name="chaintx_unique_attempt"),
        ]

    def as_unsigned_dict(self) -> dict:
        return {
            "type": 2,
            "chainId": int(self.chain_id),
            "nonce": int(self.nonce),
            "to": self.to,
            "value": int(self.value),
            "data": self.data,
            "gas": int(self.gas),
            "maxFeePerGas": int(self.max_fee_per_gas),
            "maxPriorityFeePerGas": int(self.max_priority_fee_per_gas),
            "accessList": [],
        }


class TradeEvent(models.Model):
    """Append-only audit trail; each event's hash covers its canonical JSON and its predecessor's hash.
    Append-only in the database as well: a trigger (migration 0007) refuses any UPDATE or DELETE of a
    row, whatever the role."""

    trade = models.ForeignKey(Trade, on_delete=models.PROTECT, related_name="events")
    kind = models.CharField(max_length=32)
    from_state = models.CharField(max_length=24, blank=True, default="")
    to_state = models.CharField(max_length=24, blank=True, default="")
    data = models.JSONField(default=dict)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["id"]


class OwnerRequest(models.Model):
    """A cancel or retry the owner (API) or staff (admin) asked for. The web process only inserts it:
    it has no right to move a trade. The engine handles it (trades.owner_requests, enqueued on commit,
    and every beat tick for any request still unhandled, so a lost message loses nothing) and records
    when and with what outcome; the transition itself, or the refusal, is in the trade's audit trail."""

    class Kind(models.TextChoices):
        CANCEL = "cancel"
        RETRY = "retry"

    class Outcome(models.TextChoices):
        CANCELLED = "cancelled", "the trade is cancelled"
        NOT_CANCELLABLE = "not_cancellable", "the trade had reached SIGNING or an end first"
        RETRIED = "retried", "the trade's current step was enqueued again"
        NOT_STALLED = "not_stalled", "the trade had ended or moved on meanwhile: nothing to retry"

    trade = models.ForeignKey(Trade, on_delete=models.PROTECT, related_name="owner_requests")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    reason = models.TextField(blank=True, default="", help_text="recorded in the audit trail")
    created_at = models.DateTimeField(auto_now_add=True)
    handled_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=32, choices=Outcome.choices, blank=True, default="")

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(
                fields=["id"], condition=models.Q(handled_at__isnull=True), name="ownerrequest_unhandled"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} request {self.pk} for trade {self.trade_id}"
