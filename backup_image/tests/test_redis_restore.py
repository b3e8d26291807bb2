"""Redis restore across versions, with database numbers kept, memory bounded by bytes, and a target that a
failed `restore --force` leaves exactly as it was. The tool runs inside the image (its redis-server is 8.0);
targets are this machine's Redis 7 and Debian 13's Redis 8."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import backup_testdata as data
import pytest
import redis
from azure.storage.blob import BlobServiceClient
from conftest import World, make_world
from ipa_backup import redis_ops
from ipa_backup.errors import TargetError

from devservices.azurite import AzuriteServer
from devservices.postgres import PostgresServer
from devservices.process import ManagedProcess, free_port, require_binary
from devservices.redis import RedisServer, server_version

pytestmark = pytest.mark.services

SECRET = b"S3CRET-value-bytes-"  # in values: must never reach the logs
KEY_SECRET = "private-key-name-"  # in key names: the logs name keys only by a hash


def error_of(stderr: str) -> dict[str, Any]:
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    errors = [line for line in lines if line.get("level") == "error"]
    assert errors, f"no error logged:\n{stderr}"
    return errors[-1]


def logged(stderr: str, msg: str) -> list[dict[str, Any]]:
    return [e for e in (json.loads(line) for line in stderr.splitlines() if line.startswith("{")) if e.get("msg") == msg]


def conn(server: RedisServer, db: int) -> redis.Redis:
    return redis.Redis(host=server.host, port=server.port, password=server.password, db=db, protocol=2)


def keyspace(r: redis.Redis) -> dict[int, int]:
    return {int(k[2:]): int(v["keys"]) for k, v in r.info("keyspace").items()}


def dbs_with_keys(server: RedisServer) -> dict[int, int]:
    with conn(server, 0) as r:
        return keyspace(r)


def state(r: redis.Redis) -> dict[bytes, Any]:
    """Everything a restore must keep: the shared fingerprint plus exact expiry times, stream ids, consumer groups
    with their consumers and pending entries, and HyperLogLog counts."""
    hll = {b"pfcount:" + key: r.pfcount(key) for key in r.scan_iter(match="hll:*")}  # first: PFCOUNT caches in the value
    out: dict[bytes, Any] = {k: (*v, r.pexpiretime(k)) for k, v in data.redis_fingerprint(r).items()} | hll
    raw = redis.Redis(connection_pool=r.connection_pool)
    raw.response_callbacks.clear()
    for key in r.scan_iter(_type="stream"):
        out[b"stream-raw:" + key] = raw.execute_command("XRANGE", key, "-", "+")  # field order and repeats
        info = r.xinfo_stream(key)
        groups = []
        for g in r.xinfo_groups(key):
            consumers = sorted((c["name"], c["pending"]) for c in r.xinfo_consumers(key, g["name"]))
            pending = [(p["message_id"], p["consumer"], p["times_delivered"]) for p in r.xpending_range(key, g["name"], "-", "+", 10_000)]
            groups.append((g["name"], g["last-delivered-id"], g["entries-read"], g["pending"], consumers, pending))
        out[b"stream-meta:" + key] = (
            info["length"],
            info["last-generated-id"],
            info["max-deleted-entry-id"],
            info["entries-added"],
            groups,
        )
    return out


def load_every_type(r: redis.Redis) -> None:
    """Beyond load_redis: consumer groups with consumers and pending entries, deleted stream entries, an empty
    stream, HyperLogLog, exact float scores, empty values, millisecond TTLs, and collections big enough to be
    copied in pieces."""
    r.xreadgroup("workers", "alice", {"stream:events": ">"}, count=7)
    r.xreadgroup("workers", "bob", {"stream:events": ">"}, count=3)
    r.xgroup_createconsumer("stream:events", "workers", "carol-idle")
    r.xgroup_create("stream:events", "auditors", id="0")
    r.xreadgroup("auditors", "dave", {"stream:events": ">"}, count=2)
    first = r.xrange("stream:events", count=20)
    r.xdel("stream:events", first[15][0], first[16][0])  # never delivered: max-deleted-entry-id moves
    r.xadd("stream:dup-fields", {"a": "1"})
    r.execute_command("XADD", "stream:dup-fields", "*", "f", "1", "f", "2")  # a field name twice in one entry
    r.xgroup_create("stream:empty", "g", id="$", mkstream=True)
    r.pfadd("hll:visitors", *[f"user-{i}" for i in range(5000)])
    r.pfadd("hll:small", "a", "b", "c")
    r.zadd(
        "zset:floats",
        {
            "tenth": 0.1,
            "third": 1 / 3,
            "tiny": 5e-324,
            "inf": float("inf"),
            "-inf": float("-inf"),
            "neg": -2.5,
            "big": 1.7976931348623157e308,
        },
    )
    r.set("string:empty", b"")
    r.set("string:ms-ttl", b"x", px=987_654_321)
    r.hset("hash:big", mapping={f"field-{i}": f"value-{i}-" + "v" * 90 for i in range(30_000)})
    r.rpush("list:big", *[f"item-{i}-" + "i" * 90 for i in range(30_000)])
    r.sadd("set:big", *[f"member-{i}-" + "m" * 90 for i in range(30_000)])
    r.zadd("zset:big", {f"player-{i}-" + "p" * 90: i / 7 for i in range(30_000)})
    r.pexpire("zset:big", 50_000_000)
    r.set("string:big", os.urandom(3 << 20), ex=90_000)
    pipe = r.pipeline(transaction=False)
    for i in range(1, 20_001):
        pipe.xadd("stream:big", {"n": str(i), "payload": "y" * 100}, id=f"{i}-1")
    pipe.execute()
    r.xgroup_create("stream:big", "readers", id="0")
    r.xreadgroup("readers", "erin", {"stream:big": ">"}, count=15_000)


def restore_redis(world: World, *args: str, env: dict[str, str] | None = None) -> Any:
    return world.run("restore", "--only", "redis", *args, env=env, timeout=600)


def test_every_type_from_the_images_redis8_into_redis7(world: World) -> None:
    """The image's redis-server is 8.0; its DUMP payloads are refused by Redis 7, so keys are rebuilt natively."""
    r = world.rcli()
    load_every_type(r)
    before = state(world.rcli())
    world.backup_ok()
    r.flushdb()
    result = restore_redis(world, env={"RESTORE_REDIS_BATCH_MB": "1"})  # 1 MiB: the big keys go in pieces
    assert result.returncode == 0, result.stderr
    assert logged(result.stderr, "redis restore plan")[0]["method"] == "native commands"
    assert state(world.rcli()) == before
    assert world.rcli().pttl("session:1") == -1


