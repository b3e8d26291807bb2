"""`ipa-backup` run the way the CronJob runs it, on a compressed schedule."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ToolRun:
    command: str
    started: float  # unix time
    finished: float
    returncode: int
    result: dict[str, Any] | None  # the JSON line the tool prints on success
    output_tail: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def seconds(self) -> float:
        return self.finished - self.started


class BackupTool:
    """Runs `<argv> <subcommand>` with a fixed environment; every run is kept in `runs`."""

    def __init__(self, argv: list[str], env: dict[str, str], log_dir: Path, timeout: float) -> None:
        self.argv = argv
        self.env = env
        self.log_dir = log_dir
        self.timeout = timeout
        self.runs: list[ToolRun] = []
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen[bytes]] = set()

    def run(self, *args: str) -> ToolRun:
        started = time.time()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"ipa-backup-{args[0]}-{started:.3f}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [*self.argv, *args], stdout=subprocess.PIPE, stderr=log, env={**os.environ, **self.env}, start_new_session=True
            )
            with self._lock:
                self._procs.add(proc)
            try:
                out, _ = proc.communicate(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                _kill(proc)
                out, _ = proc.communicate()
            except BaseException:  # Ctrl-C: the tool runs in its own session and gets no SIGINT
                _kill(proc)
                raise
            finally:
                with self._lock:
                    self._procs.discard(proc)
        stdout = out.decode(errors="replace")
        result = None
        for line in reversed(stdout.strip().splitlines()):
            with contextlib.suppress(ValueError):
                parsed = json.loads(line)
                if isinstance(parsed, dict):
                    result = parsed
                    break
        tail = "\n".join((stdout + log_path.read_text(errors="replace")).strip().splitlines()[-8:])
        run = ToolRun(args[0], started, time.time(), proc.returncode, result, tail)
        with self._lock:
            self.runs.append(run)
        return run

    def kill_all(self) -> None:
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            _kill(proc)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


class BackupSchedule:
    """`ipa-backup backup` every `interval` seconds (no overlap, like concurrencyPolicy: Forbid)."""

    def __init__(self, tool: BackupTool, interval: float, max_seconds: float = 900.0) -> None:
        self.tool = tool
        self.interval = interval
        self.max_seconds = max_seconds
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._paused = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None

    @property
    def backups(self) -> list[ToolRun]:
        return [r for r in self.tool.runs if r.command == "backup"]

    def start(self) -> BackupSchedule:
        self._thread = threading.Thread(target=self._loop, name="drill-backups", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            if not self._paused.is_set():
                self._idle.clear()
                try:
                    self.tool.run("backup")
                finally:
                    self._idle.set()
            self._wake.wait(self.interval)
            self._wake.clear()

    def pause(self, wait: bool = True) -> None:
        """No new runs; with `wait`, also wait for a running backup to finish."""
        self._paused.set()
        if wait:
            self._idle.wait(timeout=self.tool.timeout + 5)

    def resume(self) -> None:
        """Runs again, the first one right away."""
        self._paused.clear()
        self._wake.set()

    def wait_for_backups(self, count: int, timeout: float) -> bool:
        """Wait until `count` successful backups exist."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(r.ok for r in self.backups) >= count:
                return True
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self.tool.kill_all()
        if self._thread is not None:
            self._thread.join(timeout=15)
            self._thread = None
