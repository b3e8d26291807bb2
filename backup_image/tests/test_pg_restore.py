"""PostgreSQL restores with the image's clients: pg_restore of the target's major, unsupported pairings
refused up front, `--force` that never damages the live database (a fault at every stage), roles and
owners kept, and `--with-globals` for a new server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import backup_testdata as data
import pytest
from azure.storage.blob import BlobServiceClient
from conftest import World, make_world
from ipa_backup import pg
from ipa_backup.errors import ConfigError, SourceError, TargetError
from procs import wait_for_child

from devservices.azurite import AzuriteServer
from devservices.postgres import PostgresServer, postgres
from devservices.redis import RedisServer

pytestmark = pytest.mark.services
# Session settings that make pg_restore fail in the bulk table's index build (an external sort).
TEMP_FILES_FORBIDDEN = "-c maintenance_work_mem=1MB -c temp_file_limit=64kB"


def logs(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def error_of(stderr: str) -> str:
    errors = [line for line in logs(stderr) if line.get("level") == "error"]
    assert errors, f"no error logged:\n{stderr}"
    return str(errors[-1]["msg"])


def log_line(stderr: str, msg: str) -> dict[str, Any]:
    found = [line for line in logs(stderr) if line.get("msg") == msg]
    assert found, f"no {msg!r} line:\n{stderr}"
    return found[-1]


def databases(server: PostgresServer, like: str) -> list[str]:
    out = server.psql(f"SELECT datname FROM pg_database WHERE datname LIKE '{like}' ORDER BY 1")
    return out.split()


def state(server: PostgresServer, database: str) -> dict[str, str]:
    """Everything a failed restore must leave as it was: data, objects, and the database itself."""
    return {
        "data": server.psql(data.PG_FINGERPRINT, database),
        "objects": server.psql(data.PG_OBJECT_COUNTS, database),
        "later": server.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'later'", database),
        "database": server.psql(
            "SELECT d.oid, d.datallowconn, d.datconnlimit, pg_get_userbyid(d.datdba), d.datacl::text,"
            " shobj_description(d.oid, 'pg_database'),"
            " (SELECT string_agg(coalesce(setrole::regrole::text, '-') || ':' || array_to_string(setconfig, ','), ';')"
            "  FROM pg_db_role_setting WHERE setdatabase = d.oid)"
            f" FROM pg_database d WHERE datname = '{database}'"
        ),
    }


def set_manifest(world: World, set_id: str, tier: str, change: dict[str, Any]) -> None:
    container = BlobServiceClient.from_connection_string(world.blob.connection_string).get_container_client(world.container)
    blob = container.get_blob_client(f"{tier}/{set_id}/manifest.json")
    manifest = json.loads(blob.download_blob().readall())
    manifest["targets"]["postgres"].update(change)
    blob.upload_blob(json.dumps(manifest).encode(), overwrite=True)


# --- clients by server major -------------------------------------------------------------------


@pytest.mark.parametrize("target", ["pg15", "pg17"])
def test_restore_uses_pg_restore_of_the_target_major(request: pytest.FixtureRequest, world: World, target: str) -> None:
    """Defect: pg_restore 17 into a PostgreSQL 15 server failed on `transaction_timeout`."""
    server: PostgresServer = request.getfixturevalue(target)
    before = world.pg.psql(data.PG_FINGERPRINT, world.database)
    out = world.backup_ok()
    database = f"{world.database}_into{server.major}"
    result = world.run("restore", out["set_id"], "--only", "postgres", env=server.env(database))
    assert result.returncode == 0, result.stderr
    assert "transaction_timeout" not in result.stderr
    finished = log_line(result.stderr, "pg_restore finished")
    assert finished["client_major"] == server.major
    assert finished["pg_restore"] == f"/usr/lib/postgresql/{server.major}/bin/pg_restore"
    assert server.psql(data.PG_FINGERPRINT, database) == before
    server.drop_database(database)


def test_backup_records_the_pg_dump_major_it_used(request: pytest.FixtureRequest, redis_srv: RedisServer, blob: AzuriteServer) -> None:
    for name in ("pg15", "pg17"):
        server: PostgresServer = request.getfixturevalue(name)
        with make_world(server, redis_srv, blob) as world:
            world.backup_ok()
            result = world.run("backup")
            assert result.returncode == 0, result.stderr
            set_id = json.loads(result.stdout)["set_id"]
            container = BlobServiceClient.from_connection_string(blob.connection_string).get_container_client(world.container)
            name_ = next(b.name for b in container.list_blobs() if b.name.endswith(f"{set_id}/manifest.json"))
            manifest = json.loads(container.download_blob(name_).readall())
            # The lowest client at least the server's major: 15 for 15, 17 for 17.
            assert manifest["targets"]["postgres"]["client_major"] == server.major


def test_a_set_newer_than_the_target_is_refused_before_any_download(world: World) -> None:
    out = world.backup_ok()
    database = f"{world.database}_refused"
    # As a set dumped by pg_dump 17 from a PostgreSQL 17 server records it.
    set_manifest(world, out["set_id"], out["tier"], {"client_major": 17})
    result = world.run("restore", out["set_id"], "--only", "postgres", "--pg-database", database)
    assert result.returncode == 6, result.stderr
    message = error_of(result.stderr)
    assert f"cannot restore set {out['set_id']} into the PostgreSQL {world.pg.major}." in message
    assert "dumped by pg_dump 17" in message and f"pg_restore {world.pg.major} (the server's major)" in message
    assert "this image has PostgreSQL clients 15, 17" in message
    assert '"downloaded ' not in result.stderr
    assert databases(world.pg, database) == []

    # The archive itself is the truth: a manifest that misstates its pg_dump is caught after the
    # download, before anything is touched.
    set_manifest(world, out["set_id"], out["tier"], {"client_major": 14})
    result = world.run("restore", out["set_id"], "--only", "postgres", "--pg-database", database)
    assert result.returncode == 5, result.stderr
    assert f"was written by pg_dump {world.pg.major}, but its manifest records pg_dump 14" in error_of(result.stderr)
    assert databases(world.pg, database) == []


def _fake_clients(root: Path, majors: list[int], real: Path) -> None:
    for major in majors:
        (root / str(major) / "bin").mkdir(parents=True)
        for program in pg.PROGRAMS:
            (root / str(major) / "bin" / program).symlink_to(real / program)


def test_client_choice_refuses_servers_the_image_cannot_serve(
    pg_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in pg_server.env().items():
        monkeypatch.setenv(key, value)
    major = pg_server.major
    # Stand-ins for images whose clients are all older, or all newer, than the server (the server's
    # own programs under other majors' directories: the choice goes by directory).
    older, newer = tmp_path / "older", tmp_path / "newer"
    _fake_clients(older, [major - 1], pg_server.bin_dir)
    _fake_clients(newer, [major + 1, major + 2], pg_server.bin_dir)
    with pytest.raises(SourceError, match=f"pg_dump {major - 1} is older than the PostgreSQL {major} server"):
        pg.check_source(pg.clients(older))
    found = pg.clients(newer)
    with pytest.raises(SourceError, match=f"older than every PostgreSQL client in this image \\({major + 1}, {major + 2}\\)"):
        pg.check_source(found)
    with pytest.raises(
        TargetError,
        match=f"must be of the server's major version \\({major}\\), and this image has PostgreSQL clients {major + 1}, {major + 2} only",
    ):
        pg.restore_client(found, major, "x", major, "set s")
    assert pg.dump_client(found, major + 1, "x").major == major + 1
    assert pg.restore_client(found, major + 2, "x", major + 1, "set s").major == major + 2  # reads older archives
    with pytest.raises(TargetError, match=f"dumped by pg_dump {major + 2}"):
        pg.restore_client(found, major + 1, "x", major + 2, "set s")
    with pytest.raises(ConfigError, match="no PostgreSQL client programs"):
        pg.clients(tmp_path / "none")


# --- --force never damages the live database ----------------------------------------------------


@pytest.fixture
def live(world: World) -> Iterator[tuple[World, dict[str, str], dict[str, str]]]:
    """A set of the realistic schema (with triggers, RLS and a bulk table, so pg_restore runs a few
    seconds), then a live database that moved on: database-level settings, a marker row and a table
    created after the backup with a foreign key to a restored table. Yields the world, the state of
    the set and the live state."""
    world.pg.psql(data.PG_LIVE_EXTRAS, world.database)
    world.pg.psql(
        "CREATE TABLE public.bulk AS SELECT i, md5(i::text) AS v FROM generate_series(1, 400000) i;CREATE INDEX bulk_v ON public.bulk (v)",
        world.database,
    )
    world.backup_ok()
    at_backup = state(world.pg, world.database)
    db = world.database
    world.pg.psql(f"""
        CREATE ROLE "{db} reader";
        ALTER DATABASE {db} SET work_mem = '7MB';
        ALTER DATABASE {db} SET search_path = app, "Odd Schema", public;
        ALTER ROLE "{db} reader" IN DATABASE {db} SET statement_timeout = '5s';
        REVOKE CONNECT ON DATABASE {db} FROM PUBLIC;
        GRANT CONNECT, TEMPORARY ON DATABASE {db} TO "{db} reader";
        COMMENT ON DATABASE {db} IS 'live database''s comment';
    """)
    world.pg.psql(
        "INSERT INTO public.no_pk VALUES ('marker', -1);"
        "CREATE TABLE public.later (id int PRIMARY KEY, user_id bigint REFERENCES app.users(id));"
        "INSERT INTO public.later VALUES (1, 1)",
        world.database,
    )
    yield world, at_backup, state(world.pg, world.database)
    for name in databases(world.pg, f"{db}\\_\\_ipa%"):
        world.pg.drop_database(name)
    world.pg.drop_database(db)
    world.pg.psql(f'DROP ROLE IF EXISTS "{db} reader"')


def _restore_database(world: World, timeout: float = 60) -> str:
    """The name of the database a running --force restore restores into."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = databases(world.pg, f"{world.database}\\_\\_ipa\\_restore\\_%")
        if found:
            return found[0]
        time.sleep(0.02)
    raise AssertionError("the restore database never appeared")


