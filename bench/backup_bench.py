"""Benchmark of ipa-backup against the seed's `pg_dump | gzip` and the `pg_dump -Fc -Z0 > /dev/null` floor,
and of the physical design (base backup + WAL stream, `pitr-restore`) against both.

Starts Redis and Azurite on loopback and, for each of two databases (a platform-shaped multi-table
database of about --multi-gb GB, and pgbench at --pgbench-scale), its own PostgreSQL (durable
settings) holding only that database. It times backup and restore of each method, then the
physical ones on the same server: the server's load during a base backup and during one logical
backup, and `pitr-restore --latest` until the image's PostgreSQL answers on the restored data.
It prints Markdown tables with the ratios measured in this one run, and the 30-day storage of the
prod render's settings. Not part of `make test` (it takes minutes and several GB).

    .venv/bin/python bench/backup_bench.py                    # full size (about 2 x 1.2 GB)
    .venv/bin/python bench/backup_bench.py --pgbench-scale 10 --multi-gb 0.2   # quick look
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
# ipa-backup as it ships: the image's userland and tools (make image-rootfs), not this machine's.
IPA_BACKUP = [str(REPO_ROOT / "scripts" / "in-image.sh"), "ipa-backup"]

from devservices.azurite import azurite  # noqa: E402
from devservices.image import IN_IMAGE, image_path, image_workdir  # noqa: E402
from devservices.postgres import PostgresServer, postgres  # noqa: E402
from devservices.process import free_port  # noqa: E402
from devservices.redis import redis_server  # noqa: E402

# Six large tables shaped like the platform's, each with three or four secondary indexes (some on
# text or expressions) and foreign keys, so that a restore spends real time building indexes and
# validating constraints, as the platform's does; the text is mostly random hex and base64 (poorly
# compressible), with some repeated words as in real payloads.
MULTI_TABLES = {
    "users": (
        "id bigint PRIMARY KEY, email text NOT NULL, name text, profile jsonb, created_at timestamptz",
        "SELECT i, 'user' || i || '@example.com', 'Name ' || md5(i::text), "
        "jsonb_build_object('bio', encode(gen_random_bytes(120), 'base64'), 'lang', 'de'), "
        "now() - i * interval '1 minute' FROM generate_series(1, {n}) i",
        [
            "CREATE UNIQUE INDEX ON users (email)",
            "CREATE INDEX ON users (created_at)",
            "CREATE INDEX ON users (name)",
            "CREATE INDEX ON users ((profile->>'lang'), created_at)",
        ],
        0.08,
    ),
    "executions": (
        "id bigint PRIMARY KEY, user_id bigint REFERENCES users, workflow text, status text, cost numeric(12,4), "
        "started_at timestamptz, input text",
        "SELECT i, 1 + i % {users}, 'workflow-' || i % 40, (ARRAY['success','failure','timeout'])[1 + i % 3], "
        "(i % 9973) / 7.0, now() - i * interval '2 seconds', encode(gen_random_bytes(150), 'base64') "
        "FROM generate_series(1, {n}) i",
        [
            "CREATE INDEX ON executions (user_id, status)",
            "CREATE INDEX ON executions (started_at)",
            "CREATE INDEX ON executions (workflow, started_at)",
            "CREATE INDEX ON executions (left(input, 24))",
        ],
        0.22,
    ),
    "execution_steps": (
        "id bigint PRIMARY KEY, execution_id bigint REFERENCES executions, step int, output text, tokens int",
        "SELECT i, 1 + i / 4, i % 4, 'step output ' || md5(i::text) || ' ' || encode(gen_random_bytes(100), 'hex'), "
        "i % 4000 FROM generate_series(1, {n}) i",
        [
            "CREATE INDEX ON execution_steps (execution_id)",
            "CREATE INDEX ON execution_steps (tokens)",
            "CREATE INDEX ON execution_steps (substr(output, 13, 32))",
        ],
        0.22,
    ),
    "messages": (
        "id bigint PRIMARY KEY, conversation_id bigint, role text, content text, created_at timestamptz",
        "SELECT i, i / 20, (ARRAY['user','assistant'])[1 + i % 2], "
        "'Please summarise the document ' || encode(gen_random_bytes(180), 'base64'), now() - i * interval '1 second' "
        "FROM generate_series(1, {n}) i",
        [
            "CREATE INDEX ON messages (conversation_id)",
            "CREATE INDEX ON messages (created_at)",
            "CREATE INDEX ON messages (role, conversation_id)",
            "CREATE INDEX ON messages (substr(content, 31, 24))",
        ],
        0.22,
    ),
    "audit_log": (
        "id bigint PRIMARY KEY, actor bigint REFERENCES users, action text, detail jsonb, at timestamptz",
        "SELECT i, 1 + i % {users}, 'action.' || i % 25, jsonb_build_object('ip', '10.0.' || i % 255 || '.1', "
        "'trace', md5(i::text) || md5((i + 1)::text)), now() - i * interval '1 second' FROM generate_series(1, {n}) i",
        [
            "CREATE INDEX ON audit_log (actor)",
            "CREATE INDEX ON audit_log (at)",
            "CREATE INDEX ON audit_log (action, at)",
            "CREATE INDEX ON audit_log ((detail->>'trace'))",
        ],
        0.13,
    ),
    "documents": (
        "id bigint PRIMARY KEY, owner bigint REFERENCES users, title text, body text, sha text",
        "SELECT i, 1 + i % {users}, 'Document ' || i, encode(gen_random_bytes(700), 'base64'), md5(i::text) FROM generate_series(1, {n}) i",
        ["CREATE INDEX ON documents (owner)", "CREATE INDEX ON documents (sha)", "CREATE INDEX ON documents (title)"],
        0.13,
    ),
}
# Heap bytes per row, and the share of heap in the database (the rest: indexes).
ROW_BYTES = {"users": 330, "executions": 330, "execution_steps": 300, "messages": 350, "audit_log": 200, "documents": 1000}
HEAP_SHARE = 0.72


def busy_cpu_seconds() -> float:
    """CPU seconds this machine has spent busy since boot (all cores, every process, the kernel)."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def timed(argv: list[str] | str, env: dict[str, str], shell: bool = False) -> float:
    started = time.monotonic()
    result = subprocess.run(
        argv, env={**os.environ, **env}, shell=shell, capture_output=True, text=True, executable="/bin/bash" if shell else None, check=False
    )
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"failed ({result.returncode}): {argv}\n{result.stderr[-3000:]}")
    return elapsed