def test_every_type_into_redis8_with_dump_restore(world: World, redis8: RedisServer) -> None:
    r = world.rcli()
    load_every_type(r)
    before = state(world.rcli())
    world.backup_ok()
    target = conn(redis8, world.redis_db)
    target.flushdb()
    try:
        result = restore_redis(world, "--redis-url", redis8.url_for(0))
        assert result.returncode == 0, result.stderr
        assert logged(result.stderr, "redis restore plan")[0]["method"] == "DUMP/RESTORE"
        assert state(target) == before
    finally:
        target.flushdb()


def test_what_redis7_cannot_hold_is_refused_before_anything_is_written(
    pg_server: PostgresServer, redis7: RedisServer, redis8: RedisServer, blob: AzuriteServer
) -> None:
    """A vector set and hash field TTLs exist only in Redis 8 (7.4): into Redis 7 the restore refuses up front,
    naming types and counts but no key; into Redis 8 they round-trip."""
    with make_world(pg_server, redis8, blob) as w8:
        r = w8.rcli()
        r.execute_command("VADD", KEY_SECRET + "vectors", "VALUES", 3, 0.1, 0.2, 0.3, "element-1")
        r.execute_command("VADD", KEY_SECRET + "vectors", "VALUES", 3, 0.3, 0.1, 0.2, "element-2")
        r.hset(KEY_SECRET + "hash", mapping={"a": SECRET, "b": "2"})
        r.execute_command("HEXPIRE", KEY_SECRET + "hash", 100_000, "FIELDS", 1, "a")
        w8.backup_ok()
        target7 = conn(redis7, w8.redis_db)
        target7.flushdb()
        layout_before = dbs_with_keys(redis7)
        refused = w8.run("restore", "--only", "redis", "--redis-url", redis7.url_for(0))
        assert refused.returncode == 6, refused.stderr
        msg = str(error_of(refused.stderr)["msg"])
        assert f"1 key(s) of type vectorset in db {w8.redis_db}" in msg
        assert f"1 hash(es) with field expirations in db {w8.redis_db}" in msg
        assert "Nothing was written" in msg and "Redis 8.0 or newer" in msg
        assert KEY_SECRET not in refused.stderr and SECRET.decode() not in refused.stderr
        assert dbs_with_keys(redis7) == layout_before and target7.dbsize() == 0

        before = {k: r.type(k) for k in r.scan_iter()}
        r.flushdb()
        restored = w8.run("restore", "--only", "redis", "--redis-url", redis8.url_for(0))
        assert restored.returncode == 0, restored.stderr
        assert {k: r.type(k) for k in r.scan_iter()} == before
        assert r.execute_command("VCARD", KEY_SECRET + "vectors") == 2
        assert 0 < r.execute_command("HTTL", KEY_SECRET + "hash", "FIELDS", 2, "a", "b")[0] <= 100_000
        assert r.execute_command("HTTL", KEY_SECRET + "hash", "FIELDS", 1, "b") == [-1]


