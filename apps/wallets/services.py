"""Wallet writes: create (the key is made later by the signer), grant and revoke scopes, allocate nonces."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.db import connection, transaction
from django.utils import timezone

from apps.chain.calldata import SWAPS
from apps.chain.models import Chain, Dex, Token
from apps.wallets.models import NonceCursor, PermissionScope, Wallet
from project.queues import TaskName, enqueue_on_commit


class ScopeError(ValueError):
    """A scope grant that would not make sense; `field` names the offending input."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


def wallet_create(*, owner, label: str, key_backend: str) -> Wallet:
    """Record a wallet in PROVISIONING and ask the signer to create its key inside the backend."""
    if key_backend not in Wallet.Backend.values:
        raise ScopeError("key_backend", f"unknown backend {key_backend!r}")
    with transaction.atomic():
        wallet = Wallet.objects.create(owner=owner, label=label, key_backend=key_backend)
        enqueue_on_commit(TaskName.SIGNING_CREATE_KEY, wallet.pk)
    return wallet


def scope_grant(
    *,
    wallet: Wallet,
    dex: Dex,
    token_in: Token,
    token_out: Token,
    max_amount_in: int,
    max_slippage_bps: int,
    max_fee_per_gas: int,
    max_priority_fee_per_gas: int,
    valid_from: datetime,
    valid_until: datetime,
    allow_reverse: bool = False,
    allowed_selectors: list[str] | None = None,
    max_notional_usd: Decimal | None = None,
    daily_volume_usd: Decimal | None = None,
    allow_onchain_only_pricing: bool = False,
) -> PermissionScope:
    chain: Chain = dex.chain
    if token_in.chain_id != chain.pk or token_out.chain_id != chain.pk:
        raise ScopeError("token_in", "tokens must be on the DEX's chain")
    if token_in.pk == token_out.pk:
        raise ScopeError("token_out", "must differ from token_in")
    if valid_until <= valid_from:
        raise ScopeError("valid_until", "must be after valid_from")
    if max_amount_in <= 0:
        raise ScopeError("max_amount_in", "must be positive")
    if not 1 <= max_slippage_bps <= 5000:
        raise ScopeError("max_slippage_bps", "must be between 1 and 5000")
    selectors = allowed_selectors if allowed_selectors is not None else sorted(SWAPS)
    unknown = [s for s in selectors if s not in SWAPS]
    if unknown:
        raise ScopeError("allowed_selectors", f"not a supported swap selector: {unknown}")
    return PermissionScope.objects.create(
        wallet=wallet,
        chain=chain,
        dex=dex,
        router=dex.router,
        token_in=token_in,
        token_out=token_out,
        allow_reverse=allow_reverse,
        allowed_selectors=selectors,
        max_amount_in=max_amount_in,
        max_notional_usd=max_notional_usd,
        daily_volume_usd=daily_volume_usd,
        max_slippage_bps=max_slippage_bps,
        max_fee_per_gas=max_fee_per_gas,
        max_priority_fee_per_gas=max_priority_fee_per_gas,
        valid_from=valid_from,
        valid_until=valid_until,
        allow_onchain_only_pricing=allow_onchain_only_pricing,
    )


def scope_revoke(*, scope: PermissionScope) -> PermissionScope:
    """Revoke at once: the signer re-reads scopes for every request, so nothing is signed after this."""
    PermissionScope.objects.filter(pk=scope.pk).update(active=False, revoked_at=timezone.now())
    scope.refresh_from_db()
    return scope


def nonce_allocate(
    *, wallet: Wallet, chain: Chain, count: int = 1, chain_pending: int | None = None
) -> list[int]:
    """Hand out the next `count` nonces of (wallet, chain). Must run inside the caller's SERIALIZABLE
    transaction, so two allocations can never both commit the same nonce. `chain_pending` (the
    chain's pending transaction count) moves the cursor forward when the wallet was used elsewhere."""
    if not connection.in_atomic_block:
        raise RuntimeError("nonce_allocate must run inside a SERIALIZABLE transaction")
    cursor, _ = NonceCursor.objects.select_for_update().get_or_create(wallet=wallet, chain=chain)
    floor = chain_pending or 0
    # Released nonces first (a trade that never broadcast left them below the cursor: a gap that
    # would jam every later transaction); one the chain already counts was used elsewhere.
    released = sorted(n for n in set(cursor.released) if n >= floor and n < cursor.next_nonce)
    reused, cursor.released = released[:count], released[count:]
    start = max(cursor.next_nonce, floor)
    fresh = count - len(reused)
    cursor.next_nonce = start + fresh
    cursor.save(update_fields=["next_nonce", "released", "updated_at"])
    return reused + list(range(start, start + fresh))


def nonce_release(*, wallet: Wallet, chain: Chain, nonces: list[int]) -> str:
    """Give back nonces that will never be broadcast (inside the caller's SERIALIZABLE transaction):
    the cursor moves back when they are its top, otherwise they wait in `released` for the next
    allocation. Returns "rewound" or "pooled"."""
    if not connection.in_atomic_block:
        raise RuntimeError("nonce_release must run inside a SERIALIZABLE transaction")
    cursor = NonceCursor.objects.select_for_update().get(wallet=wallet, chain=chain)
    pool = sorted(set(cursor.released) | set(nonces))
    outcome = "pooled"
    while pool and pool[-1] == cursor.next_nonce - 1:  # the top of the cursor: simply rewind
        cursor.next_nonce = pool.pop()
        outcome = "rewound"
    cursor.released = pool
    cursor.save(update_fields=["next_nonce", "released", "updated_at"])
    return outcome
