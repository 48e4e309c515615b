"""VALIDATING → SIGNING (or REJECTED): scope, price sanity, balances, allowance, deadline and fees;
allocate nonces and freeze every transaction parameter, one holder per wallet judging the waiting
trades in rounds; then ask the signer."""

from __future__ import annotations

import dataclasses
import logging

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.chain.txcodec import payload_hash
from apps.market.reference import reference_check
from apps.ml.gate import advice_gate_check
from apps.trades import chainio
from apps.trades.models import ChainTransaction, Trade, TradeEvent, TradeState
from apps.wallets.scope import ScopeState, scope_check
from apps.wallets.services import nonce_allocate
from project.db import queued_for
from project.faults import crash_point
from project.locks import Advisory
from project.memo import remember
from project.queues import TaskName

from .payloads import approve_calldata, swap_calldata, swap_value, with_margin
from .transition import StaleTrade, attempts_reusing, held_retrying, trade_rows, transition

logger = logging.getLogger(__name__)
S = TradeState


class _Refuse(Exception):
    def __init__(self, method: str, reason: str):
        self.method = method
        self.reason = reason


def _simulations_of(trades: list[Trade]) -> dict[int, dict]:
    """What each trade's simulation measured (gas, reserves at the quote block), from its audit event."""
    found: dict[int, dict] = {}
    events = TradeEvent.objects.filter(trade_id__in=[t.pk for t in trades], kind="start_validation")
    for trade_id, data in events.order_by("trade_id", "-id").values_list("trade_id", "data"):
        found.setdefault(trade_id, data)
    return found


def trade_validate(*, trade_id: int) -> None:
    """Scope, price sanity, balances, deadline and fees; allocate nonces and freeze every transaction
    parameter; → SIGNING and ask the signer (or → REJECTED with every reason).

    Every validation of a wallet writes its nonce cursor, so one at a time holds the wallet's
    PostgreSQL advisory lock (project.db.queued_for) and judges every trade of the wallet waiting in
    VALIDATING, in rounds of one chain and input token (up to VALIDATE_BATCH_SIZE, oldest first; see
    _judge_round), until none is left; after it lets go it looks once more, and holds the lock again
    if a trade turned VALIDATING meanwhile. A validation that finds the lock held therefore neither
    waits (which would idle a worker) nor comes back: its trade is already VALIDATING, so the
    holder judges it, in a round or in that last look. A round that fails on an error that heals is
    tried again by the holder, still holding the lock (_judge_waiting). A holder that dies mid-round
    has its task redelivered (late ack), and that task judges every waiting trade of the wallet."""
    found = Trade.objects.filter(pk=trade_id).values("state", "wallet_id").first()
    if found is None or found["state"] != S.VALIDATING:
        return
    wallet_id = found["wallet_id"]
    while True:
        with queued_for(Advisory.WALLET_NONCES, wallet_id, wait=False) as held:
            if not held:
                logger.info("validation left to the wallet's holder", extra={"trade": trade_id})
                return
            _judge_waiting(wallet_id)
        if not _still_waiting(wallet_id):
            return


def _judge_waiting(wallet_id: int) -> None:
    """Holding the wallet's lock: rounds until no trade of the wallet waits in VALIDATING. A round
    that failed on an error that heals, its reads included (under SERIALIZABLE even a lone read can
    be cancelled on a conflict), is tried again in place."""
    while held_retrying(lambda: _judge_next_round(wallet_id), label="validation round", wallet_id=wallet_id):
        pass


def _judge_next_round(wallet_id: int) -> bool:
    waiting = _validation_round(wallet_id)
    if waiting:
        _judge_round(waiting)
    return bool(waiting)


def _still_waiting(wallet_id: int) -> bool:
    """The look after letting go: a trade that turned VALIDATING while the holder held the lock had
    its own step leave it to the holder; a look lost to a conflict would leave it to the timer."""
    return held_retrying(
        lambda: Trade.objects.filter(wallet_id=wallet_id, state=S.VALIDATING).exists(),
        label="validation look",
        wallet_id=wallet_id,
    )


def _validation_round(wallet_id: int) -> list[Trade]:
    """The wallet's oldest trade waiting in VALIDATING and the next ones on its chain spending its
    input token (the balance read covers one token), oldest first: read outside any transaction."""
    waiting = trade_rows().filter(wallet_id=wallet_id, state=S.VALIDATING).order_by("pk")
    first = waiting.first()
    if first is None:
        return []
    same = waiting.filter(chain_id=first.chain_id, path__0=first.path[0])
    return list(same[: settings.VALIDATE_BATCH_SIZE])


