"""The processes below a test's tool, read from /proc: which children it started, and whether they are gone."""

from __future__ import annotations

import time
from pathlib import Path


def processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command name) of every running (not zombie) process, from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z":
            found[int(entry.name)] = (int(fields[1]), stat[stat.index("(") + 1 : stat.rindex(")")])
    return found


def descendants(root: int) -> dict[int, str]:
    """pid -> command name of every running process below `root`."""
    table = processes()
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        current = frontier.pop()
        for pid, (ppid, name) in table.items():
            if ppid == current and pid not in found:
                found[pid] = name
                frontier.append(pid)
    return found


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
