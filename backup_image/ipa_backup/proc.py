"""Child processes: exit status always checked, run time bounded, all of them ended on a signal.

Every child the tool starts goes through `popen`, which keeps it in a registry until it is reaped;
`end_children` ends those and, found through /proc, anything they started themselves (pg_restore's
parallel workers).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from ipa_backup.errors import BackupError

GRACE_SECONDS = 5.0  # after SIGTERM: pg_dump and pg_restore cancel their queries, redis-server shuts down
DEFAULT_COMMAND_TIMEOUT = 6 * 3600.0

_children: dict[subprocess.Popen[bytes], str] = {}  # live child -> program name
_lock = threading.RLock()  # re-entrant: the signal handler may run while the main thread holds it
_command_timeout = DEFAULT_COMMAND_TIMEOUT


_shield_depth = 0
_deferred: list[Callable[[], None]] = []


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """A clean-up that a signal must not cut short (dropping a half-restored copy, swapping a database
    back): a signal that arrives inside it is acted on once it ends."""
    global _shield_depth
    _shield_depth += 1
    try:
        yield
    finally:
        _shield_depth -= 1
        if _shield_depth == 0 and _deferred:
            action = _deferred.pop()
            _deferred.clear()
            action()


def defer_if_shielded(action: Callable[[], None]) -> bool:
    """Inside `shielded`: keep `action` (a signal's) for its end and return True; else False."""
    if _shield_depth == 0:
        return False
    _deferred.append(action)
    return True


def set_command_timeout(seconds: float) -> None:
    """BACKUP_COMMAND_TIMEOUT_SECONDS, from the settings: bounds each pg_dump, pg_dumpall, redis-cli, pg_restore."""
    global _command_timeout
    _command_timeout = seconds


def command_timeout() -> float:
    return _command_timeout


def describe_exit(name: str, code: int) -> str:
    if code < 0:
        try:
            sig = signal.Signals(-code).name
        except ValueError:
            sig = str(-code)
        return f"{name} was killed by signal {sig}"
    return f"{name} exited with status {code}"


def _timeout_message(name: str, timeout: float) -> str:
    setting = " (BACKUP_COMMAND_TIMEOUT_SECONDS)" if timeout == _command_timeout else ""
    return f"{name} did not finish within {timeout:.0f}s{setting} and was stopped"


def popen(argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """subprocess.Popen, registered so that a signal ends it (reaped children drop out on their own)."""
    child: subprocess.Popen[bytes] = subprocess.Popen(list(argv), **kwargs)
    with _lock:
        for reaped in [c for c in _children if c.returncode is not None]:
            del _children[reaped]
        _children[child] = os.path.basename(argv[0])
    return child


def forget(child: subprocess.Popen[bytes]) -> None:
    with _lock:
        _children.pop(child, None)


def _running(pid: int) -> bool:
    """True until the process exits (a zombie counts as exited). Reads /proc and reaps nothing, so it is
    safe while another thread waits for the same child."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def stop(pids: Sequence[int], grace: float = GRACE_SECONDS) -> None:
    """SIGTERM (plus SIGCONT, so a stopped process gets it), up to `grace` seconds to exit, then SIGKILL."""
    for pid in pids:
        _signal(pid, signal.SIGTERM)
        _signal(pid, signal.SIGCONT)
    deadline = time.monotonic() + grace
    while any(_running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in pids:
        if _running(pid):
            _signal(pid, signal.SIGKILL)


def processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command name) of every running (not zombie) process, from /proc."""
    found: dict[int, tuple[int, str]] = {}
    try:
        entries = list(Path("/proc").iterdir())
    except OSError:
        return {}  # no /proc: callers fall back on the registry alone
    for entry in entries:
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


def end_children(grace: float = GRACE_SECONDS) -> list[str]:
    """End every child the tool started and their own children; returns them as `name[pid]`."""
    with _lock:
        registered = {c.pid: n for c, n in _children.items() if c.returncode is None}
    found = {pid: n for pid, n in registered.items() if _running(pid)} | descendants(os.getpid())
    stop(sorted(found), grace)
    return [f"{n}[{pid}]" for pid, n in sorted(found.items())]


class _Feeder:
    """A pipe whose read end becomes a child's stdin, and a thread that runs `feed` on its write end.
    A child that stops reading early ends the feed quietly: its exit status tells what happened."""

    PIPE_BYTES = 1 << 20  # fewer wake-ups of the reader than the default 64 KiB pipe

    def __init__(self, feed: Callable[[BinaryIO], None]) -> None:
        self.read_end, self.write_end = os.pipe()
        with contextlib.suppress(OSError):  # best effort: a smaller pipe only costs a little speed
            fcntl.fcntl(self.write_end, fcntl.F_SETPIPE_SZ, self.PIPE_BYTES)
        self.feed = feed
        self.failures: list[BaseException] = []
        self.thread = threading.Thread(target=self._pump, daemon=True)

    def _pump(self) -> None:
        with open(self.write_end, "wb", buffering=0) as sink:
            try:
                self.feed(sink)
            except BrokenPipeError:
                pass
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, who raises it
                self.failures.append(exc)

    def start(self) -> None:
        """The child started and holds its own copy of the read end."""
        os.close(self.read_end)
        self.thread.start()

    def close(self) -> None:
        """The child never started."""
        os.close(self.read_end)
        os.close(self.write_end)

    def finish(self, timeout: float) -> None:
        """After the child exited: the feed ends (the pipe is broken now) and its failure, if any, is raised."""
        self.thread.join(timeout)
        if self.failures:
            raise self.failures[0]


def run(
    argv: Sequence[str],
    env: dict[str, str] | None = None,
    timeout: float = 600.0,
    stdin: bytes | None = None,
    error: type[BackupError] = BackupError,
    feed: Callable[[BinaryIO], None] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run to completion with captured output; past `timeout` the child is stopped and `error` raised.
    `feed`, when given, writes the child's stdin from a thread (a stream too large for memory)."""
    name = os.path.basename(argv[0])
    feeder = _Feeder(feed) if feed is not None else None
    child_stdin: int = feeder.read_end if feeder else subprocess.PIPE if stdin is not None else subprocess.DEVNULL
    try:
        child = popen(argv, stdin=child_stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
    except OSError as exc:
        if feeder:
            feeder.close()
        raise error(f"{argv[0]} could not be started: {exc.strerror or exc}") from exc
    if feeder:
        feeder.start()
    started = time.monotonic()
    try:
        out, err = child.communicate(stdin, timeout=timeout)
        if feeder:
            feeder.finish(max(1.0, timeout - (time.monotonic() - started)))
    except subprocess.TimeoutExpired as exc:
        stop([child.pid])
        child.communicate()
        raise error(_timeout_message(name, timeout)) from exc
    except BaseException:  # an interrupt, or the feed failed: leave nothing running
        if child.returncode is None:  # not reaped yet: its pid is still its own
            stop([child.pid])
            child.wait()
        raise
    finally:
        forget(child)
    return subprocess.CompletedProcess(list(argv), child.returncode, out, err)


def stream_stdout(
    argv: Sequence[str],
    env: dict[str, str],
    fail: Callable[[str], BackupError],
    chunk_size: int = 1 << 20,
    timeout: float | None = None,
    feed: Callable[[BinaryIO], None] | None = None,
) -> Iterator[bytes]:
    """Yield a child's stdout; at EOF raise `fail(message)` unless it exited 0.

    The child may run `timeout` seconds (default: BACKUP_COMMAND_TIMEOUT_SECONDS), counted from its
    start and including the time its reader takes; then it is stopped and `fail` raised. Closing the
    generator early (a consumer failed) stops the child too, so nothing is left running.
    """
    name = os.path.basename(argv[0])
    limit = _command_timeout if timeout is None else timeout
    feeder = _Feeder(feed) if feed is not None else None
    try:
        child = popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=feeder.read_end if feeder else subprocess.DEVNULL,
            env={**os.environ, **env},
        )
    except OSError as exc:
        if feeder:
            feeder.close()
        raise fail(f"{argv[0]} could not be started: {exc.strerror or exc}") from exc
    if feeder:
        feeder.start()
    assert child.stdout is not None and child.stderr is not None
    errors: list[bytes] = []
    reader = threading.Thread(target=lambda: errors.append(child.stderr.read() if child.stderr else b""), daemon=True)
    reader.start()
    timed_out = threading.Event()

    def expire() -> None:
        if _running(child.pid):
            timed_out.set()
            stop([child.pid])

    timer = threading.Timer(limit, expire)
    timer.daemon = True
    timer.start()
    finished = False
    try:
        while True:
            data = child.stdout.read(chunk_size)
            if not data:
                break
            yield data
        code = child.wait()
        reader.join(timeout=30)
        if feeder:
            feeder.finish(30.0)
        finished = True
        if code != 0 and timed_out.is_set():
            raise fail(_timeout_message(name, limit))
        if code != 0:
            stderr = b"".join(errors).decode(errors="replace").strip()
            raise fail(f"{describe_exit(name, code)}: {stderr[-2000:] or '(no error output)'}")
    finally:
        timer.cancel()
        if not finished and child.poll() is None:
            stop([child.pid])
            child.wait()
        child.stdout.close()
        forget(child)
