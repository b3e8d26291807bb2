"""Helpers of the WAL stream, base backup and PITR tests: the stream as the Deployment runs it, a
writer that commits continuously, and a server started by the image on a restored data directory."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from azure.storage.blob import BlobServiceClient
from conftest import World
from procs import descendants

from devservices.image import IN_IMAGE, host_path, image_path, image_workdir
from devservices.postgres import PostgresServer
from devservices.process import ServiceError, free_port

# Data directories and spools hold hundreds of MB: gone with the test session.
_made: list[Path] = []
_seq = iter(range(10**6))
atexit.register(lambda: [shutil.rmtree(p, ignore_errors=True) for p in _made])


def wait_for(check, timeout: float = 60.0, what: str = "condition", interval: float = 0.1):  # type: ignore[no-untyped-def]
    """Poll `check()` until it returns something truthy; its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def image_dir(name: str) -> str:
    """A fresh directory inside the image rootfs, owned by the image's user, removed when the tests end;
    its path as the image sees it."""
    folder = image_workdir(f"pitr-{name}-")
    _made.append(folder)
    return image_path(folder)


def metrics(port: int) -> dict[str, float]:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return {}
    found = {}
    for line in text.splitlines():
        match = re.match(r"^(ipa_wal_\w+) (\S+)$", line)
        if match:
            found[match.group(1)] = float(match.group(2))
    return found


def wal_pieces(world: World) -> dict[str, list[tuple[int, int, str, str]]]:
    """The pieces of segments in progress in the world's container: segment -> [(offset, raw size, etag,
    blob name)] in offset order."""
    container = BlobServiceClient.from_connection_string(world.blob.connection_string).get_container_client(world.container)
    found: dict[str, list[tuple[int, int, str, str]]] = {}
    for blob in container.list_blobs(name_starts_with="wal/", include=["metadata"]):
        match = re.match(r"^wal/\d+/([0-9A-F]{24})\.partial/(\d{10})\.zst$", blob.name)
        if match:
            found.setdefault(match.group(1), []).append((int(match.group(2)), int(blob.metadata["raw_size"]), blob.etag, blob.name))
    return {segment: sorted(pieces) for segment, pieces in found.items()}


def newest_pieces(world: World, at_least: int = 0) -> tuple[str, list[tuple[int, int, str, str]]] | None:
    """The newest segment in progress and its pieces, when it has at least `at_least`."""
    found = wal_pieces(world)
    if not found:
        return None
    segment = max(found)
    return (segment, found[segment]) if len(found[segment]) >= at_least else None


def wal_blob_names(world: World) -> set[str]:
    container = BlobServiceClient.from_connection_string(world.blob.connection_string).get_container_client(world.container)
    return {b.name for b in container.list_blobs(name_starts_with="wal/")}


@dataclass
class Stream:
    process: subprocess.Popen[str]
    port: int
    spool: str
    slot: str
    log: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        return metrics(self.port)

    def wait_caught_up(self, pg: PostgresServer, timeout: float = 60.0) -> dict[str, float]:
        """Every WAL byte the server had flushed now is in storage, and the metrics say so. The test
        servers commit asynchronously: one synchronous commit first flushes the WAL of every commit
        already confirmed (one that writes WAL: a commit without any is never waited for)."""
        pg.psql("SET synchronous_commit = on; CREATE TEMP TABLE ipa_flush ()")
        lsn = int(pg.psql("SELECT pg_current_wal_flush_lsn() - '0/0'").strip())
        try:
            return wait_for(  # type: ignore[no-any-return]
                lambda: (
                    (m := self.metrics())
                    and m.get("ipa_wal_stream_up") == 1
                    and m.get("ipa_wal_stream_uploaded_lsn", 0) >= lsn - 64
                    and m.get("ipa_wal_stream_lag_bytes") == 0
                    and m
                ),
                timeout,
                "the WAL stream to catch up",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}: server flushed {lsn}, metrics {self.metrics()}\n{''.join(self.log[-20:])}") from None

    def receiver_pid(self) -> int | None:
        return next((pid for pid, name in descendants(self.process.pid).items() if name == "pg_receivewal"), None)

    def kill(self) -> None:
        """SIGKILL the tool and its pg_receivewal: what they had not uploaded is lost, as with a lost node."""
        children = list(descendants(self.process.pid))
        self.process.kill()
        for pid in children:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()


