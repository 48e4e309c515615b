"""The reference price a trade's quote is checked against: `reference_check`, the one entry point.

Reference = the median USD price of each token over the fresh independent sources (CoinCap,
CoinLore; not the pool being traded), so token_in's price in token_out is their ratio. It reads only
the database (ticks the market worker stored), never the network: validation calls it inside its
SERIALIZABLE transaction.

Outcomes, each with a reason a person can act on:
- sources for a token disagree by more than MARKET_MAX_DIVERGENCE_BPS: REJECTED, whatever the scope
  says (someone is wrong, and we cannot tell who);
- the quote is further from the reference than the scope's tolerance (either way: a far better
  quote than the market usually means a wrong token mapping): REJECTED with both prices;
- no fresh independent price (nothing mapped, every tick older than MARKET_MAX_PRICE_AGE_SECONDS,
  fewer fresh sources than MARKET_MIN_FRESH_SOURCES): REJECTED "no independent price", unless the
  scope allows on-chain-only pricing; then the pool's own reserves at the quote block are the
  reference, as before this module existed.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_FLOOR, Decimal, InvalidOperation

from django.conf import settings
from django.utils import timezone

from apps.chain.models import Chain, Token
from apps.market.selectors import latest_ticks, latest_twap, token_by_address
from project.memo import remember

OK = "OK"


@dataclass(frozen=True)
class SourcePrice:
    source: str
    price: Decimal
    age_seconds: int


@dataclass(frozen=True)
class AssetReference:
    token: Token
    price_usd: Decimal | None
    fresh: list[SourcePrice] = field(default_factory=list)
    stale: list[SourcePrice] = field(default_factory=list)
    problem: str = ""
    divergent: bool = False


@dataclass(frozen=True)
class ReferenceCheck:
    ok: bool
    reason: str  # OK when ok
    basis: str = ""  # "independent" or "onchain-only"
    reference_out: Decimal | None = None  # base units of token_out the reference gives for amount_in


def _bps(part: Decimal, whole: Decimal) -> int:
    return int((abs(part) / whole * 10_000).to_integral_value(rounding=ROUND_FLOOR))


def asset_reference(token: Token, *, now: datetime | None = None, memo: dict | None = None) -> AssetReference:
    """The median USD price of `token` over its fresh independent sources, or why there is none.
    `memo` keeps the ticks read for reuse within one validation round (freshness is judged at `now`)."""
    now = now or timezone.now()
    max_age = settings.MARKET_MAX_PRICE_AGE_SECONDS
    fresh, stale = [], []
    for tick in remember(memo, ("latest_ticks", token.pk), lambda: latest_ticks(token=token)):
        age = max(int((now - tick.observed_at).total_seconds()), 0)
        (fresh if age <= max_age else stale).append(SourcePrice(tick.source.slug, tick.price, age))
    if not fresh:
        if stale:
            ages = ", ".join(f"{s.source} {s.age_seconds}s old" for s in stale)
            problem = f"{token.symbol}: every price is stale ({ages}; max {max_age}s)"
        else:
            problem = f"{token.symbol}: no market source has a price for it (map it in the admin)"
        return AssetReference(token, None, fresh, stale, problem)
    needed = settings.MARKET_MIN_FRESH_SOURCES
    if len(fresh) < needed:
        problem = f"{token.symbol}: {len(fresh)} fresh source(s), {needed} required"
        return AssetReference(token, None, fresh, stale, problem)
    median = statistics.median(s.price for s in fresh)
    spread = _bps(max(s.price for s in fresh) - min(s.price for s in fresh), median)
    if spread > settings.MARKET_MAX_DIVERGENCE_BPS:
        prices = ", ".join(f"{s.source} {s.price.normalize():f}" for s in fresh)
        problem = (
            f"{token.symbol}: sources diverge by {spread} bps "
            f"(over {settings.MARKET_MAX_DIVERGENCE_BPS} bps): {prices} USD"
        )
        return AssetReference(token, None, fresh, stale, problem, divergent=True)
    return AssetReference(token, median, fresh, stale)


def _human(units: Decimal, decimals: int) -> str:
    whole = units / Decimal(10) ** decimals
    try:
        return f"{whole.quantize(Decimal('0.000001'))}"
    except InvalidOperation:  # more digits than the context holds: show it unrounded
        return f"{whole:E}"


def reference_check(
    *,
    chain: Chain,
    token_in: str,
    token_out: str,
    amount_in: int,
    quoted_out: int,
    tolerance_bps: int,
    allow_onchain_only: bool,
    pool_reserves: tuple[int, int] | None = None,
    now: datetime | None = None,
    memo: dict | None = None,
) -> ReferenceCheck:
    """Is `quoted_out` (base units of `token_out`) for `amount_in` (base units of `token_in`, both
    given by address) within `tolerance_bps` of the reference price? `memo`: the token and tick
    reads, kept for the next checks of the same unit of work (a validation round)."""
    now = now or timezone.now()
    tin, tout = (
        remember(
            memo, ("token", chain.pk, address), lambda a=address: token_by_address(chain=chain, address=a)
        )
        for address in (token_in, token_out)
    )
    if tin is None or tout is None:
        return ReferenceCheck(
            False, f"no independent price: token {token_in if tin is None else token_out} unknown"
        )
    refs = [asset_reference(tin, now=now, memo=memo), asset_reference(tout, now=now, memo=memo)]
    divergent = [r.problem for r in refs if r.divergent]
    if divergent:
        return ReferenceCheck(False, "price_sources_diverge: " + "; ".join(divergent))
    quoted = Decimal(int(quoted_out))
    if all(r.price_usd is not None for r in refs):
        rate = refs[0].price_usd / refs[1].price_usd
        expected = Decimal(int(amount_in)) * rate * Decimal(10) ** (tout.decimals - tin.decimals)
        if expected <= 0:
            return ReferenceCheck(False, "no independent price: the reference rounds to zero")
        deviation = _bps(expected - quoted, expected)
        if deviation > tolerance_bps:
            sources = ", ".join(sorted({s.source for r in refs for s in r.fresh}))
            return ReferenceCheck(
                False,
                f"price_deviation: quote {_human(quoted, tout.decimals)} {tout.symbol} vs reference "
                f"{_human(expected, tout.decimals)} {tout.symbol} (median of {sources}) "
                f"is {deviation} bps off, over the scope's {tolerance_bps} bps",
                "independent",
                expected,
            )
        return ReferenceCheck(True, OK, "independent", expected)
    missing = "; ".join(r.problem for r in refs if r.price_usd is None)
    if not allow_onchain_only:
        return ReferenceCheck(False, f"no independent price: {missing}")
    r_in, r_out = pool_reserves or (0, 0)
    if r_in <= 0 or r_out <= 0:
        return ReferenceCheck(False, f"no independent price ({missing}) and the pool is empty")
    mid = Decimal(int(amount_in)) * Decimal(r_out) / Decimal(r_in)
    deviation = _bps(mid - quoted, mid) if quoted < mid else 0
    if deviation > tolerance_bps:
        return ReferenceCheck(
            False,
            f"price_deviation: quote {_human(quoted, tout.decimals)} {tout.symbol} vs on-chain pool "
            f"price {_human(mid, tout.decimals)} {tout.symbol} is {deviation} bps off, over the "
            f"scope's {tolerance_bps} bps (scope allows on-chain-only pricing: {missing})",
            "onchain-only",
            mid,
        )
    # The pool's spot at the quote block cannot see a pool pushed off its price just before the
    # quote; a fresh TWAP of the pair (stored by the refresh) can.
    twap = remember(memo, ("twap", tin.pk, tout.pk), lambda: latest_twap(base=tin, quote=tout, now=now))
    if twap is not None:
        expected = Decimal(int(amount_in)) * twap * Decimal(10) ** (tout.decimals - tin.decimals)
        deviation = _bps(expected - quoted, expected)
        if deviation > tolerance_bps:
            return ReferenceCheck(
                False,
                f"price_deviation: quote {_human(quoted, tout.decimals)} {tout.symbol} vs on-chain TWAP "
                f"{_human(expected, tout.decimals)} {tout.symbol} is {deviation} bps off, over the "
                f"scope's {tolerance_bps} bps (scope allows on-chain-only pricing: {missing})",
                "onchain-only",
                expected,
            )
    return ReferenceCheck(True, OK, "onchain-only", mid)
