"""The owner's writes on strategies, from the API, the admin and `manage.py strategy_create`: create,
pause, resume, cancel, and lower the caps. They run in the web process, whose database role may
insert a strategy and its events and update only the columns the owner controls
(project/db_roles.py); runs, counters and judgements are the tick's (apps.strategies.engine).

Every input is checked before any transaction (`strategy_inputs_check`, a StrategyInputError naming
the field), so a refusal writes nothing."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.utils import timezone

from apps.chain.models import Dex
from apps.strategies.kinds import (
    Caps,
    StrategyInputError,
    judges_price,
    next_slot,
    strategy_params_check,
    twap_interval,
)
from apps.strategies.models import ENDED, PRICE_TRIGGERED, Strategy, StrategyKind, StrategyState
from apps.strategies.selectors import covering_scopes, oco_siblings, pair_of, tokens_of
from apps.strategies.transition import event_append, strategy_transition, strategy_update
from apps.wallets.models import Wallet
from project.db import serializable_attempts

S = StrategyState
K = StrategyKind
OCO_GROUP_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class StrategyConflict(Exception):
    """The idempotency key was already used for a strategy with other inputs: nothing was written."""

    def __init__(self, key: str):
        self.key = key
        super().__init__(f"idempotency key {key!r} was already used for a different strategy")


class StrategyStateError(Exception):
    """The strategy has ended (COMPLETED, CANCELLED, FAILED): the owner's action cannot apply."""

    def __init__(self, strategy: Strategy, action: str):
        self.state = strategy.state
        super().__init__(f"a {strategy.state} strategy cannot be {action}")


@dataclass(frozen=True)
class StrategyInputs:
    """Everything a new strategy is made of, checked."""

    owner: object
    wallet: Wallet
    dex: Dex
    path: list[str]
    kind: str
    params: dict
    caps: Caps
    oco_group: str = ""
    anchor_at: datetime = field(default_factory=timezone.now)


@dataclass(frozen=True)
class Created:
    strategy: Strategy
    created: bool


def strategy_inputs_check(
    *,
    owner,
    wallet: Wallet,
    dex: Dex,
    path: list[str],
    kind: str,
    params,
    total_amount_in: int,
    max_slippage_bps: int,
    max_per_run: int | None = None,
    max_runs: int | None = None,
    expires_at: datetime | None = None,
    oco_group: str = "",
    now: datetime | None = None,
) -> StrategyInputs:
    """Every check of a new strategy, none needing a transaction; StrategyInputError names the field."""
    now = now or timezone.now()
    if wallet.owner_id != owner.pk:
        raise StrategyInputError("wallet", "not one of your wallets")
    if wallet.status != Wallet.Status.ACTIVE or not wallet.active:
        raise StrategyInputError("wallet", "wallet is not active")
    if len(path) != 2 or path[0] == path[1]:
        raise StrategyInputError("path", "a direct pair of two different tokens")
    token_in, token_out = tokens_of(dex.chain_id, path)
    for address, token in zip(path, (token_in, token_out), strict=True):
        if token is None:
            raise StrategyInputError("path", f"no token {address} registered on chain {dex.chain.chain_id}")
    stored, caps = strategy_params_check(
        kind=kind,
        params=params,
        decimals_in=token_in.decimals,
        total_amount_in=total_amount_in,
        max_per_run=max_per_run,
        max_slippage_bps=max_slippage_bps,
        max_runs=max_runs,
        expires_at=expires_at,
        now=now,
    )
    if not covering_scopes(wallet=wallet, dex=dex, path=path, now=now):
        raise StrategyInputError(
            "path",
            f"no active scope signed by the owner lets this wallet swap {token_in.symbol} for "
            f"{token_out.symbol} on this DEX",
        )
    if judges_price(kind, stored) and pair_of(dex=dex, token_in=token_in, token_out=token_out) is None:
        raise StrategyInputError("path", "no pool of this pair is registered on the DEX: no price to judge")
    if oco_group:
        _oco_check(owner=owner, wallet=wallet, path=path, kind=kind, oco_group=oco_group)
    anchor = datetime.fromisoformat(stored["start_at"]) if "start_at" in stored else now
    return StrategyInputs(owner, wallet, dex, list(path), kind, stored, caps, oco_group, anchor)