@contextmanager
def wal_stream(world: World, partial_seconds: float = 1.0, env: dict[str, str] | None = None) -> Iterator[Stream]:
    spool = image_dir("spool")
    port = free_port()
    slot = f"ipa_test_{os.getpid()}_{next(_seq)}"
    process = world.popen(
        "wal-stream",
        env={
            "WAL_SPOOL_DIR": spool,
            "METRICS_PORT": str(port),
            "WAL_SLOT": slot,
            "WAL_PARTIAL_UPLOAD_SECONDS": str(partial_seconds),
            **(env or {}),
        },
    )
    stream = Stream(process, port, spool, slot)
    reader = threading.Thread(target=lambda: stream.log.extend(process.stderr or []), daemon=True)
    reader.start()
    try:
        wait_for(lambda: stream.metrics().get("ipa_wal_stream_up") == 1 or process.poll() is not None, 60, "the stream to be up")
        assert process.poll() is None, "".join(stream.log)
        yield stream
    finally:
        if process.poll() is None:
            stream.kill()
        shutil.rmtree(host_path(spool), ignore_errors=True)
        with suppress(ServiceError, subprocess.TimeoutExpired):  # a test that stopped the server has nothing to drop
            world.pg.psql(f"SELECT pg_drop_replication_slot('{slot}') FROM pg_replication_slots WHERE slot_name = '{slot}'")


class Writer:
    """Commits one row at a time into `ticks` until stopped; remembers what the server confirmed."""

    def __init__(self, pg: PostgresServer, database: str, pause: float = 0.02) -> None:
        self.pg = pg
        self.database = database
        self.pause = pause
        self.confirmed: list[tuple[int, float]] = []  # (id, epoch seconds of the commit)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop_event.is_set():
            try:
                out = self.pg.psql("INSERT INTO ticks DEFAULT VALUES RETURNING id, extract(epoch FROM at)", self.database, timeout=10)
            except Exception:  # noqa: BLE001 - the server went away: the writer stops confirming
                time.sleep(self.pause)
                continue
            row_id, at = out.strip().split("|")
            self.confirmed.append((int(row_id), float(at)))
            time.sleep(self.pause)

    def __enter__(self) -> Writer:
        self.thread.start()
        wait_for(lambda: len(self.confirmed) >= 3, 30, "the writer's first commits")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(15)


TICKS = "CREATE TABLE ticks (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())"


@contextmanager
def restored_server(pgdata: str, major: int, password: str) -> Iterator[PostgresServer]:
    """The image's PostgreSQL server on a restored data directory, on loopback, as the image's user."""
    port = free_port()
    sock = image_dir("sock")
    argv = [
        str(IN_IMAGE),
        f"/usr/lib/postgresql/{major}/bin/postgres",
        "-D",
        pgdata,
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        f"port={port}",
        "-c",
        f"unix_socket_directories={sock}",
        "-c",
        "dynamic_shared_memory_type=mmap",
    ]
    log = host_path(sock) / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    from devservices.postgres import pg_bin_dir

    bin_dir = pg_bin_dir()
    server = PostgresServer("127.0.0.1", port, "postgres", password, "postgres", bin_dir, host_path(pgdata), major, None)  # type: ignore[arg-type]
    try:
        wait_for(
            lambda: (
                process.poll() is not None
                or subprocess.run([str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-q"], check=False).returncode == 0
            ),
            60,
            "the restored server",
        )
        assert process.poll() is None, log.read_text()
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(60)
        shutil.rmtree(host_path(sock), ignore_errors=True)
