"""PostgreSQL: client programs by server major, streamed pg_dump, pg_restore, and the drill's comparisons.

The image carries one client per PostgreSQL major under /usr/lib/postgresql/<major>/bin (Debian's
layout). pg_dump must be at least the server's major; pg_restore and psql of a restore must be exactly
the target server's major (a newer pg_restore sends settings an older server rejects), and can read an
archive only of their own pg_dump major or older.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

from ipa_backup import archive as archive_format
from ipa_backup import log, proc
from ipa_backup.config import libpq_where
from ipa_backup.errors import BackupError, ConfigError, IntegrityError, SourceError, TargetError

# Same rendering of values in the dump and in the drill's comparison queries.
CLIENT_ENV = {"PGTZ": "UTC", "PGCONNECT_TIMEOUT": "10", "PGAPPNAME": "ipa-backup"}
PROGRAMS = ("pg_dump", "pg_dumpall", "pg_restore", "psql")


@dataclass(frozen=True)
class Client:
    """The client programs of one PostgreSQL major."""

    major: int
    bin_dir: Path

    def program(self, name: str) -> str:
        return str(self.bin_dir / name)


Clients = dict[int, Client]  # major -> client


def _program_major(path: Path) -> int:
    result = proc.run([str(path), "--version"], error=ConfigError)
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", result.stdout.decode())
    if result.returncode != 0 or not match:
        raise ConfigError(f"cannot tell the version of {path} (PG_BIN_DIR): {_first_error(result.stderr)}")
    return int(match.group(1))


def clients(root: Path, bin_dir: Path | None = None) -> Clients:
    """The clients under `root`/<major>/bin (settings.pg_clients_root).

    `bin_dir` (settings.pg_bin_dir) names one client directory instead: an explicit override (one
    major, read from its pg_dump), logged as a warning because it bypasses the choice by server version.
    """
    if bin_dir is not None:
        major = _program_major(bin_dir / "pg_dump")
        log.warning("PG_BIN_DIR overrides the choice of PostgreSQL client by server version", bin_dir=str(bin_dir), major=major)
        return {major: Client(major, bin_dir)}
    found = {}
    for bin_dir in root.glob("*/bin"):
        name = bin_dir.parent.name
        if name.isdigit() and all((bin_dir / p).is_file() for p in PROGRAMS):
            found[int(name)] = Client(int(name), bin_dir)
    if not found:
        raise ConfigError(f"no PostgreSQL client programs ({', '.join(PROGRAMS)}) under {root}/<major>/bin (PG_CLIENTS_ROOT)")
    return found


def majors_text(found: Clients) -> str:
    return ", ".join(str(m) for m in sorted(found))


def newest(found: Clients) -> Client:
    """The client that asks a server its version, before the one for that version is chosen."""
    return found[max(found)]


def _first_error(stderr: bytes) -> str:
    text = stderr.decode(errors="replace").strip()
    return text.splitlines()[0] if text else "(no error output)"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def query(
    sql: str, database: str | None = None, error: type[BackupError] = SourceError, *, client: Client, options: str | None = None
) -> list[list[str]]:
    """Rows of a query via psql (unaligned, tab-separated); `options` are the session's PGOPTIONS."""
    env = {**CLIENT_ENV}
    if database:
        env["PGDATABASE"] = database
    if options is not None:
        env["PGOPTIONS"] = options
    psql = client.program("psql")
    result = proc.run([psql, "-X", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", sql], env=env, error=error)
    if result.returncode != 0:
        raise error(f"PostgreSQL at {libpq_where(database)} failed: {_first_error(result.stderr)}")
    out = result.stdout.decode()
    return [line.split("\t") for line in out.splitlines() if line]


def query_json(sql: str, database: str | None = None, error: type[BackupError] = TargetError, *, client: Client) -> Any:
    """The one JSON value a query returns (text with tabs or newlines survives)."""
    rows = query(sql, database, error, client=client)
    return json.loads(rows[0][0]) if rows and rows[0] and rows[0][0] else None


def execute(sql: str, database: str, error: type[BackupError] = TargetError, *, client: Client, what: str = "") -> None:
    """A script in one transaction (psql --single-transaction, ON_ERROR_STOP)."""
    env = {**CLIENT_ENV, "PGDATABASE": database}
    psql = client.program("psql")
    result = proc.run(
        [psql, "-X", "-q", "--single-transaction", "-v", "ON_ERROR_STOP=1", "-f", "-"], env=env, stdin=sql.encode(), error=error
    )
    if result.returncode != 0:
        raise error(f"{what or 'SQL'} at {libpq_where(database)} failed: {_first_error(result.stderr)}")


def server_version(database: str | None, error: type[BackupError], client: Client) -> tuple[str, int]:
    """(version text, major) of the server the libpq environment points at."""
    rows = query("SELECT current_setting('server_version_num'), current_setting('server_version')", database, error, client=client)
    return rows[0][1], int(rows[0][0]) // 10000


# --- backup ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PgSource:
    server_version: str
    client: Client  # pg_dump, pg_dumpall and psql of the backup


def dump_client(found: Clients, server_major: int, version: str) -> Client:
    """The lowest client major at least the server's: pg_dump refuses a newer server."""
    fitting = [m for m in found if m >= server_major]
    if not fitting:
        raise SourceError(
            f"pg_dump {max(found)} is older than the PostgreSQL {server_major} server at {libpq_where()} (version {version}): "
            f"a dump needs a client of at least the server's major version, and this image has PostgreSQL clients "
            f"{majors_text(found)}"
        )
    if server_major < min(found):
        raise SourceError(
            f"the PostgreSQL {version} server at {libpq_where()} is older than every PostgreSQL client in this image "
            f"({majors_text(found)}): its sets could be restored only into a server of those majors; "
            f"supported servers are PostgreSQL {min(found)} to {max(found)}"
        )
    return found[min(fitting)]


def check_source(found: Clients) -> PgSource:
    """Connect, read the server version and pick the pg_dump for it (refuses a server the image can't serve)."""
    version, major = server_version(None, SourceError, newest(found))
    return PgSource(version, dump_client(found, major, version))


def largest_table_share(client: Client) -> float | None:
    """The biggest table's share of all table data: a restore's --jobs can load different tables at
    once but not split one, so a set dominated by one table is better streamed (see pgrestore).
    None when it can't be told at once: pg_table_size waits for a table another session holds
    exclusively, and a hint is not worth waiting for (pg_dump will wait for that lock anyway)."""
    try:
        rows = query(
            "SET lock_timeout = '1s'; SELECT coalesce(max(s), 0), coalesce(sum(s), 0) FROM ("
            "SELECT pg_table_size(c.oid) AS s FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
            " AND n.nspname NOT LIKE 'pg_toast%') t",
            client=client,
        )
    except SourceError as exc:
        log.warning("the biggest table's share of the data is not recorded: a table is locked", error=str(exc))
        return None
    largest, total = int(rows[-1][0]), int(rows[-1][1])
    return round(largest / total, 3) if total else 0.0


def dump(client: Client) -> Iterator[bytes]:
    """`pg_dump -Fc -Z0` of PGDATABASE as a stream (the tool compresses it itself, with zstd)."""
    argv = [client.program("pg_dump"), "--format=custom", "--compress=0", "--no-password"]
    return proc.stream_stdout(argv, CLIENT_ENV, lambda msg: SourceError(f"pg_dump of {libpq_where()} failed: {msg}"))


def dump_globals(client: Client) -> bytes | None:
    """`pg_dumpall --globals-only --no-role-passwords` (small, kept in memory), or None where roles
    cannot be read (managed servers deny it to non-superusers)."""
    argv = [client.program("pg_dumpall"), "--globals-only", "--no-role-passwords", "--no-password"]
    result = proc.run(argv, env=CLIENT_ENV, timeout=proc.command_timeout(), error=SourceError)
    if result.returncode != 0:
        message = _first_error(result.stderr)
        if "permission denied" in message:
            return None
        raise SourceError(
            f"pg_dumpall --globals-only of {libpq_where()} failed ({proc.describe_exit('pg_dumpall', result.returncode)}): {message}"
        )
    return result.stdout


# --- restore -----------------------------------------------------------------------------------


def restore_client(
    found: Clients, server_major: int, version: str, archive_major: int | None, what: str, database: str | None = None
) -> Client:
    """pg_restore of exactly the target's major, able to read an archive of `archive_major`."""
    if server_major not in found:
        raise TargetError(
            f"cannot restore {what} into the PostgreSQL {version} server at {libpq_where(database)}: pg_restore must be of "
            f"the server's major version ({server_major}), and this image has PostgreSQL clients {majors_text(found)} only"
        )
    if archive_major is not None and archive_major > server_major:
        raise TargetError(
            f"cannot restore {what} into the PostgreSQL {version} server at {libpq_where(database)}: it was dumped by "
            f"pg_dump {archive_major}, and pg_restore {server_major} (the server's major) cannot read the archive of a "
            f"newer pg_dump; restore it into a PostgreSQL {archive_major} server or newer (this image has PostgreSQL "
            f"clients {majors_text(found)})"
        )
    return found[server_major]


def manifest_dump_major(manifest: dict[str, Any]) -> int | None:
    """The pg_dump major the manifest records (None for a set without it)."""
    value = (manifest.get("targets") or {}).get("postgres", {}).get("client_major")
    return int(value) if isinstance(value, int | str) and str(value).isdigit() else None


def user_object_count(database: str, client: Client) -> int:
    rows = query(
        "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        "  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'"
        "  AND n.nspname NOT LIKE 'pg_temp%')"
        " + (SELECT count(*) FROM pg_largeobject_metadata)"
        " + (SELECT count(*) FROM pg_namespace WHERE nspname NOT IN ('public', 'information_schema')"
        "  AND nspname NOT LIKE 'pg_%')",
        database,
        error=TargetError,
        client=client,
    )
    return int(rows[0][0])


def database_exists(database: str, client: Client) -> bool:
    rows = query(
        f"SELECT count(*) FROM pg_database WHERE datname = {quote_literal(database)}", "postgres", error=TargetError, client=client
    )
    return rows[0][0] == "1"


def drop_database(database: str, client: Client) -> None:
    query(f"DROP DATABASE IF EXISTS {quote_ident(database)} WITH (FORCE)", "postgres", error=TargetError, client=client)


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


STREAM_CHUNK = 1 << 20


def streamed(archive: Path) -> bool:
    """A `.zst` archive was verified as stored and is decompressed straight into pg_restore's stdin."""
    return archive.suffix == ".zst"


def archive_input(archive: Path) -> tuple[list[str], Callable[[BinaryIO], None] | None]:
    """pg_restore's archive argument (none: it reads stdin), and what feeds its stdin when the
    archive is streamed."""
    if not streamed(archive):
        return [str(archive)], None

    def decompress(sink: BinaryIO) -> None:
        with open(archive, "rb") as source:
            try:
                zstandard.ZstdDecompressor().copy_stream(source, sink, read_size=STREAM_CHUNK, write_size=STREAM_CHUNK)
            except zstandard.ZstdError as exc:
                raise IntegrityError(f"{archive.name} is corrupted: {exc}") from exc

    return [], decompress


def restore(archive: Path, database: str, jobs: int, client: Client, session_options: str, no_owner: bool = False) -> None:
    """pg_restore --jobs N --exit-on-error into `database`, which holds nothing of the archive yet
    (no --clean: a restore never drops objects). Owners and grants are kept unless `no_owner`.
    `session_options`: the PGOPTIONS of its sessions (settings.restore_pg_options).
    A streamed archive is read once, in order, by one pg_restore connection."""
    if streamed(archive):
        jobs = 1
    elif jobs > 1:
        seekable(archive)
    source, feed = archive_input(archive)
    env = {**CLIENT_ENV, "PGDATABASE": database, "PGOPTIONS": session_options}
    argv = [
        client.program("pg_restore"),
        f"--jobs={jobs}",
        "--no-password",
        "--exit-on-error",
        *(["--no-owner"] if no_owner else []),
        f"--dbname={database}",
        *source,
    ]
    started = time.monotonic()
    result = proc.run(argv, env=env, timeout=proc.command_timeout(), error=TargetError, feed=feed)
    log.info(
        "pg_restore finished",
        database=database,
        jobs=jobs,
        options=env["PGOPTIONS"],
        pg_restore=argv[0],
        client_major=client.major,
        no_owner=no_owner,
        seconds=round(time.monotonic() - started, 2),
        exit_status=result.returncode,
    )
    if result.returncode != 0:
        raise TargetError(
            f"pg_restore into {libpq_where(database)} failed ({proc.describe_exit('pg_restore', result.returncode)}): "
            f"{without_row_data(result.stderr)[-2000:]}"
        )


def without_row_data(stderr: bytes) -> str:
    """pg_restore's errors without the CONTEXT lines, which quote the row a COPY failed on."""
    lines = stderr.decode(errors="replace").strip().splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("CONTEXT:"))


# --- SQL text ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    kind: str  # "word" (bare, case kept), "ident" (quoted, unescaped), "string", "punct", "other"
    text: str
    start: int
    end: int

    def is_word(self, *words: str) -> bool:
        return self.kind == "word" and self.text.upper() in words

    @property
    def name(self) -> str:
        """The identifier this token names (bare words fold to lower case, as PostgreSQL does)."""
        return self.text if self.kind == "ident" else self.text.lower()


_WORD = re.compile(r"[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_$\x80-\U0010ffff]*")
_DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


def sql_tokens(sql: str) -> list[Token]:
    """PostgreSQL's lexical rules as far as names, strings and statement ends go: quoted identifiers
    (with "" inside), strings ('' and E'\\'' escapes), dollar quotes, comments."""
    tokens: list[Token] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c.isspace():
            i += 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif sql.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if sql.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif sql.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            i = j
        elif c == '"':
            j, parts = i + 1, []
            while j < n:
                if sql[j] == '"':
                    if sql.startswith('""', j):
                        parts.append('"')
                        j += 2
                        continue
                    break
                parts.append(sql[j])
                j += 1
            tokens.append(Token("ident", "".join(parts), i, j + 1))
            i = j + 1
        elif c == "'" or (c in "eE" and sql.startswith("'", i + 1)):
            escapes = c != "'"
            j = i + (2 if escapes else 1)
            parts = []
            while j < n:
                if escapes and sql[j] == "\\" and j + 1 < n:
                    parts.append(sql[j + 1])
                    j += 2
                    continue
                if sql[j] == "'":
                    if sql.startswith("''", j):
                        parts.append("'")
                        j += 2
                        continue
                    break
                parts.append(sql[j])
                j += 1
            tokens.append(Token("string", "".join(parts), i, j + 1))
            i = j + 1
        elif c == "$" and (m := _DOLLAR.match(sql, i)):
            close = sql.find(m.group(0), m.end())
            end = n if close < 0 else close + len(m.group(0))
            tokens.append(Token("string", sql[m.end() : close if close >= 0 else n], i, end))
            i = end
        elif m := _WORD.match(sql, i):
            tokens.append(Token("word", m.group(0), i, m.end()))
            i = m.end()
        elif c in ",;().":
            tokens.append(Token("punct", c, i, i + 1))
            i += 1
        else:
            tokens.append(Token("other", c, i, i + 1))
            i += 1
    return tokens


def sql_statements(sql: str) -> list[tuple[str, list[Token]]]:
    """(text, tokens) of each statement, split at semicolons outside strings, names and parentheses."""
    out: list[tuple[str, list[Token]]] = []
    current: list[Token] = []
    depth = 0
    for token in sql_tokens(sql):
        if token.kind == "punct" and token.text in "()":
            depth += 1 if token.text == "(" else -1
        if token.kind == "punct" and token.text == ";" and depth <= 0:
            if current:
                out.append((sql[current[0].start : token.end], current))
            current, depth = [], 0
            continue
        current.append(token)
    if current:
        out.append((sql[current[0].start : current[-1].end], current))
    return out


@dataclass(frozen=True)
class CopyTable:
    """A table's data as the archive holds it: `COPY schema.table (col, ...) FROM stdin;`."""

    schema: str
    table: str
    columns: tuple[str, ...]

    @property
    def sql_name(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.table)}"

    @property
    def sql_columns(self) -> str:
        return ", ".join(quote_ident(c) for c in self.columns)