def _oco_check(*, owner, wallet: Wallet, path: list[str], kind: str, oco_group: str) -> None:
    if kind not in PRICE_TRIGGERED:
        raise StrategyInputError("oco_group", "only limit, stop-loss, take-profit and trailing stops group")
    if not OCO_GROUP_RE.match(oco_group):
        raise StrategyInputError("oco_group", "1 to 64 letters, digits, '.', '_', ':' or '-'")
    probe = Strategy(owner_id=owner.pk, oco_group=oco_group)
    for sibling in oco_siblings(probe):
        if sibling.wallet_id != wallet.pk or sibling.path[0] != path[0]:
            raise StrategyInputError(
                "oco_group", f"strategy {sibling.pk} of this group sells another token or from another wallet"
            )


def strategy_create(*, owner, idempotency_key: str, **inputs) -> Created:
    """A new ACTIVE strategy, due at once (or at its start_at); the same idempotency key with the
    same inputs returns the same strategy, with other inputs raises StrategyConflict."""
    checked = strategy_inputs_check(owner=owner, **inputs)
    for attempt in serializable_attempts(label="strategy_create"):
        with attempt:
            existing = Strategy.objects.filter(owner=owner, idempotency_key=idempotency_key).first()
            if existing is not None:
                if not _same(existing, checked):
                    raise StrategyConflict(idempotency_key)
                return Created(existing, False)
            caps = checked.caps
            strategy = Strategy.objects.create(
                owner=owner,
                wallet=checked.wallet,
                chain=checked.dex.chain,
                dex=checked.dex,
                path=checked.path,
                kind=checked.kind,
                params=checked.params,
                idempotency_key=idempotency_key,
                total_amount_in=caps.total_amount_in,
                max_per_run=caps.max_per_run,
                max_slippage_bps=caps.max_slippage_bps,
                max_runs=caps.max_runs,
                expires_at=caps.expires_at,
                anchor_at=checked.anchor_at,
                next_run_at=checked.anchor_at,
                oco_group=checked.oco_group,
            )
            event_append(strategy, "created", to_state=strategy.state, data={"kind": strategy.kind})
    return Created(strategy, True)


def _same(existing: Strategy, checked: StrategyInputs) -> bool:
    """The same strategy asked for again (a retried request); a start time defaulted to "now" is not
    compared."""
    ours = {k: v for k, v in checked.params.items() if k != "start_at"}
    theirs = {k: v for k, v in existing.params.items() if k != "start_at"}
    caps = checked.caps
    return (
        existing.wallet_id == checked.wallet.pk
        and existing.dex_id == checked.dex.pk
        and list(existing.path) == checked.path
        and existing.kind == checked.kind
        and ours == theirs
        and int(existing.total_amount_in) == caps.total_amount_in
        and int(existing.max_per_run) == caps.max_per_run
        and existing.max_slippage_bps == caps.max_slippage_bps
        and existing.max_runs == caps.max_runs
        and existing.oco_group == checked.oco_group
    )


def _locked(strategy: Strategy) -> Strategy:
    return Strategy.objects.select_for_update().get(pk=strategy.pk)


def strategy_pause(*, strategy: Strategy, reason: str = "paused by the owner") -> Strategy:
    """ACTIVE -> PAUSED: nothing new runs (a trade already on its way goes on: cancel it on its own)."""
    for attempt in serializable_attempts(label="strategy_pause"):
        with attempt:
            current = _locked(strategy)
            if current.state in ENDED:
                raise StrategyStateError(current, "paused")
            if current.state == S.ACTIVE:
                strategy_transition(current, "pause", reason=reason)
    return current


