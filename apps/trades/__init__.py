"""The trade state machine and the execution engine."""
