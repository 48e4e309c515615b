"""What each kind of strategy takes and does, without the database or the chain: its parameters
checked and stored, its caps' defaults, the schedule arithmetic, TWAP slice amounts, the price
conditions and when the caps leave no further run. Every refusal is a StrategyInputError naming the
field ("params.interval_seconds").

Amounts arrive in token units as decimal strings ("100.5", as the API takes amounts) and are stored
as integer base units (written as decimal strings in the params JSON); prices are decimal strings,
"whole units of the other token per whole unit of `price_token`" (token_in unless the owner says
"out"). docs/strategies.md describes each kind.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.utils.dateparse import parse_datetime

from apps.strategies.models import PRICE_TRIGGERED, StrategyKind

K = StrategyKind
AMOUNT_RE = re.compile(r"^(0|[1-9][0-9]{0,77})(\.[0-9]{1,78})?$")
PRICE_TOKENS = ("in", "out")
LIMIT_TRIGGERS = ("at_or_below", "at_or_above")
MAX_TWAP_WINDOW_SECONDS = 86_400
MAX_SLICES = 1_000
MAX_INTERVAL_SECONDS = 366 * 86_400
MAX_BPS = 5_000
UINT256_MAX = 2**256 - 1
PRICE_MAX_DIGITS, PRICE_DECIMALS = 48, 18  # models.PRICE

# The parameters each kind takes (required, optional). Prices and windows are shared by the kinds
# that judge a price.
_PRICE_OPTIONAL = ("price_token", "twap_window_seconds")
PARAMS = {
    K.RECURRING: (
        ("amount_per_run", "interval_seconds"),
        ("start_at", "max_price", "min_price", *_PRICE_OPTIONAL),
    ),
    K.TWAP: (("slices", "duration_seconds"), ()),
    K.LIMIT: (("trigger", "limit_price"), _PRICE_OPTIONAL),
    K.STOP_LOSS: (("stop_price",), _PRICE_OPTIONAL),
    K.TAKE_PROFIT: (("target_price",), _PRICE_OPTIONAL),
    K.TRAILING_STOP: (("distance_bps",), _PRICE_OPTIONAL),
}


class StrategyInputError(ValueError):
    """An invalid input; `field` names it (a parameter as "params.<name>"). Nothing was written."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class Caps:
    total_amount_in: int
    max_per_run: int
    max_slippage_bps: int
    max_runs: int
    expires_at: datetime | None


# --- parsing -----------------------------------------------------------------------------------------


def units_of(value, field: str, decimals: int) -> int:
    """A positive amount in token units, given as a decimal string, in integer base units, exactly."""
    if not isinstance(value, str):
        raise StrategyInputError(field, 'must be a decimal string such as "1.5", not a JSON number')
    if not AMOUNT_RE.match(value):
        raise StrategyInputError(field, 'must be a plain decimal string such as "1.5"')
    whole, _, fraction = value.partition(".")
    fraction = fraction.rstrip("0")
    if len(fraction) > decimals:
        raise StrategyInputError(field, f"at most {decimals} decimal places for this token")
    units = int(whole) * 10**decimals + (int(fraction.ljust(decimals, "0")) if fraction else 0)
    if units <= 0:
        raise StrategyInputError(field, "must be positive")
    if units > UINT256_MAX:
        raise StrategyInputError(field, "too large: must be below 2**256 base units")
    return units


def price_of(value, field: str) -> Decimal:
    if not isinstance(value, str) or not AMOUNT_RE.match(value):
        raise StrategyInputError(field, 'must be a positive decimal string such as "0.95"')
    price = Decimal(value)
    _sign, digits, exponent = price.normalize().as_tuple()
    if price <= 0:
        raise StrategyInputError(field, "must be positive")
    if -int(exponent) > PRICE_DECIMALS or len(digits) + int(exponent) > PRICE_MAX_DIGITS - PRICE_DECIMALS:
        raise StrategyInputError(field, f"at most {PRICE_DECIMALS} decimal places and 30 integer digits")
    return price


