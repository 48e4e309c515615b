"""Put the shared session Hardhat node back exactly as a test found it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from web3 import Web3


@contextmanager
def node_restored(url: str) -> Iterator[Web3]:
    """evm_snapshot before, evm_revert after, then the clock put back on the wall clock: Hardhat's
    revert adds the time spent since the snapshot to its clock, and a node running ahead makes
    later tests' wall-clock swap deadlines look expired to the router."""
    w3 = Web3(Web3.HTTPProvider(url))
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
    try:
        yield w3
    finally:
        w3.provider.make_request("evm_revert", [snapshot])
        w3.provider.make_request("evm_setAutomine", [True])
        latest = w3.eth.get_block("latest")["timestamp"]
        w3.provider.make_request("evm_setNextBlockTimestamp", [max(int(time.time()), latest + 1)])
        w3.provider.make_request("evm_mine", [])
