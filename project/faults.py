"""Crash points for the crash-safety tests: a named point kills the whole worker with SIGKILL once.

Inert unless CUSTOS_CRASH_AT names the point (never set in production): the end-to-end tests set it
on a real worker to prove that a crash at that exact place loses nothing and doubles nothing.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path


def crash_point(name: str) -> None:
    if os.environ.get("CUSTOS_CRASH_AT") != name:
        return
    marker = Path(os.environ.get("CUSTOS_CRASH_MARKER", "/nonexistent"))
    if marker.exists():
        return  # crash once; the restarted worker runs through
    marker.write_text(name)
    os.killpg(os.getpgid(0), signal.SIGKILL)
