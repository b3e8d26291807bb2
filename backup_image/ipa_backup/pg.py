"""PostgreSQL: version check, streamed pg_dump, pg_restore, emptiness and drill comparisons."""

from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ipa_backup import archive as archive_format
from ipa_backup import log, proc
from ipa_backup.errors import BackupError, ConfigError, SourceError, TargetError

# Same rendering of values in the dump and in the drill's comparison queries.
CLIENT_ENV = {"PGTZ": "UTC", "PGCONNECT_TIMEOUT": "10", "PGAPPNAME": "ipa-backup"}


def bin_path(name: str) -> str:
    """A PostgreSQL client program: PG_BIN_DIR, else the newest /usr/lib/postgresql/<major>/bin, else PATH."""
    explicit = os.environ.get("PG_BIN_DIR")
    if explicit:
        return str(Path(explicit) / name)
    found = sorted(
        (int(Path(p).parent.parent.name), p)
        for p in glob.glob(f"/usr/lib/postgresql/*/bin/{name}")
        if Path(p).parent.parent.name.isdigit()
    )
    if found:
        return found[-1][1]
    return shutil.which(name) or name


def _first_error(stderr: bytes) -> str:
    text = stderr.decode(errors="replace").strip()
    return text.splitlines()[0] if text else "(no error output)"


def _where(env: dict[str, str] | None = None) -> str:
    e = {**os.environ, **(env or {})}
    return f"{e.get('PGHOST', 'localhost')}:{e.get('PGPORT', '5432')}/{e.get('PGDATABASE', '')}"


