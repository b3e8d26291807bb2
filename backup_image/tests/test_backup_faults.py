"""Every fault: a clear message, a non-zero exit, and nothing lost (the last good set stays the newest complete one)."""

from __future__ import annotations

import errno
import json
import os
import signal
import time
from pathlib import Path

import backup_testdata as data
import pytest
from azure.storage.blob import BlobServiceClient
from conftest import World, make_world, other_redis
from procs import wait_for_child

from devservices.azurite import AzuriteServer
from devservices.image import image_path, image_workdir
from devservices.postgres import PostgresServer
from devservices.process import free_port
from devservices.redis import RedisServer

pytestmark = pytest.mark.services


def error_of(stderr: str) -> dict[str, object]:
    """The final structured error line."""
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    errors = [line for line in lines if line.get("level") == "error"]
    assert errors, f"no error logged:\n{stderr}"
    return errors[-1]


def assert_nothing_lost(world: World, good_set: str, pg_before: str, redis_keys: int) -> None:
    """The good set is still the newest complete one and verifies; the sources are unchanged."""
    assert world.newest_complete() == good_set
    verify = world.run("verify")
    assert verify.returncode == 0, verify.stderr
    assert json.loads(verify.stdout)["set_id"] == good_set
    assert world.pg.psql(data.PG_FINGERPRINT, world.database) == pg_before
    assert world.rcli().dbsize() == redis_keys


@pytest.fixture
def good(world: World) -> tuple[str, str, int]:
    """A first, good backup set, the source fingerprint and the Redis key count."""
    out = world.backup_ok()
    return out["set_id"], world.pg.psql(data.PG_FINGERPRINT, world.database), int(world.rcli().dbsize())


def add_bulk(world: World, rows: int = 200_000) -> None:
    world.pg.psql(
        f"CREATE TABLE public.bulk AS SELECT i, md5(i::text) || md5((i * 7)::text) AS v FROM generate_series(1, {rows}) i", world.database
    )


def test_database_unreachable(world: World, good: tuple[str, str, int]) -> None:
    port = free_port()
    result = world.run("backup", env={"PGPORT": str(port)})
    assert result.returncode == 3
    err = error_of(result.stderr)
    assert f"PostgreSQL at 127.0.0.1:{port}/{world.database} failed" in str(err["msg"])
    assert "Connection refused" in str(err["msg"])
    assert_nothing_lost(world, *good)
    assert len(world.sets()) == 1  # checks run before anything is written


def test_wrong_password(world: World, good: tuple[str, str, int]) -> None:
    result = world.run("backup", env={"PGPASSWORD": "not-the-password"})
    assert result.returncode == 3
    assert "password authentication failed" in str(error_of(result.stderr)["msg"])
    assert_nothing_lost(world, *good)
    assert len(world.sets()) == 1