def timed_restore(argv: list[str], env: dict[str, str]) -> tuple[float, dict[str, float]]:
    """Time an `ipa-backup restore`; also return its phases, from its JSON log lines."""
    started = time.monotonic()
    result = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"failed ({result.returncode}): {argv}\n{result.stderr[-3000:]}")
    phases: dict[str, float] = {}
    for line in result.stderr.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # not one of the tool's JSON lines
        if entry.get("msg") == "restore phases":
            phases.update(entry["seconds"])
        elif entry.get("msg") in ("archive data offsets set", "pg_restore finished"):
            phases[entry["msg"].split()[0].replace("archive", "offsets")] = entry["seconds"]
        elif entry.get("msg") == "restore finished":
            phases["in_process_total"] = entry["seconds"]
    return elapsed, phases


def db_size(pg: PostgresServer, db: str) -> int:
    return int(pg.psql(f"SELECT pg_database_size('{db}')").strip())


def build_multi(pg: PostgresServer, gigabytes: float) -> None:
    pg.create_database("multi")
    pg.psql("CREATE EXTENSION pgcrypto", "multi")
    users = 1
    for name, (columns, insert, indexes, share) in MULTI_TABLES.items():
        rows = int(gigabytes * 1e9 * HEAP_SHARE * share / ROW_BYTES[name])
        users = users if name != "users" else min(rows, 50000)  # foreign keys reference the first users
        pg.psql(f"CREATE TABLE {name} ({columns}); INSERT INTO {name} " + insert.format(n=rows, users=users), "multi", timeout=1800)
        for index in indexes:
            pg.psql(index, "multi", timeout=1800)
        print(f"  {name}: {rows} rows", flush=True)
    pg.psql("VACUUM ANALYZE", "multi", timeout=1800)


