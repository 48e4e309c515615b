"""The strategies engine: what the beat tick does, in order (a file imports only the ones above it):

    ends.py     1. learn how runs' trades ended: settled, or refused/failed (the strategy pauses)
    prices.py   2a. a due strategy's price: the pool TWAP, vouched for by the independent reference
    plan.py     2b. what the due strategy does now: complete, refuse, skip, watch or create
    run.py      3. one SERIALIZABLE transaction: claim (SKIP LOCKED), the run, its trade, the counters
    tick.py     the tick itself: 1, then 2-3 for each due strategy

Beneath them: apps.strategies.kinds (pure rules of each kind), apps.strategies.twap (the pool's TWAP
through the RPC pool), apps.strategies.transition (the version-checked update and the events).
docs/strategies.md describes the behaviour.
"""

from .tick import strategies_tick

__all__ = ["strategies_tick"]
