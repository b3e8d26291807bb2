"""Real PostgreSQL, Redis and Azurite on loopback for the backup tool's tests (started once per session)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # devservices lives at the repo root
    sys.path.insert(0, str(REPO_ROOT))

import backup_testdata as data  # noqa: E402

from devservices.azurite import AzuriteServer, azurite  # noqa: E402
from devservices.postgres import PostgresServer, postgres  # noqa: E402
from devservices.redis import RedisServer, redis_server  # noqa: E402

REDIS_PASSWORD = "redis pw with spaces & quotes'"
_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    with postgres(password="pg-test-pw") as server:
        yield server


@pytest.fixture(scope="session")
def redis_srv() -> Iterator[RedisServer]:
    with redis_server(password=REDIS_PASSWORD) as server:
        yield server


@pytest.fixture(scope="session")
def blob() -> Iterator[AzuriteServer]:
    with azurite() as server:
        yield server


@dataclass
class World:
    """One test's source database, Redis database, container and CLI runner."""

    pg: PostgresServer
    redis: RedisServer
    blob: AzuriteServer
    database: str
    redis_db: int
    container: str
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {
            **self.pg.env(self.database),
            "REDIS_URL": self.redis.url_for(self.redis_db),
            "BACKUP_CONTAINER": self.container,
            "AZURE_STORAGE_CONNECTION_STRING": self.blob.connection_string,
            "BACKUP_UPLOAD_RETRIES": "1",
            "BACKUP_UPLOAD_TIMEOUT_SECONDS": "10",
            "RESTORE_JOBS": "2",
            **self.extra_env,
        }

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ipa_backup", *args], env={**os.environ, **self.env, **(env or {})},
                              capture_output=True, text=True, timeout=timeout, check=False)

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "ipa_backup", *args], env={**os.environ, **self.env, **(env or {})},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def backup_ok(self) -> dict[str, Any]:
        result = self.run("backup")
        assert result.returncode == 0, result.stderr
        out: dict[str, Any] = json.loads(result.stdout)
        return out

    def sets(self) -> list[dict[str, Any]]:
        result = self.run("list", "--json")
        assert result.returncode == 0, result.stderr
        rows: list[dict[str, Any]] = json.loads(result.stdout)
        return rows

    def newest_complete(self) -> str | None:
        return next((s["set_id"] for s in self.sets() if s["complete"]), None)

    def rcli(self, db: int | None = None):  # type: ignore[no-untyped-def]
        import redis

        return redis.Redis(host="127.0.0.1", port=self.redis.port, password=REDIS_PASSWORD,
                           db=self.redis_db if db is None else db)


@pytest.fixture
def world(pg_server: PostgresServer, redis_srv: RedisServer, blob: AzuriteServer) -> Iterator[World]:
    n = next(_counter)
    w = World(pg_server, redis_srv, blob, f"app_{n}", 1 + n % 15, f"backups-{n}-{os.getpid()}")
    pg_server.create_database(w.database)
    pg_server.psql(data.PG_SCHEMA, w.database)
    client = w.rcli()
    client.flushdb()
    data.load_redis(client)
    yield w
    client.flushdb()
