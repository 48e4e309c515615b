"""The short chaos run in `make test`: bench/chaos.py with 30 trades over 3 wallets while workers are
killed, Redis restarts, an RPC endpoint goes down and the chain reorganises; every invariant holds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

pytestmark = [pytest.mark.e2e, pytest.mark.chain, pytest.mark.slow]


def test_thirty_trades_through_chaos_end_terminal_with_every_invariant_holding():
    result = subprocess.run(
        [sys.executable, "bench/chaos.py", "--trades", "30", "--wallets", "3", "--seed", "1"],
        cwd=Path(settings.BASE_DIR),
        capture_output=True,
        text=True,
        timeout=900,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(lines[-1])
    assert result.returncode == 0, report
    assert report["trades"] == 30
    assert report["lost"] == 0
    assert report["not_terminal"] == 0
    assert report["nonces_with_two_payloads"] == 0
    assert report["settled_on_orphaned_block"] == 0
    assert report["audit_broken_link"] is None
    assert report["audit_events_checked"] >= 30 * 6  # every trade's timeline, not an empty one
    # Every kind of fault happened at least once (the run schedules each before any repeats).
    chaos = report["chaos"]
    for kind in ("kill_execution", "kill_signer", "kill_watcher", "redis_restart", "rpc_endpoint_down"):
        assert chaos.get(kind, 0) >= 1, chaos
    assert any(k.startswith("reorg_depth_") for k in chaos), chaos
    # A run where nothing could trade would hold every invariant trivially.
    assert report["states"].get("SETTLED", 0) >= 15, report
