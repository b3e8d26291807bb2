"""The processes below a test's tool, read from /proc: which children it started, and whether they are gone."""

from __future__ import annotations

import time
from pathlib import Path

from ipa_backup.proc import descendants, processes

__all__ = ["descendants", "processes", "wait_for_child"]


def _has_argument(pid: int, arg: str) -> bool:
    try:
        return arg.encode() in (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return False


def wait_for_child(root: int, name: str, arg: str | None = None, timeout: float = 60.0) -> int:
    """PID of a running process `name` below `root` (whose command line holds `arg`, if given), polled."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid, comm in descendants(root).items():
            if comm == name and (arg is None or _has_argument(pid, arg)):
                return pid
        time.sleep(0.005)
    raise AssertionError(f"no {name} below {root} within {timeout}s")
