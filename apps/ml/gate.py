"""The advisory gate the engine may consult while validating a trade: it can refuse, nothing else.

`advice_gate_check(trade, scope)` returns "" (allowed) or the reason to refuse. It only reads (advice
rows and the scope's AdviceGate), never writes, and never imports torch: it runs in the execution
worker. Without an enabled gate, without fresh confident advice, or when the advice abstains, it
allows: the absence of an opinion never blocks and never starts anything.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.db.models.functions import Lower
from django.utils import timezone

from apps.chain.models import Token
from apps.ml import selectors
from project.memo import remember

ONE = Decimal(1)


def _tokens(trade) -> tuple[Token | None, Token | None]:
    first, last = trade.path[0].lower(), trade.path[-1].lower()
    tokens = Token.objects.annotate(address_lower=Lower("address")).filter(
        chain_id=trade.chain_id, address_lower__in=[first, last]
    )
    by_address = {t.address_lower: t for t in tokens}
    return by_address.get(first), by_address.get(last)


def _views(token_in: Token, token_out: Token):
    """(token, quote, transform) candidates, most direct first; transform turns the advice's p_up into
    the probability that token_out gains against token_in."""
    yield token_out.pk, token_in.pk, lambda p: p
    yield token_in.pk, token_out.pk, lambda p: ONE - p
    if token_in.is_stablecoin:
        yield token_out.pk, None, lambda p: p
    if token_out.is_stablecoin:
        yield token_in.pk, None, lambda p: ONE - p


def advice_gate_check(trade, scope, *, memo: dict | None = None) -> str:
    """'' when the advice does not object; otherwise why the scope's advisory gate refuses `trade`.
    `memo` keeps the scope's gate settings for the next checks of the same validation round."""
    gate = remember(memo, ("advice_gate", scope.pk), lambda: selectors.gate_for_scope(scope_id=scope.pk))
    if gate is None or not trade.path:
        return ""
    token_in, token_out = _tokens(trade)
    if token_in is None or token_out is None:
        return ""
    since = timezone.now() - timedelta(seconds=gate.max_advice_age_seconds)
    for token_id, quote_token_id, favourable in _views(token_in, token_out):
        advice = selectors.latest_advice(
            token_id=token_id, quote_token_id=quote_token_id, horizon_bars=gate.horizon_bars, since=since
        )
        if advice is None:
            continue
        if advice.abstain or advice.p_up is None or advice.confidence < gate.min_confidence:
            # The freshest view on this pair is "I don't know": it must not block.
            return ""
        p_against = ONE - favourable(advice.p_up)
        if p_against >= gate.refuse_at_probability:
            return (
                f"advice_disagrees: advice #{advice.pk} (model {advice.model_version.name} "
                f"#{advice.model_version_id}) gives {p_against:.3f} that {token_out.symbol} falls against "
                f"{token_in.symbol} over {gate.horizon_bars} bar(s), confidence {advice.confidence}; "
                f"this scope's advisory gate refuses at {gate.refuse_at_probability}"
            )
        return ""
    return ""