def int_of(value, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise StrategyInputError(field, "must be a whole number")
    if not low <= value <= high:
        raise StrategyInputError(field, f"must be between {low} and {high}")
    return value


def choice_of(value, field: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise StrategyInputError(field, f"one of {', '.join(choices)}")
    return value


def moment_of(value, field: str) -> datetime:
    parsed = parse_datetime(value) if isinstance(value, str) else None
    if parsed is None:
        raise StrategyInputError(field, "must be an ISO 8601 date and time with its UTC offset")
    if parsed.tzinfo is None:
        raise StrategyInputError(field, "must carry a UTC offset (e.g. 2030-01-01T00:00:00Z)")
    return parsed


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# --- the one check -------------------------------------------------------------------------------------


def strategy_params_check(
    *,
    kind: str,
    params,
    decimals_in: int,
    total_amount_in: int,
    max_per_run: int | None,
    max_slippage_bps: int,
    max_runs: int | None,
    expires_at: datetime | None,
    now: datetime,
) -> tuple[dict, Caps]:
    """The kind's parameters as stored and the caps with the kind's defaults filled in; a
    StrategyInputError names the first invalid field."""
    if kind not in K.values:
        raise StrategyInputError("kind", f"unknown kind: one of {', '.join(K.values)}")
    if not isinstance(params, dict):
        raise StrategyInputError("params", "must be a JSON object")
    required, optional = PARAMS[K(kind)]
    for name in sorted(params):
        if name not in required and name not in optional:
            raise StrategyInputError(f"params.{str(name)[:64]}", f"not a parameter of a {kind} strategy")
    for name in required:
        if name not in params:
            raise StrategyInputError(f"params.{name}", "this parameter is required")
    if total_amount_in <= 0:
        raise StrategyInputError("total_amount_in", "must be positive")
    if max_per_run is not None and max_per_run <= 0:
        raise StrategyInputError("max_per_run", "must be positive")
    int_of(max_slippage_bps, "max_slippage_bps", 1, MAX_BPS)
    if max_runs is not None:
        int_of(max_runs, "max_runs", 1, 1_000_000)
    if expires_at is not None and expires_at <= now:
        raise StrategyInputError("expires_at", "already passed")
    stored: dict = {}
    if kind in PRICE_TRIGGERED or any(k in params for k in ("max_price", "min_price")):
        stored["price_token"] = choice_of(params.get("price_token", "in"), "params.price_token", PRICE_TOKENS)
        stored["twap_window_seconds"] = int_of(
            params.get("twap_window_seconds", settings.STRATEGY_TWAP_WINDOW_SECONDS),
            "params.twap_window_seconds",
            settings.STRATEGY_MIN_TWAP_WINDOW_SECONDS,
            MAX_TWAP_WINDOW_SECONDS,
        )
    elif "price_token" in params or "twap_window_seconds" in params:
        field = "params.price_token" if "price_token" in params else "params.twap_window_seconds"
        raise StrategyInputError(field, "only with max_price or min_price")
    check = _KIND_CHECKS[K(kind)]
    max_per_run, max_runs = check(
        stored,
        params,
        decimals_in=decimals_in,
        total=total_amount_in,
        max_per_run=max_per_run,
        max_runs=max_runs,
        expires_at=expires_at,
        now=now,
    )
    return stored, Caps(total_amount_in, max_per_run, max_slippage_bps, max_runs, expires_at)


def _recurring(stored, params, *, decimals_in, total, max_per_run, max_runs, expires_at, now):
    amount = units_of(params["amount_per_run"], "params.amount_per_run", decimals_in)
    if amount < settings.STRATEGY_MIN_RUN_AMOUNT:
        raise StrategyInputError(
            "params.amount_per_run", f"below the smallest run, {settings.STRATEGY_MIN_RUN_AMOUNT} base units"
        )
    stored["amount_per_run"] = str(amount)
    stored["interval_seconds"] = int_of(
        params["interval_seconds"],
        "params.interval_seconds",
        settings.STRATEGY_MIN_INTERVAL_SECONDS,
        MAX_INTERVAL_SECONDS,
    )
    start = moment_of(params["start_at"], "params.start_at") if "start_at" in params else now
    if start < now - timedelta(minutes=5):
        raise StrategyInputError("params.start_at", "already passed")
    if expires_at is not None and start >= expires_at:
        raise StrategyInputError("params.start_at", "after the strategy's expiry")
    stored["start_at"] = start.isoformat()
    for bound in ("max_price", "min_price"):
        if bound in params:
            stored[bound] = str(price_of(params[bound], f"params.{bound}"))
    if (
        "max_price" in stored
        and "min_price" in stored
        and Decimal(stored["min_price"]) > Decimal(stored["max_price"])
    ):
        raise StrategyInputError("params.min_price", "above max_price: no price would ever do")
    max_per_run = amount if max_per_run is None else max_per_run
    if amount > max_per_run:
        raise StrategyInputError("params.amount_per_run", "above max_per_run")
    if total < amount:
        raise StrategyInputError("total_amount_in", "below one run's amount_per_run")
    return max_per_run, _ceil_div(total, amount) if max_runs is None else max_runs


def _twap(stored, params, *, decimals_in, total, max_per_run, max_runs, expires_at, now):
    slices = int_of(params["slices"], "params.slices", 2, MAX_SLICES)
    duration = int_of(params["duration_seconds"], "params.duration_seconds", 1, MAX_INTERVAL_SECONDS)
    if duration // slices < settings.STRATEGY_MIN_INTERVAL_SECONDS:
        raise StrategyInputError(
            "params.duration_seconds",
            f"{slices} slices would be {duration // slices} s apart, under the minimum "
            f"{settings.STRATEGY_MIN_INTERVAL_SECONDS} s",
        )
    smallest = settings.STRATEGY_MIN_RUN_AMOUNT
    if total < slices * smallest:
        raise StrategyInputError(
            "total_amount_in", f"below {slices} slices of the smallest run ({smallest} base units each)"
        )
    stored["slices"] = slices
    stored["duration_seconds"] = duration
    largest = slice_amount(total, slices, 0)
    max_per_run = largest if max_per_run is None else max_per_run
    if max_per_run < largest:
        raise StrategyInputError("max_per_run", f"below one slice ({largest} base units)")
    max_runs = slices if max_runs is None else max_runs
    if max_runs < slices:
        raise StrategyInputError("max_runs", f"below the {slices} slices")
    return max_per_run, max_runs


def _one_shot(stored, params, *, decimals_in, total, max_per_run, max_runs, expires_at, now, kind):
    max_per_run = total if max_per_run is None else max_per_run
    if max_per_run < total:
        raise StrategyInputError("max_per_run", f"a {kind} fires once, with the whole total_amount_in")
    return max_per_run, 1 if max_runs is None else max_runs


def _limit(stored, params, **kw):
    if kw["expires_at"] is None:
        raise StrategyInputError("expires_at", "a limit order needs an expiry")
    stored["trigger"] = choice_of(params["trigger"], "params.trigger", LIMIT_TRIGGERS)
    stored["limit_price"] = str(price_of(params["limit_price"], "params.limit_price"))
    return _one_shot(stored, params, kind="limit", **kw)


def _stop_loss(stored, params, **kw):
    stored["stop_price"] = str(price_of(params["stop_price"], "params.stop_price"))
    return _one_shot(stored, params, kind="stop-loss", **kw)


def _take_profit(stored, params, **kw):
    stored["target_price"] = str(price_of(params["target_price"], "params.target_price"))
    return _one_shot(stored, params, kind="take-profit", **kw)


def _trailing_stop(stored, params, **kw):
    stored["distance_bps"] = int_of(params["distance_bps"], "params.distance_bps", 1, MAX_BPS)
    return _one_shot(stored, params, kind="trailing stop", **kw)


_KIND_CHECKS = {
    K.RECURRING: _recurring,
    K.TWAP: _twap,
    K.LIMIT: _limit,
    K.STOP_LOSS: _stop_loss,
    K.TAKE_PROFIT: _take_profit,
    K.TRAILING_STOP: _trailing_stop,
}


# --- what the tick asks of a kind ------------------------------------------------------------------------


def judges_price(kind: str, params: dict) -> bool:
    return kind in PRICE_TRIGGERED or "max_price" in params or "min_price" in params


def twap_window(params: dict) -> int:
    return int(params.get("twap_window_seconds") or settings.STRATEGY_TWAP_WINDOW_SECONDS)


def slice_amount(total: int, slices: int, index: int) -> int:
    """Slice `index` (from 0) of `total` in `slices`: the remainder goes one unit each to the first
    slices, so the slices add up to the total exactly."""
    base, remainder = divmod(int(total), int(slices))
    return base + (1 if index < remainder else 0)


def twap_interval(params: dict) -> int:
    return int(params["duration_seconds"]) // int(params["slices"])


def next_slot(anchor: datetime, interval_seconds: int, after: datetime) -> datetime:
    """The first moment of the schedule anchor + k x interval strictly after `after`."""
    if after < anchor:
        return anchor
    delta = after - anchor
    elapsed = delta.days * 86_400 + delta.seconds
    return anchor + timedelta(seconds=(elapsed // interval_seconds + 1) * interval_seconds)


def oriented(price_in_out: Decimal, params: dict) -> Decimal:
    """A pool price (whole token_out per whole token_in) as the strategy states prices."""
    return price_in_out if params.get("price_token", "in") == "in" else Decimal(1) / price_in_out


def trailing_level(high_water_mark: Decimal, distance_bps: int) -> Decimal:
    return high_water_mark * (10_000 - int(distance_bps)) / 10_000


def price_condition(
    kind: str, params: dict, price: Decimal, high_water_mark: Decimal | None
) -> tuple[bool, str]:
    """(fires or, for a recurring bound, may run; why), for `price` as the strategy states prices."""
    shown = f"{price:.8g}"
    if kind == K.STOP_LOSS:
        stop = Decimal(params["stop_price"])
        return price <= stop, f"price {shown} {'at or below' if price <= stop else 'above'} the stop {stop}"
    if kind == K.TAKE_PROFIT:
        target = Decimal(params["target_price"])
        hit = price >= target
        return hit, f"price {shown} {'at or above' if hit else 'below'} the target {target}"
    if kind == K.LIMIT:
        limit = Decimal(params["limit_price"])
        hit = price <= limit if params["trigger"] == "at_or_below" else price >= limit
        return (
            hit,
            f"price {shown} {'crossed' if hit else 'has not crossed'} the limit {limit} "
            f"({params['trigger']})",
        )
    if kind == K.TRAILING_STOP:
        level = trailing_level(high_water_mark or price, params["distance_bps"])
        hit = price <= level
        return hit, (
            f"price {shown} {'at or below' if hit else 'above'} the trailing level {level:.8g} "
            f"({params['distance_bps']} bps under the high {high_water_mark or price:.8g})"
        )
    # recurring: only within the owner's bounds
    if "max_price" in params and price > Decimal(params["max_price"]):
        return False, f"price {shown} above max_price {params['max_price']}"
    if "min_price" in params and price < Decimal(params["min_price"]):
        return False, f"price {shown} below min_price {params['min_price']}"
    return True, f"price {shown} within the bounds"


def params_view(params: dict, decimals_in: int | None) -> dict:
    """The stored parameters as the API shows them: amounts back in token units."""
    out = dict(params)
    if "amount_per_run" in out and decimals_in:
        whole, fraction = divmod(int(out["amount_per_run"]), 10**decimals_in)
        text = str(fraction).rjust(decimals_in, "0").rstrip("0")
        out["amount_per_run"] = f"{whole}.{text}" if text else str(whole)
    return out


def cap_reached(strategy) -> str:
    """Why the strategy can make no further run, or ''."""
    total, committed = int(strategy.total_amount_in), int(strategy.amount_committed)
    left = total - committed
    if strategy.kind == K.TWAP and strategy.runs_settled >= int(strategy.params["slices"]):
        return f"all {strategy.params['slices']} slices settled"
    if left < settings.STRATEGY_MIN_RUN_AMOUNT or left <= 0:
        return f"total_amount_in reached ({committed} of {total} committed)"
    if strategy.runs_created >= strategy.max_runs:
        return f"max_runs reached ({strategy.runs_created} of {strategy.max_runs})"
    if strategy.kind == K.TWAP:
        wanted = slice_amount(
            int(strategy.total_amount_in), int(strategy.params["slices"]), strategy.runs_settled
        )
        allowed = min(left, int(strategy.max_per_run))
        if wanted > allowed:
            return f"the next slice ({wanted}) is over what the caps leave ({allowed})"
    return ""