def parse_copy(line: str) -> CopyTable | None:
    """The table and columns of a COPY header line (names may hold dots, spaces, quotes, capitals)."""
    tokens = sql_tokens(line)
    if len(tokens) < 5 or not tokens[0].is_word("COPY"):
        return None
    names = [tokens[1]]
    i = 2
    if tokens[i].kind == "punct" and tokens[i].text == ".":
        names.append(tokens[i + 1])
        i += 2
    if any(t.kind not in ("word", "ident") for t in names):
        return None
    columns: list[str] = []
    if tokens[i].kind == "punct" and tokens[i].text == "(":
        i += 1
        while i < len(tokens) and not (tokens[i].kind == "punct" and tokens[i].text == ")"):
            if tokens[i].kind in ("word", "ident"):
                columns.append(tokens[i].name)
            i += 1
        i += 1
    if i >= len(tokens) or not tokens[i].is_word("FROM"):
        return None
    schema, table = ("public", names[0].name) if len(names) == 1 else (names[0].name, names[1].name)
    return CopyTable(schema, table, tuple(columns))


# --- drill comparisons -------------------------------------------------------------------------

SAMPLE_ROWS = 200
# The drill's reads: the dump's value rendering, physical order, and an error instead of rows that
# row-level security would hide.
READ_OPTIONS = "-c synchronize_seqscans=off -c extra_float_digits=3 -c datestyle=ISO -c intervalstyle=postgres -c row_security=off"