def test_pg_dump_killed_midway(world: World, good: tuple[str, str, int]) -> None:
    add_bulk(world)
    pg_before = world.pg.psql(data.PG_FINGERPRINT, world.database)
    proc = world.popen("backup", env={"BACKUP_BLOCK_SIZE_MB": "1"})
    dump_pid = wait_for_child(proc.pid, "pg_dump", "--format=custom")
    # Freeze the tool so pg_dump stalls on a full pipe, then kill pg_dump in the middle of its output.
    os.kill(proc.pid, signal.SIGSTOP)
    time.sleep(0.5)
    assert Path(f"/proc/{dump_pid}").exists(), "pg_dump finished before it could be killed"
    os.kill(dump_pid, signal.SIGKILL)
    os.kill(proc.pid, signal.SIGCONT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 3
    assert "pg_dump of" in str(error_of(stderr)["msg"]) and "killed by signal SIGKILL" in str(error_of(stderr)["msg"])
    assert_nothing_lost(world, good[0], pg_before, good[2])
    # The failed run left no committed dump blob and no manifest.
    assert [s["complete"] for s in world.sets()].count(True) == 1


def test_storage_unreachable_mid_upload(world: World, good: tuple[str, str, int]) -> None:
    add_bulk(world)
    pg_before = world.pg.psql(data.PG_FINGERPRINT, world.database)
    proc = world.popen("backup", env={"BACKUP_BLOCK_SIZE_MB": "1", "BACKUP_UPLOAD_CONCURRENCY": "1", "BACKUP_PROGRESS_SECONDS": "0"})
    assert proc.stderr is not None
    lines = []
    # Wait until several 1 MB blocks of the dump went out, then cut storage off mid-upload.
    while True:
        line = proc.stderr.readline()
        assert line, "backup ended before the upload was under way:\n" + "".join(lines)
        lines.append(line)
        entry = json.loads(line)
        if "postgres.dump.zst" in str(entry.get("file")) and int(entry.get("bytes", 0)) >= 4_000_000:
            break
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        world.blob.stop()
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    try:
        _, stderr = proc.communicate(timeout=120)
    finally:
        world.blob.start()
    assert "uploaded weekly" not in stderr and "uploaded frequent" not in stderr  # the dump blob never completed
    assert proc.returncode == 4
    msg = str(error_of(stderr)["msg"])
    assert "blob storage unreachable or refused while uploading" in msg and "postgres.dump.zst" in msg
    assert_nothing_lost(world, good[0], pg_before, good[2])


def test_storage_unreachable_from_the_start(world: World, good: tuple[str, str, int]) -> None:
    result = world.run(
        "backup", env={"AZURE_STORAGE_CONNECTION_STRING": world.blob.connection_string.replace(str(world.blob.port), str(free_port()))}
    )
    assert result.returncode == 4
    assert "blob storage unreachable" in str(error_of(result.stderr)["msg"])
    assert_nothing_lost(world, *good)


def _container(world: World):  # type: ignore[no-untyped-def]
    return BlobServiceClient.from_connection_string(world.blob.connection_string).get_container_client(world.container)


def test_corrupted_blob_is_refused_before_any_target_is_touched(world: World, good: tuple[str, str, int], redis8: RedisServer) -> None:
    out = world.backup_ok()
    blob = _container(world).get_blob_client(f"{out['tier']}/{out['set_id']}/redis.rdb.zst")
    body = bytearray(blob.download_blob().readall())
    body[len(body) // 2] ^= 0xFF
    blob.upload_blob(bytes(body), overwrite=True)

    verify = world.run("verify", out["set_id"])
    assert verify.returncode == 5
    assert f"checksum mismatch in set {out['set_id']}: redis.rdb.zst" in str(error_of(verify.stderr)["msg"])
    scratch_db = f"{world.database}_target"
    # Another server: the set's Redis database keeps its number, and it must be empty there.
    target_redis = redis8.url_for(0)
    target = other_redis(redis8, world.redis_db)
    target.flushdb()
    restore = world.run("restore", out["set_id"], "--pg-database", scratch_db, "--redis-url", target_redis)
    assert restore.returncode == 5
    assert "checksum mismatch" in str(error_of(restore.stderr)["msg"]) or "corrupted" in str(error_of(restore.stderr)["msg"])
    # Postgres comes first in the set and verified fine, yet no target was touched.
    assert world.pg.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{scratch_db}'").strip() == "0"
    assert target.dbsize() == 0
    # The older good set still restores.
    ok = world.run("restore", good[0], "--pg-database", scratch_db, "--redis-url", target_redis)
    assert ok.returncode == 0, ok.stderr
    assert world.pg.psql(data.PG_FINGERPRINT, scratch_db) == good[1]
    assert target.dbsize() == good[2]
    target.flushdb()


def test_a_work_dir_too_small_for_the_set_is_refused_before_the_download(world: World, good: tuple[str, str, int]) -> None:
    out = world.backup_ok()
    blob = _container(world).get_blob_client(f"{out['tier']}/{out['set_id']}/manifest.json")
    manifest = json.loads(blob.download_blob().readall())
    for entry in manifest["files"]:
        if entry["name"] == "postgres.dump.zst":
            entry["raw_size"] = 10**15  # a petabyte database: more than any work dir here holds
    manifest["targets"]["postgres"]["largest_table_share"] = 0.1  # many tables: staged uncompressed for --jobs
    blob.upload_blob(json.dumps(manifest).encode(), overwrite=True)
    scratch_db = f"{world.database}_big"
    result = world.run("restore", out["set_id"], "--pg-database", scratch_db, "--only", "postgres")
    assert result.returncode == 2
    message = str(error_of(result.stderr)["msg"])
    assert f"set {out['set_id']} needs about 105000" in message and "MB there uncompressed" in message
    assert "larger work volume" in message and "BACKUP_WORK_DIR" in message
    assert '"downloaded ' not in result.stderr  # refused up front: no file was downloaded
    assert world.pg.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{scratch_db}'").strip() == "0"
    assert world.pg.psql(data.PG_FINGERPRINT, world.database) == good[1]


def test_disk_full_while_writing_is_a_clear_error(tmp_path: Path) -> None:
    from ipa_backup.errors import ConfigError
    from ipa_backup.sets import _disk_errors

    full = pytest.raises(ConfigError, match=r"No space left on device: give the restore a larger work volume")
    with full, _disk_errors(tmp_path / "postgres.dump"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with pytest.raises(PermissionError), _disk_errors(tmp_path / "postgres.dump"):  # other errors pass through
        raise PermissionError(errno.EACCES, "denied")


def test_missing_manifest_makes_a_set_incomplete(world: World, good: tuple[str, str, int]) -> None:
    out = world.backup_ok()
    _container(world).delete_blob(f"{out['tier']}/{out['set_id']}/manifest.json")
    rows = world.sets()
    assert rows[0]["set_id"] == out["set_id"] and rows[0]["complete"] is False
    assert "INCOMPLETE" in world.run("list").stdout
    named = world.run("restore", out["set_id"], "--pg-database", f"{world.database}_x", "--only", "postgres")
    assert named.returncode == 5
    assert f"backup set {out['set_id']} is incomplete: it has no manifest.json" in str(error_of(named.stderr)["msg"])
    assert_nothing_lost(world, *good)  # the default is the older complete set


def test_unknown_set_id(world: World, good: tuple[str, str, int]) -> None:
    for command in ("verify", "restore"):
        result = world.run(command, "20200101T000000Z-abcdef")
        assert result.returncode == 5
        assert "backup set '20200101T000000Z-abcdef' does not exist" in str(error_of(result.stderr)["msg"])
    assert_nothing_lost(world, *good)


def test_non_empty_targets_are_refused_without_force(world: World, good: tuple[str, str, int]) -> None:
    world.pg.psql("INSERT INTO public.no_pk VALUES ('marker', -1)", world.database)
    pg_now = world.pg.psql(data.PG_FINGERPRINT, world.database)
    result = world.run("restore")
    assert result.returncode == 6
    assert f"PostgreSQL target database '{world.database}' is not empty" in str(error_of(result.stderr)["msg"])
    empty_db = f"{world.database}_empty"
    redis_only = world.run("restore", "--pg-database", empty_db)
    assert redis_only.returncode == 6
    assert f"Redis target 127.0.0.1:{world.redis.port}/{world.redis_db} is not empty" in str(error_of(redis_only.stderr)["msg"])
    assert world.pg.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{empty_db}'").strip() == "0"
    assert_nothing_lost(world, good[0], pg_now, good[2])
    forced = world.run("restore", "--force")
    assert forced.returncode == 0, forced.stderr
    assert world.pg.psql(data.PG_FINGERPRINT, world.database) == good[1]


def test_redis_authentication_failure(world: World, good: tuple[str, str, int]) -> None:
    result = world.run("backup", env={"REDIS_URL": world.redis.url_for(world.redis_db, password="wrong")})
    assert result.returncode == 3
    msg = str(error_of(result.stderr)["msg"])
    assert f"Redis at 127.0.0.1:{world.redis.port}/{world.redis_db} rejected the credentials" in msg
    assert "wrong" not in msg.replace("WRONGPASS", "")  # the password is never logged
    assert_nothing_lost(world, *good)
    assert len(world.sets()) == 1


def test_pg_dump_older_than_server(pg17: PostgresServer, redis_srv: RedisServer, blob: AzuriteServer) -> None:
    """An image whose newest pg_dump is older than the server refuses the backup before writing anything."""
    clients = image_workdir("clients-")
    (clients / "15").symlink_to("/usr/lib/postgresql/15")  # the image's 15 client only
    with make_world(pg17, redis_srv, blob) as world:
        result = world.run("backup", env={"PG_CLIENTS_ROOT": image_path(clients)})
        assert result.returncode == 3, result.stderr
        msg = str(error_of(result.stderr)["msg"])
        assert "PostgreSQL 17" in msg and "15" in msg, msg
        listing = world.run("list")  # refused before the container was even created
        assert listing.returncode == 4 and "does not exist" in listing.stderr


def test_the_drill_never_drops_a_database_not_named_for_it(world: World, good: tuple[str, str, int]) -> None:
    """The drill drops and recreates its scratch database: pointed at the application's, it refuses."""
    result = world.run("drill", env={"DRILL_PGDATABASE": f"{world.database}_other"})
    assert result.returncode == 2, result.stderr
    assert "must end with '_restore_drill'" in str(error_of(result.stderr)["msg"])
    assert world.pg.psql(data.PG_FINGERPRINT, world.database) == good[1]
