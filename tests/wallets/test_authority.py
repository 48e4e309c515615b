"""Owner authority: a scope counts only when one of its owner's current authority keys signed the
row's own fields as EIP-712 typed data. Unsigned, mis-signed, edited-after-signing, signed by another
key, replayed onto another wallet's row: each signs nothing, with its reason. And the fee budget."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import DatabaseError, transaction
from django.utils import timezone
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.trades.models import ChainTransaction
from apps.wallets import authority
from apps.wallets.models import PermissionScope
from apps.wallets.scope import scope_check
from apps.wallets.services import (
    ScopeError,
    authority_add,
    authority_remove,
    scope_revoke,
    scope_signature_attach,
)
from tests.factories import (
    STRANGER_AUTHORITY_KEY,
    authority_address,
    grant_scope,
    owner_signature,
    sign_scope,
    signing_trade,
    tampering,
)

pytestmark = pytest.mark.django_db


def _swap(trade) -> ChainTransaction:
    return trade.transactions.get(kind=ChainTransaction.Kind.SWAP, attempt=1)


def _codes(trade) -> set[str]:
    decision = scope_check(trade=trade, tx=_swap(trade), now=timezone.now(), expected_state="SIGNING")
    return {code for code, _ in decision.reasons} if not decision.allowed else {"allowed"}


# --- the typed data and its digest --------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    amount=st.integers(min_value=1, max_value=2**256 - 1),
    fee=st.integers(min_value=0, max_value=2**256 - 1),
    decimals=st.integers(min_value=0, max_value=255),
    pegged=st.booleans(),
    selectors=st.lists(st.sampled_from(["0x38ed1739", "0x7ff36ab5", "0x18cbafe5"]), unique=True),
    cents=st.one_of(st.none(), st.integers(min_value=1, max_value=10**12)),
    seconds=st.integers(min_value=0, max_value=2**34),
    revision=st.integers(min_value=1, max_value=2**32),
)
def test_the_digest_is_byte_for_byte_eth_accounts_for_any_scope(
    amount, fee, decimals, pegged, selectors, cents, seconds, revision
):
    scope = PermissionScope(
        wallet_address=authority_address(),
        chain_id_signed=31337,
        router="0x" + "22" * 20,
        token_in_address="0x" + "33" * 20,
        token_out_address="0x" + "44" * 20,
        token_in_decimals=decimals,
        token_out_decimals=18,
        token_in_usd_pegged=pegged,
        token_out_usd_pegged=not pegged,
        allow_reverse=pegged,
        allowed_selectors=selectors,
        max_amount_in=Decimal(amount),
        max_notional_usd=None if cents is None else Decimal(cents) / 100,
        daily_volume_usd=None,
        max_slippage_bps=100,
        allow_onchain_only_pricing=True,
        max_fee_per_gas=Decimal(fee),
        max_priority_fee_per_gas=Decimal(1),
        fee_budget_wei=Decimal(fee),
        valid_from=datetime.fromtimestamp(seconds, tz=UTC),
        valid_until=datetime.fromtimestamp(seconds + 60, tz=UTC),
        revision=revision,
    )
    signable = encode_typed_data(full_message=authority.scope_typed_data(scope))
    expected = keccak(b"\x19" + signable.version + signable.header + signable.body)
    assert authority.scope_digest(scope) == expected
    scope.signature = owner_signature(scope)
    assert authority.scope_signer(scope) == authority_address()


def test_a_malformed_signature_recovers_nobody():
    digest = bytes(32)
    for bad in ("0x", "0x" + "00" * 65, "0x" + "11" * 64 + "1d", "not hex"):
        with pytest.raises(authority.SignatureError):
            authority.recover_address(digest, bad)


# --- attaching a signature ------------------------------------------------------------------------


def test_a_proposed_scope_allows_nothing_until_its_owner_signs_it(wallet):
    scope = grant_scope(wallet, signed=False)
    trade = signing_trade(wallet)
    assert scope.status_at(scope.created_at) == "proposed"
    assert _codes(trade) == {"scope_unsigned"}
    sign_scope(scope)
    assert _codes(trade) == {"allowed"}


def test_a_signature_by_a_key_that_is_not_the_owners_is_a_400_naming_the_field_and_keeps_it_proposed(wallet):
    authority_add(owner=wallet.owner, address=authority_address())
    scope = grant_scope(wallet, signed=False)
    for bad in (owner_signature(scope, STRANGER_AUTHORITY_KEY), "0x1234", "0x" + "ab" * 65):
        with pytest.raises(ScopeError) as error:
            scope_signature_attach(scope=scope, signature=bad)
        assert error.value.field == "signature"
    scope.refresh_from_db()
    assert (scope.signature, scope.signed_by) == ("", "")


def test_a_signature_of_other_typed_data_is_refused(wallet):
    authority_add(owner=wallet.owner, address=authority_address())
    scope = grant_scope(wallet, signed=False)
    other = grant_scope(wallet, signed=False, max_amount_in=10**9 + 1)
    with pytest.raises(ScopeError, match="not an authority key"):
        scope_signature_attach(scope=scope, signature=owner_signature(other))


# --- the check, on every request ------------------------------------------------------------------


def test_a_signed_scope_edited_afterwards_signs_nothing(wallet):
    grant_scope(wallet)
    trade = signing_trade(wallet)
    assert _codes(trade) == {"allowed"}
    with pytest.raises(DatabaseError, match="cannot change"):  # the database refuses it to every role
        with transaction.atomic():
            PermissionScope.objects.update(max_amount_in=10**30)
    with tampering("wallets_permissionscope"):  # as only someone who can alter the table could
        PermissionScope.objects.update(max_amount_in=10**30)  # widened behind the owner's back
    assert _codes(trade) == {"scope_signature_invalid"}


def test_a_scope_signed_by_another_owners_authority_key_signs_nothing(wallet, other_wallet):
    authority_add(owner=other_wallet.owner, address=Account.from_key(STRANGER_AUTHORITY_KEY).address)
    scope = grant_scope(wallet, signed=False)
    # Attached behind the service's back (as a compromised web role could).
    PermissionScope.objects.filter(pk=scope.pk).update(
        signature=owner_signature(scope, STRANGER_AUTHORITY_KEY)
    )
    assert _codes(signing_trade(wallet)) == {"scope_signer_not_authority"}


def test_a_valid_signature_replayed_onto_another_wallets_row_signs_nothing(wallet, other_wallet):
    signed = grant_scope(other_wallet)  # the same owner key signs for the other wallet
    authority_add(owner=wallet.owner, address=authority_address())
    copy = PermissionScope.objects.get(pk=signed.pk)
    copy.pk, copy.wallet = None, wallet
    copy.save()  # every field as signed, so the signature verifies: but it names the other wallet
    assert _codes(signing_trade(wallet)) == {"scope_wallet_mismatch"}


def test_a_valid_signature_replayed_for_another_chain_signs_nothing(wallet):
    grant_scope(wallet)
    trade = signing_trade(wallet)
    ChainTransaction.objects.filter(trade=trade).update(chain_id=1)
    trade.chain.chain_id = 1
    trade.chain.save()
    assert "scope_chain_mismatch" in _codes(trade)


def test_removing_the_authority_key_stops_its_scopes_at_the_next_check(wallet):
    grant_scope(wallet)
    trade = signing_trade(wallet)
    assert _codes(trade) == {"allowed"}
    assert authority_remove(owner=wallet.owner, address=authority_address()) == 1
    assert _codes(trade) == {"scope_signer_not_authority"}


def test_revoking_needs_no_signature_and_takes_effect_at_once(wallet):
    scope = grant_scope(wallet)
    trade = signing_trade(wallet)
    scope_revoke(scope=scope)
    assert _codes(trade) == {"no_active_scope"}


def test_a_revoked_scope_cannot_be_signed(wallet):
    authority_add(owner=wallet.owner, address=authority_address())
    scope = scope_revoke(scope=grant_scope(wallet, signed=False))
    with pytest.raises(ScopeError, match="revoked"):
        scope_signature_attach(scope=scope, signature=owner_signature(scope))


# --- the fee budget -----------------------------------------------------------------------------


def test_a_transaction_whose_gas_times_fee_passes_the_budget_is_refused(wallet):
    grant_scope(wallet, fee_budget_wei=300_000 * 20 * 10**9)
    trade = signing_trade(wallet)
    swap = _swap(trade)
    assert int(swap.gas) * int(swap.max_fee_per_gas) == 300_000 * 20 * 10**9  # exactly at the budget
    assert _codes(trade) == {"allowed"}
    ChainTransaction.objects.filter(pk=swap.pk).update(gas=30_000_000)
    assert _codes(trade) == {"fee_budget_exceeded"}


def test_the_default_fee_budget_is_the_max_fee_times_the_configured_gas(wallet, settings):
    settings.SCOPE_FEE_BUDGET_DEFAULT_GAS = 123_456
    scope = grant_scope(wallet, signed=False)
    assert int(scope.fee_budget_wei) == int(scope.max_fee_per_gas) * 123_456
    assert authority.scope_message(scope)["feeBudgetWei"] == str(int(scope.max_fee_per_gas) * 123_456)
