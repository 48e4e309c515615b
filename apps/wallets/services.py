"""Wallet writes: create (the key is made later by the signer), propose scopes and attach the owner's
signature, revoke them, register authority keys, allocate nonces."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from apps.chain.abi import to_checksum_address
from apps.chain.calldata import SWAPS
from apps.chain.models import Chain, Dex, Token
from apps.wallets.authority import SignatureError, recover_address, scope_digest
from apps.wallets.models import AuthorityKey, NonceCursor, PermissionScope, Wallet
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


def scope_propose(
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
    fee_budget_wei: int | None = None,
) -> PermissionScope:
    """A PROPOSED scope: every address, decimal count and limit frozen from the registry and the
    input into the row, which is what the owner signs (apps.wallets.authority.scope_typed_data). It
    allows nothing until scope_signature_attach. `fee_budget_wei` defaults to max_fee_per_gas x
    SCOPE_FEE_BUDGET_DEFAULT_GAS."""
    chain: Chain = dex.chain
    if not wallet.address:
        raise ScopeError("wallet", "the wallet has no key yet")
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
    for name, cap in (("max_notional_usd", max_notional_usd), ("daily_volume_usd", daily_volume_usd)):
        if cap is not None and cap <= 0:
            raise ScopeError(name, "must be positive (leave it out for no cap)")
    selectors = allowed_selectors if allowed_selectors is not None else sorted(SWAPS)
    unknown = [s for s in selectors if s not in SWAPS]
    if unknown:
        raise ScopeError("allowed_selectors", f"not a supported swap selector: {unknown}")
    budget = (
        fee_budget_wei
        if fee_budget_wei is not None
        else max_fee_per_gas * settings.SCOPE_FEE_BUDGET_DEFAULT_GAS
    )
    if budget <= 0:
        raise ScopeError("fee_budget_wei", "must be positive")
    latest = (
        PermissionScope.objects.filter(wallet=wallet).order_by("-revision").values_list("revision", flat=True)
    )
    return PermissionScope.objects.create(
        wallet=wallet,
        chain=chain,
        dex=dex,
        router=dex.router,
        token_in=token_in,
        token_out=token_out,
        wallet_address=wallet.address,
        chain_id_signed=chain.chain_id,
        token_in_address=token_in.address,
        token_out_address=token_out.address,
        token_in_decimals=token_in.decimals,
        token_out_decimals=token_out.decimals,
        token_in_usd_pegged=token_in.is_stablecoin,
        token_out_usd_pegged=token_out.is_stablecoin,
        allow_reverse=allow_reverse,
        allowed_selectors=sorted(selectors),
        max_amount_in=max_amount_in,
        max_notional_usd=max_notional_usd,
        daily_volume_usd=daily_volume_usd,
        max_slippage_bps=max_slippage_bps,
        max_fee_per_gas=max_fee_per_gas,
        max_priority_fee_per_gas=max_priority_fee_per_gas,
        fee_budget_wei=budget,
        # Whole seconds: what is signed is a unix time, and the row must rebuild the same message.
        valid_from=valid_from.replace(microsecond=0),
        valid_until=valid_until.replace(microsecond=0),
        revision=(latest.first() or 0) + 1,
        allow_onchain_only_pricing=allow_onchain_only_pricing,
    )


def scope_signature_attach(*, scope: PermissionScope, signature: str) -> PermissionScope:
    """Attach the owner's EIP-712 signature to a PROPOSED scope, checked at once: it must recover, over
    the row's own fields, to a current authority key of the wallet's owner. Otherwise ScopeError
    naming `signature`, and the scope stays PROPOSED. (The signer checks again on every request.)"""
    if scope.signature:
        raise ScopeError("signature", "this scope is already signed; propose a new one to change it")
    if scope.revoked_at is not None or not scope.active:
        raise ScopeError("signature", "this scope was revoked")
    try:
        signer = recover_address(scope_digest(scope), signature)
    except (SignatureError, ValueError) as exc:
        raise ScopeError("signature", f"not a valid signature: {exc}") from exc
    owner_keys = AuthorityKey.objects.filter(owner_id=scope.wallet.owner_id, removed_at__isnull=True)
    if not owner_keys.filter(address=signer).exists():
        raise ScopeError(
            "signature",
            f"signed by {signer}, which is not an authority key of the wallet's owner "
            "(check that you signed this scope's typed data, with a registered key)",
        )
    now = timezone.now()
    updated = PermissionScope.objects.filter(pk=scope.pk, signature="", revoked_at__isnull=True).update(
        signature="0x" + signature.removeprefix("0x").lower(), signed_by=signer, signed_at=now
    )
    if updated != 1:
        raise ScopeError("signature", "this scope changed meanwhile (signed or revoked)")
    scope.refresh_from_db()
    return scope


def _authority_address(address: str) -> str:
    """An address as typed by the owner, checksummed; mixed case must be its EIP-55 form."""
    try:
        checksummed = to_checksum_address(address)
    except (ValueError, TypeError) as exc:
        raise ScopeError("address", str(exc)) from exc
    if address != checksummed and address[2:] not in (address[2:].lower(), address[2:].upper()):
        raise ScopeError("address", "mixed case that is not its EIP-55 checksum: a typo?")
    return checksummed


def authority_add(*, owner, address: str, label: str = "") -> AuthorityKey:
    """Register an authority key (run on the signer's host: manage.py authority_add)."""
    checksummed = _authority_address(address)
    existing = AuthorityKey.objects.filter(owner=owner, address=checksummed, removed_at__isnull=True).first()
    return existing or AuthorityKey.objects.create(owner=owner, address=checksummed, label=label)


def authority_remove(*, owner, address: str) -> int:
    """Remove an authority key: every scope it signed stops counting at the signer's next request."""
    checksummed = _authority_address(address)
    return AuthorityKey.objects.filter(owner=owner, address=checksummed, removed_at__isnull=True).update(
        removed_at=timezone.now()
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
