"""Taking a backup set and fetching one back, verified."""

from __future__ import annotations

import errno
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

from ipa_backup import __version__, log, pg, redis_ops
from ipa_backup.config import TARGETS, Settings
from ipa_backup.errors import ConfigError, IntegrityError, SourceError
from ipa_backup.storage import MANIFEST, TARGET_FILES, BlobStore, SetInfo, verify_file

FORMAT = 1
DECOMPRESS_WRITE_SIZE = 4 << 20


def choose_tier(sets: list[SetInfo], now: datetime) -> str:
    """First complete set of an ISO week -> weekly/, first of a UTC day -> daily/, else frequent/."""
    complete = [s for s in sets if s.complete]
    week = now.isocalendar()[:2]
    if not any(s.tier == "weekly" and s.started_at.isocalendar()[:2] == week for s in complete):
        return "weekly"
    if not any(s.tier in ("daily", "weekly") and s.started_at.date() == now.date() for s in complete):
        return "daily"
    return "frequent"


def set_targets(tier: str, settings: Settings) -> tuple[str, ...]:
    """Daily and weekly sets hold every target: they are the portable copies PostgreSQL keeps beside its
    WAL stream. A frequent set holds BACKUP_FREQUENT_TARGETS (with the stream on: Redis only)."""
    return TARGETS if tier in ("daily", "weekly") else settings.frequent_targets


class _Counter:
    def __init__(self) -> None:
        self.raw = 0


def compress(chunks: Iterator[bytes], level: int, counter: _Counter) -> Iterator[bytes]:
    """zstd with a content checksum; pg_dump runs with -Z0 so this is the only compression."""
    cobj = zstandard.ZstdCompressor(level=level, write_checksum=True, threads=-1).compressobj()
    try:
        for chunk in chunks:
            counter.raw += len(chunk)
            out = cobj.compress(chunk)
            if out:
                yield out
        yield cobj.flush()
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()  # stops the producing process if the upload failed


def take_backup(settings: Settings) -> tuple[SetInfo, dict[str, Any], dict[str, tuple[float, float, int]], SourceError | None]:
    """One set: checks, postgres dump + globals (when the set takes PostgreSQL), Redis RDB, then the
    manifest. Returns push results too, for the targets taken only, and the PostgreSQL check failure a
    daily or weekly run put off to take Redis all the same (the caller fails the run after pushing)."""
    if not settings.pg_database:
        raise ConfigError("PGDATABASE is not set: name the database to back up")
    if not settings.redis_url:
        raise ConfigError("REDIS_URL is not set: give the Redis server to back up")
    target = settings.redis
    assert target is not None
    store = BlobStore(settings)
    now = datetime.now(UTC)
    # Millisecond time first, so that names sort by time; a random tail keeps concurrent runs apart.
    set_id = f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z-{secrets.token_hex(3)}"
    tier = None
    if "postgres" not in settings.frequent_targets:  # the tier decides whether PostgreSQL is taken: list first
        store.ensure_container()
        tier = choose_tier(store.list_sets(), now)
    targets = TARGETS if tier is None else set_targets(tier, settings)
    # Every check before the first byte is written, so a bad source leaves nothing behind. A Redis-only
    # set never connects to PostgreSQL (no snapshot held, no load).
    source, postponed = None, None
    if "postgres" in targets:
        clients = pg.clients(settings.pg_clients_root, settings.pg_bin_dir)
        try:
            source = pg.check_source(clients)
        except SourceError as exc:
            if tier is None:
                raise
            # Redis's RPO rides on every run and must not wait for PostgreSQL: take it as a frequent set,
            # which leaves the day's (or week's) slot to the next run.
            postponed, tier, targets = exc, "frequent", settings.frequent_targets
            log.error(f"{exc}; taking Redis alone as a frequent set, the next run tries PostgreSQL again", set_id=set_id)
    table_share = pg.largest_table_share(source.client) if source else None
    redis_version = redis_ops.check(target)
    if tier is None:
        store.ensure_container()
        tier = choose_tier(store.list_sets(), now)
    info = SetInfo(set_id, tier)
    log.info(
        "backup started",
        set_id=info.set_id,
        tier=info.tier,
        targets=",".join(targets),
        database=settings.pg_database if source else None,
        redis=target.redacted(),
    )
    files: list[dict[str, Any]] = []
    results: dict[str, tuple[float, float, int]] = {}

    def upload(name: str, target_name: str, stream: Iterator[bytes]) -> dict[str, Any]:
        counter = _Counter()
        size, sha = store.upload_stream(info.prefix + name, compress(stream, settings.compression_level, counter))
        entry = {
            "name": name,
            "target": target_name,
            "size": size,
            "sha256": sha,
            "raw_size": counter.raw,
            "compression": f"zstd:{settings.compression_level}",
        }
        files.append(entry)
        return entry

    described: dict[str, dict[str, Any]] = {}  # the manifest's `targets`: one entry per target the set holds
    captured = time.time()  # the set's own time: its first target's
    if source is not None:
        started, captured = time.monotonic(), time.time()  # the dump's snapshot is taken after this instant
        entry = upload(TARGET_FILES["postgres"], "postgres", pg.dump(source.client))
        globals_sql = pg.dump_globals(source.client)
        if globals_sql is None:
            log.warning("roles not readable on this server (managed PostgreSQL): globals not dumped")
        else:
            upload("postgres-globals.sql.zst", "postgres", iter([globals_sql]))
        results["postgres"] = (captured, time.monotonic() - started, sum(f["size"] for f in files))
        described["postgres"] = {
            "captured_at_epoch": captured,
            "database": settings.pg_database,
            "server_version": source.server_version,
            "client_major": source.client.major,
            "largest_table_share": table_share,
            "duration_seconds": round(results["postgres"][1], 3),
        }

    started, captured_redis = time.monotonic(), time.time()
    layout = redis_ops.source_layout(target)  # which databases, and how many the server has: restores keep the numbers
    entry = upload(TARGET_FILES["redis"], "redis", redis_ops.dump_rdb(target))
    results["redis"] = (captured_redis, time.monotonic() - started, entry["size"])
    described["redis"] = {
        "captured_at_epoch": captured_redis,
        "server_version": redis_version,
        "keyspace": layout["keyspace"],
        "databases": layout["databases"],
        "duration_seconds": round(results["redis"][1], 3),
    }
    if source is None:
        captured = captured_redis

    manifest = {
        "format": FORMAT,
        "set_id": info.set_id,
        "tier": info.tier,
        "captured_at": datetime.fromtimestamp(captured, UTC).isoformat(),
        "captured_at_epoch": captured,
        "targets": described,
        "files": files,
        "tool": {"name": "ipa-backup", "version": __version__},
    }
    store.write_manifest(info, manifest)  # last: only now is the set complete
    info.files = {f["name"]: f["size"] for f in files} | {"manifest.json": 1}
    log.info(
        "backup complete",
        set_id=info.set_id,
        tier=info.tier,
        targets=",".join(described),
        bytes=sum(f["size"] for f in files),
        raw_bytes=sum(f["raw_size"] for f in files),
    )
    return info, manifest, results, postponed