def _judge_round(waiting: list[Trade]) -> None:
    """Judge each waiting trade in its own short SERIALIZABLE transaction (a batch-wide one collided
    with every concurrent step's writes and started over whole), with the round's reads made once:
    the wallet's balances and fees, what each simulation measured (append-only), and in `memo` the
    active scopes, the reference price's token and tick rows and the advisory gate's settings (as
    of the round's first trade; the signer judges the scope again at its own moment). What an
    earlier trade of the round may spend (its input amount, its value and the most its gas can
    cost) is no longer there for the later ones."""
    first = waiting[0]
    simulations = _simulations_of(waiting)
    memo: dict[tuple, object] = {}
    for trade in waiting:
        # Before the chain is read: a swap not yet recorded mined at this look speaks for the
        # allowance whatever the read says; one recorded mined before it was mined before the read,
        # which then sees what it left. (Looked at after the read, a swap mined in between spoke
        # for nothing while the read still showed its allowance.)
        if not swap_value(trade):
            _allowance_spoken_for(trade, memo)
    state = chainio.wallet_state(
        chain=first.chain,
        token=first.path[0],
        owner=first.wallet.address,
        spenders=[t.dex.router for t in waiting if not swap_value(t)],
    )
    for candidate in waiting:
        spent = None
        try:
            for attempt, current in attempts_reusing(candidate, label="validate"):
                with attempt:
                    trade = current()
                    if trade is None or trade.state != S.VALIDATING:
                        break
                    spent = _judge(trade, state, simulations.get(trade.pk, {}), memo)
        except StaleTrade:
            continue  # changed since the round read it (cancelled): nothing of it was kept
        if spent:
            state = dataclasses.replace(
                state, token_balance=state.token_balance - spent[0], eth_balance=state.eth_balance - spent[1]
            )


def _judge(trade: Trade, state: chainio.WalletState, simulation: dict, memo: dict) -> tuple[int, int] | None:
    """Inside the trade's transaction: freeze it (returning what it may spend), or end it with its
    reasons, whose savepoint rollback leaves no nonce allocated and nothing frozen."""
    try:
        with transaction.atomic():
            spent = _freeze(trade, state, simulation, memo)
    except _Refuse as refused:
        transition(
            trade, refused.method, data={"reason": refused.reason}, fields={"reason": refused.reason[:4000]}
        )
        return None
    crash_point("validate.inside_transaction")
    return spent


def _freeze(trade: Trade, state: chainio.WalletState, simulation: dict, memo: dict) -> tuple[int, int]:
    """Judge and freeze one trade (inside its transaction); returns what it may spend:
    (input token units, wei of value and gas at the fee cap)."""
    now = timezone.now()
    reasons = []
    if trade.deadline <= now:
        reasons.append("deadline_passed: the deadline passed during validation")
    value = swap_value(trade)
    if not value and state.token_balance < int(trade.amount_in):
        reasons.append(f"insufficient_balance: {state.token_balance} < {trade.amount_in} of the input token")
    swap_gas = int(simulation.get("swap_gas", settings.SWAP_GAS_WITHOUT_ESTIMATE))
    approve_gas = int(simulation.get("approve_gas", 0))
    reserves = (int(simulation.get("reserves_in", 0)), int(simulation.get("reserves_out", 0)))
    needs_approve = approve_gas > 0
    if (
        not needs_approve
        and not value
        and (
            state.allowances.get(trade.dex.router, 0) < int(trade.amount_in)
            or _allowance_spoken_for(trade, memo)
        )
    ):
        # The allowance the simulation saw at its block is gone now, or it is another in-flight
        # trade's (its own exact approve, mined before its swap): that swap spends it first (or
        # already did, once recorded as mined), and this one would revert on chain.
        needs_approve, approve_gas = True, settings.APPROVE_GAS_WITHOUT_ESTIMATE
    priority = state.priority_fee
    max_fee = 2 * state.base_fee + priority
    gas_total = with_margin(swap_gas, ChainTransaction.Kind.SWAP) + (
        with_margin(approve_gas) if needs_approve else 0
    )
    wei = value + gas_total * max_fee
    if state.eth_balance < wei:
        what = "insufficient_balance" if value else "insufficient_gas_balance"
        reasons.append(f"{what}: {state.eth_balance} wei < {wei} wei (value and gas)")
    if reasons:
        raise _Refuse("reject", "; ".join(reasons))

    count = 2 if needs_approve else 1
    nonces = nonce_allocate(
        wallet=trade.wallet, chain=trade.chain, count=count, chain_pending=state.pending_nonce
    )
    planned = []
    if needs_approve:
        planned.append(
            (ChainTransaction.Kind.APPROVE, trade.path[0], 0, approve_calldata(trade), approve_gas)
        )
    planned.append(
        (
            ChainTransaction.Kind.SWAP,
            trade.dex.router,
            value,
            swap_calldata(trade, int(trade.amount_out_min)),
            swap_gas,
        )
    )
    txs = []
    for sequence, ((kind, to, value_, data, gas), nonce) in enumerate(zip(planned, nonces, strict=True)):
        tx = ChainTransaction(
            trade=trade,
            sequence=sequence,
            kind=kind,
            attempt=1,
            chain_id=trade.chain.chain_id,
            sender=trade.wallet.address,
            nonce=nonce,
            to=to,
            value=value_,
            data=data,
            gas=with_margin(gas, kind),
            max_fee_per_gas=max_fee,
            max_priority_fee_per_gas=priority,
        )
        tx.unsigned_hash = payload_hash(tx.as_unsigned_dict())
        tx.save()
        txs.append(tx)
    facts = _ReadOnce(memo)
    for tx in txs:
        decision = scope_check(trade=trade, tx=tx, now=now, expected_state=S.VALIDATING, state=facts)
        if not decision.allowed:
            raise _Refuse("reject", f"out of scope: {decision.describe()}")
        if tx.kind == ChainTransaction.Kind.SWAP:
            price_reason = _price_sanity(trade, decision.scope, reserves, memo)
            if price_reason:
                raise _Refuse("reject", price_reason)
            # The owner's opt-in ML gate: it can refuse here, and nothing else (apps/ml/gate.py).
            gate_reason = advice_gate_check(trade, decision.scope, memo=memo)
            if gate_reason:
                raise _Refuse("reject", gate_reason)
    if not value:  # what this trade's swap will spend: the next ones of the round must approve their own
        memo[_allowance_spoken_for_key(trade)] = True
    transition(
        trade,
        "start_signing",
        data={
            "nonces": nonces,
            "max_fee_per_gas": max_fee,
            "max_priority_fee_per_gas": priority,
            "payloads": [tx.unsigned_hash for tx in txs],
        },
        next_task=(TaskName.SIGNING_SIGN, trade.pk, 1),
    )
    return (0 if value else int(trade.amount_in)), wei


