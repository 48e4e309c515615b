"""apps.wallets.scope.scope_check: the one rule the engine (VALIDATING) and the signer (SIGNING) judge
a frozen transaction by. Every refusal names its reason code; the check reads PostgreSQL and decodes
calldata only, so no chain node is needed."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from apps.chain.calldata import (
    SWAP_EXACT_ETH_FOR_TOKENS,
    SWAP_EXACT_TOKENS_FOR_ETH,
    SWAP_EXACT_TOKENS_FOR_TOKENS,
    encode_call,
)
from apps.chain.txcodec import payload_hash
from apps.trades.models import ChainTransaction, Trade
from apps.wallets.models import SpendLedgerEntry, Wallet
from apps.wallets.scope import ScopeState, active_scopes, scope_check
from apps.wallets.services import scope_revoke
from tests.factories import GWEI, grant_scope, signing_trade
from tests.wallets.conftest import DAI, OTHER_ADDRESS, ROUTER, USDC, WALLET_ADDRESS, WETH

pytestmark = pytest.mark.django_db

USDC_UNITS = 10**6


# --- helpers ---------------------------------------------------------------------------------------


def swap_of(trade: Trade) -> ChainTransaction:
    return trade.transactions.get(kind=ChainTransaction.Kind.SWAP, attempt=1)


def approve_of(trade: Trade) -> ChainTransaction:
    return trade.transactions.get(kind=ChainTransaction.Kind.APPROVE, attempt=1)


def check(trade: Trade, tx: ChainTransaction | None = None, *, now=None, expected_state="SIGNING", **kw):
    return scope_check(
        trade=trade,
        tx=tx if tx is not None else swap_of(trade),
        now=now or timezone.now(),
        expected_state=expected_state,
        **kw,
    )


def codes(decision) -> set[str]:
    return {code for code, _detail in decision.reasons}


def rewrite(tx: ChainTransaction, **fields) -> ChainTransaction:
    """Change frozen fields the way a forged request would, keeping the row self-consistent."""
    for name, value in fields.items():
        setattr(tx, name, value)
    tx.unsigned_hash = payload_hash(tx.as_unsigned_dict())
    tx.save()
    return tx


def swap_calldata(trade: Trade, function=SWAP_EXACT_TOKENS_FOR_TOKENS) -> str:
    return encode_call(
        function,
        int(trade.amount_in),
        int(trade.amount_out_min),
        list(trade.path),
        trade.wallet.address,
        int(trade.deadline.timestamp()),
    )


# --- allowed ---------------------------------------------------------------------------------------


def test_an_in_scope_swap_and_its_approve_are_allowed_by_the_scope(wallet):
    scope = grant_scope(wallet)
    trade = signing_trade(wallet)

    swap = check(trade)
    approve = check(trade, approve_of(trade))

    assert swap.allowed, swap.describe()
    assert swap.scope == scope
    assert swap.reasons == []
    assert swap.notional_usd == Decimal(100)  # 100 dUSDC, a stablecoin
    assert approve.allowed, approve.describe()
    assert approve.scope == scope


def test_the_engine_judges_at_validating_by_the_same_rule(wallet):
    grant_scope(wallet)
    trade = signing_trade(wallet, state="VALIDATING")

    assert check(trade, expected_state="VALIDATING").allowed
    assert codes(check(trade, expected_state="SIGNING")) == {"trade_not_in_state"}


def test_a_reverse_swap_is_allowed_only_when_the_scope_allows_reverse(wallet):
    trade = signing_trade(wallet, path=[DAI, USDC])
    one_way = grant_scope(wallet)
    refused = check(trade)
    assert not refused.allowed
    assert codes(refused) == {"token_outside_pair"}

    scope_revoke(scope=one_way)
    both_ways = grant_scope(wallet, allow_reverse=True)
    allowed = check(trade)
    assert allowed.allowed, allowed.describe()
    assert allowed.scope == both_ways


# --- refused by one scope's limits -----------------------------------------------------------------

FORGERIES = {
    "router_not_allowed": {"tx_overrides": {"to": OTHER_ADDRESS}},
    "recipient_not_wallet": {"call_overrides": {"recipient": OTHER_ADDRESS}},
    "amount_over_cap": {"amount_in": 1_000 * USDC_UNITS + 1},
    "amount_mismatch": {"call_overrides": {"amount_in": 50 * USDC_UNITS}},
    "path_mismatch": {"call_overrides": {"path": [USDC, WETH, DAI]}},
    "fee_over_cap": {"tx_overrides": {"max_fee_per_gas": 100 * GWEI + 1}},
    "priority_fee_over_cap": {"tx_overrides": {"max_priority_fee_per_gas": 5 * GWEI + 1}},
    # Quote 99 dDAI, scope allows 100 bps: the floor is 98.01 dDAI.
    "slippage_over_cap": {"call_overrides": {"amount_out_min": 9801 * 10**16 - 1}},
    "token_outside_pair": {"path": [USDC, WETH]},
}


@pytest.mark.parametrize("expected", sorted(FORGERIES))
def test_a_swap_outside_the_scope_is_refused_with_its_reason(wallet, expected):
    grant_scope(wallet)
    trade = signing_trade(wallet, **FORGERIES[expected])

    decision = check(trade)

    assert not decision.allowed
    assert decision.scope is None
    assert codes(decision) == {expected}, decision.describe()
    assert decision.first_code == expected


def test_limits_exactly_at_the_caps_are_allowed(wallet):
    grant_scope(wallet)
    trade = signing_trade(
        wallet,
        amount_in=1_000 * USDC_UNITS,
        call_overrides={"amount_out_min": 9801 * 10**16},
        tx_overrides={"max_fee_per_gas": 100 * GWEI, "max_priority_fee_per_gas": 5 * GWEI},
    )
    decision = check(trade)
    assert decision.allowed, decision.describe()


def test_a_different_swap_function_is_refused(wallet):
    grant_scope(wallet)
    trade = signing_trade(wallet)
    swap = rewrite(swap_of(trade), data=swap_calldata(trade, SWAP_EXACT_TOKENS_FOR_ETH))

    decision = check(trade, swap)

    assert not decision.allowed
    assert codes(decision) == {"function_mismatch"}, decision.describe()


def test_a_swap_function_the_scope_does_not_list_is_refused(wallet):
    grant_scope(wallet, allowed_selectors=[SWAP_EXACT_ETH_FOR_TOKENS.selector])
    trade = signing_trade(wallet)

    decision = check(trade)

    assert not decision.allowed
    assert codes(decision) == {"selector_not_allowed"}, decision.describe()


def test_a_calldata_deadline_other_than_the_trades_is_refused(wallet):
    grant_scope(wallet)
    trade = signing_trade(wallet)
    swap = swap_of(trade)
    rewrite(
        swap,
        data=encode_call(
            SWAP_EXACT_TOKENS_FOR_TOKENS,
            int(trade.amount_in),
            int(trade.amount_out_min),
            list(trade.path),
            wallet.address,
            int(trade.deadline.timestamp()) + 3600,
        ),
    )
    assert codes(check(trade, swap)) == {"deadline_mismatch"}


def test_a_passed_deadline_is_refused(wallet):
    grant_scope(wallet)
    trade = signing_trade(wallet)

    decision = check(trade, now=trade.deadline + timedelta(seconds=1))

    assert codes(decision) == {"deadline_passed"}, decision.describe()


def test_a_deadline_too_far_ahead_is_refused(wallet, settings):
    settings.MAX_TRADE_DEADLINE_SECONDS = 600  # the trade's deadline is 20 minutes away
    grant_scope(wallet)
    trade = signing_trade(wallet)

    assert codes(check(trade)) == {"deadline_too_far"}


def test_a_trade_without_a_frozen_quote_is_refused(wallet):
    grant_scope(wallet)
    trade = signing_trade(wallet)
    Trade.objects.filter(pk=trade.pk).update(quoted_amount_out=None)
    trade.refresh_from_db()

    assert codes(check(trade)) == {"no_quote"}


def test_calldata_that_is_not_a_known_call_is_refused(wallet):
    grant_scope(wallet)
    trade = signing_trade(wallet)
    swap = rewrite(swap_of(trade), data="0xa9059cbb" + "00" * 64)  # an ERC-20 transfer

    decision = check(trade, swap)

    assert not decision.allowed
    assert [code for code, _ in decision.reasons] == ["calldata_unrecognised"]


def test_a_token_swap_carrying_eth_is_refused(wallet):
    grant_scope(wallet)
    trade = signing_trade(wallet)
    swap = rewrite(swap_of(trade), value=1)

    decision = check(trade, swap)

    assert not decision.allowed
    assert decision.first_code == "calldata_unrecognised"


# --- refused before any scope is looked at ---------------------------------------------------------


def test_a_trade_in_another_state_is_refused(wallet):
    grant_scope(wallet)
    trade = signing_trade(wallet, state="CONFIRMING")

    decision = check(trade, expected_state="SIGNING")

    assert not decision.allowed
    assert codes(decision) == {"trade_not_in_state"}


@pytest.mark.parametrize("offset", [0, 40])
def test_a_nonce_the_wallet_never_allocated_is_refused(wallet, offset):
    grant_scope(wallet)
    trade = signing_trade(wallet)  # nonces 0 and 1: the cursor stands at 2
    swap = rewrite(swap_of(trade), nonce=2 + offset)

    decision = check(trade, swap)

    assert codes(decision) == {"nonce_not_allocated"}, decision.describe()


def test_a_sender_other_than_the_wallet_is_refused(wallet):
    grant_scope(wallet)
    trade = signing_trade(wallet, tx_overrides={"sender": OTHER_ADDRESS})

    assert codes(check(trade)) == {"sender_not_wallet"}


def test_a_transaction_for_another_chain_is_refused(wallet):
    grant_scope(wallet)
    trade = signing_trade(wallet, tx_overrides={"chain_id": 1})

    assert codes(check(trade)) == {"chain_mismatch"}


def test_another_trades_transaction_is_refused(wallet):
    grant_scope(wallet)
    first = signing_trade(wallet)
    second = signing_trade(wallet)

    assert codes(check(second, swap_of(first))) == {"transaction_not_of_trade"}


def test_an_inactive_wallet_signs_nothing(wallet):
    grant_scope(wallet)
    trade = signing_trade(wallet)
    Wallet.objects.filter(pk=wallet.pk).update(active=False)
    trade = Trade.objects.get(pk=trade.pk)

    assert codes(check(trade)) == {"wallet_inactive"}


# --- which scopes count ----------------------------------------------------------------------------


def test_an_expired_scope_allows_nothing(wallet):
    now = timezone.now()
    grant_scope(wallet, valid_from=now - timedelta(days=2), valid_until=now - timedelta(seconds=1))
    trade = signing_trade(wallet)

    decision = check(trade)

    assert not decision.allowed
    assert codes(decision) == {"no_active_scope"}


def test_a_scope_not_yet_valid_allows_nothing(wallet):
    now = timezone.now()
    grant_scope(wallet, valid_from=now + timedelta(minutes=5), valid_until=now + timedelta(days=1))
    trade = signing_trade(wallet)

    assert codes(check(trade)) == {"no_active_scope"}


def test_a_scope_stops_allowing_once_its_window_ends(wallet):
    now = timezone.now()
    scope = grant_scope(wallet, valid_until=now + timedelta(minutes=10))
    trade = signing_trade(wallet)

    assert check(trade, now=scope.valid_until - timedelta(seconds=1)).allowed
    assert codes(check(trade, now=scope.valid_until)) == {"no_active_scope"}


def test_a_revoked_scope_allows_nothing_from_the_next_check_on(wallet):
    scope = grant_scope(wallet)
    trade = signing_trade(wallet)
    assert check(trade).allowed

    scope_revoke(scope=scope)

    decision = check(trade)
    assert not decision.allowed
    assert codes(decision) == {"no_active_scope"}
    assert check(trade, approve_of(trade)).allowed is False


def test_another_wallets_scope_does_not_count(wallet, other_wallet):
    grant_scope(other_wallet)
    trade = signing_trade(wallet)

    assert codes(check(trade)) == {"no_active_scope"}


def test_any_one_scope_that_allows_the_swap_is_enough(wallet):
    grant_scope(wallet, max_amount_in=10 * USDC_UNITS)
    roomy = grant_scope(wallet, max_amount_in=500 * USDC_UNITS)
    trade = signing_trade(wallet, amount_in=100 * USDC_UNITS)

    decision = check(trade)

    assert decision.allowed
    assert decision.scope == roomy


def test_when_every_scope_refuses_each_scopes_reasons_are_given(wallet):
    small = grant_scope(wallet, max_amount_in=10 * USDC_UNITS)
    stingy = grant_scope(wallet, max_fee_per_gas=10 * GWEI)
    trade = signing_trade(wallet, amount_in=100 * USDC_UNITS)  # 20 gwei max fee

    decision = check(trade)

    assert not decision.allowed
    assert [code for code, _ in decision.reasons] == ["amount_over_cap", "fee_over_cap"]
    assert decision.reasons[0][1].startswith(f"scope {small.pk}: ")
    assert decision.reasons[1][1].startswith(f"scope {stingy.pk}: ")
    assert "amount_over_cap" in decision.describe()


def test_active_scopes_lists_only_the_wallets_current_unrevoked_scopes(wallet, other_wallet, registry):
    now = timezone.now()
    current = grant_scope(wallet)
    later = grant_scope(wallet, valid_from=now + timedelta(hours=1), valid_until=now + timedelta(days=1))
    revoked = grant_scope(wallet)
    scope_revoke(scope=revoked)
    grant_scope(other_wallet)

    assert active_scopes(wallet=wallet, chain=registry["chain"], now=now) == [current]
    assert active_scopes(wallet=wallet, chain=registry["chain"], now=now + timedelta(hours=2)) == [
        current,
        later,
    ]


def test_the_check_judges_by_the_state_it_is_given(wallet):
    """The signer's batch preloads scopes and cursors: what it loaded is what the check decides by."""
    grant_scope(wallet)
    trade = signing_trade(wallet)

    class NoScopesLoaded(ScopeState):
        def scopes(self, *, wallet, chain, now):
            return []

    class CursorNotLoaded(ScopeState):
        def next_nonce(self, *, wallet, chain):
            return None

    assert check(trade).allowed
    assert codes(check(trade, state=NoScopesLoaded())) == {"no_active_scope"}
    assert codes(check(trade, state=CursorNotLoaded())) == {"nonce_not_allocated"}


