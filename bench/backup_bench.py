"""Benchmark of ipa-backup against the seed's `pg_dump | gzip` and the `pg_dump -Fc -Z0 > /dev/null` floor.

Starts its own PostgreSQL (durable settings), Redis and Azurite on loopback, builds two databases
(pgbench at --pgbench-scale, and a platform-shaped multi-table database of about --multi-gb GB),
then times backup and restore of each method on each database and prints a Markdown table with
the ratios measured in this one run. Not part of `make test` (it takes minutes and several GB).

    .venv/bin/python bench/backup_bench.py                    # full size (about 2 x 1.2 GB)
    .venv/bin/python bench/backup_bench.py --pgbench-scale 10 --multi-gb 0.2   # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
# ipa-backup as it ships: the image's userland and tools (make image-rootfs), not this machine's.
IPA_BACKUP = [str(REPO_ROOT / "scripts" / "in-image.sh"), "ipa-backup"]

from devservices.azurite import azurite  # noqa: E402
from devservices.postgres import PostgresServer, postgres  # noqa: E402
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
    settings = {"shared_buffers": "1GB", "max_wal_size": "8GB", "checkpoint_timeout": "30min", "maintenance_work_mem": "256MB"}
    with tempfile.TemporaryDirectory(prefix="backup-bench-") as tmp:
        os.chmod(tmp, 0o755)  # the server runs as the postgres user
        work = Path(tmp)
        with postgres(fast=False, settings=settings, base_dir=work) as pg, redis_server() as rs, azurite(base_dir=work) as az:
            results = run(args, pg, rs.url, az.connection_string, work, knobs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"cpus": os.cpu_count(), "results": results}, indent=2))
    print(table(results))
    return 0


def run(
    args: argparse.Namespace, pg: PostgresServer, redis_url: str, conn: str, work: Path, knobs: list[dict[str, str]]
) -> list[dict[str, Any]]:
    started = time.monotonic()
    print(f"building pgbench scale {args.pgbench_scale} ...", flush=True)
    pg.create_database("pgbench")
    timed([str(pg.bin_dir / "pgbench"), "-i", "-q", "-s", str(args.pgbench_scale)], pg.env("pgbench"))
    print(f"building multi-table database of about {args.multi_gb} GB ...", flush=True)
    build_multi(pg, args.multi_gb)
    print(f"data ready in {time.monotonic() - started:.0f}s", flush=True)
    # The tool stages in the image's own /work (BACKUP_WORK_DIR's default there).
    base_env = {"REDIS_URL": redis_url, "AZURE_STORAGE_CONNECTION_STRING": conn}
    return [bench_db(pg, "multi", base_env, work, knobs, args.repeat), bench_db(pg, "pgbench", base_env, work, knobs[:1], args.repeat)]


if __name__ == "__main__":
    raise SystemExit(main())
