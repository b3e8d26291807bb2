"""`pitr-restore`: a data directory recovered to a point in time, from the newest complete base
backup before it and the archived WAL after it. PostgreSQL replays: the image's server of the base
backup's major runs the recovery on a private socket (no TCP), with `restore_command` reading the
verified WAL the tool downloaded, and is stopped cleanly once it is promoted.

Everything is downloaded and checked against its SHA-256 into a hidden directory beside the
target before the target is touched; the recovered directory replaces the target by renames (the
old one, with --force, is kept aside under a name the output gives). A failure or a signal leaves
the target exactly as it was.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import zstandard

from ipa_backup import basebackup, log, proc, wal
from ipa_backup.basebackup import ARCHIVE, BaseInfo
from ipa_backup.config import Settings
from ipa_backup.errors import (
    ConfigError,
    IntegrityError,
    NoBaseBackupError,
    TargetError,
    UnsupportedMajorError,
    WalGapError,
)
from ipa_backup.storage import BlobStore

SPACE_MARGIN = 1.05
POLL_SECONDS = 0.2
NOT_REACHED = "recovery ended before configured recovery target was reached"


def parse_target(text: str) -> datetime:
    """An RFC 3339 time with its offset (`Z` or `+01:00`)."""
    try:
        value = datetime.fromisoformat(text.strip().replace("z", "Z").replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"--to-time {text!r} is not an RFC 3339 time, such as 2026-05-04T13:45:10Z") from exc
    if value.tzinfo is None:
        raise ConfigError(f"--to-time {text!r} has no UTC offset: write it like 2026-05-04T13:45:10Z or 2026-05-04T15:45:10+02:00")
    return value.astimezone(UTC)


@dataclass(frozen=True)
class WalObject:
    blob: str
    file: str  # the name PostgreSQL asks restore_command for
    size: int
    sha256: str
    offset: int | None = None  # a piece of the segment in progress: where its bytes start in `file`
    raw_size: int = 0  # a piece's size uncompressed


def piece_chain(pieces: list[WalObject]) -> tuple[list[WalObject], int | None]:
    """The pieces of one segment in progress that follow each other from offset 0, and the offset
    where they stop while a piece lies beyond it (a gap; None: no gap)."""
    by_start = {p.offset: p for p in pieces}
    chain: list[WalObject] = []
    end = 0
    while end in by_start:
        chain.append(by_start[end])
        end += by_start[end].raw_size
    gap = end if any((p.offset or 0) > end for p in pieces) else None
    return chain, gap


def _check_target_dir(pgdata: Path, force: bool) -> bool:
    """True when the target holds something (allowed only with --force)."""
    if not pgdata.parent.is_dir():
        raise ConfigError(f"the parent of --pgdata {pgdata} does not exist")
    if pgdata.exists() and not pgdata.is_dir():
        raise TargetError(f"--pgdata {pgdata} exists and is not a directory")
    if pgdata.exists() and os.path.ismount(pgdata):
        raise ConfigError(f"--pgdata {pgdata} is a mount point: it can't be swapped by a rename; give a directory inside the volume")
    nonempty = pgdata.is_dir() and any(pgdata.iterdir())
    if nonempty and not force:
        raise TargetError(f"--pgdata {pgdata} is not empty: pass --force to replace it (the old directory is kept beside it)")
    return nonempty


def choose_base(store: BlobStore, target: datetime | None) -> tuple[BaseInfo, dict[str, Any]]:
    """The newest complete base backup consistent at or before `target` (None: the newest)."""
    skipped = 0
    for info in basebackup.list_base_backups(store):
        if not info.complete:
            continue
        manifest = basebackup.read_manifest(store, info)
        if target is None or float(manifest["consistent_at_epoch"]) <= target.timestamp():
            return info, manifest
        skipped += 1
    when = "" if target is None else f" consistent at or before {target.isoformat()}"
    raise NoBaseBackupError(
        f"no complete base backup{when} in container {store.settings.container!r} ({skipped} newer ones skipped): "
        "the target lies before the oldest base backup kept"
    )


def plan_wal(store: BlobStore, manifest: dict[str, Any], latest: bool) -> tuple[list[WalObject], str | None]:
    """The WAL objects from the base backup's end on, in order, and what is missing (None: nothing).

    A segment of any timeline counts; every history file is included (PostgreSQL picks the new
    timeline after the highest one it finds). The pieces of a segment in progress are used only for
    the segment after the last complete one, and only as far as they follow each other from offset 0."""
    seg_size = int(manifest["wal_segment_size"])
    first = wal.parse_lsn(manifest["end_lsn"]) // seg_size
    prefix = wal.blob_prefix(manifest["system_id"])
    complete: dict[int, list[WalObject]] = {}
    partials: dict[int, dict[str, list[WalObject]]] = {}  # segment number -> segment name (timeline) -> its pieces
    histories: list[WalObject] = []
    for blob in store.list_blobs(prefix, metadata=True):
        relative = blob.name.removeprefix(prefix)
        name = relative.removesuffix(".zst")
        metadata = blob.metadata or {}
        sha = metadata.get("sha256", "")
        if not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise IntegrityError(f"WAL object {blob.name} has no sha256 in its metadata: it was not written by wal-stream")
        if wal.HISTORY_RE.match(name):
            histories.append(WalObject(blob.name, name, int(blob.size), sha))
            continue
        piece = wal.PIECE_RE.match(relative)
        base = piece.group(1) if piece else name
        if not wal.SEGMENT_RE.match(base):
            continue
        tli, segno = wal.segment_of(base, seg_size)
        if segno < first or tli < int(manifest["timeline"]):
            continue
        if piece is None:
            complete.setdefault(segno, []).append(WalObject(blob.name, base, int(blob.size), sha))
            continue
        raw_size = metadata.get("raw_size", "")
        if not raw_size.isdigit() or int(raw_size) == 0:
            raise IntegrityError(f"WAL piece {blob.name} has no raw_size in its metadata: it was not written by wal-stream")
        obj = WalObject(blob.name, base, int(blob.size), sha, int(piece.group(2)), int(raw_size))
        partials.setdefault(segno, {}).setdefault(base, []).append(obj)
    chosen = list(histories)
    segno = first
    while segno in complete:
        chosen += complete[segno]
        segno += 1
    missing: str | None = None
    if segno in partials:
        segment = max(partials[segno])  # the highest timeline's
        pieces, gap = piece_chain(partials[segno][segment])
        chosen += pieces
        if gap is not None:
            missing = f"{segment} (its pieces stop at byte {gap}, and later ones are stored)"
            if latest:
                raise WalGapError(
                    f"the WAL archive lacks bytes of segment {segment} in progress: its pieces from offset 0 stop at byte "
                    f"{gap}, but later ones are stored; recovery can't go past it; restore --to-time a point before it"
                )
        segno += 1
    beyond = [s for s in list(complete) + list(partials) if s >= segno]
    if beyond and missing is None:
        missing = wal.segment_name(int(manifest["timeline"]), segno, seg_size)
        if latest:
            raise WalGapError(
                f"the WAL archive lacks segment {missing} (and any timeline's copy of it), but holds later ones: "
                f"recovery can't go past it; restore --to-time a point before it"
            )
    return chosen, missing


def _download(store: BlobStore, obj: WalObject, path: Path) -> None:
    """A segment or history file whole, or a piece appended to the segment in progress (its pieces come
    in offset order, the first at 0)."""
    with open(path, "ab" if obj.offset else "wb") as handle:
        start = handle.tell()
        writer = zstandard.ZstdDecompressor().stream_writer(handle, closefd=False)

        def sink(data: bytes) -> None:
            try:
                writer.write(data)
            except zstandard.ZstdError as exc:
                raise IntegrityError(f"{obj.blob} is corrupted: {exc}") from exc

        size, sha = store.download(obj.blob, sink)
        writer.flush()
        written = handle.tell() - start
    if sha != obj.sha256 or size != obj.size:
        raise IntegrityError(f"checksum mismatch: {obj.blob} has sha256 {sha}, its metadata says {obj.sha256} (corrupted blob)")
    if obj.offset is not None and (start != obj.offset or written != obj.raw_size):
        raise IntegrityError(
            f"{obj.blob} holds {written} bytes at offset {start}, its name and metadata say {obj.raw_size} at {obj.offset}"
        )


def fetch_wal(store: BlobStore, objects: list[WalObject], wal_dir: Path, seg_size: int) -> None:
    """Every WAL object into `wal_dir`, checked; a segment in progress rebuilt from its pieces and filled
    with zeros to the segment size, as pg_receivewal leaves it."""
    for obj in objects:
        _download(store, obj, wal_dir / obj.file)
    for file in {obj.file for obj in objects if obj.offset is not None}:
        os.truncate(wal_dir / file, seg_size)


def _controldata_state(server_bin: Path, data: Path) -> str:
    result = proc.run([str(server_bin / "pg_controldata"), str(data)], timeout=30, error=TargetError)
    match = re.search(r"^Database cluster state:\s*(.+)$", result.stdout.decode(errors="replace"), re.M)
    return match.group(1).strip() if match else ""


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


def _recover(server_bin: Path, data: Path, wal_dir: Path, target: datetime | None, server_log: Path, missing: str | None) -> dict[str, Any]:
    """Run PostgreSQL's recovery on `data` until it is promoted, then stop it cleanly."""
    sock = Path(tempfile.mkdtemp(prefix="ipa-pitr-"))
    if len(str(sock)) > 80:  # the socket's path must stay under 107 bytes
        shutil.rmtree(sock)
        sock = Path(tempfile.mkdtemp(prefix="ipa-pitr-", dir="/tmp"))
    created_conf = not (data / "postgresql.conf").exists()
    if created_conf:  # a Debian-style cluster keeps its configuration outside the data directory
        (data / "postgresql.conf").write_text("")
    (data / "recovery.signal").write_text("")
    # Authentication files of its own, outside the data directory: nobody may connect, and a cluster
    # whose pg_hba.conf lives elsewhere (Debian's /etc/postgresql) starts all the same.
    (sock / "pg_hba.conf").write_text("local all all reject\n")
    (sock / "pg_ident.conf").write_text("")
    settings = {
        "hba_file": str(sock / "pg_hba.conf"),
        "ident_file": str(sock / "pg_ident.conf"),
        "listen_addresses": "",
        "unix_socket_directories": str(sock),
        "port": "5432",
        "archive_mode": "off",
        "hot_standby": "off",
        "ssl": "off",
        "shared_preload_libraries": "",
        "dynamic_shared_memory_type": "mmap",  # files in the data directory: no /dev/shm needed (a pod's is 64 MB)
        "primary_conninfo": "",
        "primary_slot_name": "",
        "logging_collector": "off",
        "log_destination": "stderr",
        "restore_command": f"cp '{wal_dir}/%f' '%p'",
        "recovery_target_timeline": "latest",
        "recovery_target_action": "promote",
    }
    if target is not None:
        settings["recovery_target_time"] = target.isoformat(sep=" ")
    argv = [str(server_bin / "postgres"), "-D", str(data)]
    for key, value in settings.items():
        argv += ["-c", f"{key}={value}"]
    started = time.monotonic()
    with open(server_log, "wb") as out:
        child = proc.popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = started + proc.command_timeout()
        while True:
            if child.poll() is not None:
                text = server_log.read_text(errors="replace")
                if NOT_REACHED in text:
                    if missing:
                        raise WalGapError(f"recovery stopped at missing WAL segment {missing}, before the target {target}")
                    raise WalGapError(
                        f"the archived WAL ends before the target {target}: nothing after it is stored yet; "
                        "restore --latest recovers everything the archive holds"
                    )
                raise TargetError(
                    f"PostgreSQL recovery failed ({proc.describe_exit('postgres', child.returncode)}):\n{_log_tail(server_log)}"
                )
            if not (data / "recovery.signal").exists() and _controldata_state(server_bin, data) == "in production":
                break
            if time.monotonic() > deadline:
                raise TargetError(
                    f"PostgreSQL recovery did not finish within {proc.command_timeout():.0f}s (BACKUP_COMMAND_TIMEOUT_SECONDS)"
                )
            time.sleep(POLL_SECONDS)
        recovered = time.monotonic() - started
        child.send_signal(signal.SIGINT)  # fast shutdown, with a shutdown checkpoint
        try:
            code = child.wait(timeout=300)
        except subprocess.TimeoutExpired as exc:
            raise TargetError("the recovered PostgreSQL did not shut down within 300s") from exc
        if code != 0 or _controldata_state(server_bin, data) != "shut down":
            raise TargetError(f"the recovered PostgreSQL did not shut down cleanly:\n{_log_tail(server_log)}")
    finally:
        if child.poll() is None:
            proc.stop([child.pid], grace=30)
            child.wait()
        proc.forget(child)
        shutil.rmtree(sock, ignore_errors=True)
    if created_conf:
        (data / "postgresql.conf").unlink()
    text = server_log.read_text(errors="replace")
    last = re.findall(r"last completed transaction was at log time (.+)", text)
    timeline = re.findall(r"selected new timeline ID: (\d+)", text)
    return {
        "recovery_seconds": round(recovered, 2),
        "last_transaction_at": last[-1].strip() if last else None,
        "timeline": int(timeline[-1]) if timeline else None,
    }


