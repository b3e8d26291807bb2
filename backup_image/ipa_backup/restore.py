"""Restore a verified set into targets, and the restore drill into scratch targets."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from ipa_backup import log, pg, pgrestore, proc, redis_ops
from ipa_backup.config import TARGETS, RedisTarget, Settings
from ipa_backup.errors import ConfigError, TargetError
from ipa_backup.sets import fetch_verified, read_manifest, require_targets
from ipa_backup.storage import BlobStore


def workdir(settings: Settings) -> Path:
    """Staging for the uncompressed files (pg_restore --jobs needs a seekable archive)."""
    return Path(tempfile.mkdtemp(prefix="ipa-backup-", dir=settings.work_dir))


def check_targets(
    settings: Settings, database: str | None, redis_target: RedisTarget | None, force: bool, manifest: dict[str, Any], set_id: str
) -> pgrestore.Target | None:
    """Refuse targets the image's clients can't serve, and non-empty ones unless forced; reads only."""
    pg_plan = None
    if database:
        clients = pg.clients(settings.pg_clients_root, settings.pg_bin_dir)
        pg_plan = pgrestore.check_target(database, force, manifest, set_id, clients)
    if redis_target is not None:
        # Which of its databases must be empty depends on the set: its manifest names them (a set from
        # before it did is checked after the download, still before anything is written).
        redis_dbs = redis_ops.manifest_dbs(redis_ops.manifest_layout(manifest))
        if redis_dbs is None:
            redis_ops.check_target(redis_target)
        else:
            redis_ops.plan_target(redis_target, redis_dbs, force)
    return pg_plan


def restore_set(
    settings: Settings,
    set_id: str | None,
    force: bool,
    database: str | None,
    redis_url: str | None,
    only: str | None,
    no_owner: bool = False,
    with_globals: bool = False,
    keep_old: bool = False,
) -> dict[str, Any]:
    database = database or settings.pg_database
    redis_url = redis_url or settings.redis_url
    if only != "redis" and not database:
        raise ConfigError("no PostgreSQL target: set PGDATABASE or --pg-database")
    if only != "postgres" and not redis_url:
        raise ConfigError("no Redis target: set REDIS_URL or --redis-url")
    redis_target = RedisTarget.parse(redis_url) if redis_url and only != "postgres" else None
    pg_target = database if only != "redis" else None
    started_all = time.monotonic()
    store = BlobStore(settings)
    # Default: the newest set holding what is restored (a frequent set may hold Redis only).
    needs = tuple(t for t, wanted in (("postgres", pg_target), ("redis", redis_target)) if wanted)
    info = store.find_set(set_id, needs)
    # The manifest, checked against the set's folder, names the set's pg_dump major: a bad set or an
    # unsupported pairing is refused before any download.
    manifest = read_manifest(store, info)
    require_targets(info, manifest, needs)
    pg_plan = check_targets(settings, pg_target, redis_target, force, manifest, info.set_id)
    summary: dict[str, Any] = {}
    durations: dict[str, float] = {"find_and_check": time.monotonic() - started_all}
    work = workdir(settings)
    try:
        with ExitStack() as stack:
            started = time.monotonic()
            streamed = frozenset({"postgres.dump.zst"}) if pg_plan and pgrestore.streams(manifest, settings.restore_jobs) else frozenset()
            # Every checksum before any target is touched.
            manifest, paths = fetch_verified(store, info, work, manifest=manifest, keep_compressed=streamed)
            durations["download_verify"] = time.monotonic() - started
            # Every check of every target before any of them is touched.
            if pg_plan is not None:
                archive = paths["postgres.dump.zst"]
                archive_bytes = next(int(f.get("raw_size") or f["size"]) for f in manifest["files"] if f["name"] == "postgres.dump.zst")
                toc = pgrestore.read_archive(pg_plan, archive)
                options = pgrestore.Options(settings.restore_jobs, settings.restore_pg_options, no_owner, with_globals, keep_old)
                globals_path = paths.get("postgres-globals.sql.zst")
                globals_sql = globals_path.read_text(encoding="utf-8") if with_globals and globals_path else None
                globals_plan = pgrestore.check_roles(pg_plan, toc, options, globals_sql)
            if redis_target is not None:
                layout = redis_ops.manifest_layout(manifest)
                helper = stack.enter_context(redis_ops.loaded_rdb(paths["redis.rdb.zst"], redis_ops.helper_databases(layout)))
                redis_plan = redis_ops.plan_restore(helper, redis_target, force)
            # Each target restored beside what is live, then all put in place together; a failure at any
            # point undoes every part (a committed PostgreSQL swap is swapped back).
            parts: list[pgrestore.Prepared | redis_ops.Prepared] = []
            try:
                if pg_plan is not None:
                    started = time.monotonic()
                    parts.append(pgrestore.prepare(pg_plan, toc, archive, archive_bytes, globals_plan, options))
                    durations["postgres"] = time.monotonic() - started
                if redis_target is not None:
                    started = time.monotonic()
                    parts.append(redis_ops.prepare(helper, redis_target, redis_plan, keep_old, settings.redis_batch_bytes))
                    durations["redis"] = time.monotonic() - started
                for part in parts:
                    part.commit()
            except BaseException:
                for part in reversed(parts):
                    part.abandon()
                raise
            for part in parts:
                if isinstance(part, pgrestore.Prepared):
                    summary["postgres"] = part.finish()
                    log.info("postgres restored", set_id=info.set_id, database=pg_target, seconds=round(durations["postgres"], 2))
                else:
                    part.finish()
                    log.info(
                        "redis restored",
                        set_id=info.set_id,
                        target=f"{redis_target.host}:{redis_target.port}" if redis_target else "",
                        seconds=round(durations["redis"], 2),
                    )
        phases = {k: round(v, 2) for k, v in durations.items()}
        log.info("restore phases", set_id=info.set_id, seconds=phases)  # where the time went
        return {"set_id": info.set_id, "captured_at": manifest.get("captured_at"), "durations": phases, **summary}
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextmanager
def scratch_redis(databases: int = 16) -> Iterator[RedisTarget]:
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
    conf.write_text(f'bind 127.0.0.1\nport {port}\ndir {work}\nsave ""\nappendonly no\ndatabases {databases}\nrequirepass {password}\n')
    conf.chmod(0o600)
    server = proc.popen([binary, str(conf)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
    scratch_db = settings.drill_database  # config refused a name not ending in DRILL_SUFFIX
    if not settings.pg_database or not scratch_db:
        raise ConfigError("PGDATABASE is not set: the drill derives its scratch database name from it")
    store = BlobStore(settings)
    info = store.find_set(None, TARGETS)  # the drill restores both
    manifest = read_manifest(store, info)  # checked against the set's folder: it names the same targets
    clients = pg.clients(settings.pg_clients_root, settings.pg_bin_dir)
    pg_plan = pgrestore.check_server(scratch_db, manifest, info.set_id, clients)  # before any download
    checks: list[dict[str, Any]] = []
    durations: dict[str, float] = {}
    work = workdir(settings)
    started_all = time.monotonic()
    try:
        manifest, paths = fetch_verified(store, info, work, manifest=manifest)
        durations["download"] = time.monotonic() - started_all
        checks.append({"name": "checksums", "passed": True, "detail": f"{len(paths)} files match the manifest"})
        # PostgreSQL into a scratch database the drill owns.
        started = time.monotonic()
        archive = paths["postgres.dump.zst"]
        pgrestore.drill_restore(
            pg_plan,
            pgrestore.read_archive(pg_plan, archive),
            archive,
            pgrestore.Options(settings.restore_jobs, settings.restore_pg_options),
        )
        durations["postgres"] = time.monotonic() - started
        compared = pg.compare_with_archive(archive, scratch_db, pg_plan.client)
        checks.append(
            {
                "name": "postgres row counts",
                "passed": not compared.bad_counts,
                "detail": "; ".join(compared.bad_counts) or f"{compared.tables} tables match the archive",
            }
        )
        checks.append(
            {
                "name": "postgres checksum sample",
                "passed": not compared.bad_samples,
                "detail": ", ".join(compared.bad_samples) or f"first {pg.SAMPLE_ROWS} rows of {compared.tables} tables match",
            }
        )
        # Redis into a scratch instance, or into DRILL_REDIS_URL's server, whose databases of the set must be empty.
        started = time.monotonic()
        drill_url = settings.drill_redis_url
        databases = redis_ops.helper_databases(redis_ops.manifest_layout(manifest))
        with (
            redis_ops.loaded_rdb(paths["redis.rdb.zst"], databases) as loaded,
            _redis_scratch(drill_url, redis_ops.database_count(loaded)) as target,
        ):
            copied = redis_ops.restore_loaded(loaded, target, False, False, settings.redis_batch_bytes)
            durations["redis"] = time.monotonic() - started
            try:
                checks.extend(redis_ops.drill_checks(loaded, target, sorted(copied)))
            finally:
                if drill_url:
                    redis_ops.discard(target, sorted(copied), "drill's copy removed from DRILL_REDIS_URL")
        passed = all(c["passed"] for c in checks)
        if not settings.drill_keep:
            pg.drop_database(scratch_db, pg_plan.client)
        return {
            "set_id": info.set_id,
            "captured_at": manifest.get("captured_at"),
            "passed": passed,
            "checks": checks,
            "durations": {k: round(v, 3) for k, v in durations.items()},
            "total_seconds": round(time.monotonic() - started_all, 3),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextmanager
def _redis_scratch(url: str | None, databases: int) -> Iterator[RedisTarget]:
    if url:
        yield RedisTarget.parse(url, "DRILL_REDIS_URL")
    else:
        with scratch_redis(databases) as target:
            yield target
