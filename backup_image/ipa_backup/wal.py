"""`wal-stream`: PostgreSQL's own pg_receivewal, through a physical replication slot, into a spool
directory, and every segment from there into blob storage, compressed and checksummed.

Blob layout (docs/operations/pitr.md): `wal/<system identifier>/<segment>.zst` for a completed
segment; `wal/<system identifier>/<segment>.partial/<start offset>.zst` for each piece of the one still
being written (the bytes added since the previous piece: never replaced, so that versioning and
immutability keep no copies of it); `wal/<system identifier>/<tli>.history.zst` for timeline history
files. Each blob's metadata holds the SHA-256 of its stored bytes and the raw size. The tool never
parses WAL: segment names, LSNs and byte offsets are only counted.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import zstandard
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from ipa_backup import log, pg, proc
from ipa_backup.config import Settings, libpq_where
from ipa_backup.errors import ConfigError, Interrupted, SourceError, StorageError, UnsupportedMajorError
from ipa_backup.storage import BlobStore

WAL_PREFIX = "wal/"
SEGMENT_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
HISTORY_RE = re.compile(r"^([0-9A-F]{8})\.history$")
LSN_RE = re.compile(r"^([0-9A-F]+)/([0-9A-F]+)$")
# A piece of the segment in progress, relative to the system's prefix: `<segment>.partial/<start offset>.zst`.
PIECE_RE = re.compile(r"^([0-9A-F]{24})\.partial/(\d{10})\.zst$")
SAMPLE_SECONDS = 5.0  # how often the server's current WAL position is read
TICK_SECONDS = 0.5
RESTART_BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
STABLE_SECONDS = 60.0  # a receiver that ran this long resets the back-off
# The uploaded part of the segment in progress ends where its zero fill begins; the last record may end
# in a few zero bytes of its own, and records are 8-byte aligned: a position this close counts as covered.
PARTIAL_SLACK = 64


def parse_lsn(text: str) -> int:
    match = LSN_RE.match(text.strip().upper())
    if not match:
        raise ValueError(f"not an LSN: {text!r}")
    return int(match.group(1), 16) << 32 | int(match.group(2), 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def segment_name(tli: int, segno: int, seg_size: int) -> str:
    per = 0x100000000 // seg_size
    return f"{tli:08X}{segno // per:08X}{segno % per:08X}"


def segment_of(name: str, seg_size: int) -> tuple[int, int]:
    """(timeline, segment number) of a segment file name."""
    match = SEGMENT_RE.match(name)
    if not match:
        raise ValueError(f"not a WAL segment name: {name!r}")
    per = 0x100000000 // seg_size
    return int(match.group(1), 16), int(match.group(2), 16) * per + int(match.group(3), 16)


def parse_size(text: str) -> int:
    """`SHOW wal_segment_size` (e.g. 16MB) in bytes."""
    match = re.match(r"^(\d+)\s*(kB|MB|GB)$", text.strip())
    if not match:
        raise SourceError(f"cannot read wal_segment_size {text!r}")
    return int(match.group(1)) << {"kB": 10, "MB": 20, "GB": 30}[match.group(2)]


def blob_prefix(system_id: str) -> str:
    return f"{WAL_PREFIX}{system_id}/"


def pieces_prefix(system_id: str, segment: str) -> str:
    return f"{blob_prefix(system_id)}{segment}.partial/"


def piece_blob(system_id: str, segment: str, offset: int) -> str:
    """The piece of `segment` holding its bytes from `offset` on (zero-padded: names sort by offset)."""
    return f"{pieces_prefix(system_id, segment)}{offset:010d}.zst"


def chain_end(pieces: dict[int, int]) -> int:
    """Where the pieces (start offset -> raw size) stored contiguously from offset 0 end."""
    end = 0
    while pieces.get(end, 0) > 0:
        end += pieces[end]
    return end


@dataclass(frozen=True)
class Upstream:
    """What a replication connection tells about the server."""

    system_id: str
    timeline: int
    flush_lsn: int
    major: int
    version: str
    seg_size: int


def replication_query(client: pg.Client, *commands: str) -> list[list[str]]:
    """Commands over a physical replication connection (the role needs only REPLICATION), each
    answering one row: the rows."""
    argv = [client.program("psql"), "-X", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-d", "replication=true"]
    for command in commands:
        argv += ["-c", command]
    result = proc.run(argv, env=pg.CLIENT_ENV, timeout=30, error=SourceError)
    if result.returncode != 0:
        text = result.stderr.decode(errors="replace").strip()
        raise SourceError(f"replication connection to {libpq_where()} failed: {text.splitlines()[0] if text else 'no error output'}")
    lines = [line.split("\t") for line in result.stdout.decode().splitlines() if line]
    if len(lines) != len(commands):
        raise SourceError(f"unexpected answer of {libpq_where()} to {', '.join(commands)}: {lines!r}")
    return lines


def upstream(client: pg.Client) -> Upstream:
    identify, version_num, version, seg = replication_query(
        client, "IDENTIFY_SYSTEM", "SHOW server_version_num", "SHOW server_version", "SHOW wal_segment_size"
    )
    return Upstream(identify[0], int(identify[1]), parse_lsn(identify[2]), int(version_num[0]) // 10000, version[0], parse_size(seg[0]))


def client_for(found: pg.Clients, major: int, version: str, what: str) -> pg.Client:
    """The client programs of exactly the server's major (pg_receivewal, pg_basebackup, pg_verifybackup)."""
    if major not in found:
        raise UnsupportedMajorError(
            f"{what} of the PostgreSQL {version} server at {libpq_where()} needs the PostgreSQL {major} programs, "
            f"and this image has PostgreSQL {pg.majors_text(found)} only"
        )
    return found[major]


