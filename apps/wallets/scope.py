"""The permission-scope check: one pure decision shared by the engine (at VALIDATING) and the signer
(at SIGNING), so what the engine plans and what the signer signs are judged by the same rules.

Given a frozen chain transaction, its trade and the wallet's scopes, it decodes the calldata and
answers allowed (with the scope that allows it) or refused (with every reason).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, Decimal

from django.conf import settings
from django.db.models import Sum

from apps.chain.calldata import (
    SWAP_EXACT_ETH_FOR_TOKENS,
    SWAP_EXACT_TOKENS_FOR_ETH,
    SWAP_EXACT_TOKENS_FOR_TOKENS,
    Approve,
    CalldataError,
    Swap,
    decode_call,
)
from apps.wallets.authority import SignatureError, scope_signer
from apps.wallets.models import AuthorityKey, NonceCursor, PermissionScope, SpendLedgerEntry

CANCEL_DATA = ("0x", "")


@dataclass
class ScopeDecision:
    allowed: bool
    scope: PermissionScope | None = None
    reasons: list[tuple[str, str]] = field(default_factory=list)  # (code, detail)
    notional_usd: Decimal | None = None

    @property
    def first_code(self) -> str:
        return self.reasons[0][0] if self.reasons else ""

    def describe(self) -> str:
        return "; ".join(f"{code}: {detail}" for code, detail in self.reasons)


def notional_of(*, decimals: int, usd_pegged: bool, amount: int) -> Decimal | None:
    """The USD value of `amount` base units of a token the owner signed as USD-pegged (one USD per
    whole token, at the decimals the owner signed), or None: no USD value Custos can vouch for."""
    if not usd_pegged:
        return None
    return (Decimal(amount) / (Decimal(10) ** decimals)).quantize(Decimal("0.000001"))


def active_scopes_query(*, now: datetime):
    return PermissionScope.objects.filter(
        active=True, revoked_at__isnull=True, valid_from__lte=now, valid_until__gt=now
    ).select_related("token_in", "token_out", "chain")


def active_scopes(*, wallet, chain, now: datetime) -> list[PermissionScope]:
    return list(active_scopes_query(now=now).filter(wallet=wallet, chain=chain))


def spent_usd_query(*, now: datetime):
    """Ledger entries inside the rolling 24-hour window."""
    return SpendLedgerEntry.objects.filter(created_at__gt=now - timedelta(hours=24))


class ScopeState:
    """What the check reads besides the trade and its transaction: the wallet's nonce cursor, its
    active scopes and each scope's 24-hour spend. This one reads the database on every call; the
    signer's batch (apps.signing.services) preloads the same facts once for many requests (the
    scopes and spend with the same queries, the nonce cursor joined to the trades it loads), and the
    engine's validation reads them once per trade, so every path judges by one rule."""

    def next_nonce(self, *, wallet, chain) -> int | None:
        cursor = NonceCursor.objects.filter(wallet=wallet, chain=chain).first()
        return None if cursor is None else cursor.next_nonce

    def scopes(self, *, wallet, chain, now: datetime) -> list[PermissionScope]:
        return active_scopes(wallet=wallet, chain=chain, now=now)

    def authorities(self, *, owner_id: int) -> frozenset[str]:
        """The addresses of the owner's current authority keys."""
        return frozenset(
            AuthorityKey.objects.filter(owner_id=owner_id, removed_at__isnull=True).values_list(
                "address", flat=True
            )
        )

    def spent_usd(self, *, scope, trade, now: datetime) -> Decimal:
        """The scope's 24-hour volume, not counting `trade`'s own entry."""
        total = (
            spent_usd_query(now=now)
            .filter(scope=scope)
            .exclude(trade=trade)
            .aggregate(total=Sum("notional_usd"))["total"]
        )
        return total or Decimal(0)


FROM_DATABASE = ScopeState()


