"""apps.wallets.services on the real PostgreSQL: nonce allocation and release, scope grants and
revocation, wallet creation. No chain node: these read and write the database only."""

from __future__ import annotations

import threading
from datetime import timedelta

import celery
import pytest
from django.db import connection, transaction
from django.utils import timezone

from apps.chain.calldata import (
    APPROVE,
    SWAP_EXACT_ETH_FOR_TOKENS,
    SWAP_EXACT_TOKENS_FOR_ETH,
    SWAP_EXACT_TOKENS_FOR_TOKENS,
)
from apps.chain.models import Chain, Dex, Token
from apps.wallets.models import NonceCursor, PermissionScope, Wallet
from apps.wallets.services import (
    ScopeError,
    nonce_allocate,
    nonce_release,
    scope_propose,
    scope_revoke,
    wallet_create,
)
from project.db import serializable_attempts
from tests.factories import GWEI, UserFactory

# --- helpers ---------------------------------------------------------------------------------------


def allocate(wallet, chain, count=1, chain_pending=None) -> list[int]:
    with transaction.atomic():
        return nonce_allocate(wallet=wallet, chain=chain, count=count, chain_pending=chain_pending)


def release(wallet, chain, nonces) -> str:
    with transaction.atomic():
        return nonce_release(wallet=wallet, chain=chain, nonces=nonces)


def cursor_of(wallet, chain) -> NonceCursor:
    return NonceCursor.objects.get(wallet=wallet, chain=chain)


def grant_params(registry, wallet, **overrides) -> dict:
    now = timezone.now()
    params = {
        "wallet": wallet,
        "dex": registry["dex"],
        "token_in": registry["usdc"],
        "token_out": registry["dai"],
        "max_amount_in": 1_000 * 10**6,
        "max_slippage_bps": 100,
        "max_fee_per_gas": 100 * GWEI,
        "max_priority_fee_per_gas": 5 * GWEI,
        "valid_from": now - timedelta(minutes=1),
        "valid_until": now + timedelta(days=1),
    }
    params.update(overrides)
    return params


# --- nonce_allocate --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_allocations_are_contiguous_from_zero_and_never_repeat(wallet, registry):
    chain = registry["chain"]
    first = allocate(wallet, chain, count=2)
    second = allocate(wallet, chain, count=3)
    third = allocate(wallet, chain)

    assert first == [0, 1]
    assert second == [2, 3, 4]
    assert third == [5]
    assert cursor_of(wallet, chain).next_nonce == 6


@pytest.mark.django_db
def test_each_wallet_and_chain_has_its_own_nonce_sequence(wallet, other_wallet, registry):
    chain = registry["chain"]
    other_chain = Chain.objects.create(chain_id=10, name="other")
    assert allocate(wallet, chain, count=3) == [0, 1, 2]

    assert allocate(other_wallet, chain) == [0]
    assert allocate(wallet, other_chain) == [0]
    assert allocate(wallet, chain) == [3]


@pytest.mark.django_db
def test_a_rolled_back_allocation_leaves_no_gap(wallet, registry):
    chain = registry["chain"]
    assert allocate(wallet, chain) == [0]
    handed_out = []

    def plan_then_fail() -> None:
        with transaction.atomic():
            handed_out.extend(nonce_allocate(wallet=wallet, chain=chain, count=2))
            raise RuntimeError("planning failed")

    with pytest.raises(RuntimeError, match="planning failed"):
        plan_then_fail()

    assert handed_out == [1, 2]
    assert allocate(wallet, chain, count=2) == [1, 2]


@pytest.mark.django_db
def test_the_chains_pending_count_moves_the_cursor_forward_when_it_is_ahead(wallet, registry):
    """The wallet sent transactions elsewhere: re-using nonces the chain already counts would make
    every new transaction fail (nonce too low), so allocation continues from the chain's count."""
    chain = registry["chain"]
    assert allocate(wallet, chain, count=2) == [0, 1]

    assert allocate(wallet, chain, count=2, chain_pending=7) == [7, 8]
    assert cursor_of(wallet, chain).next_nonce == 9
    assert allocate(wallet, chain) == [9]


@pytest.mark.django_db
def test_a_chain_pending_count_behind_the_cursor_is_ignored(wallet, registry):
    """Custos's own unmined transactions are not in the chain's count yet: never step back onto them."""
    chain = registry["chain"]
    assert allocate(wallet, chain, count=5) == [0, 1, 2, 3, 4]

    assert allocate(wallet, chain, count=2, chain_pending=2) == [5, 6]
    assert allocate(wallet, chain, chain_pending=0) == [7]


@pytest.mark.django_db
def test_the_first_allocation_starts_at_the_chains_pending_count(wallet, registry):
    assert allocate(wallet, registry["chain"], count=2, chain_pending=4) == [4, 5]


