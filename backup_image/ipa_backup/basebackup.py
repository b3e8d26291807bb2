"""`base-backup`: PostgreSQL's own pg_basebackup over the replication protocol, checked with
pg_verifybackup, stored as one tar in `base/<tier>/<id>/` with `manifest.json` written last.

pg_basebackup writes the plain format (a data directory) because pg_verifybackup reads only that
format before PostgreSQL 18; the tool then tars and compresses the verified directory itself. The
WAL from the backup's start to its end is included (`--wal-method=stream`), so every base backup is
restorable on its own, to its end point, even without the WAL archive: the weekly tier outlives the
WAL it was taken with.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ipa_backup import __version__, log, pg, proc, wal
from ipa_backup.config import Settings, libpq_where
from ipa_backup.errors import ConfigError, IntegrityError, SourceError
from ipa_backup.sets import SHA256_RE, _Counter, compress
from ipa_backup.storage import MANIFEST, SET_ID_RE, BlobStore

BASE_PREFIX = "base/"
BASE_TIERS = ("daily", "weekly")
ARCHIVE = "base.tar.zst"
FORMAT = 1


@dataclass
class BaseInfo:
    backup_id: str
    tier: str
    files: dict[str, int] = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        return f"{BASE_PREFIX}{self.tier}/{self.backup_id}/"

    @property
    def complete(self) -> bool:
        return MANIFEST in self.files

    @property
    def size(self) -> int:
        return sum(self.files.values())


def list_base_backups(store: BlobStore) -> list[BaseInfo]:
    """Every base backup folder, complete or not, newest first (ids sort by time)."""
    found: dict[str, BaseInfo] = {}
    for blob in store.list_blobs(BASE_PREFIX):
        parts = blob.name.split("/")
        if len(parts) != 4 or parts[1] not in BASE_TIERS or not SET_ID_RE.match(parts[2]):
            continue
        info = found.setdefault(f"{parts[1]}/{parts[2]}", BaseInfo(parts[2], parts[1]))
        info.files[parts[3]] = int(blob.size or 0)
    return sorted(found.values(), key=lambda b: b.backup_id, reverse=True)


def choose_tier(backups: list[BaseInfo], now: datetime) -> str:
    """The first complete base backup of an ISO week (UTC) is weekly, every other one daily."""
    week = now.isocalendar()[:2]
    for info in backups:
        if info.complete and info.tier == "weekly":
            started = datetime.strptime(info.backup_id[:15], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
            if started.isocalendar()[:2] == week:
                return "daily"
    return "weekly"


def read_manifest(store: BlobStore, info: BaseInfo) -> dict[str, Any]:
    """The manifest, checked against the folder from the listing alone (before any download)."""
    where = f"manifest of base backup {info.tier}/{info.backup_id}"
    data = store.read_bytes(info.prefix + MANIFEST, f"the {where}")
    try:
        manifest: dict[str, Any] = json.loads(data)
    except ValueError as exc:
        raise IntegrityError(f"{where} is not valid JSON: {exc}") from exc
    if manifest.get("backup_id") != info.backup_id or manifest.get("tier") != info.tier:
        raise IntegrityError(f"{where} names {manifest.get('tier')}/{manifest.get('backup_id')}: a copied or moved base backup is refused")
    entries = manifest.get("files")
    if not isinstance(entries, list) or [e.get("name") for e in entries if isinstance(e, dict)] != [ARCHIVE]:
        raise IntegrityError(f"{where} must list exactly {ARCHIVE}")
    entry = entries[0]
    if not isinstance(entry.get("size"), int) or not isinstance(entry.get("sha256"), str) or not SHA256_RE.match(entry["sha256"]):
        raise IntegrityError(f"{where} has no valid size or sha256 for {ARCHIVE}")
    unlisted = sorted(set(info.files) - {MANIFEST, ARCHIVE})
    if unlisted:
        raise IntegrityError(
            f"the folder of base backup {info.tier}/{info.backup_id} holds {', '.join(unlisted)}, which its manifest does not list"
        )
    if info.files.get(ARCHIVE) != entry["size"]:
        raise IntegrityError(
            f"size mismatch in base backup {info.backup_id}: {ARCHIVE} has {info.files.get(ARCHIVE)} bytes in storage, "
            f"the manifest says {entry['size']} (truncated, replaced or missing blob)"
        )
    for key in ("system_id", "major", "timeline", "start_lsn", "end_lsn", "wal_segment_size", "consistent_at_epoch"):
        if key not in manifest:
            raise IntegrityError(f"{where} lacks {key}")
    return manifest


def _backup_label(data: Path) -> dict[str, str]:
    fields = {}
    for line in (data / "backup_label").read_text().splitlines():
        key, _, value = line.partition(": ")
        fields[key.strip()] = value.strip()
    return fields


def _end_lsn(data: Path) -> tuple[int, int]:
    """(timeline, end LSN) of the backup, from its backup_manifest's WAL ranges."""
    ranges = json.loads((data / "backup_manifest").read_text())["WAL-Ranges"]
    last = ranges[-1]
    return int(last["Timeline"]), wal.parse_lsn(last["End-LSN"])


