"""The point-in-time part of `ipa-backup drill` (docs/operations/pitr.md#the-weekly-drill).

When the container holds a complete base backup (the WAL stream and base backups are on), the
drill also runs `pitr-restore --latest` into a scratch data directory in its work folder, starts
the image's PostgreSQL on it on a private socket (no TCP; only the tool's own user can reach it),
and compares each table's row count with the live server's:

- the live counts are read in one REPEATABLE READ snapshot before the restore; the drill then waits
  until the WAL stream has uploaded something written after that snapshot (at most two partial
  upload intervals), so the restore reaches it;
- the live server's `pg_stat_user_tables` insert and delete counters, read at the snapshot and after
  the restore, bound what may have changed meanwhile: a restored count must lie within the live
  count minus the rows deleted and plus the rows inserted since, exactly equal for a table nothing
  touched.

The duration (restore, recovery and the server answering) is pushed as
ipa_restore_drill_pitr_duration_seconds. The scratch directory is removed whatever happens.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ipa_backup import basebackup, log, pg, pitr, proc, wal
from ipa_backup.config import Settings
from ipa_backup.errors import BackupError, SourceError, TargetError
from ipa_backup.storage import BlobStore

# A backend reports its row counters to the shared statistics within 10 s of a transaction, even when
# idle (PostgreSQL's PGSTAT_IDLE_INTERVAL): counters read this long after the restore's plan cover it.
STATS_FLUSH_SECONDS = 11.0
START_TIMEOUT = 120.0
SCRATCH_PORT = "5432"  # of the private socket: no TCP listener

TABLES_SQL = (
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition "
    "AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'"
)
# Every table's row count, in one snapshot (query_to_xml runs each count inside this transaction).
COUNTS_SQL = (
    "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\n"
    "SELECT coalesce(json_object_agg(format('%I.%I', n.nspname, c.relname), "
    "(xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %I.%I', n.nspname, c.relname), false, true, '')))"
    "[1]::text::bigint), '{}') " + TABLES_SQL + ";\n"
    "SELECT extract(epoch FROM clock_timestamp());\n"
    "COMMIT;\n"
)
STATS_SQL = (
    "SELECT coalesce(json_object_agg(format('%I.%I', schemaname, relname), json_build_array(n_tup_ins, n_tup_del)), '{}') "
    "FROM pg_stat_user_tables;\n"
)


@dataclass(frozen=True)
class TableVerdict:
    table: str
    live: int
    restored: int | None  # None: the table is missing from the restored database
    low: int
    high: int
    ok: bool


def compare_counts(
    live: dict[str, int], restored: dict[str, int], stats_before: dict[str, list[int]], stats_after: dict[str, list[int]]
) -> list[TableVerdict]:
    """Each live table's restored count against the bounds the live counters allow (see the module doc).

    A table without statistics (a partitioned parent: its partitions have them) gets the bounds of the
    whole database's changes: only what was inserted or deleted anywhere can explain a difference."""
    inserted_all = sum(max(0, stats_after.get(t, [0, 0])[0] - v[0]) for t, v in stats_before.items())
    deleted_all = sum(max(0, stats_after.get(t, [0, 0])[1] - v[1]) for t, v in stats_before.items())
    verdicts = []
    for table, count in sorted(live.items()):
        if table in stats_before and table in stats_after:
            inserted = max(0, stats_after[table][0] - stats_before[table][0])
            deleted = max(0, stats_after[table][1] - stats_before[table][1])
        else:
            inserted, deleted = inserted_all, deleted_all
        low, high = count - deleted, count + inserted
        got = restored.get(table)
        verdicts.append(TableVerdict(table, count, got, low, high, got is not None and low <= got <= high))
    return verdicts


def counts_check(verdicts: list[TableVerdict]) -> dict[str, Any]:
    bad = [v for v in verdicts if not v.ok]
    changed = [v for v in verdicts if v.low != v.high]
    if not bad:
        detail = f"{len(verdicts)} tables match the live server"
        if changed:
            detail += f" ({len(changed)} changed during the drill, each within the live counters' bounds)"
    else:
        detail = "; ".join(
            f"{v.table}: missing" if v.restored is None else f"{v.table}: {v.restored} rows, live {v.live} (allowed {v.low}..{v.high})"
            for v in bad[:10]
        )
    return {"name": "pitr row counts", "passed": not bad and bool(verdicts), "detail": detail or "no table to compare"}


