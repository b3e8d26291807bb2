"""Round trips of realistic data through Azurite, list/verify, the drill, and the manifest."""

from __future__ import annotations

import json
import os
import time

import backup_testdata as data
import pytest
from azure.storage.blob import BlobServiceClient
from conftest import World

from devservices.image import IMAGE_UID, image_path, image_workdir
from devservices.process import ServiceError

pytestmark = pytest.mark.services


def test_backup_restore_round_trip_keeps_everything(world: World) -> None:
    pg_before = world.pg.psql(data.PG_FINGERPRINT, world.database)
    redis_before = data.redis_fingerprint(world.rcli())
    ttl_before = world.rcli().pttl("session:0")
    out = world.backup_ok()

    # Disaster: both sources lost.
    world.pg.drop_database(world.database)
    world.rcli().flushdb()

    result = world.run("restore")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["set_id"] == out["set_id"]
    assert world.pg.psql(data.PG_FINGERPRINT, world.database) == pg_before
    assert "Москва 🚀 #4" in world.pg.psql("SELECT name FROM app.users WHERE id = 4", world.database)
    redis_after = data.redis_fingerprint(world.rcli())
    assert redis_after == redis_before
    ttl_after = world.rcli().pttl("session:0")
    assert 0 < ttl_after <= ttl_before
    assert world.rcli().pttl("session:1") == -1
    # Constraints still enforce after the restore.
    with pytest.raises(ServiceError, match="foreign key"):
        world.pg.psql("INSERT INTO app.executions (user_id, workflow, status) VALUES (999999, 'x', 'success')", world.database)


def test_manifest_written_last_and_describes_the_set(world: World) -> None:
    out = world.backup_ok()
    service = BlobServiceClient.from_connection_string(world.blob.connection_string)
    container = service.get_container_client(world.container)
    blobs = {b.name: b for b in container.list_blobs()}
    prefix = f"{out['tier']}/{out['set_id']}/"
    names = sorted(n for n in blobs if n.startswith(prefix))
    assert names == [prefix + n for n in ("manifest.json", "postgres-globals.sql.zst", "postgres.dump.zst", "redis.rdb.zst")]
    manifest_time = blobs[prefix + "manifest.json"].last_modified
    assert all(blobs[n].last_modified <= manifest_time for n in names)
    manifest = json.loads(container.download_blob(prefix + "manifest.json").readall())
    assert manifest["set_id"] == out["set_id"]
    assert manifest["tool"]["name"] == "ipa-backup" and manifest["tool"]["version"]
    assert manifest["targets"]["postgres"]["server_version"].startswith(str(world.pg.major))
    assert manifest["targets"]["redis"]["server_version"].count(".") == 2
    assert abs(manifest["captured_at_epoch"] - time.time()) < 120
    for entry in manifest["files"]:
        assert entry["size"] == blobs[prefix + entry["name"]].size
        assert len(entry["sha256"]) == 64


def test_list_verify_and_tiers(world: World) -> None:
    first = world.backup_ok()
    second = world.backup_ok()
    # The first set of a week is weekly; later ones that day are frequent (the weekly one counts as daily).
    assert first["tier"] == "weekly" and second["tier"] == "frequent"
    rows = world.sets()
    assert [r["set_id"] for r in rows] == [second["set_id"], first["set_id"]]
    assert all(r["complete"] and r["size"] > 0 and r["age_seconds"] < 600 for r in rows)
    table = world.run("list")
    assert table.returncode == 0 and "complete" in table.stdout and second["set_id"] in table.stdout
    for set_id in (None, first["set_id"]):
        result = world.run("verify", *([set_id] if set_id else []))
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"set_id": set_id or second["set_id"], "verified": True, "files": 3}


def test_drill_restores_into_scratch_targets_and_compares(world: World) -> None:
    world.backup_ok()
    keys_before = world.rcli().dbsize()
    result = world.run("drill")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["passed"] is True
    names = {c["name"]: c for c in report["checks"]}
    assert set(names) == {"checksums", "postgres row counts", "postgres checksum sample", "redis key counts", "redis content sample"}
    assert "4 tables match" in names["postgres row counts"]["detail"]
    assert report["durations"]["postgres"] > 0 and report["durations"]["redis"] > 0
    # The drill's scratch database is gone and the source Redis untouched.
    assert world.pg.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{world.database}_restore_drill'").strip() == "0"
    assert world.rcli().dbsize() == keys_before


