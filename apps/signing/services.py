"""The signer's writes: create keys inside their backend, and sign a trade's frozen transactions
after re-checking every one of them against the wallet's scope.

The signer trusts nobody. A request names only (trade id, attempt); everything else is loaded from
the database and judged again here, whoever put the request on the queue.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.chain.txcodec import payload_hash
from apps.signing.backends import backend_from_settings
from apps.signing.backends.base import KeyBackend, KeyBackendError
from apps.signing.backends.vault import VaultSealedError, VaultUnavailableError
from apps.signing.models import SigningRecord, SigningRefusal
from apps.signing.txsign import sign_transaction
from apps.trades.models import ChainTransaction, Trade, TradeState
from apps.wallets.models import SpendLedgerEntry, Wallet
from apps.wallets.scope import scope_check
from project.db import serializable_attempts
from project.queues import enqueue_on_commit

logger = logging.getLogger(__name__)

# Key-backend failures that heal by themselves; every other backend error refuses the request.
TRANSIENT_KEY_ERRORS = (VaultSealedError, VaultUnavailableError)

# The engine step that picks up a signed (or refused) attempt.
SIGNED_TASK = "trades.after_signing"


@cache
def backend(name: str) -> KeyBackend:
    """One backend instance per process (the PKCS#11 session is reused across signatures)."""
    return backend_from_settings(name)


class Refused(Exception):
    def __init__(self, code: str, detail: str):
        self.code = code
        self.detail = detail
        super().__init__(f"{code}: {detail}")


@dataclass(frozen=True)
class SignOutcome:
    signed: bool
    records: tuple[int, ...] = ()
    refusal: str = ""


def wallet_key_create(*, wallet_id: int) -> Wallet | None:
    """Generate the wallet's key inside its backend and record its reference and address."""
    wallet = Wallet.objects.filter(pk=wallet_id).first()
    if wallet is None or wallet.status != Wallet.Status.PROVISIONING or wallet.key_id:
        return wallet  # gone, or already done: idempotent
    ref = backend(wallet.key_backend).create_key(label=f"custos-wallet-{wallet.pk}")
    with transaction.atomic():
        updated = Wallet.objects.filter(pk=wallet.pk, key_id="").update(
            key_id=ref.key_id, address=ref.address, status=Wallet.Status.ACTIVE
        )
    if not updated:
        logger.warning("wallet key created twice; the second key is unused", extra={"wallet": wallet.pk})
    wallet.refresh_from_db()
    logger.info("wallet key created", extra={"wallet": wallet.pk, "backend": wallet.key_backend})
    return wallet


def trade_sign(*, trade_id: int, attempt: int) -> SignOutcome:
    """Sign every frozen transaction of (trade, attempt), or refuse them all with the reason recorded."""
    try:
        for tx_attempt in serializable_attempts(label="trade_sign"):
            with tx_attempt:
                outcome = _sign_in_transaction(trade_id=trade_id, attempt=attempt)
    except Refused as refused:
        _record_refusal(trade_id=trade_id, attempt=attempt, code=refused.code, detail=refused.detail)
        return SignOutcome(signed=False, refusal=str(refused))
    except IntegrityError:
        # A concurrent signer committed the same (wallet, nonce, payload) first: reuse its work.
        existing = SigningRecord.objects.filter(trade_id=trade_id, attempt=attempt)
        if existing.exists():
            return SignOutcome(signed=True, records=tuple(existing.values_list("pk", flat=True)))
        _record_refusal(
            trade_id=trade_id,
            attempt=attempt,
            code="nonce_reused",
            detail="a different payload for this nonce is already signed",
        )
        return SignOutcome(signed=False, refusal="nonce_reused")
    return outcome


def _sign_in_transaction(*, trade_id: int, attempt: int) -> SignOutcome:
    trade = Trade.objects.select_related("wallet", "chain").filter(pk=trade_id).first()
    if trade is None:
        raise Refused("trade_unknown", f"no trade {trade_id}")
    txs = list(ChainTransaction.objects.filter(trade=trade, attempt=attempt).order_by("sequence"))
    if not txs:
        raise Refused("nothing_to_sign", f"trade {trade_id} has no transactions for attempt {attempt}")
    done = {r.chain_transaction_id: r for r in SigningRecord.objects.filter(chain_transaction__in=txs)}
    if len(done) == len(txs):
        return SignOutcome(signed=True, records=tuple(r.pk for r in done.values()))  # idempotent
    now = timezone.now()
    # A first attempt is signed in SIGNING; a replacement (gas bump, cancel) of a broadcast
    # transaction while the trade is CONFIRMING.
    replacing = any(tx.replaces_id is not None for tx in txs)
    expected = TradeState.CONFIRMING if replacing else TradeState.SIGNING
    records = []
    for tx in txs:
        if tx.pk in done:
            records.append(done[tx.pk])
            continue
        decision = scope_check(trade=trade, tx=tx, now=now, expected_state=expected)
        if not decision.allowed:
            raise Refused(decision.first_code, decision.describe())
        unsigned = tx.as_unsigned_dict()
        digest = payload_hash(unsigned)
        if digest != tx.unsigned_hash:
            raise Refused("payload_tampered", "the frozen fields do not hash to the recorded payload hash")
        replaces = _check_nonce_use(trade=trade, tx=tx, digest=digest)
        try:
            signed = sign_transaction(backend(trade.wallet.key_backend), trade.wallet.key_id, unsigned)
        except TRANSIENT_KEY_ERRORS:
            raise  # the task retries: a sealed or unreachable Vault comes back
        except KeyBackendError as exc:
            raise Refused("key_unavailable", str(exc)) from exc
        records.append(
            SigningRecord.objects.create(
                wallet=trade.wallet,
                chain=trade.chain,
                nonce=tx.nonce,
                chain_transaction=tx,
                trade=trade,
                attempt=attempt,
                payload_hash=digest,
                tx_hash="0x" + signed.tx_hash.hex(),
                raw_signed=signed.raw,
                max_fee_per_gas=tx.max_fee_per_gas,
                max_priority_fee_per_gas=tx.max_priority_fee_per_gas,
                replaces=replaces,
            )
        )
        if decision.scope is not None and tx.kind == ChainTransaction.Kind.SWAP:
            SpendLedgerEntry.objects.get_or_create(
                scope=decision.scope,
                trade=trade,
                defaults={
                    "amount_in": trade.amount_in,
                    "notional_usd": decision.notional_usd,
                    "created_at": now,
                },
            )
    enqueue_on_commit(SIGNED_TASK, trade.pk, attempt)
    return SignOutcome(signed=True, records=tuple(r.pk for r in records))


def _check_nonce_use(*, trade: Trade, tx: ChainTransaction, digest: str) -> SigningRecord | None:
    """None for a fresh nonce; the replaced record for a valid replacement; Refused otherwise."""
    used = SigningRecord.objects.filter(wallet=trade.wallet, chain=trade.chain, nonce=tx.nonce)
    if not used.exists():
        return None
    if tx.replaces_id is None:
        raise Refused("nonce_reused", f"nonce {tx.nonce} already carries a different signed payload")
    target = SigningRecord.objects.filter(chain_transaction_id=tx.replaces_id).first()
    if target is None or target.nonce != tx.nonce:
        raise Refused("replacement_unrecorded", "the transaction it replaces was never signed for this nonce")
    tip = used.filter(replaced_by__isnull=True).order_by("-id").first()
    if tip is None or tip.pk != target.pk:
        raise Refused("replacement_not_latest", "only the latest signed payload of a nonce can be replaced")
    bump = settings.REPLACEMENT_MIN_BUMP_BPS
    for field in ("max_fee_per_gas", "max_priority_fee_per_gas"):
        old, new = int(getattr(target, field)), int(getattr(tx, field))
        if new * 10_000 < old * (10_000 + bump):
            raise Refused(
                "replacement_fee_too_low",
                f"{field} {new} is not {bump / 100:g}% above the replaced {old}",
            )
    return target


def _record_refusal(*, trade_id: int, attempt: int, code: str, detail: str) -> None:
    if not Trade.objects.filter(pk=trade_id).exists():
        logger.warning("signing refused for unknown trade", extra={"trade": trade_id, "code": code})
        return
    with transaction.atomic():
        SigningRefusal.objects.create(trade_id=trade_id, attempt=attempt, code=code, detail=detail[:2000])
        enqueue_on_commit(SIGNED_TASK, trade_id, attempt)
    logger.warning("signing refused", extra={"trade": trade_id, "attempt": attempt, "code": code})
