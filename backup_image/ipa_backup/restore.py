"""Restore a verified set into targets, and the restore drill into scratch targets."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ipa_backup import log, pg, redis_ops
from ipa_backup.config import RedisTarget, Settings
from ipa_backup.errors import ConfigError, TargetError
from ipa_backup.sets import fetch_verified
from ipa_backup.storage import BlobStore


def workdir() -> Path:
    """Staging for the uncompressed files (pg_restore --jobs needs a seekable archive)."""
    return Path(tempfile.mkdtemp(prefix="ipa-backup-", dir=os.environ.get("BACKUP_WORK_DIR") or None))


def check_targets(database: str | None, redis_target: RedisTarget | None, force: bool) -> None:
    """Refuse non-empty targets unless forced; reads only."""
    if database and pg.database_exists(database):
        objects = pg.user_object_count(database)
        if objects and not force:
            raise TargetError(f"PostgreSQL target database {database!r} is not empty ({objects} objects); "
                              "restore refuses to overwrite it without --force")
    if redis_target is not None:
        redis_ops.check(redis_target, error=TargetError)
        keys = int(redis_ops.client(redis_target).dbsize())
        if keys and not force:
            raise TargetError(f"Redis target {redis_target.redacted()} is not empty ({keys} keys); "
                              "restore refuses to overwrite it without --force")


def restore_set(settings: Settings, set_id: str | None, force: bool, database: str | None,
                redis_url: str | None, only: str | None) -> dict[str, Any]:
    database = database or settings.pg_database
    redis_url = redis_url or settings.redis_url
    if only != "redis" and not database:
        raise ConfigError("no PostgreSQL target: set PGDATABASE or --pg-database")
    if only != "postgres" and not redis_url:
        raise ConfigError("no Redis target: set REDIS_URL or --redis-url")
    redis_target = RedisTarget.parse(redis_url) if redis_url and only != "postgres" else None
    pg_target = database if only != "redis" else None
    if pg_target:
        pg.restore_options()  # a bad setting fails here, before any download or target change
    started_all = time.monotonic()
    store = BlobStore(settings)
    info = store.find_set(set_id)
    check_targets(pg_target, redis_target, force)
    durations: dict[str, float] = {"find_and_check": time.monotonic() - started_all}
    work = workdir()
    try:
        started = time.monotonic()
        manifest, paths = fetch_verified(store, info, work)  # every checksum before any target is touched
        durations["download_verify"] = time.monotonic() - started
        if pg_target:
            started = time.monotonic()
            if not pg.database_exists(pg_target):
                pg.create_database(pg_target)
            pg.restore(paths["postgres.dump.zst"], pg_target, settings.restore_jobs)
            durations["postgres"] = time.monotonic() - started
            log.info("postgres restored", set_id=info.set_id, database=pg_target, seconds=round(durations["postgres"], 2))
        if redis_target is not None:
            started = time.monotonic()
            with redis_ops.loaded_rdb(paths["redis.rdb.zst"]) as loaded:
                redis_ops.copy_keys(loaded, redis_target, force)
            durations["redis"] = time.monotonic() - started
            log.info("redis restored", set_id=info.set_id, target=redis_target.redacted(),
                     seconds=round(durations["redis"], 2))
        phases = {k: round(v, 2) for k, v in durations.items()}
        log.info("restore phases", set_id=info.set_id, seconds=phases)  # where the time went
        return {"set_id": info.set_id, "captured_at": manifest.get("captured_at"), "durations": phases}
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextmanager
def scratch_redis() -> Iterator[RedisTarget]:
    """A private redis-server on a free loopback port with a random password: the drill's scratch instance."""
    import secrets
    import socket

    binary = shutil.which("redis-server")
    if binary is None:
        raise TargetError("redis-server is not installed; the drill restores Redis into a scratch instance")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    password = secrets.token_hex(16)
    work = Path(tempfile.mkdtemp(prefix="ipa-backup-scratch-redis-"))
    conf = work / "redis.conf"
    conf.write_text(f'bind 127.0.0.1\nport {port}\ndir {work}\nsave ""\nappendonly no\ndatabases 16\n'
                    f"requirepass {password}\n")
    conf.chmod(0o600)
    server = subprocess.Popen([binary, str(conf)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    target = RedisTarget("127.0.0.1", port, 0, None, password, False)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                redis_ops.check(target, error=TargetError)
                break
            except TargetError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield target
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


def drill(settings: Settings) -> dict[str, Any]:
    """Restore the newest complete set into scratch targets and compare it with the archive itself."""
    if not settings.pg_database:
        raise ConfigError("PGDATABASE is not set: the drill derives its scratch database name from it")
    scratch_db = os.environ.get("DRILL_PGDATABASE") or f"{settings.pg_database}_restore_drill"
    if scratch_db == settings.pg_database:
        raise ConfigError("DRILL_PGDATABASE must differ from PGDATABASE")
    pg.restore_options()
    store = BlobStore(settings)
    info = store.find_set(None)
    checks: list[dict[str, Any]] = []
    durations: dict[str, float] = {}
    work = workdir()
    started_all = time.monotonic()
    try:
        manifest, paths = fetch_verified(store, info, work)
        durations["download"] = time.monotonic() - started_all
        checks.append({"name": "checksums", "passed": True, "detail": f"{len(paths)} files match the manifest"})
        # PostgreSQL into a scratch database the drill owns.
        started = time.monotonic()
        pg.drop_database(scratch_db)
        pg.create_database(scratch_db)
        archive = paths["postgres.dump.zst"]
        pg.restore(archive, scratch_db, settings.restore_jobs)
        durations["postgres"] = time.monotonic() - started
        expected = pg.archive_table_data(archive)
        bad_counts, bad_samples = [], []
        for table, (rows, sample) in sorted(expected.items()):
            got_rows, got_sample = pg.restored_table_data(scratch_db, table)
            if got_rows != rows:
                bad_counts.append(f"{table}: {got_rows} rows, archive has {rows}")
            if got_sample != sample:
                bad_samples.append(table)
        checks.append({"name": "postgres row counts", "passed": not bad_counts,
                       "detail": "; ".join(bad_counts) or f"{len(expected)} tables match the archive"})
        checks.append({"name": "postgres checksum sample", "passed": not bad_samples,
                       "detail": ", ".join(bad_samples) or f"first {pg.SAMPLE_ROWS} rows of {len(expected)} tables match"})
        # Redis into a scratch instance (or DRILL_REDIS_URL's server).
        started = time.monotonic()
        drill_url = os.environ.get("DRILL_REDIS_URL")
        with _redis_scratch(drill_url) as target, redis_ops.loaded_rdb(paths["redis.rdb.zst"]) as loaded:
            source_counts = redis_ops.keyspace(loaded)
            copied = redis_ops.copy_keys(loaded, target, force=True)
            durations["redis"] = time.monotonic() - started
            mapping = redis_ops.db_map(sorted(source_counts), target)
            got = {dst: int(redis_ops.client(target, dst).dbsize()) for dst in mapping.values()}
            want = {mapping[src]: n for src, n in source_counts.items()}
            ok = got == want and copied == want
            checks.append({"name": "redis key counts", "passed": ok,
                           "detail": f"restored {got}, backup has {want}"})
            if drill_url:
                redis_ops.client(target, target.db).flushdb()
        passed = all(c["passed"] for c in checks)
        if os.environ.get("DRILL_KEEP") != "1":
            pg.drop_database(scratch_db)
        return {"set_id": info.set_id, "captured_at": manifest.get("captured_at"), "passed": passed,
                "checks": checks, "durations": {k: round(v, 3) for k, v in durations.items()},
                "total_seconds": round(time.monotonic() - started_all, 3)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextmanager
def _redis_scratch(url: str | None) -> Iterator[RedisTarget]:
    if url:
        yield RedisTarget.parse(url)
    else:
        with scratch_redis() as target:
            yield target