def strategy_resume(*, strategy: Strategy, catch_up: bool = False, now: datetime | None = None) -> Strategy:
    """PAUSED -> ACTIVE, due at its next time: a recurring strategy at its next slot, a TWAP one
    interval on, a price trigger at once. With `catch_up`, the runs missed while paused run first, one
    after the other (each still waits for the previous trade to end)."""
    now = now or timezone.now()
    for attempt in serializable_attempts(label="strategy_resume"):
        with attempt:
            current = _locked(strategy)
            if current.state in ENDED:
                raise StrategyStateError(current, "resumed")
            if current.state == S.PAUSED:
                next_run_at = _resumed_at(current, catch_up=catch_up, now=now)
                strategy_transition(
                    current,
                    "resume",
                    reason="resumed by the owner" + (", catching up" if catch_up else ""),
                    fields={
                        "next_run_at": next_run_at,
                        "catch_up": catch_up and current.kind == K.RECURRING,
                        "blind_since": None,
                        "judge_problem": "",
                    },
                    data={"catch_up": catch_up, "next_run_at": next_run_at},
                )
    return current


def _resumed_at(strategy: Strategy, *, catch_up: bool, now: datetime) -> datetime:
    if strategy.kind == K.RECURRING:
        if catch_up and strategy.next_run_at is not None:
            return strategy.next_run_at
        return next_slot(strategy.anchor_at, int(strategy.params["interval_seconds"]), now)
    if strategy.kind == K.TWAP and not catch_up:
        return now + timedelta(seconds=twap_interval(strategy.params))
    return now


def strategy_cancel(*, strategy: Strategy, reason: str = "cancelled by the owner") -> Strategy:
    """ACTIVE or PAUSED -> CANCELLED, for good."""
    for attempt in serializable_attempts(label="strategy_cancel"):
        with attempt:
            current = _locked(strategy)
            if current.state in {S.COMPLETED, S.FAILED}:
                raise StrategyStateError(current, "cancelled")
            if current.state != S.CANCELLED:
                strategy_transition(current, "cancel", reason=reason, fields={"next_run_at": None})
    return current


CAP_FIELDS = ("total_amount_in", "max_per_run", "max_slippage_bps", "max_runs")


def strategy_caps_lower(*, strategy: Strategy, now: datetime | None = None, **caps) -> Strategy:
    """Lower any of the caps (total_amount_in, max_per_run in base units; max_slippage_bps, max_runs)
    or bring expires_at forward; anything higher is a StrategyInputError naming the field."""
    now = now or timezone.now()
    unknown = sorted(set(caps) - {*CAP_FIELDS, "expires_at"})
    if unknown:
        raise StrategyInputError(unknown[0], "not a cap")
    for attempt in serializable_attempts(label="strategy_caps_lower"):
        with attempt:
            current = _locked(strategy)
            if current.state in ENDED:
                raise StrategyStateError(current, "edited")
            changes = _cap_changes(current, caps, now)
            if changes:
                if "expires_at" in changes and current.next_run_at is not None:
                    changes["next_run_at"] = min(current.next_run_at, changes["expires_at"])
                before = {name: _plain(getattr(current, name)) for name in changes}
                strategy_update(current, **changes)
                event_append(
                    current,
                    "caps_lowered",
                    data={
                        "before": before,
                        "after": {name: _plain(value) for name, value in changes.items()},
                    },
                )
    return current


def _cap_changes(strategy: Strategy, caps: dict, now: datetime) -> dict:
    changes = {}
    for name in CAP_FIELDS:
        value = caps.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise StrategyInputError(name, "must be a positive whole number")
        if value > int(getattr(strategy, name)):
            raise StrategyInputError(name, f"caps can only be lowered (now {int(getattr(strategy, name))})")
        if value != int(getattr(strategy, name)):
            changes[name] = value
    expires_at = caps.get("expires_at")
    if expires_at is not None:
        if expires_at <= now:
            raise StrategyInputError("expires_at", "already passed")
        if strategy.expires_at is not None and expires_at > strategy.expires_at:
            raise StrategyInputError("expires_at", "can only be brought forward")
        if expires_at != strategy.expires_at:
            changes["expires_at"] = expires_at
    return changes


def _plain(value):
    return value.isoformat() if isinstance(value, datetime) else str(value) if value is not None else None