def _assert_untouched(world: World, live_state: dict[str, str]) -> None:
    assert state(world.pg, world.database) == live_state
    assert databases(world.pg, f"{world.database}\\_\\_ipa%") == []


def test_force_refused_before_restore_leaves_live_as_it_was(live: tuple[World, dict[str, str], dict[str, str]]) -> None:
    world, _, live_state = live
    result = world.run("restore", "--only", "postgres")
    assert result.returncode == 6
    assert f"PostgreSQL target database '{world.database}' is not empty" in error_of(result.stderr)
    _assert_untouched(world, live_state)


def test_force_pg_restore_failing_midway_leaves_live_as_it_was(live: tuple[World, dict[str, str], dict[str, str]]) -> None:
    world, _, live_state = live
    # The bulk table's index build sorts in temporary files, which the restore's sessions may not write:
    # pg_restore fails after the data is loaded, in its last steps.
    result = world.run("restore", "--only", "postgres", "--force", env={"RESTORE_PGOPTIONS": TEMP_FILES_FORBIDDEN})
    assert result.returncode == 6, result.stderr
    assert "pg_restore into" in error_of(result.stderr) and "temp_file_limit" in error_of(result.stderr)
    _assert_untouched(world, live_state)


def test_force_pg_restore_killed_leaves_live_as_it_was(live: tuple[World, dict[str, str], dict[str, str]]) -> None:
    world, _, live_state = live
    proc = world.popen("restore", "--only", "postgres", "--force", env={"RESTORE_JOBS": "1"})
    restore_db = _restore_database(world)
    pid = wait_for_child(proc.pid, "pg_restore", f"--dbname={restore_db}")
    os.kill(pid, signal.SIGKILL)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 6, stderr
    assert "pg_restore was killed by signal SIGKILL" in error_of(stderr)
    _assert_untouched(world, live_state)