def restore(settings: Settings, target: datetime | None, pgdata: Path, force: bool) -> dict[str, Any]:
    pgdata = pgdata.absolute()
    phases: dict[str, float] = {}
    t0 = time.monotonic()
    replace = _check_target_dir(pgdata, force)
    store = BlobStore(settings)
    info, manifest = choose_base(store, target)
    major = int(manifest["major"])
    server_bin = settings.pg_clients_root / str(major) / "bin"
    if not (server_bin / "postgres").is_file():
        raise UnsupportedMajorError(
            f"base backup {info.backup_id} is of PostgreSQL {manifest.get('server_version')}, and this image has no PostgreSQL "
            f"{major} server under {settings.pg_clients_root} to recover it with"
        )
    objects, missing = plan_wal(store, manifest, latest=target is None)
    entry = manifest["files"][0]
    # The stored archive and the unpacked directory, and every WAL object uncompressed (a segment at most).
    files = len({obj.file for obj in objects})
    needed = int((entry["size"] + entry.get("raw_size", entry["size"]) + files * int(manifest["wal_segment_size"])) * SPACE_MARGIN)
    free = shutil.disk_usage(pgdata.parent).free
    if needed > free:
        raise ConfigError(f"{pgdata.parent} has {free / 1e6:.0f} MB free, the restore needs about {needed / 1e6:.0f} MB there")
    log.info(
        "pitr restore plan",
        base_backup=f"{info.tier}/{info.backup_id}",
        consistent_at=manifest.get("consistent_at"),
        target=target.isoformat() if target else "latest",
        wal_objects=len(objects),
        missing_segment=missing,
    )
    phases["plan"] = time.monotonic() - t0
    staging = pgdata.parent / f".{pgdata.name}.ipa-pitr-{secrets.token_hex(3)}"
    staging.mkdir(mode=0o700)
    try:
        t1 = time.monotonic()
        archive = staging / ARCHIVE
        with open(archive, "wb") as handle:

            def keep(data: bytes) -> None:
                handle.write(data)

            size, sha = store.download(info.prefix + ARCHIVE, keep)
        if sha != entry["sha256"] or size != entry["size"]:
            raise IntegrityError(
                f"checksum mismatch in base backup {info.backup_id}: {ARCHIVE} has sha256 {sha} and {size} bytes, "
                f"the manifest says {entry['sha256']} and {entry['size']} bytes (corrupted blob)"
            )
        wal_dir = staging / "wal"
        wal_dir.mkdir()
        fetch_wal(store, objects, wal_dir, int(manifest["wal_segment_size"]))
        phases["download_verify"] = time.monotonic() - t1
        t2 = time.monotonic()
        data = staging / "data"
        data.mkdir(mode=0o700)

        def unpack(sink: Any) -> None:
            with open(archive, "rb") as source:
                try:
                    zstandard.ZstdDecompressor().copy_stream(source, sink, read_size=1 << 20, write_size=1 << 20)
                except zstandard.ZstdError as exc:
                    raise IntegrityError(f"{ARCHIVE} of base backup {info.backup_id} is corrupted: {exc}") from exc

        result = proc.run(
            ["tar", "--extract", f"--directory={data}", "--file=-"], timeout=proc.command_timeout(), error=TargetError, feed=unpack
        )
        if result.returncode != 0:
            raise TargetError(f"unpacking base backup {info.backup_id} failed: {result.stderr.decode(errors='replace').strip()[-1000:]}")
        archive.unlink()
        phases["unpack"] = time.monotonic() - t2
        t3 = time.monotonic()
        recovery = _recover(server_bin, data, wal_dir, target, staging / "recovery.log", missing)
        phases["recovery"] = time.monotonic() - t3
        previous: Path | None = None
        with proc.shielded():  # the swap: two renames that a signal must not separate
            if replace:
                previous = pgdata.parent / f"{pgdata.name}.ipa-old-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
                pgdata.rename(previous)
            elif pgdata.exists():
                pgdata.rmdir()
            data.rename(pgdata)
        phases["total"] = time.monotonic() - t0
        report = {
            "pgdata": str(pgdata),
            "previous_pgdata": str(previous) if previous else None,
            "base_backup": f"{info.tier}/{info.backup_id}",
            "base_consistent_at": manifest.get("consistent_at"),
            "target": target.isoformat() if target else "latest",
            "wal_objects": len(objects),
            "server_major": major,
            **recovery,
            "seconds": {k: round(v, 2) for k, v in phases.items()},
        }
        log.info("pitr restore complete", **report)
        return report
    finally:
        shutil.rmtree(staging, ignore_errors=True)