@dataclass(frozen=True)
class TableData:
    table: CopyTable
    rows: int
    sample: str  # MD5 of the first SAMPLE_ROWS COPY lines


def archive_table_data(archive: Path, client: Client) -> dict[str, TableData]:
    """Row count and an MD5 of the first rows of each table, read from the archive's COPY data."""
    source, feed = archive_input(archive)
    argv = [client.program("pg_restore"), "--data-only", "--file=-", *source]
    tables: dict[str, TableData] = {}
    current: CopyTable | None = None
    rows = sampled = 0
    sample = hashlib.md5(usedforsecurity=False)
    pending = b""
    for chunk in proc.stream_stdout(argv, CLIENT_ENV, lambda msg: TargetError(f"reading the archive failed: {msg}"), feed=feed):
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        for line in lines:
            if current is None:
                if line.startswith(b"COPY ") and line.endswith(b" FROM stdin;"):
                    current = parse_copy(line.decode("utf-8", errors="replace"))
                    if current is None:
                        raise TargetError(f"cannot read the table name of {line[:200]!r} in the archive")
                    rows = sampled = 0
                    sample = hashlib.md5(usedforsecurity=False)
            elif line == b"\\.":
                tables[current.sql_name] = TableData(current, rows, sample.hexdigest())
                current = None
            else:
                rows += 1
                if sampled < SAMPLE_ROWS:
                    sample.update(line + b"\n")
                    sampled += 1
    return tables