def _allowance_spoken_for_key(trade: Trade) -> tuple:
    return ("allowance_spoken_for", trade.wallet_id, trade.chain_id, trade.path[0], trade.dex.router)


def _allowance_spoken_for(trade: Trade, memo: dict) -> bool:
    """Whether a swap of the same wallet, input token and router is frozen and not known to be mined:
    the allowance on chain may be its to spend. Read once per round; a trade frozen in the round
    makes it so for the ones after it."""
    return remember(
        memo,
        _allowance_spoken_for_key(trade),
        lambda: (
            ChainTransaction.objects.filter(
                trade__wallet_id=trade.wallet_id,
                trade__chain_id=trade.chain_id,
                trade__path__0=trade.path[0],
                trade__state__in=[S.SIGNING, S.CONFIRMING],
                kind=ChainTransaction.Kind.SWAP,
                to=trade.dex.router,
                status__in=[
                    ChainTransaction.Status.FROZEN,
                    ChainTransaction.Status.SIGNED,
                    ChainTransaction.Status.BROADCAST,
                ],
            )
            .exclude(trade_id=trade.pk)
            .exists()
        ),
    )


class _ReadOnce(ScopeState):
    """The scope check's facts, read from the database once: the nonce cursor for all of a trade's
    transactions (judged after its nonce allocation), the active scopes for the whole round (kept in
    the round's `memo`, keyed by wallet and chain: the first trade's moment is the round's), and the
    owner's authority keys for the round."""

    def __init__(self, memo: dict):
        self._next: dict[tuple, int | None] = {}
        self._memo = memo

    def next_nonce(self, *, wallet, chain) -> int | None:
        key = (wallet.pk, chain.pk)
        if key not in self._next:
            self._next[key] = super().next_nonce(wallet=wallet, chain=chain)
        return self._next[key]

    def scopes(self, *, wallet, chain, now):
        read = super().scopes
        return remember(
            self._memo, ("scopes", wallet.pk, chain.pk), lambda: read(wallet=wallet, chain=chain, now=now)
        )

    def authorities(self, *, owner_id: int) -> frozenset[str]:
        read = super().authorities
        return remember(self._memo, ("authorities", owner_id), lambda: read(owner_id=owner_id))


def _price_sanity(trade: Trade, scope, reserves: tuple[int, int], memo: dict) -> str:
    """The quote against the reference price (apps.market.reference: the median of fresh independent
    market sources, read from the database, so no network call happens inside the transaction). The
    pool's own reserves at the quote block serve only when the scope allows on-chain-only pricing."""
    check = reference_check(
        chain=trade.chain,
        token_in=trade.path[0],
        token_out=trade.path[-1],
        amount_in=int(trade.amount_in),
        quoted_out=int(trade.quoted_amount_out),
        tolerance_bps=scope.max_slippage_bps,
        allow_onchain_only=scope.allow_onchain_only_pricing,
        pool_reserves=reserves,
        memo=memo,
    )
    return "" if check.ok else check.reason
