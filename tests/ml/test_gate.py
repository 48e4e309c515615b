"""The advisory gate: when a scope opts in, strong fresh advice against a trade's direction refuses
it; anything else allows; and the check only ever reads."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.forms.models import model_to_dict
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.ml.gate import advice_gate_check
from apps.ml.models import Advice, AdviceGate
from apps.ml.services import advice_gate_set, advice_record
from apps.trades.models import ChainTransaction, Trade, TradeEvent
from apps.wallets.models import PermissionScope
from tests.ml.conftest import make_scope, make_trade

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def buy_weth(world):
    """A scope and a trade selling the stablecoin tUSDC for tWETH."""
    scope = make_scope(world, token_in=world["usdc"], token_out=world["weth"])
    return scope, make_trade(world, token_in=world["usdc"], token_out=world["weth"])


def _advice(version, token, *, p_up="0.10", confidence="0.50", quote=None, age=timedelta(0), abstain=""):
    return advice_record(
        token_id=token.pk,
        quote_token_id=quote.pk if quote else None,
        model_version_id=version.pk,
        horizon_bars=1,
        created_at=timezone.now() - age,
        data_until=timezone.now(),
        p_up=None if abstain and p_up is None else Decimal(p_up),
        confidence=Decimal(0) if abstain else Decimal(confidence),
        abstain_reason=abstain,
    )


def test_the_gate_refuses_a_trade_the_advice_strongly_disagrees_with(world, version, buy_weth):
    scope, trade = buy_weth
    advice_gate_set(scope_id=scope.pk, refuse_at_probability=Decimal("0.75"))
    advice = _advice(version, world["weth"], p_up="0.10")  # tWETH in USD: 90% down
    reason = advice_gate_check(trade, scope)
    assert reason.startswith("advice_disagrees:")
    assert f"advice #{advice.pk}" in reason
    assert "0.900" in reason
    assert "tWETH falls against tUSDC" in reason
    assert "0.750" in reason


def test_without_an_enabled_gate_advice_never_blocks(world, version, buy_weth):
    scope, trade = buy_weth
    _advice(version, world["weth"], p_up="0.01", confidence="1")
    assert advice_gate_check(trade, scope) == ""  # the scope never opted in
    advice_gate_set(scope_id=scope.pk, enabled=False)
    assert advice_gate_check(trade, scope) == ""
    advice_gate_set(scope_id=scope.pk, enabled=True)
    assert advice_gate_check(trade, scope) != ""


@pytest.mark.parametrize(
    ("advice", "why"),
    [
        ({"p_up": "0.30"}, "70% against is below the 75% threshold"),
        ({"p_up": "0.90"}, "the advice agrees with buying"),
        ({"p_up": "0.05", "confidence": "0.10"}, "confidence below the gate's minimum"),
        ({"p_up": "0.05", "age": timedelta(hours=2)}, "older than max_advice_age_seconds"),
    ],
)
def test_weak_agreeing_or_old_advice_allows(world, version, buy_weth, advice, why):
    scope, trade = buy_weth
    advice_gate_set(scope_id=scope.pk, min_confidence=Decimal("0.2"), max_advice_age_seconds=3600)
    _advice(version, world["weth"], **advice)
    assert advice_gate_check(trade, scope) == "", why


def test_a_newer_abstention_overrides_an_older_disagreement(world, version, buy_weth):
    scope, trade = buy_weth
    advice_gate_set(scope_id=scope.pk)
    _advice(version, world["weth"], p_up="0.05", age=timedelta(minutes=10))
    assert advice_gate_check(trade, scope) != ""
    _advice(version, world["weth"], p_up=None, abstain=Advice.Abstain.STALE)
    assert advice_gate_check(trade, scope) == ""


def test_direct_and_reverse_pair_advice_and_selling_into_a_stablecoin(world, version):
    gate_kwargs = {"refuse_at_probability": Decimal("0.8")}
    # tWETH priced in tDAI, 85% down: buying tWETH with tDAI is refused.
    scope = make_scope(world, token_in=world["dai"], token_out=world["weth"])
    advice_gate_set(scope_id=scope.pk, **gate_kwargs)
    trade = make_trade(world, token_in=world["dai"], token_out=world["weth"])
    _advice(version, world["weth"], quote=world["dai"], p_up="0.15")
    assert "0.850" in advice_gate_check(trade, scope)
    # The same view stated the other way round (tDAI in tWETH, 85% up) refuses the same trade.
    Advice.objects.all().delete()
    _advice(version, world["dai"], quote=world["weth"], p_up="0.85")
    assert "0.850" in advice_gate_check(trade, scope)
    # Selling tWETH for the stablecoin tUSDC while tWETH is 95% likely to rise in USD: refused.
    Advice.objects.all().delete()
    sell = make_scope(world, token_in=world["weth"], token_out=world["usdc"])
    advice_gate_set(scope_id=sell.pk, **gate_kwargs)
    sell_trade = make_trade(world, token_in=world["weth"], token_out=world["usdc"])
    _advice(version, world["weth"], p_up="0.95")
    assert "tUSDC falls against tWETH" in advice_gate_check(sell_trade, sell)
    # ... and buying tWETH with tUSDC on that same advice is fine.
    buy = make_scope(world, token_in=world["usdc"], token_out=world["weth"])
    advice_gate_set(scope_id=buy.pk, **gate_kwargs)
    assert advice_gate_check(make_trade(world, token_in=world["usdc"], token_out=world["weth"]), buy) == ""


def _snapshot():
    return {
        "trades": [
            model_to_dict(t) | {"state": t.state, "version": t.version} for t in Trade.objects.order_by("pk")
        ],
        "events": TradeEvent.objects.count(),
        "transactions": ChainTransaction.objects.count(),
        "scopes": [model_to_dict(s) for s in PermissionScope.objects.order_by("pk")],
        "advice": Advice.objects.count(),
        "gates": [model_to_dict(g) for g in AdviceGate.objects.order_by("pk")],
    }


def test_the_gate_only_reads_it_never_creates_changes_or_enlarges_a_trade(world, version, buy_weth):
    scope, trade = buy_weth
    advice_gate_set(scope_id=scope.pk)
    _advice(version, world["weth"], p_up="0.02", confidence="0.9")
    before = _snapshot()
    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        # Inside a READ ONLY transaction PostgreSQL itself would refuse any write the check attempted.
        connection.cursor().execute("SET TRANSACTION READ ONLY")
        blocked = advice_gate_check(trade, scope)
    assert isinstance(blocked, str)
    assert blocked
    statements = [q["sql"].lstrip().split()[0].upper() for q in queries.captured_queries]
    assert set(statements) <= {"BEGIN", "SET", "SELECT", "COMMIT"}, statements
    assert _snapshot() == before
    # The trade object handed in is untouched too (the engine will refuse it on its own terms).
    assert trade.amount_in == 10**6
    assert trade.state == "VALIDATING"
    assert trade.path[0] == world["usdc"].address
