"""The single module through which every money-moving transition of a trade passes.

Each step is idempotent and split the same way: chain reads happen outside any transaction; every
state change is one SERIALIZABLE transaction (project.db.serializable, retried on 40001/40P01) that
re-loads the trade, checks it is still where the step expects it, checks and bumps `version`
(optimistic locking), calls the django-fsm transition, appends a hash-chained audit event and
enqueues the next step on commit. A crash anywhere leaves the trade in a state whose step can be run
again (recover_stalled_trades does so). docs/critical-path.md maps every step.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, Decimal

from django.conf import settings
from django.db import OperationalError, transaction
from django.db.models import Case, Exists, F, OuterRef, Value, When
from django.utils import timezone

from apps.chain.calldata import (
    APPROVE,
    SWAP_EXACT_ETH_FOR_TOKENS,
    SWAP_EXACT_TOKENS_FOR_ETH,
    SWAP_EXACT_TOKENS_FOR_TOKENS,
    encode_call,
)
from apps.chain.models import Dex
from apps.chain.txcodec import payload_hash
from apps.market.reference import reference_check
from apps.ml.gate import advice_gate_check
from apps.signing.models import SigningRecord, SigningRefusal
from apps.trades import chainio
from apps.trades.audit import AuditEntry, audit_append, audit_append_many, chain_events
from apps.trades.models import ChainTransaction, Trade, TradeEvent, TradeState
from apps.wallets.models import NonceCursor, Wallet
from apps.wallets.scope import ScopeState, scope_check
from apps.wallets.services import nonce_allocate, nonce_release
from project import locks
from project.db import (
    LOCK_WALLET_BROADCAST,
    LOCK_WALLET_NONCES,
    SerializationRetriesExhausted,
    is_retryable,
    queued_for,
    serializable_attempts,
)
from project.faults import crash_point
from project.memo import remember
from project.queues import enqueue_on_commit

logger = logging.getLogger(__name__)
S = TradeState

TASK_SIMULATE = "trades.simulate"
TASK_VALIDATE = "trades.validate"
TASK_SIGN = "signing.sign"
TASK_BROADCAST = "trades.broadcast"
TASK_CONFIRM_BATCH = "trades.confirm_batch"


class StaleTrade(Exception):
    """Another transaction changed the trade since it was read (its version or audit head moved): the
    step runs again from a fresh read (its task retries at once; every step is idempotent)."""


class TradeInputError(ValueError):
    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


# --- the one transition primitive -------------------------------------------------------------


def _transition(
    trade: Trade,
    method: str,
    *,
    data: dict | None = None,
    fields: dict | None = None,
    next_task: tuple | None = None,
) -> Trade:
    """Call `method` (a django-fsm transition) and persist it with a version check, inside the
    caller's SERIALIZABLE transaction; append the audit event; enqueue `next_task` on commit.

    One UPDATE moves the state, the version and the audit head together, checked against the
    version and head `trade` was read with: a trade changed since (a transition, or an event appended
    without one) raises StaleTrade, and the step runs again from a fresh read."""
    from_state, version, head = trade.state, trade.version, trade.audit_head
    getattr(trade, method)()
    fields = fields or {}
    for name, value in fields.items():
        setattr(trade, name, value)
    heads = {trade.pk: head}
    (event,) = chain_events(
        [AuditEntry(trade=trade, kind=method, data=data or {}, from_state=from_state, to_state=trade.state)],
        heads,
    )
    updated = Trade.objects.filter(pk=trade.pk, version=version, audit_head=head).update(
        state=trade.state,
        version=version + 1,
        updated_at=timezone.now(),
        audit_head=heads[trade.pk],
        **fields,
    )
    if updated != 1:
        raise StaleTrade(f"trade {trade.pk} changed under {method}")
    event.save(force_insert=True)
    trade.version, trade.audit_head = version + 1, heads[trade.pk]
    if next_task:
        enqueue_on_commit(*next_task)
    logger.info("trade transition", extra={"trade": trade.pk, "from": from_state, "to": trade.state})
    return trade


def _trades():
    return Trade.objects.select_related("wallet", "chain", "dex")


def _load(trade_id: int) -> Trade | None:
    return _trades().filter(pk=trade_id).first()


def _attempts_reusing(trade: Trade, *, label: str):
    """serializable_attempts, each with a function giving the trade to work on: the first attempt the
    object already read (by an earlier transaction of the same step), later ones a fresh read, since
    a failed attempt may have moved the object along. No re-read is needed the first time: every
    transition's UPDATE is checked against the version and audit head the object carries, so a trade
    changed meanwhile (cancelled) raises StaleTrade rather than being overwritten."""
    for number, attempt in enumerate(serializable_attempts(label=label)):
        yield attempt, (lambda: trade) if number == 0 else (lambda: _load(trade.pk))


def _end(trade_id: int, method: str, reason: str, *, expect: set[str]) -> Trade | None:
    """Move a trade to REJECTED/FAILED/CANCELLED with its reason, if it is still in `expect`."""
    for attempt in serializable_attempts(label=method):
        with attempt:
            trade = _load(trade_id)
            if trade is None or trade.state not in expect:
                return trade
            _transition(trade, method, data={"reason": reason}, fields={"reason": reason[:4000]})
            _release_unbroadcast_nonces(trade)
    return trade


# --- submit --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Submitted:
    trade: Trade
    created: bool


def trade_submit(
    *,
    owner,
    wallet: Wallet,
    dex: Dex,
    path: list[str],
    amount_in: int,
    deadline: datetime,
    idempotency_key: str,
    slippage_bps: int | None = None,
    min_amount_out: int | None = None,
    native: str = "",
) -> Submitted:
    """Freeze a trade's inputs in PENDING and start it; the same idempotency key returns the same trade.
    `native` "in" or "out" swaps native ETH at that end of the path, which then names the DEX's
    wrapped native token (the router wraps and unwraps)."""
    if wallet.owner_id != owner.pk:
        raise TradeInputError("wallet", "not one of your wallets")
    if wallet.status != Wallet.Status.ACTIVE or not wallet.active:
        raise TradeInputError("wallet", "wallet is not active")
    if amount_in <= 0:
        raise TradeInputError("amount_in", "must be positive")
    if (slippage_bps is None) == (min_amount_out is None):
        raise TradeInputError("slippage_bps", "give exactly one of slippage_bps and min_amount_out")
    if slippage_bps is not None and not 1 <= slippage_bps <= 5000:
        raise TradeInputError("slippage_bps", "must be between 1 and 5000")
    if len(path) != 2 or path[0] == path[1]:
        raise TradeInputError("path", "a direct pair of two different tokens")
    if deadline <= timezone.now():
        raise TradeInputError("deadline", "already passed")
    if native not in Trade.Native.values:
        raise TradeInputError("native", f"one of {', '.join(repr(v) for v in Trade.Native.values)}")
    if native:
        wrapped = dex.wrapped_native.address if dex.wrapped_native_id else None
        end = path[0] if native == Trade.Native.IN else path[-1]
        if wrapped is None or end != wrapped:
            raise TradeInputError(
                "path", f"native {native} needs the path's {native}put to be the DEX's wrapped native token"
            )
    for attempt in serializable_attempts(label="trade_submit"):
        with attempt:
            existing = Trade.objects.filter(owner=owner, idempotency_key=idempotency_key).first()
            if existing is not None:
                return Submitted(existing, False)
            trade = Trade.objects.create(
                owner=owner,
                wallet=wallet,
                chain=dex.chain,
                dex=dex,
                path=path,
                amount_in=amount_in,
                slippage_bps=slippage_bps,
                min_amount_out=min_amount_out,
                deadline=deadline.replace(microsecond=0),
                idempotency_key=idempotency_key,
                native=native,
            )
            audit_append(
                trade=trade,
                kind="submitted",
                to_state=trade.state,
                data={
                    "path": path,
                    "amount_in": amount_in,
                    "slippage_bps": slippage_bps,
                    "min_amount_out": min_amount_out,
                    "native": native,
                    "deadline": trade.deadline,
                },
            )
            enqueue_on_commit(TASK_SIMULATE, trade.pk)
    return Submitted(trade, True)


# --- simulate ------------------------------------------------------------------------------------


def _amount_out_min(trade: Trade, quoted: int) -> int:
    if trade.min_amount_out is not None:
        return int(trade.min_amount_out)
    floor = Decimal(quoted) * (10_000 - trade.slippage_bps) / 10_000
    return int(floor.to_integral_value(rounding=ROUND_CEILING))


def swap_calldata(trade: Trade, amount_out_min: int) -> str:
    """The router call for the trade: ETH in carries the amount as the transaction's value."""
    path, to, deadline = list(trade.path), trade.wallet.address, int(trade.deadline.timestamp())
    if trade.native == Trade.Native.IN:
        return encode_call(SWAP_EXACT_ETH_FOR_TOKENS, amount_out_min, path, to, deadline)
    function = SWAP_EXACT_TOKENS_FOR_ETH if trade.native == Trade.Native.OUT else SWAP_EXACT_TOKENS_FOR_TOKENS
    return encode_call(function, int(trade.amount_in), amount_out_min, path, to, deadline)


