"""The point-in-time part of `ipa-backup drill`: with base backups in the container, the drill restores
--latest into a scratch data directory, starts the image's PostgreSQL on it, compares row counts with
the live server (bounded by what changed meanwhile) and removes everything; a failed restore fails it."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest
from azure.storage.blob import BlobServiceClient
from conftest import World, make_world
from ipa_backup.pitr_drill import compare_counts, counts_check
from pitr_support import TICKS, Writer, wal_stream

from devservices.azurite import AzuriteServer
from devservices.image import host_path
from devservices.postgres import PostgresServer
from devservices.redis import RedisServer

FAST = {"BASE_BACKUP_CHECKPOINT": "fast"}
DRILL_ENV = {"WAL_PARTIAL_UPLOAD_SECONDS": "1"}  # the stream's interval: how long the drill waits for an upload


# --- the comparison ----------------------------------------------------------------------------------


def test_an_untouched_table_must_match_exactly() -> None:
    stats = {"public.a": [100, 0]}
    assert compare_counts({"public.a": 100}, {"public.a": 100}, stats, stats)[0].ok
    verdict = compare_counts({"public.a": 100}, {"public.a": 99}, stats, stats)[0]
    assert not verdict.ok and (verdict.low, verdict.high) == (100, 100)
    check = counts_check([verdict])
    assert not check["passed"] and "public.a: 99 rows, live 100 (allowed 100..100)" in check["detail"]


def test_a_changing_table_is_bounded_by_the_live_counters() -> None:
    before, after = {"public.t": [50, 10]}, {"public.t": [57, 12]}  # 7 inserted, 2 deleted since the snapshot
    assert [v.ok for v in compare_counts({"public.t": 40}, {"public.t": 38}, before, after)] == [True]
    assert [v.ok for v in compare_counts({"public.t": 40}, {"public.t": 47}, before, after)] == [True]
    assert [v.ok for v in compare_counts({"public.t": 40}, {"public.t": 37}, before, after)] == [False]
    assert [v.ok for v in compare_counts({"public.t": 40}, {"public.t": 48}, before, after)] == [False]
    assert "changed during the drill" in counts_check(compare_counts({"public.t": 40}, {"public.t": 45}, before, after))["detail"]


def test_a_missing_table_fails_and_a_table_without_statistics_gets_the_databases_bounds() -> None:
    live = {"public.a": 5, "public.parent": 20}
    before, after = {"public.a": [5, 0], "public.part1": [20, 0]}, {"public.a": [5, 0], "public.part1": [23, 0]}
    verdicts = {v.table: v for v in compare_counts(live, {"public.a": 5, "public.parent": 22}, before, after)}
    assert verdicts["public.parent"].ok and (verdicts["public.parent"].low, verdicts["public.parent"].high) == (20, 23)
    missing = compare_counts(live, {"public.parent": 20}, before, after)
    assert not counts_check(missing)["passed"] and "public.a: missing" in counts_check(missing)["detail"]
    assert not counts_check([])["passed"]


# --- the drill in the image --------------------------------------------------------------------------


@pytest.fixture
def world15(pg15: PostgresServer, redis_srv: RedisServer, blob: AzuriteServer) -> Iterator[World]:
    with make_world(pg15, redis_srv, blob) as world:
        pg15.psql(TICKS, world.database)
        yield world


@pytest.fixture(params=[15, 17])
def pitr_world(request: pytest.FixtureRequest, redis_srv: RedisServer, blob: AzuriteServer) -> Iterator[World]:
    pg: PostgresServer = request.getfixturevalue(f"pg{request.param}")
    with make_world(pg, redis_srv, blob) as world:
        pg.psql(TICKS, world.database)
        yield world


def _leftovers() -> list[str]:
    """Scratch folders of the drill's PITR part left in the image's /tmp."""
    return [p.name for p in host_path("/tmp").iterdir() if p.name.startswith(("ipa-backup-pitr-drill-", "ipa-pitr-drill-"))]


def _drill(world: World) -> tuple[int, dict[str, object], str]:
    result = world.run("drill", env=DRILL_ENV, timeout=300)
    report = json.loads(result.stdout.strip().splitlines()[-1]) if result.stdout.strip() else {}
    return result.returncode, report, result.stderr


@pytest.mark.services
def test_the_drill_rehearses_pitr_while_the_database_changes(pitr_world: World) -> None:
    before = _leftovers()
    pitr_world.backup_ok()
    with wal_stream(pitr_world):
        result = pitr_world.run("base-backup", env=FAST)
        assert result.returncode == 0, result.stderr
        with Writer(pitr_world.pg, pitr_world.database):
            started = time.monotonic()
            code, report, stderr = _drill(pitr_world)
    assert code == 0, stderr
    assert report["passed"] is True
    checks = {c["name"]: c for c in report["checks"]}  # type: ignore[attr-defined]
    assert {"pitr restore --latest", "pitr server answers", "pitr row counts"} <= set(checks), checks
    assert all(checks[n]["passed"] for n in ("pitr restore --latest", "pitr server answers", "pitr row counts")), checks
    pitr = report["pitr"]
    assert isinstance(pitr, dict) and pitr["passed"] is True
    assert 0 < pitr["duration_seconds"] < time.monotonic() - started
    tables = pitr["tables"]
    # The writer committed throughout: its table changed, and the restore lies within the bounds.
    low, high = tables["public.ticks"]["allowed"]
    assert low < high and low <= tables["public.ticks"]["restored"] <= high
    assert all(t["restored"] == t["live"] for name, t in tables.items() if name != "public.ticks")
    assert _leftovers() == before
    assert not [p for p in os.listdir("/proc") if p.isdigit() and b"ipa-pitr-drill-" in _cmdline(p)]


def _cmdline(pid: str) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


@pytest.mark.services
def test_without_base_backups_the_drill_has_no_pitr_part(world15: World) -> None:
    world15.backup_ok()
    code, report, stderr = _drill(world15)
    assert code == 0, stderr
    assert "pitr" not in report and not any(str(c["name"]).startswith("pitr") for c in report["checks"])  # type: ignore[attr-defined]


@pytest.mark.services
def test_a_corrupted_base_backup_fails_the_drill(world15: World) -> None:
    world15.backup_ok()
    with wal_stream(world15):
        result = world15.run("base-backup", env=FAST)
        assert result.returncode == 0, result.stderr
        base = json.loads(result.stdout)
    container = BlobServiceClient.from_connection_string(world15.blob.connection_string).get_container_client(world15.container)
    archive = f"base/{base['tier']}/{base['backup_id']}/base.tar.zst"
    size = container.get_blob_client(archive).get_blob_properties().size
    container.get_blob_client(archive).upload_blob(os.urandom(size), overwrite=True)  # same size: only the checksum tells
    before = _leftovers()
    code, report, stderr = _drill(world15)
    assert code == 5, stderr  # IntegrityError: the drill failed
    checks = {c["name"]: c for c in report["checks"]}  # type: ignore[attr-defined]
    assert report["passed"] is False and checks["pitr restore --latest"]["passed"] is False
    assert "checksum mismatch" in checks["pitr restore --latest"]["detail"]
    assert _leftovers() == before