def test_force_swap_failing_leaves_live_as_it_was(live: tuple[World, dict[str, str], dict[str, str]]) -> None:
    world, _, live_state = live
    proc = world.popen("restore", "--only", "postgres", "--force")
    restore_db = _restore_database(world)
    # While pg_restore runs, take the name the live database was to be renamed to.
    clash = restore_db.replace("__ipa_restore_", "__ipa_old_")
    world.pg.create_database(clash)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 6, stderr
    assert f'database "{clash}" already exists' in error_of(stderr)
    assert databases(world.pg, f"{world.database}\\_\\_ipa%") == [clash]  # only the test's own
    world.pg.drop_database(clash)
    _assert_untouched(world, live_state)


def test_force_swaps_in_the_set_and_keeps_the_old_database_on_request(live: tuple[World, dict[str, str], dict[str, str]]) -> None:
    """The issue's case: a table created after the backup with a foreign key to a restored table."""
    world, at_backup, live_state = live
    # A client connected to the live database: the swap ends its session.
    holder = subprocess.Popen(
        [str(world.pg.bin_dir / "psql"), "-X", "-c", "SELECT pg_sleep(600)"],
        env={**os.environ, **world.pg.env(world.database)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        result = world.run("restore", "--only", "postgres", "--force", "--keep-old")
        assert result.returncode == 0, result.stderr
        assert holder.wait(timeout=30) != 0
    finally:
        if holder.poll() is None:
            holder.kill()
    out = json.loads(result.stdout)
    old = out["postgres"]["previous_database"]
    assert out["postgres"]["mode"] == "swapped" and old.startswith(f"{world.database}__ipa_old_")
    now = state(world.pg, world.database)
    assert now["data"] == at_backup["data"] and now["objects"] == at_backup["objects"] and now["later"] == "0\n"
    # The database-level settings, grants, comment and owner of the live database came along.
    oid_now, *props_now = now["database"].split("|")
    oid_live, *props_live = live_state["database"].split("|")
    assert oid_now != oid_live and props_now == props_live
    # The replaced database is kept whole under its new name.
    assert state(world.pg, old)["data"] == live_state["data"] and state(world.pg, old)["later"] == "1\n"

    again = world.run("restore", "--only", "postgres", "--force")
    assert again.returncode == 0, again.stderr
    assert "previous_database" not in json.loads(again.stdout)["postgres"]
    assert databases(world.pg, f"{world.database}\\_\\_ipa%") == [old]  # only the --keep-old one
    assert state(world.pg, world.database)["data"] == at_backup["data"]


# --- roles and owners ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fresh() -> Iterator[PostgresServer]:
    """A second, new server: none of the source's roles exist there."""
    with postgres(password="fresh-pw", major=15) as server:
        yield server


@pytest.fixture
def owned(world: World) -> Iterator[tuple[World, str, str]]:
    """The realistic schema owned by an application role, read by a reader role through a grant and a policy."""
    owner, reader = f"{world.database}_owner", f"{world.database} Reader"
    world.pg.psql(
        f"""
        CREATE ROLE {owner} LOGIN;
        CREATE ROLE "{reader}";
        ALTER SCHEMA app OWNER TO {owner};
        ALTER TABLE app.users OWNER TO {owner};
        ALTER TABLE app.executions OWNER TO {owner};
        ALTER SEQUENCE app.invoice_no OWNER TO {owner};
        GRANT USAGE ON SCHEMA app TO "{reader}";
        GRANT SELECT ON app.users TO "{reader}";
        ALTER TABLE app.users ENABLE ROW LEVEL SECURITY;
        CREATE POLICY reader_sees_some ON app.users FOR SELECT TO "{reader}" USING (id < 100);
    """,
        world.database,
    )
    yield world, owner, reader
    world.pg.drop_database(world.database)
    for name in databases(world.pg, world.database.replace("_", "\\_") + "\\_%"):  # its copies only
        world.pg.drop_database(name)
    world.pg.psql(f'DROP ROLE IF EXISTS {owner}; DROP ROLE IF EXISTS "{reader}"')


def _owners(server: PostgresServer, database: str) -> str:
    return server.psql("SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'app' ORDER BY 1", database)


def _roles(server: PostgresServer, *names: str) -> list[str]:
    quoted = ", ".join("'" + n.replace("'", "''") + "'" for n in names)
    return server.psql(f"SELECT rolname FROM pg_roles WHERE rolname IN ({quoted}) ORDER BY 1").splitlines()


def _database_level(server: PostgresServer, database: str) -> str:
    return server.psql(
        "SELECT pg_get_userbyid(d.datdba), d.datacl::text, shobj_description(d.oid, 'pg_database'),"
        " (SELECT string_agg(coalesce(setrole::regrole::text, '-') || ':' || array_to_string(setconfig, ','), ';'"
        "  ORDER BY setrole) FROM pg_db_role_setting WHERE setdatabase = d.oid)"
        f" FROM pg_database d WHERE datname = '{database}'"
    )


def test_owners_are_kept_by_default(owned: tuple[World, str, str]) -> None:
    world, owner, reader = owned
    db = world.database
    world.pg.psql(f"""
        ALTER DATABASE {db} OWNER TO {owner};
        ALTER DATABASE {db} SET work_mem = '3MB';
        ALTER ROLE "{reader}" IN DATABASE {db} SET statement_timeout = '9s';
        REVOKE CONNECT, TEMPORARY ON DATABASE {db} FROM PUBLIC;
        GRANT CONNECT ON DATABASE {db} TO "{reader}";
        COMMENT ON DATABASE {db} IS 'source database';
    """)
    world.backup_ok()
    copy = f"{db}_copy"
    result = world.run("restore", "--only", "postgres", "--pg-database", copy)
    assert result.returncode == 0, result.stderr
    assert _owners(world.pg, copy) == _owners(world.pg, world.database)
    assert f"executions|{owner}" in _owners(world.pg, copy)
    # A database the restore creates gets the archive's owner, settings, grants and comment.
    assert _database_level(world.pg, copy) == _database_level(world.pg, db)
    assert "work_mem=3MB" in _database_level(world.pg, copy) and owner in _database_level(world.pg, copy)
    no_owner = world.run("restore", "--only", "postgres", "--pg-database", f"{copy}2", "--no-owner")
    assert no_owner.returncode == 0, no_owner.stderr
    assert owner not in _owners(world.pg, f"{copy}2")  # every object belongs to the restoring user


def test_new_server_without_the_roles_is_refused_then_restored_with_globals(owned: tuple[World, str, str], fresh: PostgresServer) -> None:
    world, owner, reader = owned
    world.backup_ok()
    database = f"ipa_{world.database}"
    env = fresh.env(database)
    result = world.run("restore", "--only", "postgres", env=env)
    assert result.returncode == 6, result.stderr
    message = error_of(result.stderr)
    assert "lacks 2 role(s) that set" in message and owner in message and reader in message
    assert "--with-globals" in message and "Nothing was changed" in message
    assert databases(fresh, database) == [] and _roles(fresh, owner, reader) == []

    # --no-owner does not help with grants and policies that name the reader role.
    no_owner = world.run("restore", "--only", "postgres", "--no-owner", env=env)
    assert no_owner.returncode == 6
    assert "lacks 1 role(s)" in error_of(no_owner.stderr) and reader in error_of(no_owner.stderr)
    assert databases(fresh, database) == [] and _roles(fresh, owner, reader) == []

    restored = world.run("restore", "--only", "postgres", "--with-globals", env=env)
    assert restored.returncode == 0, restored.stderr
    created = log_line(
        restored.stderr,
        "roles created from the set's globals without passwords (the backup dumps them "
        "with --no-role-passwords): set each login role's password with ALTER ROLE ... PASSWORD",
    )
    assert owner in created["roles"] and reader in created["roles"]
    assert _owners(fresh, database) == _owners(world.pg, world.database)
    assert fresh.psql(data.PG_FINGERPRINT, database) == world.pg.psql(data.PG_FINGERPRINT, world.database)
    # The application role that owned its tables still reads them, once its password is set.
    fresh.psql(f"ALTER ROLE {owner} PASSWORD 'app-pw'")
    as_owner = PostgresServer(fresh.host, fresh.port, owner, "app-pw", database, fresh.bin_dir, fresh.data_dir, fresh.major, fresh.process)
    assert as_owner.psql("SELECT count(*) FROM app.users; SELECT count(*) FROM app.executions").split() == ["500", "5000"]
    assert fresh.psql(f'SET ROLE "{reader}"; SELECT count(*) FROM app.users', database).split()[-1] == "99"
    fresh.drop_database(database)


def test_with_globals_undoes_its_roles_when_the_restore_fails(owned: tuple[World, str, str], fresh: PostgresServer) -> None:
    world, owner, reader = owned
    world.pg.psql(
        "CREATE TABLE public.bulk AS SELECT i, md5(i::text) AS v FROM generate_series(1, 400000) i;CREATE INDEX bulk_v ON public.bulk (v)",
        world.database,
    )
    world.backup_ok()
    database = f"ipa2_{world.database}"
    result = world.run(
        "restore", "--only", "postgres", "--with-globals", env={**fresh.env(database), "RESTORE_PGOPTIONS": TEMP_FILES_FORBIDDEN}
    )
    assert result.returncode == 6, result.stderr
    assert databases(fresh, database) == [] and _roles(fresh, owner, reader) == []


def test_globals_keep_only_what_the_server_lacks() -> None:
    from ipa_backup import pgrestore

    dumped = "\n".join(
        [
            "\\restrict abc123",
            "SET default_transaction_read_only = off;",
            'CREATE ROLE "App Owner";',
            'ALTER ROLE "App Owner" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS;',
            "CREATE ROLE postgres;",
            "ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;",
            "COMMENT ON ROLE \"App Owner\" IS 'owns the app; really';",
            "ALTER ROLE \"App Owner\" SET search_path TO 'app', 'public';",
            'GRANT "App Owner" TO reader WITH INHERIT TRUE GRANTED BY postgres;',
            "GRANT pg_monitor TO postgres GRANTED BY postgres;",
            'GRANT azure_admin TO "App Owner";',
            "CREATE ROLE reader;",
            "CREATE TABLESPACE fast OWNER postgres LOCATION '/disks/fast';",
            "\\unrestrict abc123",
        ]
    )
    plan = pgrestore.plan_globals(dumped, {"postgres", "pg_monitor"})
    assert plan.creates == ["App Owner", "reader"]
    assert plan.script.splitlines() == [
        "SET default_transaction_read_only = off;",
        'CREATE ROLE "App Owner";',
        'ALTER ROLE "App Owner" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS;',
        "COMMENT ON ROLE \"App Owner\" IS 'owns the app; really';",
        "ALTER ROLE \"App Owner\" SET search_path TO 'app', 'public';",
        'GRANT "App Owner" TO reader WITH INHERIT TRUE;',  # the source's grantor need not exist here
        "CREATE ROLE reader;",
    ]
    # A membership in a role the server lacks, and tablespaces, are left out and reported.
    assert plan.skipped == ['GRANT azure_admin TO "App Owner";', "CREATE TABLESPACE fast OWNER postgres LOCATION '/disks/fast';"]


def test_roles_named_by_grants_and_policies() -> None:
    from ipa_backup import pgrestore

    assert pgrestore.roles_in_sql(
        "SET SESSION AUTHORIZATION grantor;\n"
        'GRANT SELECT(a, "to") ON TABLE app."My Table" TO alice, "Bob B" WITH GRANT OPTION;\n'
        "RESET SESSION AUTHORIZATION;\n"
        "REVOKE ALL ON SCHEMA public FROM PUBLIC;\n"
        "CREATE POLICY p ON t AS PERMISSIVE FOR SELECT TO app_owner, CURRENT_USER USING ((owner = 'to'));\n"
        'ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA app GRANT SELECT ON TABLES TO "Reader Role";'
    ) == {"grantor", "alice", "Bob B", "app_owner", "Reader Role"}


def test_database_settings_are_written_back_as_stored() -> None:
    from ipa_backup import pgrestore

    assert pgrestore.setting_sql('search_path=app, "Odd Schema", public') == "search_path TO 'app', 'Odd Schema', 'public'"
    assert pgrestore.setting_sql("work_mem=7MB") == "work_mem TO '7MB'"
    assert pgrestore.setting_sql("application_name=it's") == "application_name TO 'it''s'"
    assert pgrestore.side_name("d" * 80, "restore", "abc123") == "d" * 43 + "__ipa_restore_abc123"
    assert len(pgrestore.side_name("é" * 40, "old", "abc123").encode()) <= 63