SPACE_MARGIN = 1.05  # file system overhead and the work files pg_restore and redis-server add


def check_space(workdir: Path, entries: list[dict[str, Any]], set_id: str, keep_compressed: frozenset[str] = frozenset()) -> None:
    """Refuse before the first download when the work dir can't hold the set as it will be staged: a
    production-sized restore then fails in a second, not after downloading for an hour."""
    needed = int(sum(int(e["size"] if e["name"] in keep_compressed else e.get("raw_size") or e["size"]) for e in entries) * SPACE_MARGIN)
    free = shutil.disk_usage(workdir).free
    if needed > free:
        raise ConfigError(
            f"BACKUP_WORK_DIR {workdir.parent} has {free / 1e6:.0f} MB free, but set {set_id} needs "
            f"about {needed / 1e6:.0f} MB there uncompressed: give the restore a larger work volume"
        )


@contextmanager
def _disk_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        raise ConfigError(f"writing {path} failed: {exc.strerror}: give the restore a larger work volume (BACKUP_WORK_DIR)") from exc


OPTIONAL_FILES = {"postgres-globals.sql.zst": "postgres"}  # file -> the target it belongs to


def manifest_targets(manifest: dict[str, Any]) -> tuple[str, ...]:
    """The targets a set holds: the keys of its manifest's `targets`. A manifest without that field
    (none this tool wrote) holds both, as every set did before frequent sets could hold Redis only."""
    described = manifest.get("targets")
    if described is None:
        return TARGETS
    if not isinstance(described, dict) or not described or not set(described) <= set(TARGETS):
        raise IntegrityError(
            f"manifest of set {manifest.get('set_id')!r} names targets {described!r}; accepted: one or both of {', '.join(TARGETS)}"
        )
    return tuple(t for t in TARGETS if t in described)


SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def _entry_problem(entry: Any) -> str | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        return "a file entry without a name"
    name = entry["name"]
    if "/" in name or name.startswith(".") or name == MANIFEST or not name:
        return f"an unsafe file name {name!r}"
    if not isinstance(entry.get("size"), int) or entry["size"] < 0:
        return f"no valid size for {name}"
    if not isinstance(entry.get("sha256"), str) or not SHA256_RE.match(entry["sha256"]):
        return f"no valid sha256 for {name}"
    if not isinstance(entry.get("raw_size", 0), int):
        return f"no valid raw_size for {name}"
    return None


def require_targets(info: SetInfo, manifest: dict[str, Any], needs: tuple[str, ...]) -> None:
    """A set named for a command must hold what it needs (its manifest, already checked against its folder, says)."""
    held = manifest_targets(manifest)
    lacking = [t for t in needs if t not in held]
    if lacking:
        raise IntegrityError(
            f"backup set {info.set_id} holds {', '.join(held)} only, not {' and '.join(lacking)}: name a set holding it "
            "(`ipa-backup list` shows each set's targets), or leave the set out to take the newest that does"
        )