# --- USD limits ------------------------------------------------------------------------------------


def test_a_swap_worth_more_than_the_notional_cap_is_refused(wallet):
    grant_scope(wallet, max_notional_usd=Decimal("99.99"))
    trade = signing_trade(wallet, amount_in=100 * USDC_UNITS)

    assert codes(check(trade)) == {"notional_over_cap"}

    grant_scope(wallet, max_notional_usd=Decimal(100))
    assert check(trade).allowed


def test_a_usd_cap_refuses_a_token_custos_cannot_price(wallet):
    grant_scope(wallet, allow_reverse=True, max_notional_usd=Decimal(1_000_000))
    trade = signing_trade(wallet, path=[DAI, USDC])  # dDAI has no USD price here

    assert codes(check(trade)) == {"no_usd_price"}


def _spend(scope, wallet, usd: int, *, hours_ago: float) -> None:
    earlier = signing_trade(wallet)
    SpendLedgerEntry.objects.create(
        scope=scope,
        trade=earlier,
        amount_in=usd * USDC_UNITS,
        notional_usd=Decimal(usd),
        created_at=timezone.now() - timedelta(hours=hours_ago),
    )


def test_the_rolling_daily_volume_cap_counts_the_last_24_hours_only(wallet):
    scope = grant_scope(wallet, daily_volume_usd=Decimal(1_000))
    _spend(scope, wallet, 850, hours_ago=1)
    trade = signing_trade(wallet, amount_in=100 * USDC_UNITS)
    assert check(trade).allowed  # 850 + 100 <= 1000

    _spend(scope, wallet, 60, hours_ago=23)
    assert codes(check(trade)) == {"daily_volume_over_cap"}  # 910 + 100 > 1000

    _spend(scope, wallet, 5_000, hours_ago=25)  # outside the window: does not count
    SpendLedgerEntry.objects.filter(notional_usd=60).delete()
    assert check(trade).allowed


