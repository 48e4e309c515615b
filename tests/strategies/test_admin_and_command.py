"""The admin's strategy page (read-only, with its runs, their trades and those trades' timelines), its
pause, resume and cancel actions (confirmed, through the services), and `manage.py strategy_create`."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from apps.strategies.models import Strategy, StrategyEvent, StrategyRun, run_idempotency_key
from tests.admin.conftest import owner, pending_trade, staff, staff_client  # noqa: F401 - fixtures
from tests.factories import grant_scope
from tests.gateway.conftest import registry  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db(transaction=True)
STRATEGIES = "/admin/strategies/strategy/"


@pytest.fixture
def strategy_with_a_run(owner, registry, pending_trade):  # noqa: F811
    wallet = pending_trade.wallet
    grant_scope(wallet)
    out = StringIO()
    call_command(
        "strategy_create",
        "--wallet",
        wallet.label,
        "--kind",
        "recurring",
        "--sell",
        "dUSDC",
        "--buy",
        "dDAI",
        "--total",
        "50",
        "--slippage-bps",
        "50",
        "--params",
        '{"amount_per_run": "5", "interval_seconds": 86400}',
        stdout=out,
    )
    strategy = Strategy.objects.get()
    assert f"strategy {strategy.pk}: created" in out.getvalue()
    assert (strategy.kind, int(strategy.total_amount_in), strategy.max_runs) == ("recurring", 50 * 10**6, 10)
    StrategyRun.objects.create(
        strategy=strategy,
        sequence=1,
        idempotency_key=run_idempotency_key(strategy.pk, 1),
        trade=pending_trade,
        amount_in=pending_trade.amount_in,
        outcome="created",
    )
    return strategy


def test_the_command_refuses_bad_input_naming_it(owner, registry):  # noqa: F811
    wallet = owner.active_wallet()
    grant_scope(wallet)
    args = [
        "--wallet",
        wallet.label,
        "--kind",
        "recurring",
        "--sell",
        "dUSDC",
        "--buy",
        "dDAI",
        "--total",
        "50",
    ]
    with pytest.raises(CommandError, match=r"params\.interval_seconds"):
        call_command("strategy_create", *args, "--slippage-bps", "50", "--params", '{"amount_per_run": "5"}')
    with pytest.raises(CommandError, match="total_amount_in"):
        call_command("strategy_create", *args[:-1], "-3", "--slippage-bps", "50", "--params", "{}")
    assert not Strategy.objects.exists()


def test_the_strategy_page_shows_its_runs_trades_and_their_timelines(staff_client, strategy_with_a_run):  # noqa: F811
    trade = strategy_with_a_run.runs.get().trade
    html = staff_client.get(f"{STRATEGIES}{strategy_with_a_run.pk}/change/").content.decode()
    assert f"trade {trade.pk} [PENDING]" in html
    assert f"/admin/trades/trade/{trade.pk}/change/" in html
    assert "submitted" in html  # the trade's timeline
    assert 'name="_save"' not in html


def test_pause_resume_and_cancel_ask_then_go_through_the_services(staff_client, strategy_with_a_run):  # noqa: F811
    pk = strategy_with_a_run.pk
    ask = staff_client.post(STRATEGIES, {"action": "pause_strategies", "_selected_action": [pk]})
    assert "Are you sure" in ask.content.decode()
    assert Strategy.objects.get(pk=pk).state == "ACTIVE"
    for action, state in [
        ("pause_strategies", "PAUSED"),
        ("resume_strategies", "ACTIVE"),
        ("cancel_strategies", "CANCELLED"),
    ]:
        done = staff_client.post(STRATEGIES, {"action": action, "_selected_action": [pk], "confirmed": "yes"})
        assert done.status_code == 302
        assert Strategy.objects.get(pk=pk).state == state
    assert Strategy.objects.get(pk=pk).reason == "cancelled by staff operator in the admin"
    kinds = list(StrategyEvent.objects.filter(strategy_id=pk).values_list("kind", flat=True))
    assert kinds == ["created", "pause", "resume", "cancel"]