@pytest.mark.django_db
def test_released_nonces_are_handed_out_first_lowest_first(wallet, registry):
    chain = registry["chain"]
    assert allocate(wallet, chain, count=6) == [0, 1, 2, 3, 4, 5]
    assert release(wallet, chain, [3, 1]) == "pooled"

    assert allocate(wallet, chain) == [1]
    assert cursor_of(wallet, chain).released == [3]
    assert allocate(wallet, chain, count=3) == [3, 6, 7]
    assert cursor_of(wallet, chain).released == []
    assert cursor_of(wallet, chain).next_nonce == 8


@pytest.mark.django_db
def test_released_nonces_the_chain_already_counts_are_not_reused(wallet, registry):
    """A released nonce below the chain's pending count was used by some other sender of the same
    key: handing it out again would only produce a 'nonce too low' transaction."""
    chain = registry["chain"]
    assert allocate(wallet, chain, count=6) == [0, 1, 2, 3, 4, 5]
    assert release(wallet, chain, [1, 4]) == "pooled"

    assert allocate(wallet, chain, count=2, chain_pending=3) == [4, 6]
    cursor = cursor_of(wallet, chain)
    assert cursor.released == []
    assert cursor.next_nonce == 7


@pytest.mark.django_db(transaction=True)
def test_allocation_and_release_outside_a_transaction_are_refused_and_write_nothing(wallet, registry):
    chain = registry["chain"]
    assert not connection.in_atomic_block
    with pytest.raises(RuntimeError, match="SERIALIZABLE"):
        nonce_allocate(wallet=wallet, chain=chain)
    assert not NonceCursor.objects.exists()

    assert allocate(wallet, chain, count=2) == [0, 1]
    with pytest.raises(RuntimeError, match="SERIALIZABLE"):
        nonce_release(wallet=wallet, chain=chain, nonces=[1])
    assert cursor_of(wallet, chain).next_nonce == 2


def _race(body, threads: int = 2) -> list[BaseException]:
    """Run `body(index)` in `threads` threads, each on its own PostgreSQL connection."""
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            body(index)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            connection.close()

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert not any(worker.is_alive() for worker in workers), "a racing thread hung"
    return errors


def _allocate_concurrently(wallet, chain, *, rounds: int, count: int):
    """Two threads, each allocating `count` nonces `rounds` times in its own SERIALIZABLE
    transactions (re-run on serialization failures, as every caller does). Both transactions of the
    first round have read the database before either allocates, so they truly overlap. Returns the
    nonces of committed allocations per thread, the number of re-runs, and the threads' errors."""
    barrier = threading.Barrier(2, timeout=20)
    committed: dict[int, list[int]] = {0: [], 1: []}
    reruns: list[int] = []

    def body(thread: int) -> None:
        for round_ in range(rounds):
            for attempt in serializable_attempts(label=f"test allocate {thread}", max_attempts=50):
                with attempt:
                    if attempt.number > 1:
                        reruns.append(thread)
                    Wallet.objects.get(pk=wallet.pk)  # the snapshot is taken here
                    if round_ == 0 and attempt.number == 1:
                        barrier.wait()
                    nonces = nonce_allocate(wallet=wallet, chain=chain, count=count)
                    transaction.on_commit(lambda n=nonces, t=thread: committed[t].extend(n))

    errors = _race(body)
    return committed, reruns, errors


@pytest.mark.django_db(transaction=True)
def test_concurrent_allocations_never_hand_out_the_same_nonce(wallet, registry):
    chain = registry["chain"]
    assert allocate(wallet, chain) == [0]  # the cursor row exists; the race is on advancing it

    committed, reruns, errors = _allocate_concurrently(wallet, chain, rounds=5, count=2)

    assert errors == []
    everything = [0] + committed[0] + committed[1]
    assert sorted(everything) == list(range(21)), committed  # contiguous, none twice, none lost
    assert reruns, "the two transactions never overlapped: the test proved nothing"
    assert cursor_of(wallet, chain).next_nonce == 21


@pytest.mark.django_db(transaction=True)
def test_concurrent_first_allocations_of_a_fresh_wallet_never_share_a_nonce(wallet, registry):
    """No cursor row yet: both transactions try to create it; one must give way and re-run."""
    chain = registry["chain"]

    committed, _reruns, errors = _allocate_concurrently(wallet, chain, rounds=3, count=2)

    assert errors == []
    assert sorted(committed[0] + committed[1]) == list(range(12)), committed
    assert NonceCursor.objects.filter(wallet=wallet, chain=chain).count() == 1