def test_database_numbers_are_kept_whatever_redis_url_says(world: World) -> None:
    """A set holding only db N goes back into db N although REDIS_URL (as in the CronJob) ends in /0."""
    assert world.redis_db != 0
    before = data.redis_fingerprint(world.rcli())
    out = world.backup_ok()
    manifest = read_manifest(world, out)
    assert manifest["targets"]["redis"]["keyspace"] == {str(world.redis_db): len(before)}
    assert manifest["targets"]["redis"]["databases"] == 16
    other = world.rcli(0)
    other.set("db0:marker", "stays")
    try:
        world.rcli().flushdb()
        result = restore_redis(world, env={"REDIS_URL": world.redis.url_for(0)})
        assert result.returncode == 0, result.stderr
        assert data.redis_fingerprint(world.rcli()) == before
        assert other.keys() == [b"db0:marker"]
    finally:
        other.delete("db0:marker")


@contextmanager
def own_redis(databases: int, *config: str) -> Iterator[RedisServer]:
    """This machine's Redis 7 with `databases` databases (the shared servers have 16)."""
    binary = require_binary("redis-server", "install redis-server")
    folder = Path(tempfile.mkdtemp(prefix="redis-restore-test-"))
    port = free_port()
    conf = folder / "redis.conf"
    conf.write_text(
        "\n".join(
            [
                "bind 127.0.0.1",
                f"port {port}",
                f"dir {folder}",
                'save ""',
                "appendonly no",
                f"databases {databases}",
                "repl-diskless-sync-delay 0",
                *config,
            ]
        )
        + "\n"
    )
    process = ManagedProcess("redis-server", [binary, str(conf)], folder / "redis.log", cwd=folder).start()
    try:
        process.wait_for_port(port)
        yield RedisServer("127.0.0.1", port, None, server_version([binary]), process)
    finally:
        process.stop()


def read_manifest(world: World, out: dict[str, Any]) -> dict[str, Any]:
    blob = container(world).get_blob_client(f"{out['tier']}/{out['set_id']}/manifest.json")
    manifest: dict[str, Any] = json.loads(blob.download_blob().readall())
    return manifest


def write_manifest(world: World, out: dict[str, Any], manifest: dict[str, Any]) -> None:
    blob = container(world).get_blob_client(f"{out['tier']}/{out['set_id']}/manifest.json")
    blob.upload_blob(json.dumps(manifest).encode(), overwrite=True)


def container(world: World) -> Any:
    return BlobServiceClient.from_connection_string(world.blob.connection_string).get_container_client(world.container)