def test_a_re_signed_swap_does_not_count_its_own_spend_twice(wallet):
    scope = grant_scope(wallet, daily_volume_usd=Decimal(1_000))
    _spend(scope, wallet, 900, hours_ago=1)
    trade = signing_trade(wallet, amount_in=100 * USDC_UNITS)
    SpendLedgerEntry.objects.create(
        scope=scope,
        trade=trade,
        amount_in=trade.amount_in,
        notional_usd=Decimal(100),
        created_at=timezone.now(),
    )

    assert check(trade).allowed  # 900 spent by others + this swap's 100


# --- cancels ---------------------------------------------------------------------------------------


def _cancel(trade: Trade, **fields) -> ChainTransaction:
    swap = swap_of(trade)
    values = {
        "trade": trade,
        "sequence": swap.sequence,
        "kind": ChainTransaction.Kind.CANCEL,
        "attempt": 2,
        "replaces": swap,
        "chain_id": swap.chain_id,
        "sender": WALLET_ADDRESS,
        "nonce": swap.nonce,
        "to": WALLET_ADDRESS,
        "value": 0,
        "data": "0x",
        "gas": 21_000,
        "max_fee_per_gas": 40 * GWEI,
        "max_priority_fee_per_gas": 2 * GWEI,
    }
    values.update(fields)
    tx = ChainTransaction(**values)
    tx.unsigned_hash = payload_hash(tx.as_unsigned_dict())
    tx.save()
    return tx