# --- nonce_release ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_releasing_the_newest_nonces_rewinds_the_cursor(wallet, registry):
    chain = registry["chain"]
    assert allocate(wallet, chain, count=5) == [0, 1, 2, 3, 4]

    assert release(wallet, chain, [3, 4]) == "rewound"
    cursor = cursor_of(wallet, chain)
    assert cursor.next_nonce == 3
    assert cursor.released == []
    assert allocate(wallet, chain, count=2) == [3, 4]


@pytest.mark.django_db
def test_releasing_nonces_below_the_top_pools_them_without_moving_the_cursor(wallet, registry):
    chain = registry["chain"]
    assert allocate(wallet, chain, count=5) == [0, 1, 2, 3, 4]

    assert release(wallet, chain, [2, 1]) == "pooled"
    cursor = cursor_of(wallet, chain)
    assert cursor.next_nonce == 5
    assert cursor.released == [1, 2]
    assert allocate(wallet, chain, count=3) == [1, 2, 5]


@pytest.mark.django_db
def test_releasing_the_top_also_takes_back_pooled_nonces_just_below_it(wallet, registry):
    """Pooled 2, then released 3 and 4 (the top): the cursor rewinds over all three, and a pooled
    nonce with a gap above it (0) stays pooled."""
    chain = registry["chain"]
    assert allocate(wallet, chain, count=5) == [0, 1, 2, 3, 4]
    assert release(wallet, chain, [0]) == "pooled"
    assert release(wallet, chain, [2]) == "pooled"

    assert release(wallet, chain, [4, 3]) == "rewound"
    cursor = cursor_of(wallet, chain)
    assert cursor.next_nonce == 2
    assert cursor.released == [0]
    assert allocate(wallet, chain, count=3) == [0, 2, 3]


@pytest.mark.django_db
def test_releasing_a_nonce_twice_pools_it_once(wallet, registry):
    chain = registry["chain"]
    assert allocate(wallet, chain, count=4) == [0, 1, 2, 3]
    assert release(wallet, chain, [1]) == "pooled"
    assert release(wallet, chain, [1, 1]) == "pooled"

    assert cursor_of(wallet, chain).released == [1]
    assert allocate(wallet, chain, count=2) == [1, 4]


# --- scope_propose / scope_revoke --------------------------------------------------------------------


@pytest.mark.django_db
def test_a_grant_records_the_scope_with_the_router_frozen(wallet, registry):
    scope = scope_propose(**grant_params(registry, wallet))

    scope.refresh_from_db()
    assert scope.wallet == wallet
    assert scope.chain == registry["chain"]
    assert scope.dex == registry["dex"]
    assert scope.router == registry["dex"].router
    assert scope.active
    assert scope.revoked_at is None
    assert not scope.allow_reverse
    assert not scope.allow_onchain_only_pricing
    # By default every supported swap is allowed, and nothing else (approve is never a scope's choice).
    assert sorted(scope.allowed_selectors) == sorted(
        f.selector
        for f in (SWAP_EXACT_TOKENS_FOR_TOKENS, SWAP_EXACT_ETH_FOR_TOKENS, SWAP_EXACT_TOKENS_FOR_ETH)
    )

    # Repointing the DEX afterwards does not widen the scope to the new router.
    Dex.objects.filter(pk=registry["dex"].pk).update(router="0x" + "11" * 20)
    scope.refresh_from_db()
    assert scope.router == "0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0"


@pytest.mark.django_db
def test_a_grant_keeps_the_options_it_was_given(wallet, registry):
    scope = scope_propose(
        **grant_params(
            registry,
            wallet,
            allow_reverse=True,
            allowed_selectors=[SWAP_EXACT_TOKENS_FOR_TOKENS.selector],
            max_notional_usd=500,
            daily_volume_usd=2_000,
            allow_onchain_only_pricing=True,
        )
    )
    scope.refresh_from_db()
    assert scope.allow_reverse
    assert scope.allowed_selectors == [SWAP_EXACT_TOKENS_FOR_TOKENS.selector]
    assert scope.max_notional_usd == 500
    assert scope.daily_volume_usd == 2_000
    assert scope.allow_onchain_only_pricing


@pytest.mark.django_db
@pytest.mark.parametrize("bps", [1, 5000])
def test_a_grant_accepts_slippage_at_its_bounds(wallet, registry, bps):
    assert scope_propose(**grant_params(registry, wallet, max_slippage_bps=bps)).max_slippage_bps == bps


def _foreign_token(registry) -> Token:
    other = Chain.objects.create(chain_id=10, name="other")
    return Token.objects.create(
        chain=other, address=registry["dai"].address, symbol="oDAI", name="o", decimals=18
    )