def scope_check(
    *, trade, tx, now: datetime, expected_state: str, state: ScopeState = FROM_DATABASE
) -> ScopeDecision:
    """Judge one frozen transaction of `trade` against every active scope of its wallet."""
    common = _common_reasons(trade=trade, tx=tx, expected_state=expected_state, state=state)
    if common:
        return ScopeDecision(False, reasons=common)
    scopes = state.scopes(wallet=trade.wallet, chain=trade.chain, now=now)
    authorities = state.authorities(owner_id=trade.wallet.owner_id) if scopes else frozenset()
    signed_for = {"wallet_address": trade.wallet.address, "chain_id": tx.chain_id, "authorities": authorities}
    if tx.kind == "cancel":
        signed = owner_signed(scopes, wallet=trade.wallet, chain_id=tx.chain_id, state=state)
        return _cancel_decision(trade=trade, tx=tx, scopes=signed)
    try:
        call = decode_call(tx.data, value=int(tx.value))
    except CalldataError as exc:
        return ScopeDecision(False, reasons=[("calldata_unrecognised", str(exc))])
    if not scopes:
        return ScopeDecision(False, reasons=[("no_active_scope", "no active, unexpired, unrevoked scope")])
    refusals: list[tuple[str, str]] = []
    for scope in scopes:
        reasons = authority_reasons(scope, **signed_for)
        notional = None
        if not reasons:
            reasons, notional = _scope_reasons(
                scope=scope, trade=trade, tx=tx, call=call, now=now, state=state
            )
        if not reasons:
            return ScopeDecision(True, scope=scope, notional_usd=notional)
        refusals.extend((code, f"scope {scope.pk}: {detail}") for code, detail in reasons)
    return ScopeDecision(False, reasons=refusals)


def authority_reasons(
    scope, *, wallet_address: str, chain_id: int, authorities: frozenset[str]
) -> list[tuple[str, str]]:
    """Why a scope row does not count as the owner's word for this transaction: unsigned, its
    signature does not verify over the row's own fields, it was signed by a key that is not one of
    the owner's current authority keys, or what was signed names another wallet or chain (a valid
    signature replayed onto another row). Empty when it counts."""
    if not scope.signature:
        return [("scope_unsigned", "the owner has not signed this scope")]
    try:
        signer = scope_signer(scope)
    except SignatureError as exc:
        return [("scope_signature_invalid", f"the signature does not verify: {exc}")]
    if scope.signed_by and signer != scope.signed_by:
        return [("scope_signature_invalid", "the scope's fields changed after it was signed")]
    if signer not in authorities:
        return [
            ("scope_signer_not_authority", f"signed by {signer}, not an authority key of the wallet's owner")
        ]
    if scope.wallet_address != wallet_address:
        return [("scope_wallet_mismatch", f"signed for wallet {scope.wallet_address}")]
    if int(scope.chain_id_signed) != int(chain_id):
        return [("scope_chain_mismatch", f"signed for chain {scope.chain_id_signed}")]
    return []


def owner_signed(scopes: list, *, wallet, chain_id: int, state: ScopeState) -> list:
    """The scopes among `scopes` (of `wallet`) that count as its owner's word."""
    if not scopes:
        return []
    authorities = state.authorities(owner_id=wallet.owner_id)
    wallet_address = wallet.address
    return [
        s
        for s in scopes
        if not authority_reasons(s, wallet_address=wallet_address, chain_id=chain_id, authorities=authorities)
    ]


def _common_reasons(*, trade, tx, expected_state: str, state: ScopeState) -> list[tuple[str, str]]:
    reasons = []
    if trade.state != expected_state:
        reasons.append(("trade_not_in_state", f"trade is {trade.state}, not {expected_state}"))
    wallet = trade.wallet
    if not wallet.active or not wallet.address:
        reasons.append(("wallet_inactive", "wallet is inactive or has no key yet"))
    elif tx.sender != wallet.address:
        reasons.append(("sender_not_wallet", f"sender {tx.sender} is not the wallet {wallet.address}"))
    if int(tx.chain_id) != trade.chain.chain_id:
        reasons.append(
            ("chain_mismatch", f"chain id {tx.chain_id} is not the trade's {trade.chain.chain_id}")
        )
    if tx.trade_id != trade.pk:
        reasons.append(("transaction_not_of_trade", "transaction belongs to another trade"))
    next_nonce = state.next_nonce(wallet=wallet, chain=trade.chain)
    if next_nonce is None or int(tx.nonce) >= next_nonce:
        reasons.append(("nonce_not_allocated", f"nonce {tx.nonce} was never allocated to this wallet"))
    return reasons