def take(settings: Settings) -> tuple[BaseInfo, dict[str, Any]]:
    found = pg.clients(settings.pg_clients_root, settings.pg_bin_dir)
    up = wal.upstream(pg.newest(found))
    client = wal.client_for(found, up.major, up.version, "a base backup")
    for program in ("pg_basebackup", "pg_verifybackup"):
        if not Path(client.program(program)).is_file():
            raise ConfigError(f"{client.program(program)} is missing from the image")
    store = BlobStore(settings)
    store.ensure_container()
    now = datetime.now(UTC)
    backup_id = f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z-{secrets.token_hex(3)}"
    info = BaseInfo(backup_id, choose_tier(list_base_backups(store), now))
    log.info("base backup started", backup_id=backup_id, tier=info.tier, server=libpq_where(), server_version=up.version)
    work = Path(tempfile.mkdtemp(prefix="ipa-base-", dir=settings.work_dir))
    try:
        data = work / "data"
        started, t0 = time.time(), time.monotonic()
        argv = [
            client.program("pg_basebackup"),
            f"--pgdata={data}",
            "--format=plain",
            "--wal-method=stream",
            f"--checkpoint={'fast' if settings.base_backup_fast_checkpoint else 'spread'}",
            f"--label=ipa-backup {backup_id}",
            "--no-password",
        ]
        result = proc.run(argv, env=pg.CLIENT_ENV, timeout=proc.command_timeout(), error=SourceError)
        if result.returncode != 0:
            raise SourceError(
                f"pg_basebackup of {libpq_where()} failed ({proc.describe_exit('pg_basebackup', result.returncode)}): "
                f"{result.stderr.decode(errors='replace').strip()[-2000:]}"
            )
        consistent_at = time.time()  # pg_basebackup returns after the backup's end point
        backup_seconds = time.monotonic() - t0
        verify = proc.run([client.program("pg_verifybackup"), str(data)], timeout=proc.command_timeout(), error=IntegrityError)
        if verify.returncode != 0:
            raise IntegrityError(
                f"pg_verifybackup refused the base backup {backup_id}: {verify.stderr.decode(errors='replace').strip()[-2000:]}"
            )
        label = _backup_label(data)
        match = re.match(r"^([0-9A-F]+/[0-9A-F]+)", label.get("START WAL LOCATION", ""))
        if not match:
            raise SourceError(f"the base backup's backup_label has no start WAL location: {label}")
        timeline, end_lsn = _end_lsn(data)
        counter = _Counter()
        tar = proc.stream_stdout(
            ["tar", "--create", f"--directory={data}", "--file=-", "."],
            {},
            lambda msg: SourceError(f"archiving the base backup failed: {msg}"),
        )
        size, sha = store.upload_stream(info.prefix + ARCHIVE, compress(tar, settings.compression_level, counter))
        finished = time.time()
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "kind": "base-backup",
            "backup_id": backup_id,
            "tier": info.tier,
            "system_id": up.system_id,
            "server_version": up.version,
            "major": up.major,
            "timeline": timeline,
            "wal_segment_size": up.seg_size,
            "start_lsn": match.group(1),
            "end_lsn": wal.format_lsn(end_lsn),
            "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
            "consistent_at": datetime.fromtimestamp(consistent_at, UTC).isoformat(),
            "consistent_at_epoch": consistent_at,
            "backup_seconds": round(backup_seconds, 3),
            "duration_seconds": round(finished - started, 3),
            "files": [
                {"name": ARCHIVE, "size": size, "sha256": sha, "raw_size": counter.raw, "compression": f"zstd:{settings.compression_level}"}
            ],
            "tool": {"name": "ipa-backup", "version": __version__},
        }
        store.write_json(info.prefix + MANIFEST, manifest, f"the manifest of base backup {backup_id}")  # last: now it is complete
        info.files = {ARCHIVE: size}
        log.info(
            "base backup complete", backup_id=backup_id, tier=info.tier, bytes=size, raw_bytes=counter.raw, end_lsn=manifest["end_lsn"]
        )
        return info, manifest
    finally:
        shutil.rmtree(work, ignore_errors=True)