def query(sql: str, database: str | None = None, error: type[BackupError] = SourceError) -> list[list[str]]:
    """Rows of a query via psql (unaligned, tab-separated)."""
    env = {**CLIENT_ENV}
    if database:
        env["PGDATABASE"] = database
    result = proc.run([bin_path("psql"), "-X", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", sql], env=env)
    if result.returncode != 0:
        raise error(f"PostgreSQL at {_where(env)} failed: {_first_error(result.stderr)}")
    out = result.stdout.decode()
    return [line.split("\t") for line in out.splitlines() if line]


def client_major() -> int:
    result = proc.run([bin_path("pg_dump"), "--version"])
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", result.stdout.decode())
    if result.returncode != 0 or not match:
        raise SourceError(f"cannot tell the version of {bin_path('pg_dump')}: {_first_error(result.stderr)}")
    return int(match.group(1))


@dataclass(frozen=True)
class PgSource:
    server_version: str
    server_major: int
    client_major: int


def check_source() -> PgSource:
    """Connect, read the server version and refuse a pg_dump older than the server."""
    rows = query("SELECT current_setting('server_version_num'), current_setting('server_version')")
    num = int(rows[0][0])
    server_major = num // 10000
    client = client_major()
    if client < server_major:
        raise SourceError(
            f"pg_dump {client} is older than the PostgreSQL {server_major} server at {_where()}: "
            f"a dump needs a client of at least the server's major version (install postgresql-client-{server_major} "
            "or newer in the image)"
        )
    return PgSource(rows[0][1], server_major, client)


def dump(compression_env: dict[str, str] | None = None) -> Iterator[bytes]:
    """`pg_dump -Fc -Z0` of PGDATABASE as a stream (the tool compresses it itself, with zstd)."""
    argv = [bin_path("pg_dump"), "--format=custom", "--compress=0", "--no-password"]
    return proc.stream_stdout(argv, {**CLIENT_ENV, **(compression_env or {})},
                              lambda msg: SourceError(f"pg_dump of {_where()} failed: {msg}"))


def dump_globals() -> bytes | None:
    """`pg_dumpall --globals-only --no-role-passwords` (small, kept in memory), or None where roles
    cannot be read (managed servers deny it to non-superusers)."""
    argv = [bin_path("pg_dumpall"), "--globals-only", "--no-role-passwords", "--no-password"]
    result = proc.run(argv, env=CLIENT_ENV)
    if result.returncode != 0:
        message = _first_error(result.stderr)
        if "permission denied" in message:
            return None
        raise SourceError(f"pg_dumpall --globals-only of {_where()} failed "
                          f"({proc.describe_exit('pg_dumpall', result.returncode)}): {message}")
    return result.stdout


def user_object_count(database: str) -> int:
    rows = query(
        "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        "  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'"
        "  AND n.nspname NOT LIKE 'pg_temp%')"
        " + (SELECT count(*) FROM pg_largeobject_metadata)"
        " + (SELECT count(*) FROM pg_namespace WHERE nspname NOT IN ('public', 'information_schema')"
        "  AND nspname NOT LIKE 'pg_%')",
        database,
        error=TargetError,
    )
    return int(rows[0][0])


def database_exists(database: str) -> bool:
    lit = database.replace("'", "''")
    rows = query(f"SELECT count(*) FROM pg_database WHERE datname = '{lit}'", "postgres", error=TargetError)
    return rows[0][0] == "1"


def create_database(database: str) -> None:
    ident = database.replace('"', '""')
    query(f'CREATE DATABASE "{ident}"', "postgres", error=TargetError)


def drop_database(database: str) -> None:
    ident = database.replace('"', '""')
    query(f'DROP DATABASE IF EXISTS "{ident}" WITH (FORCE)', "postgres", error=TargetError)


def seekable(archive: Path) -> None:
    """Write the data offsets into an archive that pg_dump wrote to a pipe, so that each
    `pg_restore --jobs` worker seeks to its table instead of reading through the archive.
    An archive this cannot parse is restored as it is (correct, only slower)."""
    started = time.monotonic()
    try:
        patched = archive_format.patch_offsets(archive)
    except archive_format.ArchiveFormatError as exc:
        log.warning("archive data offsets not set; pg_restore --jobs will read through it", error=str(exc))
        return
    log.info("archive data offsets set", entries=patched, seconds=round(time.monotonic() - started, 2))


MEMORY_RE = re.compile(r"^(\d+)(MB|GB)$")


def restore_options() -> str:
    """PGOPTIONS of the restore's sessions (only they, not the server, get these settings).

    synchronous_commit=off: a restore that crashes is rerun from the verified set anyway, so
    waiting for each commit's WAL flush buys nothing. maintenance_work_mem: index builds sort in
    memory instead of in temporary files; RESTORE_MAINTENANCE_WORK_MEM (64MB..2GB, default
    512MB) bounds it, and pg_restore --jobs N can run N builds at once. RESTORE_PGOPTIONS
    replaces the whole string.
    """
    explicit = os.environ.get("RESTORE_PGOPTIONS")
    if explicit is not None:
        return explicit
    raw = os.environ.get("RESTORE_MAINTENANCE_WORK_MEM") or "512MB"
    match = MEMORY_RE.match(raw)
    megabytes = int(match.group(1)) * (1024 if match.group(2) == "GB" else 1) if match else 0
    if not 64 <= megabytes <= 2048:
        raise ConfigError(f"RESTORE_MAINTENANCE_WORK_MEM={raw!r} must be 64MB..2GB, written like 512MB or 1GB")
    return f"-c synchronous_commit=off -c maintenance_work_mem={megabytes}MB"


def restore(archive: Path, database: str, jobs: int) -> None:
    """pg_restore --jobs N --clean --if-exists --no-owner into `database`."""
    if jobs > 1:
        seekable(archive)
    env = {**CLIENT_ENV, "PGDATABASE": database, "PGOPTIONS": restore_options()}
    argv = [bin_path("pg_restore"), f"--jobs={jobs}", "--clean", "--if-exists", "--no-owner", "--no-password",
            "--exit-on-error", f"--dbname={database}", str(archive)]
    started = time.monotonic()
    result = proc.run(argv, env=env, timeout=float(os.environ.get("BACKUP_COMMAND_TIMEOUT_SECONDS", 6 * 3600)))
    log.info("pg_restore finished", database=database, jobs=jobs, options=env["PGOPTIONS"],
             seconds=round(time.monotonic() - started, 2), exit_status=result.returncode)
    if result.returncode != 0:
        stderr = result.stderr.decode(errors="replace").strip()
        raise TargetError(f"pg_restore into {_where(env)} failed ({proc.describe_exit('pg_restore', result.returncode)}): "
                          f"{stderr[-2000:]}")


# --- drill comparisons -------------------------------------------------------------------------

SAMPLE_ROWS = 200


def archive_table_data(archive: Path) -> dict[str, tuple[int, str]]:
    """Row count and an MD5 of the first rows of each table, read from the archive's COPY data."""
    argv = [bin_path("pg_restore"), "--data-only", "--file=-", str(archive)]
    tables: dict[str, tuple[int, str]] = {}
    current: str | None = None
    rows = 0
    sample = hashlib.md5(usedforsecurity=False)
    sampled = 0
    pending = b""
    copy_re = re.compile(rb"^COPY (\S+(?:\.\S+)?) .*FROM stdin;$")
    for chunk in proc.stream_stdout(argv, CLIENT_ENV, lambda msg: TargetError(f"reading the archive failed: {msg}")):
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        for line in lines:
            if current is None:
                match = copy_re.match(line)
                if match:
                    current, rows, sampled = match.group(1).decode(), 0, 0
                    sample = hashlib.md5(usedforsecurity=False)
            elif line == b"\\.":
                tables[current] = (rows, sample.hexdigest())
                current = None
            else:
                rows += 1
                if sampled < SAMPLE_ROWS:
                    sample.update(line + b"\n")
                    sampled += 1
    return tables


def restored_table_data(database: str, table: str) -> tuple[int, str]:
    """Row count and MD5 of the first rows in physical order (a fresh COPY load keeps the dump's order)."""
    count = int(query(f"SELECT count(*) FROM ONLY {table}", database, error=TargetError)[0][0])
    env = {**CLIENT_ENV, "PGDATABASE": database,
           "PGOPTIONS": "-c synchronize_seqscans=off -c extra_float_digits=3 -c datestyle=ISO -c intervalstyle=postgres"}
    result = proc.run([bin_path("psql"), "-X", "-v", "ON_ERROR_STOP=1", "-c",
                       f"COPY (SELECT * FROM ONLY {table} LIMIT {SAMPLE_ROWS}) TO STDOUT"], env=env)
    if result.returncode != 0:
        raise TargetError(f"reading {table} from {database} failed: {_first_error(result.stderr)}")
    return count, hashlib.md5(result.stdout, usedforsecurity=False).hexdigest()