def _cancel_decision(*, trade, tx, scopes: list[PermissionScope]) -> ScopeDecision:
    """A cancel moves no value: a zero-value self-transfer replacing one of the trade's transactions,
    its fees within the highest caps and fee budget of the wallet's active signed scopes (or, with
    none left, at most twice the fees of what it replaces)."""
    if tx.to != trade.wallet.address or int(tx.value) != 0 or tx.data not in CANCEL_DATA:
        return ScopeDecision(False, reasons=[("cancel_malformed", "a cancel is a zero-value self-transfer")])
    if tx.replaces_id is None or tx.replaces.trade_id != trade.pk:
        return ScopeDecision(
            False, reasons=[("cancel_without_target", "a cancel must replace a transaction")]
        )
    if scopes:
        fee_cap = max(int(s.max_fee_per_gas) for s in scopes)
        tip_cap = max(int(s.max_priority_fee_per_gas) for s in scopes)
    else:
        fee_cap, tip_cap = 2 * int(tx.replaces.max_fee_per_gas), 2 * int(tx.replaces.max_priority_fee_per_gas)
    if int(tx.max_fee_per_gas) > fee_cap or int(tx.max_priority_fee_per_gas) > tip_cap:
        return ScopeDecision(
            False, reasons=[("fee_over_cap", f"cancel fees over the cap {fee_cap}/{tip_cap}")]
        )
    if scopes and _fee_of(tx) > max(int(s.fee_budget_wei) for s in scopes):
        return ScopeDecision(False, reasons=[("fee_budget_exceeded", f"cancel may cost {_fee_of(tx)} wei")])
    return ScopeDecision(True)


def _fee_of(tx) -> int:
    """The most the transaction can spend on fees: gas limit x max fee per gas."""
    return int(tx.gas) * int(tx.max_fee_per_gas)


def _fee_reasons(scope: PermissionScope, tx) -> list[tuple[str, str]]:
    reasons = []
    if int(tx.max_fee_per_gas) > int(scope.max_fee_per_gas):
        reasons.append(("fee_over_cap", f"maxFeePerGas {tx.max_fee_per_gas} > cap {scope.max_fee_per_gas}"))
    if int(tx.max_priority_fee_per_gas) > int(scope.max_priority_fee_per_gas):
        reasons.append(
            (
                "priority_fee_over_cap",
                f"maxPriorityFeePerGas {tx.max_priority_fee_per_gas} > cap {scope.max_priority_fee_per_gas}",
            )
        )
    if _fee_of(tx) > int(scope.fee_budget_wei):
        reasons.append(
            (
                "fee_budget_exceeded",
                f"gas {tx.gas} x maxFeePerGas {tx.max_fee_per_gas} = {_fee_of(tx)} wei "
                f"> budget {scope.fee_budget_wei}",
            )
        )
    return reasons