def compress_segment(raw: bytes, level: int) -> bytes:
    return zstandard.ZstdCompressor(level=level, write_checksum=True).compress(raw)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.up = Gauge("ipa_wal_stream_up", "1 while pg_receivewal runs and uploads succeed", registry=self.registry)
        self.lag_seconds = Gauge(
            "ipa_wal_stream_lag_seconds", "Age of the oldest WAL the server has flushed that is not in blob storage", registry=self.registry
        )
        self.lag_bytes = Gauge(
            "ipa_wal_stream_lag_bytes", "The server's current WAL position minus the position covered by uploads", registry=self.registry
        )
        self.uploaded = Gauge(
            "ipa_wal_stream_uploaded_lsn", "WAL position (as a number) up to which blob storage holds the WAL", registry=self.registry
        )
        self.last_upload = Gauge(
            "ipa_wal_last_upload_timestamp_seconds", "Time of the last successful WAL upload (segment or partial)", registry=self.registry
        )


class Uploader:
    """Moves what pg_receivewal wrote into blob storage; a local file is deleted only after its blob
    was read back and matched."""

    def __init__(self, store: BlobStore, settings: Settings, up: Upstream, metrics: Metrics) -> None:
        self.store = store
        self.settings = settings
        self.spool = settings.wal_spool_dir
        self.system_id = up.system_id
        self.seg_size = up.seg_size
        self.metrics = metrics
        self.covered = 0  # WAL position up to which blob storage holds the WAL
        self.piece_end: dict[str, int] = {}  # segment in progress -> end of its pieces in storage (offset in the segment)
        self.partial_at = 0.0
        self.ok = True

    def remote_start(self) -> None:
        """The position covered by what an earlier run stored: the end of its newest complete segment."""
        newest = 0
        for blob in self.store.list_blobs(blob_prefix(self.system_id)):
            name = blob.name.rsplit("/", 1)[1].removesuffix(".zst")
            if SEGMENT_RE.match(name):
                newest = max(newest, (segment_of(name, self.seg_size)[1] + 1) * self.seg_size)
        self.covered = max(self.covered, newest)

    def _upload(self, name: str, raw: bytes, verify: bool, blob: str | None = None) -> None:
        """`blob`: a piece's name (never replaced); by default the file's own, `<name>.zst`."""
        data = compress_segment(raw, self.settings.compression_level)
        sha = hashlib.sha256(data).hexdigest()
        piece = blob is not None
        blob = blob or blob_prefix(self.system_id) + name + ".zst"
        self.store.upload_stream(blob, [data], metadata={"sha256": sha, "raw_size": str(len(raw))}, new_only=piece)
        if verify:
            size, stored = self.store.download(blob, lambda _: None)
            if stored != sha or size != len(data):
                raise StorageError(f"{blob} read back does not match what was uploaded (sha256 {stored}, expected {sha})")
        self.metrics.last_upload.set(time.time())

    def run(self, final: bool = False) -> None:
        """One pass: completed segments and history files in order, then the segment in progress
        when WAL_PARTIAL_UPLOAD_SECONDS passed (or `final`) and it changed."""
        try:
            self._pass(final)
            self.ok = True
        except StorageError as exc:
            if self.ok:
                log.error("WAL upload failed; retrying", error=str(exc))
            self.ok = False

    def _pass(self, final: bool) -> None:
        names = sorted(p.name for p in self.spool.iterdir())
        for name in names:
            if HISTORY_RE.match(name) or SEGMENT_RE.match(name):
                try:
                    raw = (self.spool / name).read_bytes()
                except FileNotFoundError:
                    continue
                self._upload(name, raw, verify=True)
                (self.spool / name).unlink()
                if SEGMENT_RE.match(name):
                    self._drop_pieces(name)
                    self.covered = max(self.covered, (segment_of(name, self.seg_size)[1] + 1) * self.seg_size)
                log.info("WAL file stored", file=name, covered=format_lsn(self.covered))
        partials = sorted(
            (n for n in names if n.endswith(".partial") and SEGMENT_RE.match(n.removesuffix(".partial"))),
            key=lambda n: segment_of(n.removesuffix(".partial"), self.seg_size)[::-1],
        )
        for name in partials[:-1]:  # an older timeline's last segment, left by pg_receivewal as .partial: its last piece
            if self._store_piece(name) is not None:
                (self.spool / name).unlink()
                self.piece_end.pop(name.removesuffix(".partial"), None)
                log.info("WAL file stored", file=name)
        if not partials or not (final or time.monotonic() - self.partial_at >= self.settings.wal_partial_upload_seconds):
            return
        name = partials[-1]
        self.partial_at = time.monotonic()
        end = self._store_piece(name)
        if end is None:
            return  # completed meanwhile: the next pass stores it
        segno = segment_of(name.removesuffix(".partial"), self.seg_size)[1]
        self.covered = max(self.covered, segno * self.seg_size + end)

    def _stored_end(self, segment: str) -> int:
        """Where the next piece of `segment` starts: the end of its pieces stored contiguously from offset 0.
        Listed once per run (a restarted stream continues the pieces of the one before), and again after
        a failed upload, which may have been stored all the same."""
        if segment not in self.piece_end:
            pieces: dict[int, int] = {}
            for blob in self.store.list_blobs(pieces_prefix(self.system_id, segment), metadata=True):
                match = PIECE_RE.match(blob.name.removeprefix(blob_prefix(self.system_id)))
                raw_size = (blob.metadata or {}).get("raw_size", "")
                if match and raw_size.isdigit():
                    pieces[int(match.group(2))] = int(raw_size)
            self.piece_end[segment] = chain_end(pieces)
        return self.piece_end[segment]

    def _store_piece(self, name: str) -> int | None:
        """Stores the bytes of the partial file `name` written since its last piece as a new piece (nothing
        when none were); the end of its stored pieces, or None when the file is gone (completed)."""
        segment = name.removesuffix(".partial")
        start = self._stored_end(segment)
        try:
            with open(self.spool / name, "rb") as handle:
                # pg_receivewal pre-fills the file with zeros and writes WAL in order from its start: the
                # written part ends at the last non-zero byte (a record's own trailing zeros go into the next piece).
                handle.seek(start)
                end = start + len(handle.read().rstrip(b"\0"))
                # Read that range again: every byte of it was written before the first read saw its last byte,
                # so this read holds none of the not-yet-copied zeros a write under way may have shown the first.
                raw = os.pread(handle.fileno(), end - start, start) if end > start else b""
        except FileNotFoundError:
            return None
        if len(raw) != end - start:
            raise StorageError(f"{name} shrank while it was read")  # not expected: retried on the next pass
        if raw:
            try:
                self._upload(name, raw, verify=False, blob=piece_blob(self.system_id, segment, start))
            except StorageError:
                self.piece_end.pop(segment, None)
                raise
            self.piece_end[segment] = end
        return end if raw else start

    def _drop_pieces(self, segment: str) -> None:
        """The pieces of a segment now stored complete are not needed (a restore ignores them). Deleting
        them is tidiness only: where immutability refuses it, the lifecycle rule of `wal/` removes them."""
        self.piece_end.pop(segment, None)
        try:
            for blob in self.store.list_blobs(pieces_prefix(self.system_id, segment)):
                self.store.delete(blob.name)
        except StorageError as exc:
            log.warning("the pieces of a completed segment were not deleted; the lifecycle rule removes them", file=segment, error=str(exc))