def _psql(client: pg.Client, sql: str, conn: dict[str, str], error: type[BackupError]) -> list[str]:
    """The output lines of `sql` run by psql with libpq's environment plus `conn`."""
    argv = [client.program("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f", "-"]
    result = proc.run(argv, env={**pg.CLIENT_ENV, **conn}, stdin=sql.encode(), timeout=proc.command_timeout(), error=error)
    if result.returncode != 0:
        text = result.stderr.decode(errors="replace").strip()
        raise error(f"psql failed: {text.splitlines()[0] if text else 'no error output'}")
    return [line for line in result.stdout.decode().splitlines() if line]


def table_counts(client: pg.Client, conn: dict[str, str], error: type[BackupError]) -> tuple[dict[str, int], float]:
    """Every table's row count in one snapshot, and the server's time of that snapshot."""
    lines = _psql(client, COUNTS_SQL, conn, error)
    return {k: int(v) for k, v in json.loads(lines[0]).items()}, float(lines[1])


def table_stats(client: pg.Client) -> dict[str, list[int]]:
    return {k: [int(x) for x in v] for k, v in json.loads(_psql(client, STATS_SQL, {}, SourceError)[0]).items()}


def _wait_for_upload(store: BlobStore, system_id: str, after: float, timeout: float) -> bool:
    """Until a WAL object of `system_id` was stored after `after` (unix time); False past `timeout`: the
    archive then already held everything (the stream uploads only what changed) or the stream lags."""
    deadline = time.monotonic() + timeout
    while True:
        if any(b.last_modified.timestamp() > after for b in store.list_blobs(wal.blob_prefix(system_id))):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(1.0)


@contextmanager
def scratch_server(server_bin: Path, data: Path, server_log: Path) -> Iterator[dict[str, str]]:
    """The image's PostgreSQL on `data`, reachable only through a private socket folder; libpq's
    connection variables for it. Stopped (fast shutdown) and its folder removed on exit."""
    sock = Path(tempfile.mkdtemp(prefix="ipa-pitr-drill-"))
    if len(str(sock)) > 80:  # a socket's path must stay under 107 bytes
        shutil.rmtree(sock)
        sock = Path(tempfile.mkdtemp(prefix="ipa-pitr-drill-", dir="/tmp"))
    # Its own authentication files: trust on the private socket (mode 0700, the tool's user only).
    (sock / "pg_hba.conf").write_text("local all all trust\n")
    (sock / "pg_ident.conf").write_text("")
    if not (data / "postgresql.conf").exists():  # a Debian-style cluster keeps its configuration elsewhere
        (data / "postgresql.conf").write_text("")
    settings = {
        "hba_file": str(sock / "pg_hba.conf"),
        "ident_file": str(sock / "pg_ident.conf"),
        "listen_addresses": "",
        "unix_socket_directories": str(sock),
        "port": SCRATCH_PORT,
        "archive_mode": "off",
        "ssl": "off",
        "shared_preload_libraries": "",
        "shared_buffers": "128MB",  # the production server's setting may not fit the drill's pod
        "huge_pages": "off",
        "max_connections": "20",
        "dynamic_shared_memory_type": "mmap",
        "logging_collector": "off",
        "log_destination": "stderr",
    }
    argv = [str(server_bin / "postgres"), "-D", str(data)]
    for key, value in settings.items():
        argv += ["-c", f"{key}={value}"]
    with open(server_log, "wb") as out:
        child = proc.popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    conn = {"PGHOST": str(sock), "PGPORT": SCRATCH_PORT, "PGSSLMODE": "disable"}
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if child.poll() is not None:
                exit_text = proc.describe_exit("postgres", child.returncode)
                raise TargetError(f"the restored PostgreSQL exited ({exit_text}):\n{_tail(server_log)}")
            probe = proc.run([str(server_bin / "pg_isready"), "-h", str(sock), "-p", SCRATCH_PORT, "-q"], timeout=30, error=TargetError)
            if probe.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise TargetError(f"the restored PostgreSQL did not accept connections within {START_TIMEOUT:g}s:\n{_tail(server_log)}")
            time.sleep(0.2)
        yield conn
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGINT)  # fast shutdown
            try:
                child.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.stop([child.pid])
                child.wait()
        proc.forget(child)
        shutil.rmtree(sock, ignore_errors=True)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