def test_a_cancel_replacing_the_trades_swap_is_allowed_within_the_fee_caps(wallet):
    grant_scope(wallet)
    trade = signing_trade(wallet)

    assert check(trade, _cancel(trade)).allowed


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"to": ROUTER}, "cancel_malformed"),
        ({"value": 1}, "cancel_malformed"),
        ({"data": "0x00"}, "cancel_malformed"),
        ({"replaces": None}, "cancel_without_target"),
        ({"max_fee_per_gas": 100 * GWEI + 1}, "fee_over_cap"),
        ({"max_priority_fee_per_gas": 5 * GWEI + 1}, "fee_over_cap"),
    ],
    ids=["to-router", "with-value", "with-data", "no-target", "fee", "tip"],
)
def test_a_cancel_that_is_not_a_plain_replacement_is_refused(wallet, fields, expected):
    grant_scope(wallet)
    trade = signing_trade(wallet)

    decision = check(trade, _cancel(trade, **fields))

    assert not decision.allowed
    assert codes(decision) == {expected}


def test_a_cancel_of_another_trades_transaction_is_refused(wallet):
    grant_scope(wallet)
    first = signing_trade(wallet)
    second = signing_trade(wallet)

    decision = check(second, _cancel(second, replaces=swap_of(first)))

    assert codes(decision) == {"cancel_without_target"}


def test_with_every_scope_revoked_a_cancel_may_pay_at_most_twice_the_fees_it_replaces(wallet):
    """Revoking scopes must not strand a transaction already in flight: it can still be cancelled."""
    scope = grant_scope(wallet)
    trade = signing_trade(wallet)  # the swap: 20 gwei max fee, 1 gwei tip
    scope_revoke(scope=scope)

    assert check(trade, _cancel(trade, max_fee_per_gas=40 * GWEI, max_priority_fee_per_gas=2 * GWEI)).allowed
    over = _cancel(trade, attempt=3, max_fee_per_gas=40 * GWEI + 1, max_priority_fee_per_gas=2 * GWEI)
    assert codes(check(trade, over)) == {"fee_over_cap"}
