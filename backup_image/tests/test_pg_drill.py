"""The drill tells the truth: it passes on a database using every PostgreSQL feature the platform may
use (generated and identity columns, names with spaces, quotes, dots and capitals, partitions, RLS,
enums, domains, contrib extensions, unlogged tables, large objects), and fails on a restored database
that differs from the archive."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import backup_testdata as data
import pytest
from conftest import make_world
from ipa_backup import pg

from devservices.azurite import AzuriteServer
from devservices.postgres import PostgresServer
from devservices.redis import RedisServer

pytestmark = pytest.mark.services


def test_copy_header_names_are_parsed_exactly() -> None:
    parsed = pg.parse_copy('COPY "we.ird"."a ""b"".c" ("X", "y z", "Ünï") FROM stdin;')
    assert parsed == pg.CopyTable("we.ird", 'a "b".c', ("X", "y z", "Ünï"))
    assert parsed.sql_name == '"we.ird"."a ""b"".c"'
    assert parsed.sql_columns == '"X", "y z", "Ünï"'
    assert pg.parse_copy('COPY app."My Table" (id, "Col ""q"" 2", total) FROM stdin;') == pg.CopyTable(
        "app", "My Table", ("id", 'Col "q" 2', "total")
    )
    assert pg.parse_copy("COPY public.empty  FROM stdin;") == pg.CopyTable("public", "empty", ())
    assert pg.parse_copy("COPY Mixed.Case (A) FROM stdin;") == pg.CopyTable("mixed", "case", ("a",))  # bare names fold
    assert pg.parse_copy("SELECT 1;") is None


@pytest.mark.parametrize("server", ["pg15", "pg17"])
def test_drill_passes_on_every_feature(request: pytest.FixtureRequest, redis_srv: RedisServer, blob: AzuriteServer, server: str) -> None:
    source: PostgresServer = request.getfixturevalue(server)
    with make_world(source, redis_srv, blob) as world:
        source.psql(data.PG_FEATURES, world.database)
        world.backup_ok()
        result = world.run("drill", env={"DRILL_KEEP": "1"})
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        checks = {c["name"]: c for c in report["checks"]}
        assert report["passed"] is True, checks
        # 4 tables of the realistic schema, 6 here (each partition is a table of its own in the archive).
        assert checks["postgres row counts"]["detail"] == "10 tables match the archive"
        assert checks["postgres checksum sample"]["detail"] == "first 200 rows of 10 tables match"
        scratch = f"{world.database}_restore_drill"
        assert source.psql(data.PG_FEATURES_FINGERPRINT, scratch) == source.psql(data.PG_FEATURES_FINGERPRINT, world.database)
        assert source.psql(data.PG_OBJECT_COUNTS, scratch) == source.psql(data.PG_OBJECT_COUNTS, world.database)
        source.drop_database(scratch)


@pytest.fixture
def host_client(pg_server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> pg.Client:
    """This machine's client of the host server's major, for in-process calls of the comparison."""
    for key, value in pg_server.env().items():
        monkeypatch.setenv(key, value)
    return pg.clients(pg_server.bin_dir.parent.parent)[pg_server.major]


def test_a_restore_that_differs_from_the_archive_fails_the_check(pg_server: PostgresServer, host_client: pg.Client, tmp_path: Path) -> None:
    source, restored = "drill_truth_src", "drill_truth_restored"
    for name in (source, restored):
        pg_server.drop_database(name)
        pg_server.create_database(name)
    pg_server.psql(data.PG_FEATURES, source)
    archive = tmp_path / "features.dump"
    subprocess.run(
        [host_client.program("pg_dump"), "--format=custom", "--compress=0", f"--file={archive}"],
        env={**os.environ, "PGDATABASE": source},
        check=True,
    )
    subprocess.run(
        [host_client.program("pg_restore"), "--exit-on-error", f"--dbname={restored}", str(archive)],
        env={**os.environ, "PGDATABASE": restored},
        check=True,
    )

    clean = pg.compare_with_archive(archive, restored, host_client)
    assert (clean.tables, clean.bad_counts, clean.bad_samples) == (6, [], [])

    # One changed value in the first rows of a table with generated columns and a quoted name.
    pg_server.psql("""UPDATE "Sales Dept"."My Table" SET qty = qty + 1 WHERE id = 5""", restored)
    changed = pg.compare_with_archive(archive, restored, host_client)
    assert changed.bad_counts == [] and changed.bad_samples == ['"Sales Dept"."My Table"']

    # One row missing from a partition whose name has a space.
    pg_server.psql("""DELETE FROM "Sales Dept"."events 2025" WHERE id = (SELECT min(id) FROM "Sales Dept"."events 2025")""", restored)
    missing = pg.compare_with_archive(archive, restored, host_client)
    assert missing.bad_counts == ['"Sales Dept"."events 2025": 1697 rows, archive has 1698']
    assert '"Sales Dept"."events 2025"' in missing.bad_samples
    for name in (source, restored):
        pg_server.drop_database(name)