def settle(pg: PostgresServer) -> None:
    """Flush dirty data before a timed step, so that no step pays for the previous one's writes."""
    pg.psql("CHECKPOINT")
    subprocess.run(["sync"], check=True)


def best(pg: PostgresServer, repeat: int, step: Any) -> float:
    """The fastest of `repeat` runs of `step()` (each after `settle`): the least disturbed measurement."""
    times = []
    for _ in range(repeat):
        settle(pg)
        times.append(step())
    return min(times)


def bench_db(pg: PostgresServer, db: str, base_env: dict[str, str], work: Path, knobs: list[dict[str, str]], repeat: int) -> dict[str, Any]:
    bindir = pg.bin_dir
    env = {**pg.env(db)}
    res: dict[str, Any] = {"database": db, "size_bytes": db_size(pg, db), "repeat": repeat}
    res["floor"] = best(pg, repeat, lambda: timed(f"{bindir}/pg_dump -Fc -Z0 > /dev/null", env, shell=True))
    seed_file = work / f"{db}.sql.gz"
    res["seed_backup"] = best(pg, repeat, lambda: timed(f"set -o pipefail; {bindir}/pg_dump | gzip > {seed_file}", env, shell=True))
    res["seed_bytes"] = seed_file.stat().st_size
    res["pg_dump_z1_file"] = best(pg, repeat, lambda: timed(f"{bindir}/pg_dump -Fc -Z1 -f {work}/{db}.z1.dump", env, shell=True))

    def restore_into_fresh(target: str, command: str) -> tuple[float, float]:
        """Best of `repeat` runs of a restore `command` into a freshly created database `target`:
        its seconds, and the CPU seconds the whole machine was busy during it."""
        runs = []
        for _ in range(repeat):
            pg.drop_database(target)
            pg.create_database(target)
            settle(pg)
            cpu = busy_cpu_seconds()
            elapsed = timed(command, {**env, "PGDATABASE": target}, shell=True)
            runs.append((elapsed, busy_cpu_seconds() - cpu))
        pg.drop_database(target)
        return min(runs)

    res["pg_restore_z1_file"], res["pg_restore_z1_file_cpu"] = restore_into_fresh(
        f"{db}_z1", f"{bindir}/pg_restore -j2 --no-owner --exit-on-error -d {db}_z1 {work}/{db}.z1.dump"
    )
    os.unlink(f"{work}/{db}.z1.dump")
    res["seed_restore"], res["seed_restore_cpu"] = restore_into_fresh(
        f"{db}_seed", f"set -o pipefail; gunzip -c {seed_file} | {bindir}/psql -X -q -v ON_ERROR_STOP=1"
    )
    seed_file.unlink()
    runs = []
    for i, knob in enumerate(knobs):
        run_env = {**base_env, **env, **knob, "BACKUP_CONTAINER": f"bench-{db}"}
        times: dict[str, list[float]] = {"backup": [], "restore": [], "restore_cpu": []}
        phases: list[dict[str, float]] = []
        for _ in range(repeat if i == 0 else 1):
            settle(pg)
            times["backup"].append(timed([*IPA_BACKUP, "backup"], run_env))
            pg.drop_database(f"{db}_ipa")
            settle(pg)
            cpu = busy_cpu_seconds()
            elapsed, phase = timed_restore([*IPA_BACKUP, "restore", "--only", "postgres", "--pg-database", f"{db}_ipa"], run_env)
            times["restore"].append(elapsed)
            times["restore_cpu"].append(busy_cpu_seconds() - cpu)
            phases.append(phase)
        listing = subprocess.run([*IPA_BACKUP, "list", "--json"], env={**os.environ, **run_env}, capture_output=True, text=True, check=True)
        stored = json.loads(listing.stdout)[0]["size"]
        pg.drop_database(f"{db}_ipa")
        fastest = times["restore"].index(min(times["restore"]))
        run = {
            "knobs": knob,
            "backup": min(times["backup"]),
            "restore": min(times["restore"]),
            "stored_bytes": stored,
            "restore_cpu": times["restore_cpu"][fastest],
            "all": times,
            "restore_phases": phases[fastest],
        }
        runs.append(run)
        print(
            f"  {db} {knob}: backup {run['backup']:.1f}s restore {run['restore']:.1f}s stored {stored / 1e6:.0f} MB "
            f"phases {phases[fastest]}",
            flush=True,
        )
    res["ipa_runs"] = runs
    return res


