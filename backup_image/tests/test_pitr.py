"""pitr-restore with the image's own PostgreSQL servers, against real PostgreSQL 15 and 17, the WAL
stream and Azurite: restore --latest after a lost cluster (the RPO measured), --to-time a second
before an accidental DELETE, and every refusal before the target directory is touched."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient
from conftest import World, make_world
from pitr_support import TICKS, Writer, image_dir, newest_pieces, restored_server, wait_for, wal_blob_names, wal_stream
from procs import descendants, wait_for_child

from devservices.azurite import AzuriteServer
from devservices.image import host_path
from devservices.postgres import PostgresServer
from devservices.redis import RedisServer

pytestmark = pytest.mark.services
FAST = {"BASE_BACKUP_CHECKPOINT": "fast"}


@pytest.fixture(params=[15, 17])
def pitr_world(request: pytest.FixtureRequest, redis_srv: RedisServer, blob: AzuriteServer) -> Iterator[World]:
    pg: PostgresServer = request.getfixturevalue(f"pg{request.param}")
    with make_world(pg, redis_srv, blob) as world:
        pg.psql(TICKS, world.database)
        yield world


@pytest.fixture
def world15(pg15: PostgresServer, redis_srv: RedisServer, blob: AzuriteServer) -> Iterator[World]:
    with make_world(pg15, redis_srv, blob) as world:
        pg15.psql(TICKS, world.database)
        yield world


def base_backup(world: World) -> dict[str, object]:
    result = world.run("base-backup", env=FAST)
    assert result.returncode == 0, result.stderr
    out: dict[str, object] = json.loads(result.stdout)
    return out


def restore(world: World, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, object] | str]:
    result = world.run("pitr-restore", *args, env=env, timeout=300)
    if result.returncode == 0:
        return 0, json.loads(result.stdout)
    return result.returncode, result.stderr


def snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_latest_after_a_lost_cluster_restores_all_but_the_last_seconds(pitr_world: World) -> None:
    """A writer commits continuously; the whole cluster (server and stream) is lost at once; the
    restore --latest holds every row committed up to the last partial upload (the RPO)."""
    world = pitr_world
    with wal_stream(world) as stream:
        base_backup(world)
        with Writer(world.pg, world.database) as writer:
            time.sleep(1.5)  # a few partial uploads while the writer commits
            world.pg.psql("SELECT pg_switch_wal()")  # and one completed segment
            time.sleep(1.5)
            disaster = time.time()
            stream.kill()  # the region is gone: the stream's unuploaded spool with it
        confirmed = [c for c in writer.confirmed if c[1] <= disaster]
    pgdata = image_dir("restore") + "/data"
    started = time.monotonic()
    code, out = restore(world, "--latest", "--pgdata", pgdata)
    restore_seconds = time.monotonic() - started
    assert code == 0, out
    assert isinstance(out, dict)
    with restored_server(pgdata, world.pg.major, world.pg.password) as server:
        rows = server.psql("SELECT id, extract(epoch FROM at) FROM ticks ORDER BY id", world.database).split()
    restored = {int(r.split("|")[0]): float(r.split("|")[1]) for r in rows}
    last_id, last_at = max(restored.items())
    # Every confirmed commit up to the newest restored one is there: no holes.
    assert [i for i, _ in confirmed if i <= last_id and i not in restored] == []
    rpo = disaster - last_at
    print(f"\nPITR PostgreSQL {world.pg.major}: RPO {rpo:.2f}s, restore {restore_seconds:.1f}s, phases {out['seconds']}")
    # WAL_PARTIAL_UPLOAD_SECONDS=1 here: the loss is the last interval plus an upload, far below the 60 s goal.
    assert rpo < 5.0
    assert len(restored) >= len(confirmed) - 5 * 50


def test_accidental_delete_restored_to_a_second_before(world15: World) -> None:
    """DELETE FROM ticks at T; --to-time T-1s brings back exactly the rows committed by then."""
    world = world15
    with wal_stream(world) as stream:
        base_backup(world)
        with Writer(world.pg, world.database) as writer:
            time.sleep(2)
            t = datetime.now(UTC)
            world.pg.psql("DELETE FROM ticks", world.database)
            time.sleep(1)  # rows keep arriving after the accident
        stream.wait_caught_up(world.pg)
        assert int(world.pg.psql("SELECT count(*) FROM ticks", world.database)) < len(writer.confirmed) / 2
    target = datetime.fromtimestamp(t.timestamp() - 1, UTC)
    pgdata = image_dir("restore") + "/data"
    code, out = restore(world, "--to-time", target.isoformat().replace("+00:00", "Z"), "--pgdata", pgdata)
    assert code == 0, out
    with restored_server(pgdata, 15, world.pg.password) as server:
        restored = {int(x) for x in server.psql("SELECT id FROM ticks", world.database).split()}
    # Exactly the rows committed by the target: `at` is the server's clock at the insert, its commit a
    # few ms later, so a row within 50 ms of the target may go either way.
    cutoff = target.timestamp()
    assert {i for i, at in writer.confirmed if at < cutoff - 0.05} <= restored
    assert not {i for i, at in writer.confirmed if at > cutoff + 0.05} & restored
    assert len(restored) >= 5
    assert {i for i, at in writer.confirmed if cutoff + 0.05 < at < t.timestamp()}  # rows the cut really left out


def test_refusals_leave_the_target_untouched(world15: World) -> None:
    """A corrupted WAL object, a missing segment, a non-empty target without --force, a time before
    every base backup: refused with their exit codes, the target directory byte for byte as it was."""
    world = world15
    with wal_stream(world) as stream:
        base_backup(world)
        for _ in range(3):
            world.pg.psql("INSERT INTO ticks DEFAULT VALUES; SELECT pg_switch_wal()", world.database)
        world.pg.psql("INSERT INTO ticks DEFAULT VALUES", world.database)
        stream.wait_caught_up(world.pg)
    target_dir = image_dir("target")
    pgdata = host_path(target_dir)
    (pgdata / "PG_VERSION").write_text("15\n")
    (pgdata / "keep.me").write_text("the operator's data")
    os.chown(pgdata / "PG_VERSION", 10001, 10001)
    before = snapshot(pgdata)
    code, out = restore(world, "--latest", "--pgdata", target_dir)
    assert code == 6 and "is not empty" in str(out)
    code, out = restore(world, "--to-time", "2000-01-01T00:00:00Z", "--pgdata", target_dir, "--force")
    assert code == 8 and "no complete base backup" in str(out)
    code, out = restore(world, "--to-time", "2026-01-01T00:00:00", "--pgdata", target_dir, "--force")
    assert code == 2 and "no UTC offset" in str(out)
    # An image without PostgreSQL 15 programs: the restore (and a base backup) refuse the major up front.
    only17 = image_dir("only17")
    (host_path(only17) / "17").symlink_to("/usr/lib/postgresql/17")
    code, out = restore(world, "--latest", "--pgdata", target_dir, "--force", env={"PG_CLIENTS_ROOT": only17})
    assert code == 10 and "no PostgreSQL 15 server" in str(out), out
    refused = world.run("base-backup", env={**FAST, "PG_CLIENTS_ROOT": only17})
    assert refused.returncode == 10 and "needs the PostgreSQL 15 programs" in refused.stderr, refused.stderr

    container = BlobServiceClient.from_connection_string(world.blob.connection_string).get_container_client(world.container)
    segments = sorted(b.name for b in container.list_blobs(name_starts_with="wal/") if b.name.count(".") == 1)  # complete segments
    victim = segments[-2]
    blob = container.get_blob_client(victim)
    original = blob.download_blob().readall()
    meta = blob.get_blob_properties().metadata
    blob.upload_blob(original[:-8] + bytes(8), overwrite=True, metadata=meta)  # same size and metadata, other bytes
    code, out = restore(world, "--latest", "--pgdata", target_dir, "--force")
    assert code == 5 and "checksum mismatch" in str(out), out
    assert snapshot(pgdata) == before

    blob.delete_blob()
    code, out = restore(world, "--latest", "--pgdata", target_dir, "--force")
    assert code == 9 and "lacks segment" in str(out), out
    assert snapshot(pgdata) == before
    # --to-time past the gap: PostgreSQL replays up to it and stops short of the target.
    code, out = restore(world, "--to-time", datetime.now(UTC).isoformat(), "--pgdata", target_dir, "--force")
    assert code == 9 and f"missing WAL segment {victim.rsplit('/', 1)[1].removesuffix('.zst')}" in str(out), out
    assert snapshot(pgdata) == before
    assert [p.name for p in pgdata.parent.iterdir() if p.name.startswith(f".{pgdata.name}.ipa-pitr")] == []

    blob.upload_blob(original, overwrite=True, metadata=meta)
    # SIGTERM while PostgreSQL recovers: the server is stopped, the staging directory removed.
    running = world.popen("pitr-restore", "--latest", "--pgdata", target_dir, "--force")
    wait_for_child(running.pid, "postgres", timeout=120)
    running.send_signal(signal.SIGTERM)
    assert running.wait(60) == 143
    assert snapshot(pgdata) == before
    assert [p.name for p in pgdata.parent.iterdir() if p.name.startswith(f".{pgdata.name}.ipa-pitr")] == []
    assert "postgres" not in descendants(running.pid).values()

    # A newer base backup without its manifest (a run that failed midway) is never used.
    complete = next(b.name for b in container.list_blobs(name_starts_with="base/") if b.name.endswith("manifest.json"))
    container.upload_blob("base/daily/29991231T000000000Z-abcdef/base.tar.zst", b"half a tar")
    code, out = restore(world, "--latest", "--pgdata", target_dir, "--force")
    assert code == 0, out
    assert isinstance(out, dict)
    assert complete == f"base/{out['base_backup']}/manifest.json"
    kept = Path(str(host_path(str(out["previous_pgdata"]))))
    assert snapshot(kept) == before
    with restored_server(target_dir, 15, world.pg.password) as server:
        assert server.psql("SELECT count(*) FROM ticks", world.database).strip() == "4"


def test_latest_rebuilds_the_segment_in_progress_from_its_pieces(world15: World) -> None:
    """The stream lost after it caught up, its last segment stored only as pieces: --latest restores every
    confirmed row. A corrupted piece (exit 5) or a missing one in the middle (exit 9) is refused before the
    target is touched."""
    world = world15
    with wal_stream(world) as stream:
        base_backup(world)
        with Writer(world.pg, world.database) as writer:
            wait_for(lambda: newest_pieces(world, at_least=4), 60, "four pieces of the segment in progress")
        stream.wait_caught_up(world.pg)
        stream.kill()  # no last pass at exit: storage holds what the interval uploads stored
    found = newest_pieces(world, at_least=4)
    assert found is not None
    segment, pieces = found
    assert not [n for n in wal_blob_names(world) if n.endswith(f"/{segment}.zst")]
    pgdata = image_dir("restore") + "/data"
    code, out = restore(world, "--latest", "--pgdata", pgdata)
    assert code == 0, out
    with restored_server(pgdata, 15, world.pg.password) as server:
        restored = {int(x) for x in server.psql("SELECT id FROM ticks", world.database).split()}
    confirmed = {i for i, _ in writer.confirmed}
    assert confirmed <= restored, sorted(confirmed - restored)[:10]

    target_dir = image_dir("target")
    target = host_path(target_dir)
    (target / "PG_VERSION").write_text("15\n")
    before = snapshot(target)
    container = BlobServiceClient.from_connection_string(world.blob.connection_string).get_container_client(world.container)
    offset, _, _, victim = pieces[len(pieces) // 2]
    blob = container.get_blob_client(victim)
    original = blob.download_blob().readall()
    meta = blob.get_blob_properties().metadata
    blob.upload_blob(original[:-8] + bytes(8), overwrite=True, metadata=meta)  # same size and metadata, other bytes
    code, out = restore(world, "--latest", "--pgdata", target_dir, "--force")
    assert code == 5 and ("checksum mismatch" in str(out) or f"{victim} is corrupted" in str(out)), out
    assert snapshot(target) == before

    blob.delete_blob()
    code, out = restore(world, "--latest", "--pgdata", target_dir, "--force")
    assert code == 9 and f"lacks bytes of segment {segment}" in str(out) and f"stop at byte {offset}" in str(out), out
    assert snapshot(target) == before
    # --to-time past the gap: PostgreSQL replays the pieces before it and stops short of the target.
    code, out = restore(world, "--to-time", datetime.now(UTC).isoformat(), "--pgdata", target_dir, "--force")
    assert code == 9 and f"missing WAL segment {segment} (its pieces stop at byte {offset}" in str(out), out
    assert snapshot(target) == before
    assert [p.name for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.ipa-pitr")] == []