class Receiver:
    """pg_receivewal, restarted with back-off; it resumes from the slot (or from the spool's files)."""

    def __init__(self, settings: Settings, client: pg.Client, seg_size: int) -> None:
        self.settings = settings
        self.client = client
        self.seg_size = seg_size
        self.child: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.next_start = 0.0
        self.failures = 0

    @property
    def running(self) -> bool:
        return self.child is not None and self.child.poll() is None

    def _log_stderr(self, child: subprocess.Popen[bytes]) -> None:
        assert child.stderr is not None
        for line in child.stderr:
            text = line.decode(errors="replace").rstrip()
            if text:
                log.info("pg_receivewal: " + text, program="pg_receivewal")

    def tick(self) -> None:
        if self.child is not None and self.child.poll() is not None:
            code = self.child.returncode
            proc.forget(self.child)
            self.child = None
            self.failures = 0 if time.monotonic() - self.started >= STABLE_SECONDS else self.failures + 1
            delay = RESTART_BACKOFF[min(self.failures, len(RESTART_BACKOFF) - 1)]
            self.next_start = time.monotonic() + delay
            log.error(f"{proc.describe_exit('pg_receivewal', code)}; restarting in {delay:.0f}s", exit_status=code)
        if self.child is None and time.monotonic() >= self.next_start:
            self.start()

    def _drop_unpadded(self) -> None:
        """pg_receivewal fills a new segment file with zeros before it writes WAL into it, and refuses to
        start on a file of another size: one it was killed while filling holds no WAL, and is removed."""
        for path in self.settings.wal_spool_dir.glob("*.partial"):
            try:
                size = path.stat().st_size
                if 0 < size < self.seg_size and not path.read_bytes().strip(b"\0"):
                    path.unlink()
                    log.warning("removed a segment file left half pre-filled with zeros", file=path.name, bytes=size)
            except FileNotFoundError:
                continue

    def start(self) -> None:
        self._drop_unpadded()
        slot = self.settings.wal_slot
        create = [self.client.program("pg_receivewal"), "--create-slot", "--if-not-exists", f"--slot={slot}", "--no-password"]
        result = proc.run(create, env=pg.CLIENT_ENV, timeout=60, error=SourceError)
        if result.returncode != 0:
            self.failures += 1
            delay = RESTART_BACKOFF[min(self.failures, len(RESTART_BACKOFF) - 1)]
            self.next_start = time.monotonic() + delay
            log.error(
                f"creating replication slot {slot} at {libpq_where()} failed; retrying in {delay:.0f}s",
                error=result.stderr.decode(errors="replace").strip()[-500:],
            )
            return
        argv = [
            self.client.program("pg_receivewal"),
            f"--directory={self.settings.wal_spool_dir}",
            f"--slot={slot}",
            "--no-loop",
            "--no-password",
            "--verbose",
        ]
        # The whole environment, libpq's variables included, reaches pg_receivewal (inherited).
        self.child = proc.popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.started = time.monotonic()
        threading.Thread(target=self._log_stderr, args=(self.child,), daemon=True).start()
        log.info("pg_receivewal started", slot=slot, server=libpq_where(), pid=self.child.pid)

    def stop(self) -> None:
        if self.child is not None:
            if self.child.poll() is None:
                proc.stop([self.child.pid])
                self.child.wait()
            proc.forget(self.child)
            self.child = None


