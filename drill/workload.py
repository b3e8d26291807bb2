"""The application's data during the drill: seed data, a continuous writer and the post-restore checks.

PostgreSQL gets a `documents` table (seed) and `drill_writes` (one row per write, timestamped by
the server's clock); Redis gets `session:*` hashes (seed) and one `drill:write:<seq>` key per write
holding its unix time. Restored data must hold every seed row and an unbroken prefix of the writes.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

SEED_DOCUMENTS = 50_000
SEED_SESSIONS = 5_000
WRITE_INTERVAL = 0.1
WRITE_PREFIX = "drill:write:"

SCHEMA_SQL = f"""
CREATE TABLE documents (
    id bigserial PRIMARY KEY,
    workflow text NOT NULL,
    body text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO documents (workflow, body)
SELECT (ARRAY['invoice-intake', 'email-triage', 'report-digest'])[1 + g % 3], repeat(md5(g::text), 6)
FROM generate_series(1, {SEED_DOCUMENTS}) AS g;
CREATE TABLE drill_writes (
    seq bigint PRIMARY KEY,
    written_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
"""


@dataclass(frozen=True)
class PgConn:
    psql: Path
    env: dict[str, str]  # PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE

    def run(self, sql: str, database: str | None = None, timeout: float = 120.0) -> str:
        env = {**os.environ, **self.env, **({"PGDATABASE": database} if database else {})}
        result = subprocess.run(
            [str(self.psql), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f", "-"],
            input=sql.encode(),
            capture_output=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.decode(errors='replace').strip()}")
        return result.stdout.decode()


def seed(pg: PgConn, rds: redis.Redis) -> None:
    database = pg.env["PGDATABASE"]
    pg.run(f'CREATE DATABASE "{database}"', database="postgres")
    pg.run(SCHEMA_SQL)
    pipe = rds.pipeline(transaction=False)
    for i in range(SEED_SESSIONS):
        pipe.hset(f"session:{i}", mapping={"user": f"user-{i % 500}", "workflow": "invoice-intake", "step": str(i % 7)})
    pipe.execute()


@dataclass
class Writer:
    """Writes one row and one key every WRITE_INTERVAL seconds until stopped (bounded by `max_seconds`)."""

    pg: PgConn
    rds: redis.Redis
    max_seconds: float = 900.0
    seq: int = 0
    writes: list[tuple[int, float]] = field(default_factory=list)  # (seq, unix time) of acknowledged key writes
    error: str | None = None

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._psql: subprocess.Popen[bytes] | None = None

    def start(self) -> Writer:
        self._stop.clear()
        self.error = None
        self._psql = subprocess.Popen(
            [str(self.pg.psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, **self.pg.env},
            start_new_session=True,
        )
        self._thread = threading.Thread(target=self._loop, name="drill-writer", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        assert self._psql is not None and self._psql.stdin is not None
        while not self._stop.is_set() and time.monotonic() < deadline:
            self.seq += 1
            try:
                self._psql.stdin.write(f"INSERT INTO drill_writes (seq) VALUES ({self.seq});\n".encode())
                self._psql.stdin.flush()
                now = time.time()
                self.rds.set(f"{WRITE_PREFIX}{self.seq}", repr(now))
                self.writes.append((self.seq, now))
            except (OSError, redis.RedisError) as exc:
                self.error = f"write {self.seq} failed: {exc}"
                return
            self._stop.wait(WRITE_INTERVAL)

    def stop(self) -> None:
        """Stop writing; the psql session ends after the statements already sent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._psql is not None:
            with contextlib.suppress(OSError):
                if self._psql.stdin:
                    self._psql.stdin.close()
            try:
                self._psql.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._psql.kill()
                self._psql.wait(timeout=5)
            self._psql = None

    def kill(self) -> None:
        """Stop at once (the disaster): statements not yet executed are lost, as in a crash."""
        self._stop.set()
        if self._psql is not None:
            with contextlib.suppress(OSError):
                self._psql.kill()
        self.stop()


@dataclass(frozen=True)
class RestoredState:
    documents: int
    pg_writes: int
    pg_min_seq: int
    pg_max_seq: int
    pg_last_write: float  # unix time of the newest restored row (0 when none)
    sessions: int
    redis_writes: int
    redis_max_seq: int
    redis_last_write: float

    @property
    def pg_contiguous(self) -> bool:
        return self.pg_writes > 0 and self.pg_min_seq == 1 and self.pg_max_seq == self.pg_writes

    @property
    def redis_contiguous(self) -> bool:
        return self.redis_writes > 0 and self.redis_max_seq == self.redis_writes


def inspect(pg: PgConn, rds: redis.Redis) -> RestoredState:
    """What the (restored) stores hold."""
    row = pg.run(
        "SELECT count(*), coalesce(min(seq), 0), coalesce(max(seq), 0), "
        "coalesce(extract(epoch FROM max(written_at)), 0) FROM drill_writes;"
        "SELECT count(*) FROM documents;"
    ).split()
    writes, min_seq, max_seq, last = row[0].split("|")
    documents = int(row[1])
    seqs: list[int] = []
    sessions = 0
    for key in rds.scan_iter(match="*", count=1000):
        name = key.decode() if isinstance(key, bytes) else str(key)
        if name.startswith(WRITE_PREFIX):
            seqs.append(int(name[len(WRITE_PREFIX) :]))
        elif name.startswith("session:"):
            sessions += 1
    redis_last = 0.0
    if seqs:
        raw = rds.get(f"{WRITE_PREFIX}{max(seqs)}")
        redis_last = float(raw.decode() if isinstance(raw, bytes) else str(raw))
    return RestoredState(
        documents, int(writes), int(min_seq), int(max_seq), float(last), sessions, len(seqs), max(seqs, default=0), redis_last
    )


def disaster(pg: PgConn, rds: redis.Redis) -> None:
    """Drop the application database and flush Redis."""
    pg.run(f'DROP DATABASE IF EXISTS "{pg.env["PGDATABASE"]}" WITH (FORCE)', database="postgres")
    rds.flushall()


# --- point-in-time recovery: commits the server acknowledged --------------------------------------------

PITR_TABLE = "pitr_ticks"
PITR_SCHEMA_SQL = f"CREATE TABLE IF NOT EXISTS {PITR_TABLE} (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())"
COMMIT_INTERVAL = 0.05


@dataclass(frozen=True)
class Commit:
    id: int
    at: float  # the row's `at`: the server's clock when the INSERT ran, before its commit
    acked: float  # when psql printed the row: after the commit (same machine, same clock)


@dataclass
class CommitWriter:
    """Commits one row of `pitr_ticks` every `interval` seconds through one psql session and keeps
    what the server acknowledged (psql prints each INSERT ... RETURNING row once it committed).
    A commit's time lies between its `at` and its `acked`: a recovery target between one row's
    `acked` and the next row's `at` splits the rows exactly."""

    pg: PgConn
    interval: float = COMMIT_INTERVAL
    max_seconds: float = 600.0
    commits: list[Commit] = field(default_factory=list)
    error: str | None = None

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._psql: subprocess.Popen[bytes] | None = None

    def start(self) -> CommitWriter:
        self.pg.run(PITR_SCHEMA_SQL)
        self._psql = subprocess.Popen(
            [str(self.pg.psql), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f", "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **self.pg.env},
            start_new_session=True,
        )
        self._thread = threading.Thread(target=self._loop, name="drill-commit-writer", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        assert self._psql is not None and self._psql.stdin is not None and self._psql.stdout is not None
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                self._psql.stdin.write(f"INSERT INTO {PITR_TABLE} DEFAULT VALUES RETURNING id, extract(epoch FROM at);\n".encode())
                self._psql.stdin.flush()
                line = self._psql.stdout.readline()
            except (OSError, ValueError) as exc:
                self.error = f"commit {len(self.commits) + 1} failed: {exc}"
                return
            acked = time.time()
            if not line:
                self.error = f"the server went away after {len(self.commits)} commits"
                return
            row_id, at = line.decode().strip().split("|")
            self.commits.append(Commit(int(row_id), float(at), acked))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._psql is not None:
            with contextlib.suppress(OSError):
                if self._psql.stdin:
                    self._psql.stdin.close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._psql is not None:
            try:
                self._psql.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._psql.kill()
                self._psql.wait(timeout=5)
            self._psql = None


def pitr_rows(pg: PgConn) -> list[tuple[int, float]]:
    """(id, at) of every `pitr_ticks` row, by id."""
    out = pg.run(f"SELECT id, extract(epoch FROM at) FROM {PITR_TABLE} ORDER BY id")
    return [(int(i), float(a)) for i, a in (line.split("|") for line in out.split())]
