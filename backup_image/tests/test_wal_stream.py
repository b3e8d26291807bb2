"""wal-stream against real PostgreSQL and Azurite: its metrics, SIGTERM, and pulling the plug on the
receiver, the server and the storage mid-stream. After each fault the stream resumes from its slot
and a restore --latest holds every row the server confirmed; while a fault lasts, the metrics say so."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.storage.blob import AccountSasPermissions, BlobServiceClient, ResourceTypes, generate_account_sas
from conftest import World, make_world
from ipa_backup import config, pitr, wal
from ipa_backup.errors import ConfigError, StorageError
from ipa_backup.storage import BlobStore
from pitr_support import TICKS, Writer, image_dir, newest_pieces, restored_server, wait_for, wal_blob_names, wal_pieces, wal_stream
from procs import descendants
from test_backup_units import storage_env  # noqa: F401 - a fixture

from devservices.azurite import ACCOUNT, DEV_KEY, AzuriteServer, azurite
from devservices.image import host_path
from devservices.postgres import PostgresServer, postgres
from devservices.process import free_port
from devservices.redis import RedisServer

FAST = {"BASE_BACKUP_CHECKPOINT": "fast"}


@pytest.fixture
def world15(pg15: PostgresServer, redis_srv: RedisServer, blob: AzuriteServer) -> Iterator[World]:
    with make_world(pg15, redis_srv, blob) as world:
        pg15.psql(TICKS, world.database)
        yield world


def test_stream_settings(storage_env: pytest.MonkeyPatch) -> None:  # noqa: F811
    s = config.load()
    assert (s.wal_slot, s.wal_spool_dir, s.wal_partial_upload_seconds, s.metrics_port, s.base_backup_fast_checkpoint) == (
        "ipa_wal_stream",
        Path("/var/lib/ipa-wal"),
        15.0,
        9188,
        False,
    )
    storage_env.setenv("BASE_BACKUP_CHECKPOINT", "fast")
    assert config.load().base_backup_fast_checkpoint
    for name, value, message in (
        ("WAL_SLOT", "Bad-Slot", "WAL_SLOT='Bad-Slot' is not a replication slot name"),
        ("WAL_PARTIAL_UPLOAD_SECONDS", "0", "WAL_PARTIAL_UPLOAD_SECONDS=0 is out of range; accepted 1..3600"),
        ("METRICS_PORT", "70000", "METRICS_PORT=70000 is out of range; accepted 1..65535"),
        ("BASE_BACKUP_CHECKPOINT", "slow", "BASE_BACKUP_CHECKPOINT='slow' is not accepted; accepted: spread or fast"),
    ):
        with storage_env.context() as env:
            env.setenv(name, value)
            with pytest.raises(ConfigError, match=re.escape(message)):
                config.load()


def test_lsn_segments_and_lag_arithmetic() -> None:
    assert wal.parse_lsn("1/2A") == (1 << 32) + 0x2A and wal.format_lsn((1 << 32) + 0x2A) == "1/2A"
    with pytest.raises(ValueError):
        wal.parse_lsn("12345")
    assert wal.segment_name(1, 0x103, 16 << 20) == "000000010000000100000003"
    assert wal.segment_of("000000020000000100000003", 16 << 20) == (2, 0x103)
    assert (
        wal.segment_name(1, 5, 64 << 20) == "000000010000000000000005"
        and wal.segment_of("00000001000000010000003F", 64 << 20)[1] == 64 + 63
    )
    assert wal.parse_size("16MB") == 16 << 20
    clock = wal.LagClock()
    clock.add(100.0, 1000)
    clock.add(105.0, 5000)
    assert clock.lag(500, 110.0) == (10.0, 4500)
    assert clock.lag(2000, 110.0) == (5.0, 3000)  # the oldest WAL not stored was flushed at 105
    assert clock.lag(5000 - 8, 111.0) == (0.0, 0)  # within a record's zero tail: caught up


def test_pitr_target_must_be_rfc3339_with_an_offset() -> None:
    assert pitr.parse_target("2026-05-04T13:45:10Z").isoformat() == "2026-05-04T13:45:10+00:00"
    assert pitr.parse_target("2026-05-04T15:45:10.5+02:00").isoformat() == "2026-05-04T13:45:10.500000+00:00"
    with pytest.raises(ConfigError, match="has no UTC offset"):
        pitr.parse_target("2026-05-04T13:45:10")
    with pytest.raises(ConfigError, match="is not an RFC 3339 time"):
        pitr.parse_target("yesterday")


def test_pieces_follow_each_other_from_offset_zero() -> None:
    segment = "000000010000000000000003"
    assert wal.piece_blob("7", segment, 8192) == f"wal/7/{segment}.partial/0000008192.zst"
    assert wal.PIECE_RE.match(f"{segment}.partial/0000008192.zst") and not wal.PIECE_RE.match(f"{segment}.partial.zst")
    assert wal.chain_end({0: 100, 100: 50, 400: 10}) == 150
    assert wal.chain_end({100: 50}) == 0

    def piece(offset: int, size: int) -> pitr.WalObject:
        return pitr.WalObject(f"piece-{offset}", segment, 1, "0" * 64, offset, size)

    chain, gap = pitr.piece_chain([piece(100, 50), piece(0, 100), piece(150, 8)])
    assert [p.offset for p in chain] == [0, 100, 150] and gap is None
    chain, gap = pitr.piece_chain([piece(0, 100), piece(160, 8)])  # bytes 100..159 missing
    assert [p.offset for p in chain] == [0] and gap == 100
    assert pitr.piece_chain([piece(100, 8)]) == ([], 0)  # the first piece missing
    chain, gap = pitr.piece_chain([piece(0, 100), piece(50, 80), piece(100, 30)])  # a stray overlapping piece is not followed
    assert [p.offset for p in chain] == [0, 100] and gap is None


@pytest.mark.services
def test_a_piece_is_never_stored_over_an_existing_one(storage_env: pytest.MonkeyPatch, blob: AzuriteServer) -> None:  # noqa: F811
    storage_env.setenv("AZURE_STORAGE_CONNECTION_STRING", blob.connection_string)
    storage_env.setenv("BACKUP_CONTAINER", f"pieces-{os.getpid()}")
    store = BlobStore(config.load())
    store.ensure_container()
    name = wal.piece_blob("1", "000000010000000000000001", 0)
    store.upload_stream(name, [b"first"], new_only=True)
    with pytest.raises(StorageError, match="already exists"):
        store.upload_stream(name, [b"second"], new_only=True)
    assert store.read_bytes(name, "the piece") == b"first"
    store.upload_stream(name, [b"second"])  # what any other blob would do: replace it
    assert store.read_bytes(name, "the piece") == b"second"


def base_backup(world: World) -> None:
    result = world.run("base-backup", env=FAST)
    assert result.returncode == 0, result.stderr


def restored_ids(world: World) -> set[int]:
    pgdata = image_dir("restore") + "/data"
    result = world.run("pitr-restore", "--latest", "--pgdata", pgdata, timeout=300)
    assert result.returncode == 0, result.stderr
    with restored_server(pgdata, world.pg.major, world.pg.password) as server:
        return {int(x) for x in server.psql("SELECT id FROM ticks", world.database).split()}


@pytest.mark.services
def test_metrics_and_sigterm_uploads_the_partial_segment(world15: World) -> None:
    world = world15
    with wal_stream(world, partial_seconds=600) as stream:  # only the start and the stop upload the partial
        base_backup(world)
        m = stream.metrics()
        assert m["ipa_wal_stream_up"] == 1
        assert time.time() - m["ipa_wal_last_upload_timestamp_seconds"] < 60
        world.pg.psql("SET synchronous_commit = on; INSERT INTO ticks DEFAULT VALUES", world.database)
        # Once pg_receivewal has written the row's WAL into its spool (the server sends what it flushed):
        flushed = world.pg.psql("SELECT file_name, file_offset FROM pg_walfile_name_offset(pg_current_wal_flush_lsn())")
        name, offset = flushed.strip().split("|")
        partial = host_path(stream.spool) / f"{name}.partial"
        wait_for(lambda: partial.exists() and len(partial.read_bytes().rstrip(b"\0")) >= int(offset) - 64, 30, "the row's WAL in the spool")
        stopped_at = datetime.now(UTC)
        stream.process.send_signal(signal.SIGTERM)
        assert stream.process.wait(60) == 143
        wait_for(lambda: "WAL stream stopped" in "".join(stream.log), 10, "the stop to be logged")
    # The row is in storage only through the last pass at SIGTERM: the interval (600 s) had not come round.
    container = BlobServiceClient.from_connection_string(world.blob.connection_string).get_container_client(world.container)
    pieces = [b for b in container.list_blobs(name_starts_with="wal/") if ".partial/" in b.name]
    assert [b for b in pieces if b.last_modified >= stopped_at.replace(microsecond=0)]
    assert restored_ids(world) == {1}


@pytest.mark.services
def test_segment_in_progress_is_stored_as_pieces_never_replaced(world15: World) -> None:
    """Each upload of the segment in progress stores only the bytes added since the previous one, as a
    new blob; no blob is ever written twice; a quiet database uploads nothing; once the segment is
    complete its pieces are deleted."""
    world = world15
    with wal_stream(world) as stream:
        base_backup(world)
        seen: dict[str, str] = {}  # piece blob -> etag when first listed

        def unchanged_and_growing() -> bool:
            found = newest_pieces(world)
            for _, _, etag, name in found[1] if found else []:
                assert seen.setdefault(name, etag) == etag, f"{name} was written again"
            return found is not None and len(found[1]) >= 4

        with Writer(world.pg, world.database):
            wait_for(unchanged_and_growing, 60, "four pieces of the segment in progress")
        stream.wait_caught_up(world.pg)
        assert unchanged_and_growing()
        found = newest_pieces(world)
        assert found is not None
        segment, pieces = found
        offsets = [offset for offset, _, _, _ in pieces]
        assert offsets[0] == 0 and offsets[1:] == [offset + size for offset, size, _, _ in pieces[:-1]], pieces
        assert not [n for n in wal_blob_names(world) if n.endswith(f"/{segment}.zst")]  # stored only as pieces so far

        # Quiet: no WAL written, no piece stored (the server's own records, if any, only extend the chain).
        inserted = int(world.pg.psql("SELECT pg_current_wal_insert_lsn() - '0/0'").strip())
        wait_for(lambda: stream.metrics().get("ipa_wal_stream_uploaded_lsn", 0) >= inserted - 64, 30, "every WAL record stored")
        found = newest_pieces(world)
        assert found is not None and found[0] == segment
        pieces = found[1]
        lsn = world.pg.psql("SELECT pg_current_wal_insert_lsn()").strip()
        time.sleep(3.5)  # three upload intervals with nothing to observe but the absence of uploads
        still = world.pg.psql("SELECT pg_current_wal_insert_lsn()").strip()
        after = newest_pieces(world)
        assert after is not None and after[0] == segment
        new = [p for p in after[1] if p not in pieces]
        if still == lsn:
            assert new == [], (lsn, new)
        else:
            assert not new or new[0][0] == pieces[-1][0] + pieces[-1][1]
        assert unchanged_and_growing()

        world.pg.psql("SELECT pg_switch_wal()")
        wait_for(lambda: any(n.endswith(f"/{segment}.zst") for n in wal_blob_names(world)), 30, "the completed segment")
        wait_for(lambda: segment not in wal_pieces(world), 30, "its pieces to be deleted")


@pytest.mark.services
def test_refused_deletes_of_pieces_leave_the_stream_running(world15: World) -> None:
    """Immutability refuses to delete the pieces of a completed segment: the stream logs it and goes on
    (here a storage credential without the delete permission refuses it)."""
    world = world15
    sas = generate_account_sas(
        ACCOUNT,
        DEV_KEY,
        ResourceTypes(service=True, container=True, object=True),
        AccountSasPermissions(read=True, write=True, list=True, create=True, add=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    no_delete = f"BlobEndpoint={world.blob.blob_endpoint};SharedAccessSignature={sas}"
    with wal_stream(world, env={"AZURE_STORAGE_CONNECTION_STRING": no_delete}) as stream:
        base_backup(world)
        with Writer(world.pg, world.database):
            found = wait_for(lambda: newest_pieces(world, at_least=2), 60, "two pieces of the segment in progress")
        segment = found[0]
        world.pg.psql("SELECT pg_switch_wal()")
        wait_for(lambda: any(n.endswith(f"/{segment}.zst") for n in wal_blob_names(world)), 30, "the completed segment")
        wait_for(lambda: "were not deleted" in "".join(stream.log), 30, "the refused delete to be logged")
        assert len(wal_pieces(world)[segment]) >= 2
        world.pg.psql("INSERT INTO ticks DEFAULT VALUES", world.database)
        assert stream.wait_caught_up(world.pg)["ipa_wal_stream_up"] == 1
        assert stream.process.poll() is None


@pytest.mark.services
def test_killed_receiver_resumes_from_its_slot(world15: World) -> None:
    world = world15
    with wal_stream(world) as stream:
        base_backup(world)
        with Writer(world.pg, world.database) as writer:
            pid = wait_for(stream.receiver_pid, 30, "pg_receivewal")
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: stream.metrics().get("ipa_wal_stream_up") == 0, 10, "the stream to report down")
            wait_for(lambda: stream.metrics().get("ipa_wal_stream_up") == 1, 30, "the stream to resume")
            assert stream.receiver_pid() != pid
            world.pg.psql("SELECT pg_switch_wal()")
        stream.wait_caught_up(world.pg)
        assert "restarting in" in "".join(stream.log)
        confirmed = {i for i, _ in writer.confirmed}
    assert confirmed <= restored_ids(world)


@pytest.mark.services
def test_spool_of_another_database_system_is_refused(world15: World) -> None:
    spool = image_dir("foreign-spool")
    (host_path(spool) / ".ipa-system-id").write_text("12345\n")
    result = world15.run("wal-stream", env={"WAL_SPOOL_DIR": spool, "METRICS_PORT": str(free_port())}, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "holds WAL of database system 12345" in result.stderr


@pytest.mark.services
def test_a_segment_file_killed_while_pre_filled_is_removed(world15: World) -> None:
    """pg_receivewal refuses to start on a segment file that is neither empty nor whole, as one killed while
    filling it with zeros leaves it: the stream removes such a file (it holds no WAL) and starts."""
    world = world15
    spool = image_dir("half-filled-spool")
    segment = world.pg.psql("SELECT pg_walfile_name(pg_current_wal_lsn())").strip()
    (host_path(spool) / f"{segment}.partial").write_bytes(bytes(1 << 20))
    try:
        with wal_stream(world, env={"WAL_SPOOL_DIR": spool}) as stream:
            wait_for(lambda: "removed a segment file left half pre-filled with zeros" in "".join(stream.log), 10, "the removal logged")
            world.pg.psql("INSERT INTO ticks DEFAULT VALUES", world.database)
            stream.wait_caught_up(world.pg)
    finally:
        shutil.rmtree(host_path(spool), ignore_errors=True)


def _postmaster_pid(server: PostgresServer) -> int:
    return int((server.data_dir / "postmaster.pid").read_text().splitlines()[0])


@pytest.mark.services
def test_killed_server_and_stopped_storage_lose_nothing_unreported(redis_srv: RedisServer, tmp_path: Path) -> None:
    """SIGKILL to the server and all its processes, then its restart (crash recovery); then the storage
    stopped for a while. Meanwhile the writer keeps committing whenever the server is there."""
    with (
        postgres(password="pg-test-pw", major=15, settings={"synchronous_commit": "on"}) as pg,
        azurite(base_dir=tmp_path) as storage,
        make_world(pg, redis_srv, storage) as world,
    ):
        pg.psql(TICKS, world.database)
        with wal_stream(world) as stream, Writer(pg, world.database) as writer:
            base_backup(world)
            postmaster = _postmaster_pid(pg)
            doomed = [postmaster, *descendants(postmaster)]
            for pid in doomed:
                os.kill(pid, signal.SIGKILL)
            assert pg.process.proc is not None
            pg.process.proc.wait(30)
            down = wait_for(lambda: (m := stream.metrics()).get("ipa_wal_stream_up") == 0 and m, 20, "the stream to report down")
            assert down["ipa_wal_stream_up"] == 0
            pg.process.start()
            pg.process.wait_until(
                lambda: (
                    subprocess.run([str(pg.bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(pg.port), "-q"], check=False).returncode
                    == 0
                ),
                60,
            )
            wait_for(lambda: stream.metrics().get("ipa_wal_stream_up") == 1, 60, "the stream to resume after the server's restart")
            n = len(writer.confirmed)
            wait_for(lambda: len(writer.confirmed) > n + 5, 30, "commits after the restart")

            storage.stop()
            pg.psql("SELECT pg_switch_wal()")
            outage = wait_for(
                lambda: (m := stream.metrics()).get("ipa_wal_stream_up") == 0 and m.get("ipa_wal_stream_lag_seconds", 0) >= 3 and m,
                60,
                "the metrics to report the storage outage",
            )
            assert outage["ipa_wal_stream_lag_bytes"] > 0
            storage.start()
            writer.stop_event.set()
            writer.thread.join(15)
            stream.wait_caught_up(pg, timeout=120)
        confirmed = {i for i, _ in writer.confirmed}
        assert confirmed <= restored_ids(world)
