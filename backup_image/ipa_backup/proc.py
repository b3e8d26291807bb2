"""Child processes whose exit status is always checked."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence

from ipa_backup.errors import BackupError


def describe_exit(name: str, code: int) -> str:
    if code < 0:
        try:
            sig = signal.Signals(-code).name
        except ValueError:
            sig = str(-code)
        return f"{name} was killed by signal {sig}"
    return f"{name} exited with status {code}"


def run(argv: Sequence[str], env: dict[str, str] | None = None, timeout: float = 600.0,
        stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(list(argv), input=stdin, capture_output=True, env={**os.environ, **(env or {})},
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BackupError(f"{os.path.basename(argv[0])} did not finish within {timeout:.0f}s") from exc
    except FileNotFoundError as exc:
        raise BackupError(f"{argv[0]} is not installed") from exc


def stream_stdout(
    argv: Sequence[str],
    env: dict[str, str],
    fail: Callable[[str], BackupError],
    chunk_size: int = 1 << 20,
) -> Iterator[bytes]:
    """Yield a child's stdout; at EOF raise `fail(message)` unless it exited 0.

    Closing the generator early (a consumer failed) kills the child, so nothing is left running.
    """
    name = os.path.basename(argv[0])
    try:
        child = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                 env={**os.environ, **env})
    except FileNotFoundError as exc:
        raise fail(f"{argv[0]} is not installed") from exc
    assert child.stdout is not None and child.stderr is not None
    errors: list[bytes] = []
    reader = threading.Thread(target=lambda: errors.append(child.stderr.read() if child.stderr else b""), daemon=True)
    reader.start()
    finished = False
    try:
        while True:
            data = child.stdout.read(chunk_size)
            if not data:
                break
            yield data
        code = child.wait()
        reader.join(timeout=30)
        finished = True
        if code != 0:
            stderr = b"".join(errors).decode(errors="replace").strip()
            raise fail(f"{describe_exit(name, code)}: {stderr[-2000:] or '(no error output)'}")
    finally:
        if not finished and child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