def test_restore_named_older_set(world: World) -> None:
    first = world.backup_ok()
    world.pg.psql("DELETE FROM app.executions WHERE id > 100", world.database)
    world.backup_ok()
    result = world.run("restore", first["set_id"], "--pg-database", f"{world.database}_old", "--only", "postgres")
    assert result.returncode == 0, result.stderr
    assert world.pg.psql("SELECT count(*) FROM app.executions", f"{world.database}_old").strip() == "5000"


def test_restore_and_drill_with_a_long_tmpdir(world: World) -> None:
    """A unix socket path holds at most 107 bytes: the private redis-server must not put it under a long TMPDIR."""
    long_dir = image_workdir("long-") / ("d" * 60) / ("e" * 60)
    long_dir.mkdir(parents=True)
    for folder in (long_dir, long_dir.parent):
        os.chown(folder, IMAGE_UID, IMAGE_UID)
    inside = image_path(long_dir)
    env = {"TMPDIR": str(inside), "BACKUP_WORK_DIR": str(inside)}
    before = data.redis_fingerprint(world.rcli())
    assert world.run("backup", env=env).returncode == 0
    world.rcli().flushdb()
    restore = world.run("restore", "--only", "redis", env=env)
    assert restore.returncode == 0, restore.stderr
    assert data.redis_fingerprint(world.rcli()) == before
    drill = world.run("drill", env=env)
    assert drill.returncode == 0, drill.stderr
    assert json.loads(drill.stdout)["passed"] is True
    assert list(long_dir.iterdir()) == []  # nothing left behind


def test_redis_password_from_rediscli_auth_as_the_cronjob_sets_it(world: World) -> None:
    """The CronJob puts no password in REDIS_URL; it sets REDISCLI_AUTH from a Secret."""
    from conftest import REDIS_PASSWORD

    env = {"REDIS_URL": f"redis://127.0.0.1:{world.redis.port}/{world.redis_db}", "REDISCLI_AUTH": REDIS_PASSWORD}
    before = data.redis_fingerprint(world.rcli())
    backup = world.run("backup", env=env)
    assert backup.returncode == 0, backup.stderr
    assert REDIS_PASSWORD not in backup.stderr + backup.stdout
    world.rcli().flushdb()
    restore = world.run("restore", "--only", "redis", env=env)
    assert restore.returncode == 0, restore.stderr
    assert data.redis_fingerprint(world.rcli()) == before


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_set_dominated_by_one_table_is_streamed_into_pg_restore(world: World, jobs: str) -> None:
    """One big table: the archive is kept compressed and decompressed straight into one pg_restore.
    RESTORE_JOBS=1 streams whatever the set, since nothing could load in parallel anyway."""
    world.pg.psql("CREATE TABLE public.big AS SELECT i, md5(i::text) AS v FROM generate_series(1, 300000) i", world.database)
    before = world.pg.psql(data.PG_FINGERPRINT + ";SELECT count(*), md5(string_agg(v, '' ORDER BY i)) FROM public.big", world.database)
    out = world.backup_ok()
    world.pg.drop_database(world.database)
    result = world.run("restore", "--only", "postgres", env={"RESTORE_JOBS": jobs})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["set_id"] == out["set_id"]
    assert (
        world.pg.psql(data.PG_FINGERPRINT + ";SELECT count(*), md5(string_agg(v, '' ORDER BY i)) FROM public.big", world.database) == before
    )
    restored = [json.loads(line) for line in result.stderr.splitlines() if '"pg_restore finished"' in line]
    assert restored and restored[-1]["jobs"] == 1  # streamed: one connection, in archive order
    assert '"archive data offsets set"' not in result.stderr  # nothing staged to patch


def test_a_set_of_several_large_tables_is_staged_for_parallel_pg_restore(world: World) -> None:
    """No table dominates: the archive is staged uncompressed, its data offsets set, and pg_restore --jobs 2 loads it."""
    for name in ("big_a", "big_b", "big_c"):
        world.pg.psql(f"CREATE TABLE public.{name} AS SELECT i, md5(i::text) AS v FROM generate_series(1, 100000) i", world.database)
    before = world.pg.psql(data.PG_FINGERPRINT, world.database)
    world.backup_ok()
    world.pg.drop_database(world.database)
    result = world.run("restore", "--only", "postgres", env={"RESTORE_JOBS": "2"})
    assert result.returncode == 0, result.stderr
    assert world.pg.psql(data.PG_FINGERPRINT, world.database) == before
    assert world.pg.psql("SELECT count(*) FROM public.big_c", world.database).strip() == "100000"
    restored = [json.loads(line) for line in result.stderr.splitlines() if '"pg_restore finished"' in line]
    assert restored and restored[-1]["jobs"] == 2
    assert '"archive data offsets set"' in result.stderr
