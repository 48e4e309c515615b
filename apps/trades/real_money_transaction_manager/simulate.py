"""PENDING → SIMULATING → VALIDATING: quote and simulate the swap (and its approve) at a pinned block,
outside any transaction; FAILED on a revert, REJECTED once the deadline has passed."""

from __future__ import annotations

from django.utils import timezone

from apps.trades import chainio
from apps.trades.models import Trade, TradeState
from project.queues import TaskName

from .payloads import approve_calldata, min_out_of, swap_calldata, swap_value
from .transition import attempts_reusing, end_trade, load, transition

S = TradeState


def trade_simulate(*, trade_id: int) -> Trade | None:
    """PENDING → SIMULATING, quote and simulate at a pinned block, → VALIDATING (or FAILED on revert)."""
    # Read before the transaction (the transition's UPDATE is checked against what was read): reads
    # inside it made it collide with every concurrent step's writes to the trades table.
    trade = load(trade_id)
    if trade is None or trade.state not in (S.PENDING, S.SIMULATING):
        return trade  # gone or already past this step
    if trade.state == S.PENDING:
        for attempt, current in attempts_reusing(trade, label="simulate.start"):
            with attempt:
                trade = current()
                if trade is None or trade.state not in (S.PENDING, S.SIMULATING):
                    return trade
                if trade.state == S.PENDING:
                    transition(trade, "start_simulation")
    if trade.deadline <= timezone.now():
        return end_trade(trade_id, "reject", "deadline passed before simulation", expect={S.SIMULATING})
    try:
        sim = chainio.simulate(
            chain=trade.chain,
            router=trade.dex.router,
            factory=trade.dex.factory,
            sender=trade.wallet.address,
            path=list(trade.path),
            amount_in=int(trade.amount_in),
            build_swap=lambda out, _ts: swap_calldata(trade, min_out_of(trade, out)),
            build_approve=lambda: approve_calldata(trade),
            value=swap_value(trade),
        )
    except chainio.SimulationReverted as exc:
        return end_trade(trade_id, "fail", f"simulation reverted: {exc.reason}", expect={S.SIMULATING})
    for attempt, current in attempts_reusing(trade, label="simulate.finish"):
        with attempt:
            trade = current()
            if trade is None or trade.state != S.SIMULATING:
                return trade
            out_min = min_out_of(trade, sim.amounts_out)
            transition(
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
                next_task=(TaskName.TRADES_VALIDATE, trade.pk),
            )
            # The simulation's gas figures travel to validation through the audit event above.
    return trade