def check_manifest(info: SetInfo, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The manifest is the contract: it names this set and tier, lists the required files, and lists
    exactly the files in the set's folder, with their stored sizes. Uses only the listing and the
    manifest, so a bad set is refused before any download. Returns the file entries."""
    where = f"manifest of set {info.tier}/{info.set_id}"
    if manifest.get("set_id") != info.set_id:
        raise IntegrityError(
            f"{where} belongs to set {manifest.get('set_id')!r}: a set copied or moved into another set's folder is refused"
        )
    if manifest.get("tier") != info.tier:
        raise IntegrityError(f"{where} says tier {manifest.get('tier')!r}, but the set is stored under {info.tier}/")
    entries = manifest.get("files")
    if not isinstance(entries, list) or not entries:
        raise IntegrityError(f"{where} lists no files")
    for entry in entries:
        problem = _entry_problem(entry)
        if problem:
            raise IntegrityError(f"{where} has {problem}")
    names = [str(e["name"]) for e in entries]
    if len(set(names)) != len(names):
        raise IntegrityError(f"{where} lists a file twice: {sorted(n for n in set(names) if names.count(n) > 1)}")
    targets = manifest_targets(manifest)
    missing = [TARGET_FILES[t] for t in targets if TARGET_FILES[t] not in names]
    if missing:
        raise IntegrityError(f"{where} lacks the required {', '.join(missing)}")
    belongs = {**{f: t for t, f in TARGET_FILES.items()}, **OPTIONAL_FILES}
    foreign = sorted(n for n in names if n in belongs and belongs[n] not in targets)
    if foreign:
        raise IntegrityError(f"{where} lists {', '.join(foreign)} but holds only {', '.join(targets)}")
    stored = set(info.files) - {MANIFEST}
    absent = sorted(set(names) - stored)
    if absent:
        raise IntegrityError(f"{where} lists {', '.join(absent)}, missing from the set's folder")
    unlisted = sorted(stored - set(names))
    if unlisted:
        raise IntegrityError(f"the folder of set {info.tier}/{info.set_id} holds {', '.join(unlisted)}, which its manifest does not list")
    for entry in entries:
        if info.files[entry["name"]] != entry["size"]:
            raise IntegrityError(
                f"size mismatch in set {info.set_id}: {entry['name']} has {info.files[entry['name']]} "
                f"bytes in storage, the manifest says {entry['size']} bytes (truncated or replaced blob)"
            )
    return entries


def read_manifest(store: BlobStore, info: SetInfo) -> dict[str, Any]:
    """The set's manifest, checked against the set's folder (`check_manifest`)."""
    manifest = store.read_manifest(info)
    check_manifest(info, manifest)
    return manifest


def fetch_verified(
    store: BlobStore,
    info: SetInfo,
    workdir: Path | None,
    decompress: bool = True,
    manifest: dict[str, Any] | None = None,
    keep_compressed: frozenset[str] = frozenset(),
) -> tuple[dict[str, Any], dict[str, Path]]:
    """Download every file of a complete set, checking size and SHA-256 of each against the manifest.

    The manifest (read here unless given, from `read_manifest`) is checked against the folder first.
    With `decompress` the files land uncompressed in `workdir` (pg_restore --jobs needs a seekable file),
    except those named in `keep_compressed`: they stay as stored, to be streamed later.
    """
    started = time.monotonic()
    if manifest is None:
        manifest = store.read_manifest(info)
    entries = check_manifest(info, manifest)
    if decompress and workdir is not None:
        check_space(workdir, entries, info.set_id, keep_compressed)
    paths: dict[str, Path] = {}
    for entry in entries:
        name = str(entry["name"])
        if not decompress or workdir is None:
            verify_file(store, info, entry, lambda data: None)
            continue
        if name in keep_compressed:
            path = workdir / name
            with _disk_errors(path), open(path, "wb") as raw:

                def keep(data: bytes, raw: BinaryIO = raw) -> None:
                    raw.write(data)

                verify_file(store, info, entry, keep)
            paths[name] = path
            continue
        path = workdir / name.removesuffix(".zst")
        with _disk_errors(path), open(path, "wb") as handle:
            # A stream writer writes its output in pieces of `write_size`: memory stays bounded even
            # when one downloaded block expands a hundredfold (pgbench's archive: 9 MB -> 719 MB).
            writer = zstandard.ZstdDecompressor().stream_writer(handle, write_size=DECOMPRESS_WRITE_SIZE, closefd=False)

            def sink(data: bytes, writer: Any = writer, name: str = name) -> None:
                try:
                    writer.write(data)
                except zstandard.ZstdError as exc:
                    raise IntegrityError(f"{name} of set {info.set_id} is corrupted: {exc}") from exc

            verify_file(store, info, entry, sink)
            writer.flush()
        paths[name] = path
    log.info("set verified", set_id=info.set_id, files=len(entries), seconds=round(time.monotonic() - started, 2))
    return manifest, paths