def swap_value(trade: Trade) -> int:
    return int(trade.amount_in) if trade.native == Trade.Native.IN else 0


def approve_calldata(trade: Trade) -> str:
    return encode_call(APPROVE, trade.dex.router, int(trade.amount_in))


def trade_simulate(*, trade_id: int) -> Trade | None:
    """PENDING → SIMULATING, quote and simulate at a pinned block, → VALIDATING (or FAILED on revert)."""
    # Read before the transaction (the transition's UPDATE is checked against what was read): reads
    # inside it made it collide with every concurrent step's writes to the trades table.
    trade = _load(trade_id)
    if trade is None or trade.state not in (S.PENDING, S.SIMULATING):
        return trade  # gone or already past this step
    if trade.state == S.PENDING:
        for attempt, current in _attempts_reusing(trade, label="simulate.start"):
            with attempt:
                trade = current()
                if trade is None or trade.state not in (S.PENDING, S.SIMULATING):
                    return trade
                if trade.state == S.PENDING:
                    _transition(trade, "start_simulation")
    if trade.deadline <= timezone.now():
        return _end(trade_id, "reject", "deadline passed before simulation", expect={S.SIMULATING})
    try:
        sim = chainio.simulate(
            chain=trade.chain,
            router=trade.dex.router,
            factory=trade.dex.factory,
            sender=trade.wallet.address,
            path=list(trade.path),
            amount_in=int(trade.amount_in),
            build_swap=lambda out, _ts: swap_calldata(trade, _amount_out_min(trade, out)),
            build_approve=lambda: approve_calldata(trade),
            value=swap_value(trade),
        )
    except chainio.SimulationReverted as exc:
        return _end(trade_id, "fail", f"simulation reverted: {exc.reason}", expect={S.SIMULATING})
    for attempt, current in _attempts_reusing(trade, label="simulate.finish"):
        with attempt:
            trade = current()
            if trade is None or trade.state != S.SIMULATING:
                return trade
            out_min = _amount_out_min(trade, sim.amounts_out)
            _transition(
                trade,
                "start_validation",
                data={
                    "block": sim.block,
                    "quoted_out": sim.amounts_out,
                    "amount_out_min": out_min,
                    "swap_gas": sim.swap_gas,
                    "approve_gas": sim.approve_gas,
                    "reserves_in": sim.reserves_in,
                    "reserves_out": sim.reserves_out,
                },
                fields={
                    "quote_block": sim.block,
                    "quoted_amount_out": sim.amounts_out,
                    "amount_out_min": out_min,
                },
                next_task=(TASK_VALIDATE, trade.pk),
            )
            # The simulation's gas figures travel to validation through the audit event above.
    return trade


# --- validate ------------------------------------------------------------------------------------


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


def _with_margin(gas: int, kind: str = "") -> int:
    limit = gas * (100 + settings.GAS_LIMIT_MARGIN_PERCENT) // 100
    if kind == ChainTransaction.Kind.SWAP:
        # Estimated at the pinned block, mined in a later one: the pair then also updates its price
        # accumulators (first writes cost 20,000 gas each) that the estimate did not include, and an
        # out-of-gas inside the pair surfaces as a revert without a reason.
        limit += settings.SWAP_GAS_HEADROOM
    return limit


def trade_validate(*, trade_id: int) -> None:
    """Scope, price sanity, balances, deadline and fees; allocate nonces and freeze every transaction
    parameter; → SIGNING and ask the signer (or → REJECTED with every reason).

    Every validation of a wallet writes its nonce cursor, so one at a time holds the wallet's
    PostgreSQL advisory lock (project.db.queued_for) and judges every trade of the wallet waiting in
    VALIDATING, in rounds of one chain and input token (up to VALIDATE_BATCH_SIZE, oldest first; see
    _judge_round), until none is left; after it lets go it looks once more, and holds the lock again
    if a trade turned VALIDATING meanwhile. A validation that finds the lock held therefore neither
    waits (which would idle a worker) nor comes back: its trade is already VALIDATING, so the
    holder judges it, in a round or in that last look. A holder that dies mid-round has its task
    redelivered (late ack), and that task judges every waiting trade of the wallet."""
    found = Trade.objects.filter(pk=trade_id).values("state", "wallet_id").first()
    if found is None or found["state"] != S.VALIDATING:
        return
    wallet_id = found["wallet_id"]
    while True:
        with queued_for(LOCK_WALLET_NONCES, wallet_id, wait=False) as held:
            if not held:
                logger.info("validation left to the wallet's holder", extra={"trade": trade_id})
                return
            while waiting := _validation_round(wallet_id):
                _judge_round(waiting)
        if not Trade.objects.filter(wallet_id=wallet_id, state=S.VALIDATING).exists():
            return