# --- the physical design: base backup + WAL stream, pitr-restore -------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")
WAL_LOAD_SECONDS = 15  # writes after the base backup: the restore replays their WAL
WAL_LOAD_SQL = "INSERT INTO bench_wal (payload) VALUES (md5(random()::text) || md5(random()::text));\n"


def _postmaster(pg: PostgresServer) -> int:
    return int((pg.data_dir / "postmaster.pid").read_text().splitlines()[0])


def _stat(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int(_stat(int(entry.name))[1]) == parent:
                    found.append(int(entry.name))
    return found


def server_cpu_seconds(postmaster: int) -> float:
    """CPU the server has used since it started: the postmaster's own and that of its reaped children
    (cutime, cstime: backends and walsenders that have exited), plus its running children's."""
    fields = _stat(postmaster)
    ticks = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    for child in _children(postmaster):
        with contextlib.suppress(OSError, IndexError):
            ticks += sum(int(v) for v in _stat(child)[11:15])
    return ticks / CLK_TCK


def _io(pid: int) -> tuple[int, int]:
    """(rchar, read_bytes) of a process: bytes it read by system calls (page cache or disk), and from storage."""
    values = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return int(values["rchar"]), int(values["read_bytes"])


BUFFER_PAGES_SQL = "SELECT sum(blks_hit + blks_read) * current_setting('block_size')::bigint FROM pg_stat_database"


class ServerLoad:
    """The server's CPU seconds (exact, from the counters above), bytes read by system calls (every
    server process's /proc/<pid>/io, sampled every 50 ms: a process's reads in its last 50 ms before
    exiting are missed), and bytes of the pages its sessions read through shared buffers
    (pg_stat_database: a dump reads its tables there, mostly without a system call when they are
    cached; a base backup reads the files directly)."""

    def __init__(self, pg: PostgresServer) -> None:
        self.pg = pg
        self.postmaster = _postmaster(pg)
        self.start: dict[int, tuple[int, int]] = {}
        self.last: dict[int, tuple[int, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _sample(self) -> dict[int, tuple[int, int]]:
        found = {}
        for pid in [self.postmaster, *_children(self.postmaster)]:
            with contextlib.suppress(OSError, KeyError, ValueError):
                found[pid] = _io(pid)
        return found

    def _poll(self) -> None:
        while not self._stop.wait(0.05):
            self.last.update(self._sample())

    def __enter__(self) -> ServerLoad:
        self.pages = int(self.pg.psql(BUFFER_PAGES_SQL).strip())
        self.start = self._sample()
        self.last = dict(self.start)
        self.cpu = server_cpu_seconds(self.postmaster)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.last.update(self._sample())
        self.cpu_seconds = server_cpu_seconds(self.postmaster) - self.cpu
        base = {pid: self.start.get(pid, (0, 0)) for pid in self.last}
        self.rchar = sum(v[0] - base[pid][0] for pid, v in self.last.items())
        self.read_bytes = sum(v[1] - base[pid][1] for pid, v in self.last.items())
        # A session's statistics reach pg_stat_database when it ends; this query's own session is counted too.
        self.buffer_bytes = int(self.pg.psql(BUFFER_PAGES_SQL).strip()) - self.pages


def _tool(args: list[str], env: dict[str, str], timeout: float = 3600) -> tuple[float, dict[str, Any]]:
    """Seconds and the JSON result of `ipa-backup ARGS` in the image."""
    started = time.monotonic()
    result = subprocess.run([*IPA_BACKUP, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout, check=False)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"ipa-backup {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return elapsed, json.loads(result.stdout.strip().splitlines()[-1])


def _wal_metrics(port: int) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as answer:
            text = answer.read().decode()
    except OSError:
        return {}
    return {k: float(v) for k, _, v in (line.partition(" ") for line in text.splitlines()) if k.startswith("ipa_wal_")}


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.2)


@contextlib.contextmanager
def wal_stream(env: dict[str, str]) -> Iterator[int]:
    """`ipa-backup wal-stream` as its Deployment runs it (its own spool folder); its metrics port.
    On exit SIGTERM: it stops pg_receivewal and uploads what it wrote."""
    spool = image_workdir("bench-wal-spool-")
    port = free_port()
    stream_env = {**env, "WAL_SPOOL_DIR": image_path(spool), "METRICS_PORT": str(port), "WAL_PARTIAL_UPLOAD_SECONDS": "1"}
    argv = [*IPA_BACKUP, "wal-stream"]
    log = open(spool.parent / f"{spool.name}.log", "wb")  # noqa: SIM115 - closed below, after the stream
    # Its own session: SIGKILL to the group also ends its pg_receivewal.
    proc = subprocess.Popen(argv, env={**os.environ, **stream_env}, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    try:
        _wait(lambda: _wal_metrics(port).get("ipa_wal_stream_up") == 1 or proc.poll() is not None, 60, "the WAL stream")
        if proc.poll() is not None:
            raise SystemExit(f"wal-stream exited: {Path(log.name).read_text()[-2000:]}")
        yield port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        shutil.rmtree(spool, ignore_errors=True)
        Path(log.name).unlink()


def start_restored(pgdata: str, major: int, bindir: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """The image's PostgreSQL on a restored data directory, on loopback; returns once it accepts connections."""
    port = free_port()
    sock = image_workdir("bench-pgsock-")
    argv = [str(IN_IMAGE), f"/usr/lib/postgresql/{major}/bin/postgres", "-D", pgdata, "-c", "listen_addresses=127.0.0.1"]
    argv += ["-c", f"port={port}", "-c", f"unix_socket_directories={image_path(sock)}", "-c", "dynamic_shared_memory_type=mmap"]
    with open(sock / "server.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def ready() -> bool:
        if proc.poll() is not None:
            raise SystemExit(f"the restored server exited:\n{(sock / 'server.log').read_text()[-2000:]}")
        return subprocess.run([str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-q"], check=False).returncode == 0

    _wait(ready, 300, "the restored server")
    return proc, sock


def bench_physical(pg: PostgresServer, db: str, base_env: dict[str, str]) -> dict[str, Any]:
    """On the server that holds only `db`: the server's load during a base backup and during one
    logical backup, then `pitr-restore --latest` (download, verify, recovery) and the image's
    PostgreSQL started on the result until it answers."""
    env = {**base_env, **pg.env(db), "BACKUP_CONTAINER": f"pitr-{db}", "WAL_SLOT": "bench_wal"}
    res: dict[str, Any] = {"cluster_bytes": int(pg.psql("SELECT sum(pg_database_size(oid)) FROM pg_database").strip())}
    pg.psql("CREATE TABLE bench_wal (id bigserial PRIMARY KEY, payload text)", db)
    with wal_stream(env) as port:
        settle(pg)
        # A fast checkpoint: the spread one, the CronJob's default, spreads the same writes over checkpoint_timeout.
        with ServerLoad(pg) as load:
            res["base_backup"], out = _tool(["base-backup"], {**env, "BASE_BACKUP_CHECKPOINT": "fast"})
        res["base_backup_cpu"], res["base_backup_rchar"], res["base_backup_read_bytes"] = load.cpu_seconds, load.rchar, load.read_bytes
        res["base_backup_buffer_bytes"] = load.buffer_bytes
        res["base_stored_bytes"] = sum(f["size"] for f in out["files"])
        settle(pg)
        with ServerLoad(pg) as load:
            res["logical_backup"], _ = _tool(["backup"], {**env, "BACKUP_CONTAINER": f"load-{db}"})
        res["logical_backup_cpu"], res["logical_backup_rchar"] = load.cpu_seconds, load.rchar
        res["logical_backup_read_bytes"], res["logical_backup_buffer_bytes"] = load.read_bytes, load.buffer_bytes
        script = Path(tempfile.mkdtemp(prefix="bench-wal-load-")) / "insert.sql"
        script.write_text(WAL_LOAD_SQL)
        timed([str(pg.bin_dir / "pgbench"), "-n", "-c", "2", "-j", "2", "-T", str(WAL_LOAD_SECONDS), "-f", str(script)], pg.env(db))
        shutil.rmtree(script.parent)
        lsn = int(pg.psql("SELECT pg_current_wal_flush_lsn() - '0/0'").strip())
        _wait(lambda: _wal_metrics(port).get("ipa_wal_stream_uploaded_lsn", 0) >= lsn - 64, 120, "the stream to upload the WAL")
    res["wal_after_base_bytes"] = lsn - int(pg.psql(f"SELECT '{out['end_lsn']}'::pg_lsn - '0/0'").strip())
    pg.psql("SELECT pg_drop_replication_slot('bench_wal')")
    restore_dir = image_workdir("bench-pitr-")
    pgdata = image_path(restore_dir) + "/data"
    try:
        settle(pg)
        cpu = busy_cpu_seconds()
        res["pitr_restore"], out = _tool(["pitr-restore", "--latest", "--pgdata", pgdata], env)
        started = time.monotonic()
        server, sock = start_restored(pgdata, pg.major, pg.bin_dir)
        res["server_start"] = time.monotonic() - started
        res["physical_restore"] = res["pitr_restore"] + res["server_start"]
        res["physical_restore_cpu"] = busy_cpu_seconds() - cpu
        res["pitr_phases"] = out["seconds"]
        res["wal_objects"] = out["wal_objects"]
        server.send_signal(signal.SIGINT)
        server.wait(timeout=120)
        shutil.rmtree(sock, ignore_errors=True)
    finally:
        shutil.rmtree(restore_dir, ignore_errors=True)
    res["wal_ratio"] = wal_compression(env)
    print(
        f"  {db} physical: base backup {res['base_backup']:.1f}s ({res['base_stored_bytes'] / 1e6:.0f} MB of "
        f"{res['cluster_bytes'] / 1e6:.0f} MB), pitr-restore {res['pitr_restore']:.1f}s + server start {res['server_start']:.1f}s, "
        f"phases {res['pitr_phases']}; WAL compressed to {res['wal_ratio']:.2f}",
        flush=True,
    )
    return res


def wal_compression(env: dict[str, str]) -> float:
    """Stored / raw bytes of the completed WAL segments wal-stream uploaded (their blob metadata)."""
    from azure.storage.blob import BlobServiceClient

    container = BlobServiceClient.from_connection_string(env["AZURE_STORAGE_CONNECTION_STRING"]).get_container_client(
        env["BACKUP_CONTAINER"]
    )
    stored = raw = 0
    for blob in container.list_blobs(name_starts_with="wal/", include=["metadata"]):
        if not blob.name.endswith(".partial.zst") and "raw_size" in (blob.metadata or {}) and ".history" not in blob.name:
            stored += int(blob.size)
            raw += int(blob.metadata["raw_size"])
    return stored / raw if raw else float("nan")


def storage_30_days(results: list[dict[str, Any]]) -> str:
    """The 30-day storage of the prod render's settings (build/prod/capacity.md), then with the base
    backup and WAL ratios this run measured on the multi-table database."""
    from drill.rendered import parse_rendered_settings
    from offline import capacity

    path = REPO_ROOT / "build" / "prod" / "settings.json"
    if not path.is_file():
        return f"(no {path}: render the prod stack for the storage comparison)"
    settings = parse_rendered_settings(json.loads(path.read_text()))
    multi = next(r for r in results if r["database"] == "multi")["physical"]
    measured = {"BASE_RATIO": multi["base_stored_bytes"] / multi["cluster_bytes"], "WAL_RATIO": multi["wal_ratio"]}
    lines = [
        "| assumptions | logical only, kept | with PITR, kept | ratio (goal <= 0.10) | without the partial uploads |",
        "|---|---|---|---|---|",
    ]
    for label, ratios in (
        ("as rendered (build/prod/capacity.md)", {}),
        (f"base {measured['BASE_RATIO']:.2f}, WAL {measured['WAL_RATIO']:.2f} of raw (measured here)", measured),
    ):
        saved = {k: getattr(capacity, k) for k in ratios}
        try:
            for k, v in ratios.items():  # the module's constants are the assumptions capacity.md states
                setattr(capacity, k, v)
            c = capacity.capacity(settings)
        finally:
            for k, v in saved.items():
                setattr(capacity, k, v)
        lines.append(
            f"| {label} | {c.logical_only.kept_gb / 1000:.2f} TB | {c.pitr.kept_gb / 1000:.2f} TB | {c.ratio:.3f} | "
            f"{c.ratio_without_partials:.3f} |"
        )
    return "\n".join(lines)


def physical_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| database | physical restore s (pitr-restore + server start) | seed `gunzip \\| psql` s | seed / physical (goal) | "
        "ipa-backup logical restore s | physical restore CPU s |",
        "|---|---|---|---|---|---|",
    ]
    goals = {"multi": 3.0, "pgbench": 2.0}
    for r in results:
        p = r["physical"]
        ratio = r["seed_restore"] / p["physical_restore"]
        goal = goals.get(r["database"], 0.0)
        lines.append(
            f"| {r['database']} | {p['physical_restore']:.1f} ({p['pitr_restore']:.1f} + {p['server_start']:.1f}; phases "
            f"{', '.join(f'{k} {v}' for k, v in p['pitr_phases'].items())}; {p['wal_objects']} WAL objects, "
            f"{p['wal_after_base_bytes'] / 1e6:.0f} MB of WAL after the base backup) | {r['seed_restore']:.1f} | {ratio:.2f}x "
            f"(>= {goal:g}x: {'met' if ratio >= goal else 'NOT met'}) | {r['ipa_runs'][0]['restore']:.1f} | "
            f"{p['physical_restore_cpu']:.1f} |"
        )
    lines += [
        "",
        "| database | base backup: server CPU s | read: syscalls / storage / shared buffers | one logical backup (`ipa-backup backup`, "
        "pg_dump): server CPU s | read: syscalls / storage / shared buffers | CPU base / logical |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        p = r["physical"]
        lines.append(
            f"| {r['database']} | {p['base_backup_cpu']:.1f} (run {p['base_backup']:.1f} s) | {p['base_backup_rchar'] / 1e6:.0f} / "
            f"{p['base_backup_read_bytes'] / 1e6:.0f} / {p['base_backup_buffer_bytes'] / 1e6:.0f} MB | "
            f"{p['logical_backup_cpu']:.1f} (run {p['logical_backup']:.1f} s) | {p['logical_backup_rchar'] / 1e6:.0f} / "
            f"{p['logical_backup_read_bytes'] / 1e6:.0f} / {p['logical_backup_buffer_bytes'] / 1e6:.0f} MB | "
            f"{p['base_backup_cpu'] / max(p['logical_backup_cpu'], 0.01):.2f} |"
        )
    return "\n".join(lines)


def table(results: list[dict[str, Any]]) -> str:
    cores = os.cpu_count() or 1
    lines = [
        "| database | size | method | backup s | restore s | restore CPU s | stored MB | seed / this, backup | seed / this, restore |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ceilings = []
    for r in results:
        size = f"{r['size_bytes'] / 1e9:.2f} GB"
        lines.append(
            f"| {r['database']} | {size} | seed `pg_dump \\| gzip` / `gunzip \\| psql` | {r['seed_backup']:.1f} | "
            f"{r['seed_restore']:.1f} | {r['seed_restore_cpu']:.1f} | {r['seed_bytes'] / 1e6:.0f} | 1.00x | 1.00x |"
        )
        lines.append(
            f"| {r['database']} | {size} | `pg_dump -Fc -Z1` to a file / `pg_restore -j2` | {r['pg_dump_z1_file']:.1f} | "
            f"{r['pg_restore_z1_file']:.1f} | {r['pg_restore_z1_file_cpu']:.1f} | | "
            f"{r['seed_backup'] / r['pg_dump_z1_file']:.2f}x | {r['seed_restore'] / r['pg_restore_z1_file']:.2f}x |"
        )
        lines.append(
            f"| {r['database']} | {size} | floor `pg_dump -Fc -Z0 > /dev/null` | {r['floor']:.1f} | | | | "
            f"{r['seed_backup'] / r['floor']:.2f}x | |"
        )
        for run in r["ipa_runs"]:
            knobs = ", ".join(f"{k}={v}" for k, v in run["knobs"].items()) or "defaults"
            lines.append(
                f"| {r['database']} | {size} | ipa-backup ({knobs}) | {run['backup']:.1f} | {run['restore']:.1f} | "
                f"{run['restore_cpu']:.1f} | {run['stored_bytes'] / 1e6:.0f} | {r['seed_backup'] / run['backup']:.2f}x | "
                f"{r['seed_restore'] / run['restore']:.2f}x |"
            )
        # Every method does the same server work; no restore can finish before its CPU work is
        # spread over all cores, so the least CPU any restore needed bounds the best ratio.
        least = min([r["seed_restore_cpu"], r["pg_restore_z1_file_cpu"], *(run["restore_cpu"] for run in r["ipa_runs"])])
        floor = least / cores
        ceilings.append(
            f"- {r['database']}: the least CPU a restore used is {least:.1f} s, so on {cores} cores no restore "
            f"can take under {floor:.1f} s: at most {r['seed_restore'] / floor:.2f}x the seed's "
            f"{r['seed_restore']:.1f} s (which itself kept {r['seed_restore_cpu'] / r['seed_restore']:.2f} "
            "cores busy on average)."
        )
    return "\n".join(lines) + "\n\nRestore ceiling (restore CPU s: the whole machine, busy, during the restore):\n" + "\n".join(ceilings)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pgbench-scale", type=int, default=70)
    parser.add_argument("--multi-gb", type=float, default=1.2)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each baseline and of the default ipa-backup; the fastest counts")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "build" / "bench" / "backup_bench.json")
    parser.add_argument(
        "--knobs", default="default", choices=["default", "all"], help="all: also compression levels, block size, concurrency, jobs"
    )
    args = parser.parse_args()
    knobs: list[dict[str, str]] = [{}]
    if args.knobs == "all":
        knobs += [
            {"BACKUP_ZSTD_LEVEL": "3"},
            {"BACKUP_ZSTD_LEVEL": "6"},
            {"BACKUP_BLOCK_SIZE_MB": "32", "BACKUP_UPLOAD_CONCURRENCY": "2"},
            {"RESTORE_JOBS": "1"},
            {"RESTORE_JOBS": "4"},
        ]
    with tempfile.TemporaryDirectory(prefix="backup-bench-") as tmp:
        os.chmod(tmp, 0o755)  # the server runs as the postgres user
        work = Path(tmp)
        with redis_server() as rs, azurite(base_dir=work) as az:
            results = run(args, rs.url, az.connection_string, work, knobs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"cpus": os.cpu_count(), "results": results}, indent=2))
    print(table(results))
    print("\nPhysical restore and base backup load (same server, same run):\n")
    print(physical_table(results))
    print("\n30-day storage, prod settings:\n")
    print(storage_30_days(results))
    return 0


SERVER_SETTINGS = {"shared_buffers": "1GB", "max_wal_size": "8GB", "checkpoint_timeout": "30min", "maintenance_work_mem": "256MB"}


def run(args: argparse.Namespace, redis_url: str, conn: str, work: Path, knobs: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Each database on a server of its own: a base backup then holds that database alone."""
    # The tool stages in the image's own /work (BACKUP_WORK_DIR's default there).
    base_env = {"REDIS_URL": redis_url, "AZURE_STORAGE_CONNECTION_STRING": conn}
    results = []
    for db in ("multi", "pgbench"):
        with postgres(fast=False, settings=SERVER_SETTINGS, base_dir=work) as pg:
            started = time.monotonic()
            if db == "pgbench":
                print(f"building pgbench scale {args.pgbench_scale} ...", flush=True)
                pg.create_database("pgbench")
                timed([str(pg.bin_dir / "pgbench"), "-i", "-q", "-s", str(args.pgbench_scale)], pg.env("pgbench"))
            else:
                print(f"building multi-table database of about {args.multi_gb} GB ...", flush=True)
                build_multi(pg, args.multi_gb)
            print(f"data ready in {time.monotonic() - started:.0f}s", flush=True)
            result = bench_db(pg, db, base_env, work, knobs if db == "multi" else knobs[:1], args.repeat)
            result["physical"] = bench_physical(pg, db, base_env)
            results.append(result)
    return results


if __name__ == "__main__":
    raise SystemExit(main())
