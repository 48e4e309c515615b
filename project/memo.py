"""Reads remembered for the length of one unit of work (a validation round)."""

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def remember(memo: dict | None, key: tuple, compute: Callable[[], T]) -> T:
    """`compute()`, or what it gave for `key` earlier in the same `memo`; no memo: always computed."""
    if memo is None:
        return compute()
    if key not in memo:
        memo[key] = compute()
    return memo[key]