def test_a_source_with_twenty_databases_round_trips(world: World, redis7: RedisServer) -> None:
    with own_redis(32) as source:
        for db in (0, 7, 19):
            data.load_redis(conn(source, db))
            conn(source, db).set(f"which-db-{db}", db)
        before = {db: data.redis_fingerprint(conn(source, db)) for db in (0, 7, 19)}
        env = {"REDIS_URL": source.url_for(0)}
        out = world.run("backup", env=env)
        assert out.returncode == 0, out.stderr
        set_out = json.loads(out.stdout)
        manifest = read_manifest(world, set_out)
        assert manifest["targets"]["redis"]["databases"] == 32
        assert sorted(manifest["targets"]["redis"]["keyspace"]) == ["0", "19", "7"]

        conn(source, 0).flushall()
        result = restore_redis(world, env=env)
        assert result.returncode == 0, result.stderr
        assert {db: data.redis_fingerprint(conn(source, db)) for db in (0, 7, 19)} == before

        # A set from before the manifest recorded the databases: the helper is started again with more.
        old = json.loads(json.dumps(manifest))
        del old["targets"]["redis"]["databases"], old["targets"]["redis"]["keyspace"]
        write_manifest(world, set_out, old)
        conn(source, 0).flushall()
        result = restore_redis(world, env=env)
        assert result.returncode == 0, result.stderr
        assert logged(result.stderr, "the RDB holds more databases than the temporary redis-server had; starting it again")
        assert {db: data.redis_fingerprint(conn(source, db)) for db in (0, 7, 19)} == before

        # A target with 16 databases can't hold db 19: refused before the download.
        write_manifest(world, set_out, manifest)
        layout = dbs_with_keys(redis7)
        refused = restore_redis(world, "--redis-url", redis7.url_for(0), env=env)
        assert refused.returncode == 6
        assert "has 16 databases, but the set holds database 19" in str(error_of(refused.stderr)["msg"])
        assert '"downloaded ' not in refused.stderr
        assert dbs_with_keys(redis7) == layout


def change_live_data(r: redis.Redis) -> None:
    """What the application wrote after the backup: the state a failed --force must leave untouched."""
    r.delete("session:5", "queue:jobs")
    r.set("session:6", "changed after the backup")
    r.hset("user:1", "plan", "enterprise")
    r.set("live:new", "written after the backup", ex=5000)


def test_force_replaces_a_live_database_through_a_staging_database(world: World) -> None:
    backup_state = data.redis_fingerprint(world.rcli())
    world.backup_ok()
    change_live_data(world.rcli())
    layout = set(dbs_with_keys(world.redis))
    result = restore_redis(world, "--force")
    assert result.returncode == 0, result.stderr
    plan = logged(result.stderr, "redis restore plan")[0]
    staging = plan["staging"][str(world.redis_db)]
    assert staging != world.redis_db and staging not in layout
    assert logged(result.stderr, "restored copies swapped in")
    assert data.redis_fingerprint(world.rcli()) == backup_state
    assert set(dbs_with_keys(world.redis)) == layout  # the replaced data is gone with the staging db

    # --keep-old leaves the replaced data in the staging database and says which.
    change_live_data(world.rcli())
    live = data.redis_fingerprint(world.rcli())
    kept = restore_redis(world, "--force", "--keep-old")
    assert kept.returncode == 0, kept.stderr
    old_db = logged(kept.stderr, "the data this restore replaced is kept")[0]["kept_in_db"]
    try:
        assert data.redis_fingerprint(world.rcli()) == backup_state
        assert data.redis_fingerprint(world.rcli(old_db)) == live
    finally:
        world.rcli(old_db).flushdb()


def test_force_is_refused_up_front_when_swapdb_is_not_allowed(world: World) -> None:
    world.backup_ok()
    change_live_data(world.rcli())
    before, layout = data.redis_fingerprint(world.rcli()), dbs_with_keys(world.redis)
    admin = world.rcli(0)
    admin.acl_setuser("restorer", enabled=True, passwords=["+restorer-pw"], keys=["*"], channels=["*"], commands=["+@all", "-swapdb"])
    try:
        url = f"redis://restorer:restorer-pw@127.0.0.1:{world.redis.port}/{world.redis_db}"
        result = restore_redis(world, "--force", env={"REDIS_URL": url})
        assert result.returncode == 6
        msg = str(error_of(result.stderr)["msg"])
        assert "--force needs SWAPDB" in msg and "no permissions" in msg and "+swapdb" in msg
        assert '"downloaded ' not in result.stderr  # the manifest names the databases: refused before the download
    finally:
        admin.acl_deluser("restorer")
    assert data.redis_fingerprint(world.rcli()) == before and dbs_with_keys(world.redis) == layout


def test_force_is_refused_up_front_without_a_free_database(world: World) -> None:
    with own_redis(2) as server:
        data.load_redis(conn(server, 0))
        env = {"REDIS_URL": server.url_for(0)}
        assert world.run("backup", env=env).returncode == 0
        change_live_data(conn(server, 0))
        conn(server, 1).set("another-application", "its data")
        before = [data.redis_fingerprint(conn(server, db)) for db in (0, 1)]
        result = restore_redis(world, "--force", env=env)
        assert result.returncode == 6
        msg = str(error_of(result.stderr)["msg"])
        assert "needs as many empty databases to stage the restore in, but only 0 of its 2" in msg
        assert [data.redis_fingerprint(conn(server, db)) for db in (0, 1)] == before