class LagClock:
    """Server WAL positions sampled over time: the lag in seconds is the age of the oldest sample
    that storage does not cover yet."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, int]] = deque()
        self.sampled_at = 0.0

    def add(self, at: float, lsn: int) -> None:
        if not self.samples or lsn > self.samples[-1][1]:
            self.samples.append((at, lsn))

    def latest(self) -> int | None:
        return self.samples[-1][1] if self.samples else None

    def lag(self, covered: int, now: float) -> tuple[float, int]:
        while len(self.samples) > 1 and self.samples[0][1] <= covered:
            self.samples.popleft()
        if not self.samples:
            return 0.0, 0
        latest = self.samples[-1][1]
        behind = max(0, latest - covered)
        if behind <= PARTIAL_SLACK:
            return 0.0, 0
        first = next(at for at, lsn in self.samples if lsn > covered)
        return max(0.0, now - first), behind


def stream(settings: Settings) -> None:
    """Runs until SIGTERM: then pg_receivewal is stopped, what it wrote is uploaded, and Interrupted
    goes on to the caller (exit 143)."""
    spool = settings.wal_spool_dir
    if not spool.is_dir():
        raise ConfigError(f"WAL_SPOOL_DIR {spool} is not a directory: mount the stream's volume there")
    probe = spool / ".ipa-write-test"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"WAL_SPOOL_DIR {spool} is not writable: {exc.strerror}") from exc
    found = pg.clients(settings.pg_clients_root, settings.pg_bin_dir)
    metrics = Metrics()
    start_http_server(settings.metrics_port, registry=metrics.registry)
    metrics.up.set(0)
    log.info("metrics served", port=settings.metrics_port, path="/metrics")
    up = _first_contact(found)
    client = client_for(found, up.major, up.version, "streaming the WAL")
    _claim_spool(spool, up.system_id)
    store = BlobStore(settings)
    store.ensure_container()
    uploader = Uploader(store, settings, up, metrics)
    uploader.remote_start()
    receiver = Receiver(settings, client, up.seg_size)
    clock = LagClock()
    clock.add(time.monotonic(), up.flush_lsn)
    log.info("WAL stream started", system_id=up.system_id, timeline=up.timeline, server_version=up.version, slot=settings.wal_slot)
    try:
        while True:
            receiver.tick()
            uploader.run()
            now = time.monotonic()
            if now - clock.sampled_at >= min(SAMPLE_SECONDS, settings.wal_partial_upload_seconds):
                clock.sampled_at = now
                try:
                    clock.add(now, upstream(client).flush_lsn)
                except SourceError as exc:
                    log.warning("cannot read the server's WAL position", error=str(exc))
            seconds, behind = clock.lag(uploader.covered, now)
            metrics.lag_seconds.set(round(seconds, 1))
            metrics.lag_bytes.set(behind)
            metrics.uploaded.set(uploader.covered)
            metrics.up.set(1 if receiver.running and uploader.ok else 0)
            time.sleep(TICK_SECONDS)
    except Interrupted:
        metrics.up.set(0)
        receiver.stop()
        uploader.run(final=True)
        log.info("WAL stream stopped", covered=format_lsn(uploader.covered), uploads_ok=uploader.ok)
        raise


SPOOL_MARKER = ".ipa-system-id"


def _claim_spool(spool: Path, system_id: str) -> None:
    """The spool holds the WAL of one database system: a volume left by another (a re-created
    server) is refused, so that its segments are never stored under this system's prefix."""
    marker = spool / SPOOL_MARKER
    try:
        owner = marker.read_text().strip()
    except FileNotFoundError:
        marker.write_text(system_id + "\n")
        return
    if owner != system_id:
        raise ConfigError(
            f"WAL_SPOOL_DIR {spool} holds WAL of database system {owner}, but the server at {libpq_where()} is system "
            f"{system_id} (re-created?): empty the volume, then take a base backup once the stream runs"
        )


def _first_contact(found: pg.Clients) -> Upstream:
    """The server's identity; retried with back-off, since the stream starts whenever its pod does."""
    attempt = 0
    while True:
        try:
            return upstream(pg.newest(found))
        except SourceError as exc:
            delay = RESTART_BACKOFF[min(attempt, len(RESTART_BACKOFF) - 1)]
            attempt += 1
            log.error(f"{exc}; retrying in {delay:.0f}s")
            time.sleep(delay)
