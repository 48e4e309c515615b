"""Reads of market data: latest ticks per source, price history, the assets worth refreshing."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import Q, QuerySet

from apps.chain.models import Chain, Pair, Token
from apps.market.models import AssetMapping, Candle, MarketSource, PriceTick
from apps.wallets.models import PermissionScope


def latest_ticks(*, token: Token, independent_only: bool = True) -> list[PriceTick]:
    """The newest USD tick of `token` from each enabled source (independent ones by default); one
    indexed read per source (market_tick_latest), which stays fast however long the history."""
    sources = MarketSource.objects.filter(enabled=True)
    if independent_only:
        sources = sources.filter(independent=True)
    latest = []
    for source in sources:
        tick = (
            PriceTick.objects.filter(token=token, source=source, quote_token__isnull=True)
            .order_by("-observed_at")
            .first()
        )
        if tick is not None:
            tick.source = source
            latest.append(tick)
    return latest


def latest_twap(*, base: Token, quote: Token, now: datetime) -> Decimal | None:
    """The pair's on-chain TWAP (whole `quote` per whole `base`) if a fresh one is stored."""
    oldest = now - timedelta(seconds=settings.MARKET_MAX_PRICE_AGE_SECONDS)
    ticks = PriceTick.objects.filter(
        source__slug="onchain-twap", source__enabled=True, observed_at__gte=oldest
    )
    direct = ticks.filter(token=base, quote_token=quote).order_by("-observed_at").first()
    if direct is not None:
        return direct.price
    inverse = ticks.filter(token=quote, quote_token=base).order_by("-observed_at").first()
    return None if inverse is None else Decimal(1) / inverse.price


def token_by_address(*, chain: Chain, address: str) -> Token | None:
    """Addresses are stored checksummed; any case is accepted."""
    found = Token.objects.filter(chain=chain, address=address).first()
    return found or Token.objects.filter(chain=chain, address__iexact=address).first()


def active_scopes(*, now: datetime) -> QuerySet[PermissionScope]:
    return PermissionScope.objects.filter(
        active=True, revoked_at__isnull=True, valid_from__lte=now, valid_until__gt=now
    )


def active_tokens(*, now: datetime) -> QuerySet[Token]:
    """Tokens some active scope may trade: the only assets the refresh pays API calls for."""
    scopes = active_scopes(now=now)
    ids = set(scopes.values_list("token_in_id", flat=True)) | set(
        scopes.values_list("token_out_id", flat=True)
    )
    return Token.objects.filter(pk__in=ids).order_by("pk")


def active_pairs(*, now: datetime) -> list[tuple[Pair, Token]]:
    """(pair, token_in) for each active scope whose two tokens share a pair on the scope's DEX."""
    found = []
    seen = set()
    for scope in active_scopes(now=now).select_related("dex"):
        pair = (
            Pair.objects.filter(dex=scope.dex)
            .filter(
                Q(token0_id=scope.token_in_id, token1_id=scope.token_out_id)
                | Q(token0_id=scope.token_out_id, token1_id=scope.token_in_id)
            )
            .select_related("dex__chain", "token0", "token1")
            .first()
        )
        if pair is not None and (pair.pk, scope.token_in_id) not in seen:
            seen.add((pair.pk, scope.token_in_id))
            found.append((pair, pair.token0 if pair.token0_id == scope.token_in_id else pair.token1))
    return found


def mappings_for(*, source: MarketSource, tokens) -> list[AssetMapping]:
    return list(
        AssetMapping.objects.filter(source=source, active=True, token__in=tokens).select_related("token")
    )


def price_history(
    *, token: Token, since: datetime, interval: str | None = None, source: str | None = None
) -> QuerySet:
    """Ticks (no interval) or candles of `token` since `since`, oldest first."""
    if interval:
        rows = Candle.objects.filter(token=token, interval=interval, start__gte=since).order_by("start")
    else:
        rows = PriceTick.objects.filter(token=token, observed_at__gte=since).order_by("observed_at")
    if source:
        rows = rows.filter(source__slug=source)
    return rows.select_related("source")