def add_bulk(r: redis.Redis, keys: int = 20_000, size: int = 1000) -> None:
    pipe = r.pipeline(transaction=False)
    for i in range(keys):
        pipe.set(f"{KEY_SECRET}{i}", SECRET + random.randbytes(size))
    pipe.execute()


def test_force_is_refused_up_front_when_maxmemory_has_no_room(world: World) -> None:
    add_bulk(world.rcli(), keys=5000)
    world.backup_ok()
    change_live_data(world.rcli())
    before, layout = data.redis_fingerprint(world.rcli()), dbs_with_keys(world.redis)
    admin = world.rcli(0)
    used = int(admin.info("memory")["used_memory"])
    admin.config_set("maxmemory", used + 1_000_000)
    try:
        result = restore_redis(world, "--force")
        assert result.returncode == 6
        msg = str(error_of(result.stderr)["msg"])
        assert "maxmemory" in msg and "nothing was written" in msg
    finally:
        admin.config_set("maxmemory", 0)
    assert data.redis_fingerprint(world.rcli()) == before and dbs_with_keys(world.redis) == layout


def run_until_staging(
    world: World, fault: Callable[[int, int], None], restore: tuple[str, ...] = ("--only", "redis", "--force")
) -> tuple[int, str]:
    """Start `restore --force` (of Redis alone by default); once keys land in a staging database, freeze the
    tool, apply `fault(tool pid, staging db)`, let it go on. Returns its exit code and log."""
    admin = world.rcli(0)
    layout = set(keyspace(admin))
    tool = world.popen("restore", *restore, env={"RESTORE_REDIS_BATCH_MB": "1"})
    try:
        deadline = time.monotonic() + 300
        staging = None
        while staging is None:
            assert tool.poll() is None, f"the restore ended before it staged anything:\n{tool.communicate()[1]}"
            assert time.monotonic() < deadline, "no staging database appeared"
            staging = next((db for db, n in keyspace(admin).items() if db not in layout and n), None)
        os.kill(tool.pid, signal.SIGSTOP)
        try:
            fault(tool.pid, staging)
        finally:
            os.kill(tool.pid, signal.SIGCONT)
        _, stderr = tool.communicate(timeout=300)
    finally:
        if tool.poll() is None:
            tool.kill()
            tool.wait()
    return tool.returncode, stderr


@pytest.mark.parametrize("fault", ["maxmemory", "SIGTERM", "extra key before the swap"])
def test_force_failing_midway_leaves_the_target_as_it_was(world: World, fault: str) -> None:
    """A failure or a stop while the staging database fills, or a copy that fails its check before the swap:
    the target database keeps exactly its keys, the staging database is emptied again, no value is logged."""
    add_bulk(world.rcli())
    world.backup_ok()
    change_live_data(world.rcli())
    before, layout = data.redis_fingerprint(world.rcli()), dbs_with_keys(world.redis)
    admin = world.rcli(0)

    def inject(pid: int, staging: int) -> None:
        if fault == "maxmemory":
            admin.config_set("maxmemory", 1)  # every further write: OOM
        elif fault == "SIGTERM":
            os.kill(pid, signal.SIGTERM)  # Kubernetes at activeDeadlineSeconds
        else:
            world.rcli(staging).set("written by someone else", "x")

    try:
        code, stderr = run_until_staging(world, inject)
    finally:
        admin.config_set("maxmemory", 0)
    assert code == (143 if fault == "SIGTERM" else 6), stderr
    msg = str(error_of(stderr)["msg"])
    if fault != "SIGTERM":
        assert f"restoring Redis db {world.redis_db} into 127.0.0.1:{world.redis.port} (staged in db" in msg
        assert {
            "maxmemory": "OutOfMemoryError: command not allowed when used memory > 'maxmemory'",
            "extra key before the swap": "the target database holds",
        }[fault] in msg
    assert logged(stderr, "partial restore discarded")
    assert data.redis_fingerprint(world.rcli()) == before
    assert dbs_with_keys(world.redis) == layout
    assert SECRET.decode() not in stderr and KEY_SECRET not in stderr