INVALID_GRANTS = {
    "token_in on another chain": ("token_in", lambda r: {"token_in": _foreign_token(r)}),
    "token_out on another chain": ("token_in", lambda r: {"token_out": _foreign_token(r)}),
    "same token both ways": ("token_out", lambda r: {"token_out": r["usdc"]}),
    "window ends before it starts": (
        "valid_until",
        lambda r: {"valid_from": timezone.now(), "valid_until": timezone.now() - timedelta(hours=1)},
    ),
    "empty window": ("valid_until", lambda r: _empty_window()),
    "zero amount": ("max_amount_in", lambda r: {"max_amount_in": 0}),
    "negative amount": ("max_amount_in", lambda r: {"max_amount_in": -5}),
    "zero slippage": ("max_slippage_bps", lambda r: {"max_slippage_bps": 0}),
    "slippage over 50%": ("max_slippage_bps", lambda r: {"max_slippage_bps": 5001}),
    "approve as a selector": ("allowed_selectors", lambda r: {"allowed_selectors": [APPROVE.selector]}),
    "unknown selector": (
        "allowed_selectors",
        lambda r: {"allowed_selectors": [SWAP_EXACT_TOKENS_FOR_TOKENS.selector, "0xdeadbeef"]},
    ),
}


def _empty_window() -> dict:
    at = timezone.now()
    return {"valid_from": at, "valid_until": at}


@pytest.mark.django_db
@pytest.mark.parametrize("case", sorted(INVALID_GRANTS))
def test_an_invalid_grant_names_the_field_and_writes_nothing(wallet, registry, case):
    field, overrides = INVALID_GRANTS[case]

    with pytest.raises(ScopeError) as raised:
        scope_propose(**grant_params(registry, wallet, **overrides(registry)))

    assert raised.value.field == field
    assert str(raised.value).startswith(f"{field}: ")
    assert isinstance(raised.value, ValueError)  # callers that catch ValueError still catch it
    assert not PermissionScope.objects.exists()


@pytest.mark.django_db
def test_revoking_a_scope_deactivates_it_at_once_and_only_it(wallet, registry):
    kept = scope_propose(**grant_params(registry, wallet))
    revoked = scope_propose(**grant_params(registry, wallet))
    before = timezone.now()

    returned = scope_revoke(scope=revoked)

    assert returned.pk == revoked.pk
    assert returned.active is False  # the object handed back already shows it
    assert returned.revoked_at is not None
    assert returned.revoked_at >= before
    stored = PermissionScope.objects.get(pk=revoked.pk)
    assert stored.active is False
    assert stored.revoked_at == returned.revoked_at
    kept.refresh_from_db()
    assert kept.active
    assert kept.revoked_at is None


# --- wallet_create ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_new_wallet_waits_for_its_key_and_the_signer_is_asked_after_commit(
    registry, monkeypatch, django_capture_on_commit_callbacks
):
    sent = []
    monkeypatch.setattr(
        celery.current_app, "send_task", lambda name, args=(), **kw: sent.append((name, tuple(args)))
    )
    owner = UserFactory()

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        wallet = wallet_create(owner=owner, label="main", key_backend="keystore")
        assert sent == []  # nothing leaves before the transaction commits

    for callback in callbacks:
        callback()
    wallet.refresh_from_db()
    assert wallet.owner == owner
    assert wallet.label == "main"
    assert wallet.key_backend == Wallet.Backend.KEYSTORE
    assert wallet.status == Wallet.Status.PROVISIONING
    assert wallet.address is None  # only the signer, from the key, ever sets it
    assert wallet.key_id == ""
    assert sent == [("signing.create_key", (wallet.pk,))]  # the signer's key-creation task


@pytest.mark.django_db
def test_a_wallet_whose_creation_rolls_back_asks_the_signer_for_nothing(
    registry, monkeypatch, django_capture_on_commit_callbacks
):
    sent = []
    monkeypatch.setattr(celery.current_app, "send_task", lambda name, args=(), **kw: sent.append(name))

    def create_then_fail() -> None:
        with transaction.atomic():
            wallet_create(owner=UserFactory(), label="main", key_backend="keystore")
            raise RuntimeError("the request failed later")

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError):
        create_then_fail()

    assert sent == []
    assert not Wallet.objects.exists()


@pytest.mark.django_db
def test_a_wallet_with_an_unknown_backend_is_refused_and_nothing_is_written(
    registry, monkeypatch, django_capture_on_commit_callbacks
):
    sent = []
    monkeypatch.setattr(celery.current_app, "send_task", lambda name, args=(), **kw: sent.append(name))

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(ScopeError) as raised:
        wallet_create(owner=UserFactory(), label="main", key_backend="hardware-wallet")

    assert raised.value.field == "key_backend"
    assert not Wallet.objects.exists()
    assert sent == []