def restored_row_counts(database: str, tables: list[CopyTable], client: Client) -> dict[str, int]:
    """count(*) of each table, in one query."""
    if not tables:
        return {}
    parts = [f"SELECT {i}, count(*) FROM ONLY {t.sql_name}" for i, t in enumerate(tables)]
    rows = query(" UNION ALL ".join(parts), database, error=TargetError, client=client, options=READ_OPTIONS)
    return {tables[int(i)].sql_name: int(n) for i, n in rows}


def restored_sample(database: str, table: CopyTable, client: Client) -> str:
    """MD5 of the first rows in physical order (a fresh COPY load keeps the dump's order), of exactly
    the columns the archive's COPY holds (generated columns are not in it)."""
    env = {**CLIENT_ENV, "PGDATABASE": database, "PGOPTIONS": READ_OPTIONS}
    select = f"SELECT {table.sql_columns} FROM ONLY {table.sql_name}" if table.columns else f"SELECT FROM ONLY {table.sql_name}"
    result = proc.run(
        [client.program("psql"), "-X", "-v", "ON_ERROR_STOP=1", "-c", f"COPY ({select} LIMIT {SAMPLE_ROWS}) TO STDOUT"],
        env=env,
        error=TargetError,
    )
    if result.returncode != 0:
        raise TargetError(f"reading {table.sql_name} from {database} failed: {_first_error(result.stderr)}")
    return hashlib.md5(result.stdout, usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class Comparison:
    tables: int
    bad_counts: list[str]
    bad_samples: list[str]


def compare_with_archive(archive: Path, database: str, client: Client, samples: bool = True) -> Comparison:
    """Row counts (and with `samples` the first rows' MD5) of every table against the archive's COPY data."""
    expected = archive_table_data(archive, client)
    counts = restored_row_counts(database, [d.table for d in expected.values()], client)
    bad_counts, bad_samples = [], []
    for name, want in sorted(expected.items()):
        if counts[name] != want.rows:
            bad_counts.append(f"{name}: {counts[name]} rows, archive has {want.rows}")
        if samples and restored_sample(database, want.table, client) != want.sample:
            bad_samples.append(name)
    return Comparison(len(expected), bad_counts, bad_samples)