def peak_rss(pid: int) -> int:
    """VmHWM of a running process, polled until it exits (the peak is kept by the kernel)."""
    peak = 0
    while True:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return peak
        line = next((x for x in status.splitlines() if x.startswith("VmHWM:")), None)
        if line is None:
            return peak  # exited: a zombie has no memory
        peak = max(peak, int(line.split()[1]) * 1024)
        time.sleep(0.01)


def test_memory_is_bounded_by_bytes_not_keys(world: World, redis8: RedisServer) -> None:
    """100 values of 10 MB, which the DUMP payloads can't compress: the tool stays far below the 1 GB they hold."""
    r = world.rcli()
    for i in range(100):
        block = random.randbytes(256 << 10)  # zstd finds the repeats (small set), Redis's LZF can't (big payloads)
        r.set(f"big:{i}", block * 40)
    world.backup_ok()
    target8 = conn(redis8, world.redis_db)
    target8.flushdb()
    try:
        for target, url in ((target8, redis8.url_for(0)), (world.rcli(), world.redis.url_for(0))):
            if target is not target8:
                target.flushdb()
            tool = world.popen("restore", "--only", "redis", "--redis-url", url)
            peak = peak_rss(tool.pid)
            _, stderr = tool.communicate(timeout=600)
            assert tool.returncode == 0, stderr
            assert len(list(target.scan_iter("big:*"))) == 100 and target.strlen("big:7") == 10 << 20
            print(f"peak RSS {peak / 1e6:.0f} MB restoring into {url.rsplit('@', 1)[-1]}")
            assert peak < 400e6, f"the tool used {peak / 1e6:.0f} MB to restore 1 GB of values"
    finally:
        target8.flushdb()


def test_drill_into_redis7_checks_counts_and_content(world: World) -> None:
    load_every_type(world.rcli())
    world.backup_ok()
    result = world.run("drill", timeout=600)
    assert result.returncode == 0, result.stderr
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["redis key counts"]["passed"] and checks["redis content sample"]["passed"]
    assert "sampled keys in 1 database(s) match" in checks["redis content sample"]["detail"]
    with own_redis(16) as scratch:  # DRILL_REDIS_URL: a Redis 7, which the image's Redis 8 payloads don't fit
        result = world.run("drill", env={"DRILL_REDIS_URL": scratch.url_for(0)}, timeout=600)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["passed"] is True
        assert logged(result.stderr, "redis restore plan")[0]["method"] == "native commands"
        assert dbs_with_keys(scratch) == {}  # the drill empties what it wrote


# Without servers: the pieces the restore decides with.


def test_versions_older_than_6_2_are_refused() -> None:
    with pytest.raises(TargetError, match=r"runs 6\.0\.16; the restore supports Redis 6\.2 and newer"):
        redis_ops.require_supported("6.0.16", "h:1")
    assert redis_ops.require_supported("6.2.14", "h:1") == (6, 2, 14)
    assert redis_ops.require_supported("8.2.0-rc1", "h:1")[:2] == (8, 2)


def test_rdb_versions() -> None:
    assert [redis_ops.rdb_version(redis_ops.version_of(v)) for v in ("6.2.7", "7.0.15", "7.2.4", "7.4.1", "8.0.2")] == [9, 10, 11, 12, 12]


def test_batches_are_bounded_by_bytes() -> None:
    items = [redis_ops._Item(b"k%d" % i, "string", 0, size) for i, size in enumerate([10, 10, 10, 100, 5, 5])]
    sizes = [[i.size for i in batch] for batch in redis_ops.batches(items, 25)]
    assert sizes == [[10, 10], [10], [100], [5, 5]]


def test_keys_are_logged_only_as_a_hash() -> None:
    assert redis_ops.label(b"user:alice@example.com") == "key sha256:" + hashlib.sha256(b"user:alice@example.com").hexdigest()[:12]


def test_helper_databases_from_the_manifest() -> None:
    assert redis_ops.helper_databases({}) == 16
    assert redis_ops.helper_databases({"databases": 32, "keyspace": {"19": 4}}) == 32
    assert redis_ops.helper_databases({"keyspace": {"40": 1}}) == 41
    assert redis_ops.manifest_dbs({"keyspace": {"0": 3, "5": 0}}) == {0: 3}
    assert redis_ops.manifest_dbs({}) is None