def run(settings: Settings, work: Path) -> dict[str, Any] | None:
    """The PITR rehearsal in `work` (the drill's work folder); None when the container holds no complete
    base backup. Failures of the restore or the scratch server are failed checks, not exceptions."""
    store = BlobStore(settings)
    bases = [b for b in basebackup.list_base_backups(store) if b.complete]
    if not bases:
        return None
    newest = basebackup.read_manifest(store, bases[0])
    found = pg.clients(settings.pg_clients_root, settings.pg_bin_dir)
    client = pg.newest(found)
    database = settings.pg_database or ""
    checks: list[dict[str, Any]] = []
    report: dict[str, Any] = {"checks": checks, "passed": False, "duration_seconds": None}
    live, snapshot_at = table_counts(client, {}, SourceError)
    stats_before = table_stats(client)
    wait = 2 * settings.wal_partial_upload_seconds + 5
    uploaded = _wait_for_upload(store, str(newest["system_id"]), snapshot_at, wait)
    log.info("pitr drill: live snapshot taken", tables=len(live), wal_uploaded_since=uploaded)
    pgdata = work / "pitr-data"
    started = time.monotonic()
    try:
        result = pitr.restore(settings, None, pgdata, force=False)
    except BackupError as exc:
        checks.append({"name": "pitr restore --latest", "passed": False, "detail": f"{type(exc).__name__}: {exc}"})
        return report
    report["restore"] = result
    checks.append(
        {
            "name": "pitr restore --latest",
            "passed": True,
            "detail": f"base backup {result['base_backup']} + {result['wal_objects']} WAL objects, "
            f"last transaction {result.get('last_transaction_at')}, {result['seconds'].get('total')}s",
        }
    )
    server_bin = settings.pg_clients_root / str(result["server_major"]) / "bin"
    try:
        try:
            with scratch_server(server_bin, pgdata, work / "pitr-server.log") as conn:
                report["duration_seconds"] = round(time.monotonic() - started, 3)
                restored, _ = table_counts(client, {**conn, "PGDATABASE": database}, TargetError)
        except TargetError as exc:
            checks.append({"name": "pitr server answers", "passed": False, "detail": str(exc)})
            return report
        checks.append(
            {
                "name": "pitr server answers",
                "passed": True,
                "detail": f"PostgreSQL {result['server_major']} on the restored data answered after {report['duration_seconds']}s",
            }
        )
        # Counters read at least STATS_FLUSH_SECONDS after the restore's plan cover every change it may hold.
        time.sleep(max(0.0, started + STATS_FLUSH_SECONDS - time.monotonic()))
        verdicts = compare_counts(live, restored, stats_before, table_stats(client))
        checks.append(counts_check(verdicts))
        report["tables"] = {v.table: {"live": v.live, "restored": v.restored, "allowed": [v.low, v.high]} for v in verdicts}
        report["passed"] = all(c["passed"] for c in checks)
        return report
    finally:
        shutil.rmtree(pgdata, ignore_errors=True)


def add_to(settings: Settings, report: dict[str, Any]) -> float | None:
    """Run the PITR rehearsal after the logical drill and merge it into that drill's `report`; its
    duration (None: no base backup in the container, or the rehearsal failed)."""
    work = Path(tempfile.mkdtemp(prefix="ipa-backup-pitr-drill-", dir=settings.work_dir))
    try:
        found = run(settings, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if found is None:
        log.info("pitr drill skipped: the container holds no complete base backup")
        return None
    report["pitr"] = found
    report["checks"] = [*report["checks"], *found["checks"]]
    report["passed"] = bool(report["passed"]) and bool(found["passed"])
    seconds = found["duration_seconds"]
    return float(seconds) if found["passed"] and seconds is not None else None
