"""Step 2a of a run: the price a strategy judges, read before any transaction.

The judged price is the pool's TWAP over the strategy's window (apps.strategies.twap), never its spot
price. The independent reference (apps.market.reference.asset_reference: the median of fresh
independent sources, with its staleness and divergence rules) must vouch for it: the two may differ
by at most STRATEGY_MAX_PRICE_GAP_BPS. Nothing is judged, and the run is skipped with the reason, when

- the independent sources for either token diverge (whatever the scope says);
- either token has no fresh independent price, unless an active scope the owner signed for this pair
  allows on-chain-only pricing: then the TWAP alone is judged (how the dev tokens, listed by no
  market API, are priced);
- the reference and the TWAP disagree by more than the gap;
- the pool cannot be read, its window reaches before the pool existed, or the chain head is older
  than STRATEGY_MAX_HEAD_AGE_SECONDS.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.conf import settings

from apps.market.onchain import OnchainPriceError
from apps.market.reference import asset_reference
from apps.strategies.kinds import oriented, twap_window
from apps.strategies.models import Strategy
from apps.strategies.selectors import covering_scopes, pair_of, tokens_of
from apps.strategies.twap import PoolTwap, pool_twap
from project.memo import remember


@dataclass(frozen=True)
class PriceView:
    """`price` (as the strategy states prices) when it may be judged; else `problem` says why not."""

    price: Decimal | None
    problem: str
    snapshot: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.price is not None


def _text(value: Decimal | None) -> str | None:
    return None if value is None else f"{value.normalize():f}"


def _gap_bps(a: Decimal, b: Decimal) -> int:
    return int(abs(a - b) / b * 10_000)


def price_view(strategy: Strategy, *, now: datetime, memo: dict) -> PriceView:
    """Judge the strategy's price now; `memo` shares reads between the strategies of one tick."""
    window = twap_window(strategy.params)
    snapshot: dict = {"judged_at": now.isoformat(), "window_seconds": window}
    token_in, token_out = remember(
        memo,
        ("tokens", strategy.chain_id, *strategy.path),
        lambda: tokens_of(strategy.chain_id, list(strategy.path)),
    )
    if token_in is None or token_out is None:
        return PriceView(None, "unknown_token: a token of the pair is no longer registered", snapshot)
    pair = remember(
        memo,
        ("pair", strategy.dex_id, token_in.pk, token_out.pk),
        lambda: pair_of(dex=strategy.dex, token_in=token_in, token_out=token_out),
    )
    if pair is None:
        return PriceView(None, "no_pool: no pool of the pair is registered on the DEX", snapshot)

    refs = [asset_reference(token, now=now, memo=memo) for token in (token_in, token_out)]
    snapshot["reference"] = {
        ref.token.symbol: {
            "price_usd": _text(ref.price_usd),
            "fresh": [
                {"source": s.source, "price": _text(s.price), "age_seconds": s.age_seconds} for s in ref.fresh
            ],
            "stale": [{"source": s.source, "age_seconds": s.age_seconds} for s in ref.stale],
            "problem": ref.problem,
        }
        for ref in refs
    }
    divergent = [r.problem for r in refs if r.divergent]
    if divergent:
        return PriceView(None, "price_sources_diverge: " + "; ".join(divergent), snapshot)
    reference = None
    if all(r.price_usd is not None for r in refs):
        reference = refs[0].price_usd / refs[1].price_usd
        snapshot["basis"] = "independent reference and pool TWAP"
    else:
        missing = "; ".join(r.problem for r in refs if r.price_usd is None)
        onchain_only = remember(
            memo,
            ("onchain_only", strategy.wallet_id, strategy.dex_id, *strategy.path),
            lambda: any(
                s.allow_onchain_only_pricing
                for s in covering_scopes(
                    wallet=strategy.wallet, dex=strategy.dex, path=list(strategy.path), now=now
                )
            ),
        )
        if not onchain_only:
            return PriceView(None, f"no_independent_price: {missing}", snapshot)
        snapshot["basis"] = f"pool TWAP only (the scope allows on-chain-only pricing: {missing})"

    try:
        observed: PoolTwap = remember(
            memo,
            ("twap", pair.pk, token_in.pk, window),
            lambda: pool_twap(pair=pair, base=token_in, window_seconds=window),
        )
    except OnchainPriceError as exc:
        return PriceView(None, f"pool_unreadable: {exc}", snapshot)
    head_age = max(0, int(time.time()) - observed.timestamp)
    snapshot.update(
        {
            "pair": pair.address,
            "block": observed.block,
            "block_timestamp": observed.timestamp,
            "head_age_seconds": head_age,
            "window": [observed.start_block, observed.start_timestamp, observed.block, observed.timestamp],
            "twap": _text(observed.twap),
            "spot": _text(observed.spot),
            "reference_price": _text(reference),
            "prices_of": f"{token_out.symbol} per {token_in.symbol}",
        }
    )
    if head_age > settings.STRATEGY_MAX_HEAD_AGE_SECONDS:
        return PriceView(
            None,
            f"chain_stale: head block {observed.block} is {head_age}s old "
            f"(max {settings.STRATEGY_MAX_HEAD_AGE_SECONDS}s)",
            snapshot,
        )
    if reference is not None:
        gap = _gap_bps(observed.twap, reference)
        snapshot["gap_bps"] = gap
        if gap > settings.STRATEGY_MAX_PRICE_GAP_BPS:
            return PriceView(
                None,
                f"reference_twap_disagree: pool TWAP {observed.twap:.8g} vs independent reference "
                f"{reference:.8g} {token_out.symbol} per {token_in.symbol}: {gap} bps apart "
                f"(max {settings.STRATEGY_MAX_PRICE_GAP_BPS})",
                snapshot,
            )
    price = oriented(observed.twap, strategy.params)
    snapshot["price"] = _text(price)
    return PriceView(price, "", snapshot)
