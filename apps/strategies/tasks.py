"""Execution-queue task of the strategies: the beat tick, thin (apps.strategies.engine)."""

from apps.strategies.engine import strategies_tick
from project.queues import Queue, TaskName, custos_task


@custos_task(name=TaskName.STRATEGIES_TICK, queue=Queue.EXECUTION)
def tick(self) -> dict:
    """Beat: learn how runs' trades ended, run what is due. Safe to run twice at once or again."""
    return strategies_tick()