def _scope_reasons(
    *, scope, trade, tx, call, now, state: ScopeState
) -> tuple[list[tuple[str, str]], Decimal | None]:
    reasons = _fee_reasons(scope, tx)
    wallet = trade.wallet.address
    pair_forward = (scope.token_in_address, scope.token_out_address)
    allowed_paths = {pair_forward} | ({pair_forward[::-1]} if scope.allow_reverse else set())
    path = tuple(trade.path)
    if path not in allowed_paths:
        reasons.append(("token_outside_pair", f"trade path {list(path)} is outside the scope's pair"))

    if isinstance(call, Approve):
        if tx.to != path[0]:
            reasons.append(("approve_wrong_token", f"approve sent to {tx.to}, not the input token"))
        if call.spender != scope.router:
            reasons.append(("approve_wrong_spender", f"approve spender {call.spender} is not the router"))
        if call.amount != int(trade.amount_in):
            reasons.append(("approve_not_exact", f"approve amount {call.amount} != trade amount"))
        if int(tx.value) != 0:
            reasons.append(("approve_with_value", "approve carries ETH"))
        return reasons, None

    assert isinstance(call, Swap)  # noqa: S101 - decode_call returns only these two
    if tx.to != scope.router:
        reasons.append(("router_not_allowed", f"destination {tx.to} is not the scope's router"))
    expected = {"in": SWAP_EXACT_ETH_FOR_TOKENS, "out": SWAP_EXACT_TOKENS_FOR_ETH}.get(
        getattr(trade, "native", ""), SWAP_EXACT_TOKENS_FOR_TOKENS
    )
    if call.function is not expected:
        reasons.append(("function_mismatch", f"{call.function.name} is not the trade's {expected.name}"))
    if call.function.selector not in scope.allowed_selectors:
        reasons.append(("selector_not_allowed", f"{call.function.name} is not allowed by the scope"))
    if call.path != path:
        reasons.append(("path_mismatch", f"calldata path {list(call.path)} is not the trade's"))
    if call.recipient != wallet:
        reasons.append(("recipient_not_wallet", f"recipient {call.recipient} is not the wallet {wallet}"))
    if call.amount_in != int(trade.amount_in):
        reasons.append(("amount_mismatch", f"amount in {call.amount_in} != trade amount {trade.amount_in}"))
    if call.function is not SWAP_EXACT_ETH_FOR_TOKENS and int(tx.value) != 0:
        reasons.append(("unexpected_value", "token swap carries ETH"))
    if call.amount_in > int(scope.max_amount_in):
        reasons.append(("amount_over_cap", f"amount in {call.amount_in} > cap {scope.max_amount_in}"))
    reasons += _slippage_reasons(scope, trade, call)
    reasons += _deadline_reasons(trade, call, now)
    forward = bool(path) and path[0] == scope.token_in_address
    notional = notional_of(
        decimals=scope.token_in_decimals if forward else scope.token_out_decimals,
        usd_pegged=scope.token_in_usd_pegged if forward else scope.token_out_usd_pegged,
        amount=call.amount_in,
    )
    reasons += _usd_reasons(scope, trade, notional, now, state)
    return reasons, notional


def _slippage_reasons(scope, trade, call: Swap) -> list[tuple[str, str]]:
    if trade.quoted_amount_out is None:
        return [("no_quote", "the trade has no frozen quote")]
    floor = (
        Decimal(int(trade.quoted_amount_out)) * (10_000 - scope.max_slippage_bps) / 10_000
    ).to_integral_value(rounding=ROUND_CEILING)
    if call.amount_out_min < int(floor):
        return [
            (
                "slippage_over_cap",
                f"amountOutMin {call.amount_out_min} < {floor} (quote {trade.quoted_amount_out}, "
                f"max slippage {scope.max_slippage_bps} bps)",
            )
        ]
    return []


def _deadline_reasons(trade, call: Swap, now: datetime) -> list[tuple[str, str]]:
    reasons = []
    if call.deadline != int(trade.deadline.timestamp()):
        reasons.append(("deadline_mismatch", "calldata deadline is not the trade's deadline"))
    if trade.deadline <= now:
        reasons.append(("deadline_passed", f"deadline {trade.deadline.isoformat()} has passed"))
    elif trade.deadline > now + timedelta(seconds=settings.MAX_TRADE_DEADLINE_SECONDS):
        reasons.append(
            ("deadline_too_far", f"deadline more than {settings.MAX_TRADE_DEADLINE_SECONDS}s away")
        )
    return reasons


def _usd_reasons(
    scope, trade, notional: Decimal | None, now: datetime, state: ScopeState
) -> list[tuple[str, str]]:
    if scope.max_notional_usd is None and scope.daily_volume_usd is None:
        return []
    if notional is None:
        return [("no_usd_price", "the scope caps USD value and the input token has no USD price")]
    reasons = []
    if scope.max_notional_usd is not None and notional > scope.max_notional_usd:
        reasons.append(("notional_over_cap", f"notional {notional} USD > cap {scope.max_notional_usd}"))
    if scope.daily_volume_usd is not None:
        spent = state.spent_usd(scope=scope, trade=trade, now=now)
        if spent + notional > scope.daily_volume_usd:
            reasons.append(
                (
                    "daily_volume_over_cap",
                    f"24h volume {spent} + {notional} USD > cap {scope.daily_volume_usd}",
                )
            )
    return reasons