def _validation_round(wallet_id: int) -> list[Trade]:
    """The wallet's oldest trade waiting in VALIDATING and the next ones on its chain spending its
    input token (the balance read covers one token), oldest first: read outside any transaction."""
    waiting = _trades().filter(wallet_id=wallet_id, state=S.VALIDATING).order_by("pk")
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
            for attempt, current in _attempts_reusing(candidate, label="validate"):
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
        _transition(
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
    gas_total = _with_margin(swap_gas, ChainTransaction.Kind.SWAP) + (
        _with_margin(approve_gas) if needs_approve else 0
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
            gas=_with_margin(gas, kind),
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
    _transition(
        trade,
        "start_signing",
        data={
            "nonces": nonces,
            "max_fee_per_gas": max_fee,
            "max_priority_fee_per_gas": priority,
            "payloads": [tx.unsigned_hash for tx in txs],
        },
        next_task=(TASK_SIGN, trade.pk, 1),
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
    the round's `memo`, keyed by wallet and chain: the first trade's moment is the round's)."""

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


def _release_unbroadcast_nonces(trade: Trade) -> None:
    """Hand back the nonces of a trade that will never broadcast: the cursor rewinds when they are
    its top, otherwise the next allocation on the wallet takes them first, so no gap jams it."""
    txs = list(trade.transactions.filter(broadcast_at__isnull=True, replaces__isnull=True))
    if not txs:
        return
    if SigningRecord.objects.filter(chain_transaction__in=txs).exists():
        return  # signed: it may be broadcast by someone holding the bytes; never re-use
    nonces = sorted(int(tx.nonce) for tx in txs)
    outcome = nonce_release(wallet=trade.wallet, chain=trade.chain, nonces=nonces)
    audit_append(trade=trade, kind="nonces_released", data={"nonces": nonces, "how": outcome})


# --- after signing -------------------------------------------------------------------------------


def trade_after_signing(*, trade_id: int, attempt: int) -> Trade | None:
    """Persist the signed bytes and hash on the trade's transactions, then CONFIRMING, and enqueue
    its broadcast; or REJECTED with the signer's refusal."""
    for tx_attempt in serializable_attempts(label="after_signing"):
        with tx_attempt:
            trade, moved = _after_signing(trade_id, attempt)
            if moved:
                # Registered first, so it runs after COMMIT and before the broadcast is enqueued:
                # a crash there loses the next step, which recover_stalled_trades re-enqueues.
                transaction.on_commit(
                    functools.partial(crash_point, "after_signing.committed_before_enqueue")
                )
                enqueue_on_commit(TASK_BROADCAST, trade_id)
    return trade


def trade_after_signing_batch(requests: list[tuple[int, int]]) -> None:
    """The signer's answer for one or more (trade, attempt): read once for all of them, each
    persisted in its own short SERIALIZABLE transaction (one for the whole answer collided with
    every concurrent step's writes and started over whole: 130 retries per 200-swap burst), then, in
    this same step, the wallets' unsent transactions broadcast (trade_broadcast_many). A
    redelivery redoes nothing that was done and broadcasts nothing already sent."""
    answers = _answers_of(requests)
    for trade_id, attempt in requests:
        answer = answers[(trade_id, attempt)]
        try:
            for tx_attempt in serializable_attempts(label="after_signing"):
                with tx_attempt:
                    _after_signing(trade_id, attempt, answer)
                answer = None  # a failed attempt may have moved the objects along: read afresh
        except StaleTrade:
            # Changed since the read above (a broadcaster's catch-up persisted it): judged afresh.
            for tx_attempt in serializable_attempts(label="after_signing"):
                with tx_attempt:
                    _after_signing(trade_id, attempt)
    crash_point("after_signing.committed_before_enqueue")
    trade_broadcast_many([trade_id for trade_id, _attempt in requests], unsent_only=True)


def _answers_of(requests: list[tuple[int, int]]) -> dict[tuple[int, int], tuple]:
    """For each (trade, attempt): the trade, the attempt's transactions in sequence order and their
    signing records by transaction id; three queries for all of them."""
    trades = _trades().in_bulk([trade_id for trade_id, _attempt in requests])
    # One IN list and the attempts picked here: an OR of (trade, attempt) pairs cost more to build
    # and compile in the ORM than the query took to run.
    own: dict[tuple[int, int], list[ChainTransaction]] = {request: [] for request in requests}
    for tx in ChainTransaction.objects.filter(trade_id__in=list(trades)).order_by("trade_id", "sequence"):
        if (tx.trade_id, tx.attempt) in own:
            own[(tx.trade_id, tx.attempt)].append(tx)
    txs = [tx for group in own.values() for tx in group]
    records = {r.chain_transaction_id: r for r in SigningRecord.objects.filter(chain_transaction__in=txs)}
    return {
        (trade_id, attempt): (
            trades.get(trade_id),
            group,
            {tx.pk: records[tx.pk] for tx in group if tx.pk in records},
        )
        for (trade_id, attempt), group in own.items()
    }


def _after_signing(trade_id: int, attempt: int, answer: tuple | None = None) -> tuple[Trade | None, bool]:
    """Inside the caller's transaction: the attempt's records onto its transactions and the trade to
    CONFIRMING (or CONFIRMING again for a replacement), or the signer's refusal recorded. Returns the
    trade and whether it now has transactions to broadcast. `answer`: what _answers_of read for it
    (read here when not given)."""
    trade, txs, records = answer or _answers_of([(trade_id, attempt)])[(trade_id, attempt)]
    if trade is None:
        return None, False
    if txs and len(records) == len(txs):
        pending = [tx for tx in txs if not tx.raw_signed]
        for tx in pending:
            record = records[tx.pk]
            ChainTransaction.objects.filter(pk=tx.pk).update(
                raw_signed=record.raw_signed, tx_hash=record.tx_hash, status=ChainTransaction.Status.SIGNED
            )
        if trade.state == S.SIGNING:
            _transition(
                trade,
                "start_confirming",
                data={"attempt": attempt, "tx_hashes": [records[t.pk].tx_hash for t in txs]},
            )
            return trade, True
        if trade.state == S.CONFIRMING and pending:
            _transition(trade, "reconfirm", data={"attempt": attempt, "replacement": True})
            return trade, True
        return trade, False
    refusal = SigningRefusal.objects.filter(trade=trade, attempt=attempt).order_by("-id").first()
    if refusal is None:
        return trade, False  # the signer has not answered yet
    if trade.state == S.SIGNING and attempt == 1 and _fill_with_cancels(trade, refusal):
        return trade, False
    if trade.state == S.SIGNING:
        _transition(
            trade,
            "reject",
            data={"signer_refused": refusal.code, "detail": refusal.detail},
            fields={"reason": f"signer refused: {refusal.code}: {refusal.detail}"[:4000]},
        )
        _release_unbroadcast_nonces(trade)
    else:
        audit_append(
            trade=trade,
            kind="signer_refused",
            data={"attempt": attempt, "code": refusal.code, "detail": refusal.detail},
        )
    return trade, False


def replacement_of(
    old: ChainTransaction, *, attempt: int, cancel: bool, fee: int | None = None, tip: int | None = None
) -> ChainTransaction:
    """The next attempt at `old`'s nonce, replacing it: the same call, or (`cancel`) a zero-value
    self-transfer; at `fee`/`tip`, by default `old`'s (unsaved, its payload hash set)."""
    tx = ChainTransaction(
        trade=old.trade,
        sequence=old.sequence,
        attempt=attempt,
        replaces=old,
        kind=ChainTransaction.Kind.CANCEL if cancel else old.kind,
        chain_id=old.chain_id,
        sender=old.sender,
        nonce=old.nonce,
        to=old.sender if cancel else old.to,
        value=0 if cancel else old.value,
        data="0x" if cancel else old.data,
        gas=21_000 if cancel else old.gas,
        max_fee_per_gas=old.max_fee_per_gas if fee is None else fee,
        max_priority_fee_per_gas=old.max_priority_fee_per_gas if tip is None else tip,
    )
    tx.unsigned_hash = payload_hash(tx.as_unsigned_dict())
    return tx


def _fill_with_cancels(trade: Trade, refusal: SigningRefusal) -> bool:
    """Inside the caller's transaction, for a first attempt the signer refused: when the trade's
    nonces lie below others already allocated (handing them back would leave a gap that holds every
    later transaction of the wallet until some next trade takes them), freeze a zero-value
    self-transfer at each of them instead (attempt 2, each replacing the refused, never-signed
    transaction) and ask the signer for those; the trade then ends CANCELLED once they are mined.
    When handing them back would rewind the cursor over all of them (nothing allocated above them
    but other handed-back nonces), nothing is filled (False). The refused transactions are marked
    REPLACED: the cancels are the trade's live transactions (a stuck one is bumped like any other),
    and the signer refuses to sign a replaced one (a redelivered request for the refused attempt)."""
    if trade.transactions.filter(attempt__gt=1).exists():
        return True  # filled already (a redelivered answer)
    refused = list(trade.transactions.filter(attempt=1).order_by("sequence"))
    if not refused or any(tx.raw_signed for tx in refused):
        return False
    nonces = {int(tx.nonce) for tx in refused}
    cursor = NonceCursor.objects.filter(wallet_id=trade.wallet_id, chain_id=trade.chain_id).first()
    if cursor is None or set(range(min(nonces), int(cursor.next_nonce))) <= nonces | set(cursor.released):
        return False
    planned = []
    for old in refused:
        tx = replacement_of(old, attempt=2, cancel=True)
        tx.save()
        planned.append(int(tx.nonce))
    ChainTransaction.objects.filter(pk__in=[tx.pk for tx in refused]).update(
        status=ChainTransaction.Status.REPLACED
    )
    audit_append(
        trade=trade,
        kind="signer_refused_nonces_filled",
        data={"code": refusal.code, "detail": refusal.detail, "attempt": 2, "nonces": planned},
    )
    enqueue_on_commit(TASK_SIGN, trade.pk, 2)
    return True


# --- broadcast -----------------------------------------------------------------------------------

ALREADY_KNOWN = ("already known", "known transaction", "already imported", "alreadyknown")
NONCE_TOO_HIGH = ("nonce too high",)
NONCE_TOO_LOW = ("nonce too low", "nonce has already been used", "nonce is too low")
# A node that executes what it is sent at once (Hardhat automine) mines a reverting transaction and
# then answers the send with the revert: sent, if our hash has a receipt (confirm fails the trade).
REVERTED_WHEN_MINED = ("vm exception while processing transaction", "transaction reverted")


def trade_broadcast(*, trade_id: int) -> Trade | None:
    """Send every signed, unsent transaction of the trade's latest attempt, in nonce order. The same
    bytes every time: a repeat is harmless and 'already known' counts as sent."""
    trade_broadcast_many([trade_id])
    return _load(trade_id)


def trade_broadcast_many(trade_ids: list[int], *, unsent_only: bool = False) -> None:
    """Broadcast for the CONFIRMING trades among `trade_ids`, wallet by wallet, by one broadcaster per
    wallet at a time (_broadcast_wallet): every signed, never-sent transaction of the wallet goes out,
    chain by chain in nonce order, and one confirm is enqueued for the trades it sent.

    `unsent_only` (the signer's answer, the hot path): a broadcaster already at work on the wallet
    sends this step's transactions too (it looks again before it stops), so the step returns at
    once. Otherwise (the broadcast task: recovery, a re-org, the tests) the trades' latest signed
    attempts not yet mined or replaced are sent again even if sent before (the same bytes; an older
    attempt a replacement replaces is not re-sent: the node would refuse it as underpriced, though
    it may still be the one mined), after waiting in line for the wallet's broadcaster lock; a
    nonce the node cannot take yet raises NonceNotYetValid for the task to come back."""
    found = list(
        Trade.objects.filter(pk__in=trade_ids, state=S.CONFIRMING)
        .order_by("pk")
        .values_list("pk", "wallet_id")
    )
    wallets: dict[int, list[int]] = {}
    for trade_id, wallet_id in found:
        wallets.setdefault(wallet_id, []).append(trade_id)
    sent_for: set[int] = set() if unsent_only else {trade_id for trade_id, _wallet in found}
    for wallet_id, own in wallets.items():
        sent_for |= _broadcast_wallet(wallet_id, again=[] if unsent_only else own)
    if sent_for:
        enqueue_now(TASK_CONFIRM_BATCH, sorted(sent_for))


def _broadcast_wallet(wallet_id: int, *, again: list[int]) -> set[int]:
    """The wallet's broadcaster: holding its PostgreSQL advisory lock, send the wallet's unsent
    transactions on every chain (and the live ones of the trades in `again`, read once the lock is
    held: a replacement signed while this waited in line is what goes out, not its original),
    lowest nonce first per chain, and look for more until none is new; after letting go, look once
    more and hold the lock again if one arrived meanwhile (its own step found the lock held and
    left it to this one). Returns the ids of the trades sent for.

    One sender per wallet keeps the nonces in order on a node that refuses future ones (Hardhat
    automine): several workers sending at once had handed it gaps ("nonce too high"), and every
    such step was retried whole. A nonce the node cannot take yet stops the hot path's run on that
    chain at the gap (the lower trade's own step sends the rest, or catch-up has just persisted it:
    then it is new and sent at once); with `again` (a task asking for a re-send) it raises
    NonceNotYetValid."""
    tried: set[int] = set()
    sent_for: set[int] = set()
    while True:
        with queued_for(LOCK_WALLET_BROADCAST, wallet_id, wait=bool(again)) as held:
            if not held:
                return sent_for
            while True:
                unsent = _unsent_of(wallet_id)
                resend = list(_sendable(trade_id__in=again)) if again else []
                if not resend and tried.issuperset(tx.pk for tx in unsent):
                    break
                tried.update(tx.pk for tx in unsent)
                by_chain: dict[int, dict[int, ChainTransaction]] = {}
                for tx in [*unsent, *resend]:
                    by_chain.setdefault(tx.trade.chain_id, {})[tx.pk] = tx
                for txs in by_chain.values():
                    ordered = sorted(txs.values(), key=lambda t: (int(t.nonce), t.attempt))
                    sent_for |= _send_in_nonce_order(ordered, strict=bool(again))
                again = []
        if tried.issuperset(_unsent_of(wallet_id, ids_only=True)):
            return sent_for


def _unsent_of(wallet_id: int, *, ids_only: bool = False) -> list:
    """The wallet's sendable transactions never sent, on every chain."""
    rows = _sendable(trade__wallet_id=wallet_id, broadcast_at__isnull=True)
    return list(rows.values_list("pk", flat=True)) if ids_only else list(rows)


def _sendable(**filters):
    """Signed transactions of CONFIRMING trades not yet mined or replaced (of a transaction a signed
    replacement replaces, only the replacement), narrowed by `filters`."""
    return (
        ChainTransaction.objects.filter(
            trade__state=S.CONFIRMING,
            status__in=[ChainTransaction.Status.SIGNED, ChainTransaction.Status.BROADCAST],
            **filters,
        )
        .exclude(
            Exists(
                ChainTransaction.objects.filter(
                    trade_id=OuterRef("trade_id"),
                    sequence=OuterRef("sequence"),
                    attempt__gt=OuterRef("attempt"),
                    raw_signed__isnull=False,
                )
            )
        )
        .select_related("trade__chain")
        .order_by("nonce", "attempt")
    )


def _send_in_nonce_order(txs: list[ChainTransaction], *, strict: bool) -> set[int]:
    """Send `txs` (one wallet's on one chain, nonce order); record the sends, also when a later one
    fails. A nonce the node cannot take yet ends the run (raised when `strict`). Returns the trades
    sent for."""
    head = chainio.block_number(txs[0].trade.chain)
    sent: dict[ChainTransaction, datetime] = {}  # each with the moment the node took it
    try:
        for tx in txs:
            try:
                if _send(tx):
                    sent[tx] = timezone.now()
            except chainio.NonceNotYetValid:
                if strict:
                    raise
                break
            crash_point("broadcast.after_send")
    finally:
        # Retried in place: a serialization failure here once ended the task with the trade's later
        # transactions unsent, and on a node that refuses nonce gaps the whole wallet then waited
        # for recover_stalled_trades.
        if sent:
            for attempt in serializable_attempts(label="broadcast.record"):
                with attempt:
                    _record_broadcasts(sent, head)
    return {tx.trade_id for tx in sent}


def _send(tx: ChainTransaction) -> bool:
    """Send the signed bytes; True when the node has them (or had them: 'already known'), False when
    the nonce was consumed by another transaction. Other errors are classified and raised."""
    try:
        # To every usable private endpoint (public ones only where the chain allows it).
        chainio.send_raw(tx.trade.chain, bytes(tx.raw_signed))
    except Exception as exc:  # noqa: BLE001 - classified below
        message = str(exc).lower()
        if any(m in message for m in ALREADY_KNOWN):
            return True
        if any(m in message for m in NONCE_TOO_LOW):
            if chainio.receipt(tx.trade.chain, tx.tx_hash) is None:
                audit_and_log(tx.trade, "broadcast_nonce_consumed", {"tx": tx.tx_hash, "error": str(exc)})
                return False
            return True
        if any(m in message for m in REVERTED_WHEN_MINED) and chainio.receipt(tx.trade.chain, tx.tx_hash):
            return True
        if any(m in message for m in NONCE_TOO_HIGH):
            # Nodes that do not queue future nonces (Hardhat automine): the lower one is coming,
            # unless its trade is signed but its signer's message was lost: catch it up.
            _catch_up_signed_below(tx.trade, int(tx.nonce))
            raise chainio.NonceNotYetValid(str(exc)) from exc
        if isinstance(exc, OSError):
            raise chainio.ChainUnavailable(str(exc)) from exc
        raise
    return True


def _record_broadcasts(sent: dict[ChainTransaction, datetime], head: int) -> None:
    # Only a SIGNED row becomes BROADCAST: a concurrent confirm may already have marked it
    # REPLACED (its sibling was mined), and that verdict must not be overwritten. Only a first
    # send is recorded (and audited), with its own send time (a broadcaster's run sends many).
    first = set(
        ChainTransaction.objects.filter(pk__in=[tx.pk for tx in sent], broadcast_at__isnull=True).values_list(
            "pk", flat=True
        )
    )
    if not first:
        return
    ChainTransaction.objects.filter(pk__in=first, broadcast_at__isnull=True).update(
        broadcast_at=Case(*(When(pk=tx.pk, then=Value(at)) for tx, at in sent.items() if tx.pk in first)),
        broadcast_block=head,
        status=Case(
            When(status=ChainTransaction.Status.SIGNED, then=Value(ChainTransaction.Status.BROADCAST)),
            default=F("status"),
        ),
    )
    audit_append_many(
        [
            AuditEntry(
                trade=tx.trade,
                kind="broadcast",
                data={"tx": tx.tx_hash, "nonce": int(tx.nonce), "attempt": tx.attempt},
            )
            for tx in sent
            if tx.pk in first
        ]
    )


def _catch_up_signed_below(trade: Trade, nonce: int) -> None:
    """The wallet's trades still in SIGNING below `nonce` whose every frozen transaction the signer
    has signed: persist their answer now (idempotent), for the retried step to send. A lost or
    delayed signer message otherwise jammed every later trade of the wallet behind a nonce gap until
    recover_stalled_trades (TRADE_STALL_SECONDS) noticed."""
    unsigned = ChainTransaction.objects.filter(
        trade_id=OuterRef("pk"), attempt=1, signing_record__isnull=True
    )
    below = (
        Trade.objects.filter(
            wallet_id=trade.wallet_id,
            chain_id=trade.chain_id,
            state=S.SIGNING,
            transactions__nonce__lt=nonce,
            transactions__signing_record__isnull=False,
        )
        .exclude(Exists(unsigned))
        .exclude(pk=trade.pk)
        .values_list("pk", flat=True)
        .distinct()
    )
    for trade_id in sorted(below):
        # Persisted only: the step that found the gap comes back in a moment and sends them first
        # (an enqueued broadcast per caught-up trade re-sent the same bytes again, ~100 per burst).
        for attempt in serializable_attempts(label="after_signing.catch_up"):
            with attempt:
                _after_signing(trade_id, 1)


def audit_and_log(trade: Trade, kind: str, data: dict) -> None:
    for attempt in serializable_attempts(label=f"audit {kind}"):
        with attempt:
            audit_append(trade=trade, kind=kind, data=data)
    logger.warning(kind, extra={"trade": trade.pk, **{k: str(v) for k, v in data.items()}})


def enqueue_now(task: str, *args) -> None:
    with transaction.atomic():
        enqueue_on_commit(task, *args)


# --- confirm -------------------------------------------------------------------------------------


class _ChainView:
    """One look at a chain for many confirms: the head, the receipts of every live transaction's hash
    (read in one request when the view is made), the settlement gate's block hash once per height."""

    def __init__(self, chain, tx_hashes: list[str]):
        self.chain = chain
        self.head = chainio.block_number(chain)
        unique = list(dict.fromkeys(tx_hashes))
        self._receipts = dict(zip(unique, chainio.receipts(chain, unique), strict=True))
        self._quorum: dict[int, str | None] = {}

    def receipts(self, tx_hashes: list[str]) -> list:
        return [self._receipts[h] for h in tx_hashes]

    def ask_gate(self, numbers: list[int]) -> None:
        """The settlement gate's reads for these heights, in one batch per endpoint. Asked only after
        the receipts at them are recorded: a reorg the watcher handles before that read changes the
        answer, one it handles after finds the recorded receipts and clears them."""
        missing = [n for n in dict.fromkeys(numbers) if n not in self._quorum]
        if missing:
            self._quorum.update(chainio.quorum_block_hashes(self.chain, missing))

    def quorum_block_hash(self, number: int) -> str | None:
        self.ask_gate([number])
        return self._quorum[number]


def _live_transactions(trade_ids: list[int]) -> dict[int, list[ChainTransaction]]:
    # Every transaction of the trade counts, recorded as sent or not: a trade must never settle on
    # its approval while its swap is still on the way.
    live: dict[int, list[ChainTransaction]] = {trade_id: [] for trade_id in trade_ids}
    for tx in (
        ChainTransaction.objects.filter(trade_id__in=trade_ids)
        .exclude(status=ChainTransaction.Status.REPLACED)
        .order_by("trade_id", "sequence", "-attempt")
    ):
        live[tx.trade_id].append(tx)
    return live


LOOKED_AT = "custos:trades:confirm:looked"  # Redis sorted set: trade id -> when a confirm batch looked


def trade_confirm_many(trade_ids: list[int], *, mark_looked: bool = False) -> int:
    """trade_confirm for each CONFIRMING trade among `trade_ids`, with one head read, one receipts
    request and one settlement-gate read (after every new receipt is recorded) per chain for all of
    them. One trade's contention does not cost the others their check: the next tick (or confirm)
    looks at it again. Returns how many were looked at. `mark_looked`
    (a confirm batch right after a broadcast): the beat tick leaves these trades for the next tick
    rather than look at them again straight away (under a burst that was most of a tick's work)."""
    trades = list(_trades().filter(pk__in=trade_ids, state=S.CONFIRMING).order_by("pk"))
    live = _live_transactions([t.pk for t in trades])
    views: dict[int, _ChainView] = {}
    looked: list[_Looked] = []
    for trade in trades:
        if trade.chain_id not in views:
            hashes = [
                tx.tx_hash for t in trades if t.chain_id == trade.chain_id for tx in live[t.pk] if tx.tx_hash
            ]
            views[trade.chain_id] = _ChainView(trade.chain, hashes)
        with _contention_skips(trade):
            if (found := _look_and_record(trade, views[trade.chain_id], live[trade.pk])) is not None:
                looked.append(found)
    for chain_id, view in views.items():
        view.ask_gate([n for item in looked if item.trade.chain_id == chain_id for n in item.gate_heights()])
    for item in looked:
        with _contention_skips(item.trade):
            _settle_or_replace(item, views[item.trade.chain_id])
    if mark_looked and trades:
        now = time.time()
        pipe = locks.client().pipeline()
        pipe.zadd(LOOKED_AT, {str(t.pk): now for t in trades})
        pipe.zremrangebyscore(LOOKED_AT, "-inf", now - max(60, settings.TRADE_TICK_SECONDS))
        pipe.execute()
    return len(trades)


def trade_confirm(*, trade_id: int) -> Trade | None:
    """Read receipts; FAILED on status 0; SETTLED at the chain's confirmation depth on a canonical
    block; CANCELLED when a cancel won the nonce. A transaction unmined for REPLACE_AFTER_BLOCKS gets a
    replacement with both fees raised (capped by the scope); once the deadline has passed, a cancel."""
    trade = _load(trade_id)
    if trade is None or trade.state != S.CONFIRMING:
        return trade
    live = _live_transactions([trade.pk])[trade.pk]
    return _confirm(trade, _ChainView(trade.chain, [tx.tx_hash for tx in live if tx.tx_hash]), live)


@contextmanager
def _contention_skips(trade: Trade):
    """One trade's contention does not cost the others of a confirm batch their check: the next tick
    (or confirm) looks at it again."""
    try:
        yield
    except StaleTrade:
        logger.info("confirm skipped this time: the trade changed meanwhile", extra={"trade": trade.pk})
    except (SerializationRetriesExhausted, OperationalError) as exc:
        if isinstance(exc, OperationalError) and not is_retryable(exc):
            raise
        logger.info("confirm skipped this time: contention", extra={"trade": trade.pk})


@dataclass
class _Looked:
    """What a confirm saw of one trade, its new receipts already recorded."""

    trade: Trade
    found: list[_Mined]  # the mined attempt at each nonce that has one
    stuck: list[ChainTransaction]
    complete: bool  # every transaction of the trade has a receipt
    head: int

    def gate_heights(self) -> list[int]:
        depth = self.trade.chain.confirmations_required
        return [m.receipt.block_number for m in self.found if self.head - m.receipt.block_number + 1 >= depth]


def _confirm(trade: Trade, view: _ChainView, live: list[ChainTransaction]) -> Trade | None:
    """trade_confirm's work on a CONFIRMING trade, its live transactions and a view of its chain."""
    looked = _look_and_record(trade, view, live)
    if looked is None:
        return _load(trade.pk)
    view.ask_gate(looked.gate_heights())
    return _settle_or_replace(looked, view)


def _look_and_record(trade: Trade, view: _ChainView, live: list[ChainTransaction]) -> _Looked | None:
    """The receipts of the trade's live transactions, the new ones recorded (one transaction for all
    of the trade's), before the settlement gate is asked: a watcher that orphans their block
    meanwhile clears them and the settle sees it. A reverted one ends the trade (FAILED): None."""
    by_sequence: dict[int, list[ChainTransaction]] = {}
    for tx in live:
        by_sequence.setdefault(tx.sequence, []).append(tx)
    complete = bool(by_sequence)
    stuck: list[ChainTransaction] = []
    found: list[_Mined] = []
    for _sequence, candidates in sorted(by_sequence.items()):
        mined = _first_mined(view, candidates)
        if mined is None:
            complete = False
            latest = candidates[0]
            if latest.broadcast_block is not None and all(c.tx_hash for c in candidates):
                stuck.append(latest)
            continue
        found.append(_Mined(*mined, candidates))
    # Record each receipt, and retire every sibling still live: a replacement frozen by a confirm
    # that raced this one may have been created after the original was mined.
    _record_mined(
        trade, [m for m in found if m.tx.receipt_block_hash != m.receipt.block_hash or len(m.candidates) > 1]
    )
    for item in found:
        if item.receipt.status != 1:
            shared = any(m.receipt.block_number == item.receipt.block_number for m in found if m is not item)
            why = _reverted_on_chain(trade, item.tx, item.receipt, replay=not shared)
            _end(trade.pk, "fail", why, expect={S.CONFIRMING})
            return None
    return _Looked(trade=trade, found=found, stuck=stuck, complete=complete, head=view.head)


def _reverted_on_chain(trade: Trade, tx: ChainTransaction, receipt: chainio.Receipt, *, replay: bool) -> str:
    """The FAILED reason of a receipt with status 0: the revert reason its replay gives, or that it
    used all its gas. Not replayed (`replay` false) when another transaction of the trade is in the
    same block: the parent's state lacks it (the trade's own approve) and the replay would blame
    the allowance."""
    why = ""
    if replay:
        why = chainio.replayed_revert_reason(
            trade.chain,
            sender=tx.sender,
            to=tx.to,
            data=tx.data,
            value=int(tx.value),
            gas=int(tx.gas),
            block_number=receipt.block_number,
        )
    if not why and receipt.gas_used >= int(tx.gas):
        why = f"out of gas (used all {int(tx.gas)})"
    where = f"transaction {tx.tx_hash} ({tx.kind}) reverted on chain in block {receipt.block_number}"
    return f"{where}: {why}" if why else where


def _settle_or_replace(looked: _Looked, view: _ChainView) -> Trade | None:
    """SETTLED (or CANCELLED when a cancel won) once every transaction is deep enough on a block the
    gate confirms; otherwise a stuck transaction gets its replacement when due."""
    trade, head = looked.trade, looked.head
    final = looked.complete
    cancelled = False
    observed: dict[int, str] = {}  # transaction id -> the inclusion block hash the gate checked
    for item in looked.found:
        tx, receipt = item.tx, item.receipt
        cancelled = cancelled or tx.kind == ChainTransaction.Kind.CANCEL
        observed[tx.pk] = receipt.block_hash
        if head - receipt.block_number + 1 < trade.chain.confirmations_required:
            final = False
        elif view.quorum_block_hash(receipt.block_number) != receipt.block_hash:
            # The settlement gate: k endpoints must agree the inclusion block is this one.
            final = False
    if not final:
        if looked.stuck:
            _replace_stuck(trade, looked.stuck, head)
        return trade
    for attempt, current in _attempts_reusing(trade, label="settle"):
        with attempt:
            trade = current()
            if trade is None or trade.state != S.CONFIRMING:
                return trade
            recorded = dict(
                ChainTransaction.objects.filter(pk__in=list(observed)).values_list("pk", "receipt_block_hash")
            )
            if recorded != observed:
                return trade  # the watcher cleared a receipt meanwhile (a reorg): look again
            if cancelled:
                reason = "deadline passed while unmined: cancelled by a zero-value self-transfer"
                filled = trade.events.filter(kind="signer_refused_nonces_filled").order_by("-id").first()
                if filled is not None:
                    reason = (
                        f"signer refused: {filled.data['code']}: {filled.data['detail']}; its nonces "
                        f"{filled.data['nonces']} were filled by zero-value self-transfers"
                    )[:4000]
                _transition(trade, "cancel", data={"head": head, "reason": reason}, fields={"reason": reason})
            else:
                _transition(trade, "settle", data={"head": head})
    return trade


def _first_mined(view: _ChainView, candidates: list[ChainTransaction]):
    """The first candidate (latest attempt first) with a receipt."""
    sent = [tx for tx in candidates if tx.tx_hash]
    for tx, receipt in zip(sent, view.receipts([tx.tx_hash for tx in sent]), strict=True):
        if receipt is not None:
            return tx, receipt
    return None


@dataclass(frozen=True)
class _Mined:
    tx: ChainTransaction  # the candidate the receipt is for
    receipt: chainio.Receipt
    candidates: list[ChainTransaction]  # every live attempt at its nonce, tx among them


def _record_mined(trade: Trade, mined: list[_Mined]) -> None:
    if mined:
        for attempt in serializable_attempts(label="confirm.record_mined"):
            with attempt:
                _record_mined_now(trade, mined)


def _record_mined_now(trade: Trade, mined: list[_Mined]) -> None:
    """Inside the caller's transaction: each receipt on its transaction, its siblings REPLACED, and one
    `mined` event per receipt not recorded before."""
    events = []
    for item in mined:
        tx, receipt, block_hash = item.tx, item.receipt, item.receipt.block_hash
        others = [c.pk for c in item.candidates if c.pk != tx.pk]
        if others:
            ChainTransaction.objects.filter(pk__in=others).update(status=ChainTransaction.Status.REPLACED)
        if tx.receipt_block_hash == block_hash:
            continue  # receipt already recorded; only late siblings needed retiring
        status = ChainTransaction.Status.MINED if receipt.status == 1 else ChainTransaction.Status.REVERTED
        # Conditional, so a concurrent confirm that recorded the same receipt first leaves one event.
        if (
            ChainTransaction.objects.filter(pk=tx.pk)
            .exclude(receipt_block_hash=block_hash)
            .update(receipt_block_number=receipt.block_number, receipt_block_hash=block_hash, status=status)
        ):
            data = {
                "tx": tx.tx_hash,
                "kind": tx.kind,
                "block": receipt.block_number,
                "block_hash": block_hash,
                "status": receipt.status,
                "gas_used": receipt.gas_used,
            }
            events.append(AuditEntry(trade=trade, kind="mined", data=data))
    audit_append_many(events)


def _bumped(value: int, cap: int | None) -> int:
    bumped = (value * (10_000 + settings.REPLACEMENT_BUMP_BPS) + 9_999) // 10_000
    return min(bumped, cap) if cap is not None else bumped


def _replace_stuck(trade: Trade, stuck: list[ChainTransaction], head: int) -> None:
    """Freeze the next attempt for every stuck transaction (a cancel once the deadline passed) and
    ask the signer; the signer checks the bump and the cap again."""
    deadline_passed = timezone.now() >= trade.deadline
    due = [
        tx
        for tx in stuck
        if (deadline_passed and tx.kind != ChainTransaction.Kind.CANCEL)
        or head - int(tx.broadcast_block) >= settings.REPLACE_AFTER_BLOCKS
    ]
    if not due:
        return
    for attempt_ in serializable_attempts(label="replace"):
        with attempt_:
            fresh = _load(trade.pk)
            if fresh is None or fresh.state != S.CONFIRMING:
                return
            newest = ChainTransaction.objects.filter(trade=fresh).order_by("-attempt").first()
            if newest is not None and newest.attempt > max(tx.attempt for tx in due):
                return  # a newer attempt is already on its way
            attempt = newest.attempt + 1
            caps = _fee_caps(fresh)
            planned = []
            for old in due:
                fee = _bumped(int(old.max_fee_per_gas), caps[0])
                tip = _bumped(int(old.max_priority_fee_per_gas), caps[1])
                minimum = 10_000 + settings.REPLACEMENT_MIN_BUMP_BPS
                if (
                    fee * 10_000 < int(old.max_fee_per_gas) * minimum
                    or tip * 10_000 < int(old.max_priority_fee_per_gas) * minimum
                ):
                    audit_append(
                        trade=fresh,
                        kind="replacement_capped",
                        data={"tx": old.tx_hash, "fee_cap": caps[0], "tip_cap": caps[1]},
                    )
                    continue
                tx = replacement_of(old, attempt=attempt, cancel=deadline_passed, fee=fee, tip=tip)
                tx.save()
                planned.append(
                    {
                        "nonce": int(tx.nonce),
                        "kind": tx.kind,
                        "replaces": old.tx_hash,
                        "max_fee_per_gas": fee,
                        "max_priority_fee_per_gas": tip,
                    }
                )
            if planned:
                audit_append(
                    trade=fresh, kind="replacement_planned", data={"attempt": attempt, "txs": planned}
                )
                enqueue_on_commit(TASK_SIGN, fresh.pk, attempt)


def _fee_caps(trade: Trade) -> tuple[int | None, int | None]:
    """The highest fee caps among the wallet's active scopes on this chain (None: no scope left)."""
    from apps.wallets.scope import active_scopes

    scopes = active_scopes(wallet=trade.wallet, chain=trade.chain, now=timezone.now())
    if not scopes:
        return None, None
    return max(int(s.max_fee_per_gas) for s in scopes), max(int(s.max_priority_fee_per_gas) for s in scopes)


# --- chain truth: the watcher's verdicts --------------------------------------------------------


def trade_receipts_orphaned(*, trade_id: int, orphaned: dict[int, str], reorg: dict) -> Trade | None:
    """A reorg took the block of some of a CONFIRMING trade's receipts (`orphaned`: transaction id →
    the orphaned block hash): clear those receipts, CONFIRMING → CONFIRMING, and broadcast the same
    raw bytes again (harmless if the transaction was re-included: 'already known' / nonce used)."""
    for attempt in serializable_attempts(label="receipts_orphaned"):
        with attempt:
            trade = _load(trade_id)
            if trade is None or trade.state != S.CONFIRMING:
                return trade
            cleared = []
            for tx in ChainTransaction.objects.filter(trade=trade, pk__in=list(orphaned)).order_by("pk"):
                if not tx.receipt_block_hash or tx.receipt_block_hash != orphaned[tx.pk]:
                    continue  # no receipt, or already re-recorded on the new chain
                cleared.append(
                    {"tx": tx.tx_hash, "block": tx.receipt_block_number, "hash": tx.receipt_block_hash}
                )
                ChainTransaction.objects.filter(pk=tx.pk).update(
                    receipt_block_number=None,
                    receipt_block_hash="",
                    status=ChainTransaction.Status.BROADCAST,
                )
            if not cleared:
                return trade
            _transition(
                trade,
                "reconfirm",
                data={"reorg": reorg, "orphaned_receipts": cleared},
                next_task=(TASK_BROADCAST, trade.pk),
            )
    logger.warning("receipt orphaned by a reorg", extra={"trade": trade_id, "reorg": reorg})
    return trade


def trade_finality_violate(*, trade_id: int, orphaned: dict[int, str], reorg: dict) -> Trade | None:
    """A SETTLED trade's inclusion block left the canonical chain: SETTLED → FINALITY_VIOLATED, an
    alarm for the owner (logged at critical, in the audit trail the API reports)."""
    for attempt in serializable_attempts(label="finality_violated"):
        with attempt:
            trade = _load(trade_id)
            if trade is None or trade.state != S.SETTLED:
                return trade
            txs = ChainTransaction.objects.filter(trade=trade, pk__in=list(orphaned))
            blocks = [
                {"tx": tx.tx_hash, "block": tx.receipt_block_number, "hash": tx.receipt_block_hash}
                for tx in txs
            ]
            reason = f"finality violated: settled inclusion block(s) left the canonical chain ({reorg})"
            _transition(
                trade,
                "violate_finality",
                data={"reorg": reorg, "orphaned_receipts": blocks},
                fields={"reason": reason[:4000]},
            )
    logger.critical("FINALITY VIOLATED: a settled trade's block left the chain", extra={"trade": trade_id})
    return trade


# --- owner cancel --------------------------------------------------------------------------------


def trade_cancel(*, trade_id: int, reason: str = "cancelled by the owner") -> Trade | None:
    """Free before SIGNING; after that the trade needs a cancel replacement (not offered here yet)."""
    return _end(trade_id, "cancel", reason, expect={S.PENDING, S.SIMULATING, S.VALIDATING})


# --- recovery ------------------------------------------------------------------------------------

STEP_FOR_STATE = {
    S.PENDING: (TASK_SIMULATE,),
    S.SIMULATING: (TASK_SIMULATE,),
    S.VALIDATING: (TASK_VALIDATE,),
    S.CONFIRMING: (TASK_BROADCAST,),
}


def recover_stalled_trades(*, older_than: timedelta | None = None) -> int:
    """Re-enqueue the step of every non-terminal trade untouched for a while. Safe at any moment:
    every step is idempotent, so a duplicate does nothing."""
    window = older_than or timedelta(seconds=settings.TRADE_STALL_SECONDS)
    cutoff = timezone.now() - window
    marks = locks.client()
    count = 0
    for trade in (
        Trade.objects.filter(updated_at__lt=cutoff)
        .exclude(
            state__in=[
                S.SETTLED,
                S.REJECTED,
                S.FAILED,
                S.CANCELLED,
                S.FINALITY_VIOLATED,
            ]
        )
        .only("pk", "state")
    ):
        # At most one re-enqueue per trade and state per window: a trade waiting behind a burst is
        # queued, not lost, and re-sending its step on every tick filled the queue with duplicates
        # (each harmless, all of them together the burst's bottleneck).
        if not marks.set(
            f"custos:recover:{trade.pk}:{trade.state}", "1", nx=True, ex=max(1, int(window.total_seconds()))
        ):
            continue
        if trade.state == S.SIGNING:
            latest = ChainTransaction.objects.filter(trade=trade).order_by("-attempt").first()
            attempt = latest.attempt if latest else 1
            if (
                SigningRecord.objects.filter(trade=trade, attempt=attempt).exists()
                or SigningRefusal.objects.filter(trade=trade, attempt=attempt).exists()
            ):
                enqueue_now("trades.after_signing", trade.pk, attempt)
            else:
                enqueue_now(TASK_SIGN, trade.pk, attempt)
        else:
            enqueue_now(*STEP_FOR_STATE[trade.state], trade.pk)
        count += 1
    return count


def confirm_all() -> int:
    """One pass over every CONFIRMING trade with something on the wire (beat). A trade none of whose
    transactions has been broadcast yet has nothing to mine: its broadcast step, queued behind
    others in a burst, enqueues its confirm; if that step was lost, recover_stalled_trades
    re-enqueues it (and a send that crashed before recording itself is found by that broadcast:
    "already known" or our hash mined). Asking the node for receipts of never-sent transactions
    was most of a tick's work under a burst."""
    sent = ChainTransaction.objects.filter(trade_id=OuterRef("pk"), broadcast_at__isnull=False)
    ids = list(Trade.objects.filter(state=S.CONFIRMING).filter(Exists(sent)).values_list("pk", flat=True))
    # Trades a confirm batch looked at within the last tick interval wait for the next tick.
    recent = locks.client().zrangebyscore(LOOKED_AT, time.time() - settings.TRADE_TICK_SECONDS, "+inf")
    skip = {int(pk) for pk in recent}
    return trade_confirm_many([pk for pk in ids if pk not in skip])


__all__ = [
    "trade_submit",
    "trade_simulate",
    "trade_validate",
    "trade_after_signing",
    "trade_broadcast",
    "trade_confirm",
    "trade_confirm_many",
    "trade_after_signing_batch",
    "trade_broadcast_many",
    "trade_cancel",
    "recover_stalled_trades",
    "confirm_all",
    "trade_receipts_orphaned",
    "trade_finality_violate",
]
