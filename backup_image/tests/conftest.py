"""Real PostgreSQL, Redis and Azurite on loopback for the backup tool's tests (started once per session).

The tool under test is the image's: `ipa-backup` inside build/image-rootfs (scripts/in-image.sh), with
the image's own PostgreSQL clients, Redis and Python. The session first brings that rootfs up to date
with the checkout (scripts/image-rootfs.sh: seconds when only the tool changed). Servers: this
machine's PostgreSQL 15 and Redis 7, and Debian 13's PostgreSQL 17 and Redis 8 (build/servers-rootfs).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # devservices lives at the repo root
    sys.path.insert(0, str(REPO_ROOT))

import backup_testdata as data  # noqa: E402

from devservices.azurite import AzuriteServer, azurite  # noqa: E402
from devservices.image import IMAGE_ROOTFS, IN_IMAGE  # noqa: E402
from devservices.postgres import PostgresServer, postgres  # noqa: E402
from devservices.redis import RedisServer, redis_server  # noqa: E402

REDIS_PASSWORD = "redis pw with spaces & quotes'"
# The server majors the image's clients are tested against, each pairing both ways.
PG_MAJORS = (15, 17)
REDIS_MAJORS = (7, 8)
_counter = itertools.count()


@pytest.fixture(scope="session", autouse=True)
def image_rootfs(request: pytest.FixtureRequest) -> Path:
    """The image's userland, with the tool built from this checkout. Only tests marked `services` run
    the image's tool; when none of this folder's is selected (`make unit`), nothing is built."""
    here = Path(__file__).parent
    if not any(item.get_closest_marker("services") and here in item.path.parents for item in request.session.items):
        return IMAGE_ROOTFS
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "image-rootfs.sh")], capture_output=True, text=True, timeout=900, check=False
    )
    assert result.returncode == 0, f"make image-rootfs failed:\n{result.stdout}{result.stderr}"
    return IMAGE_ROOTFS


@pytest.fixture(scope="session")
def pg15() -> Iterator[PostgresServer]:
    with postgres(password="pg-test-pw", major=15) as server:
        yield server


@pytest.fixture(scope="session")
def pg17() -> Iterator[PostgresServer]:
    with postgres(password="pg-test-pw", major=17) as server:
        yield server


@pytest.fixture(scope="session")
def redis7() -> Iterator[RedisServer]:
    with redis_server(password=REDIS_PASSWORD, major=7) as server:
        yield server


@pytest.fixture(scope="session")
def redis8() -> Iterator[RedisServer]:
    with redis_server(password=REDIS_PASSWORD, major=8) as server:
        yield server


@pytest.fixture(scope="session")
def pg_server(pg15: PostgresServer) -> PostgresServer:
    """The default source server of the tests that don't pair versions."""
    return pg15


@pytest.fixture(scope="session")
def redis_srv(redis7: RedisServer) -> RedisServer:
    return redis7


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
        """`ipa-backup ARGS` inside the image rootfs."""
        return subprocess.run(
            [str(IN_IMAGE), "ipa-backup", *args],
            env={**os.environ, **self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """The same, running; its PID is the tool's own (scripts/in-image.sh execs)."""
        return subprocess.Popen(
            [str(IN_IMAGE), "ipa-backup", *args],
            env={**os.environ, **self.env, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

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

        return redis.Redis(host="127.0.0.1", port=self.redis.port, password=REDIS_PASSWORD, db=self.redis_db if db is None else db)


def other_redis(server: RedisServer, db: int):  # type: ignore[no-untyped-def]
    """A client of `db` on another Redis server: where a set's database lands when restored there."""
    import redis

    return redis.Redis(host="127.0.0.1", port=server.port, password=REDIS_PASSWORD, db=db)


@contextmanager
def make_world(pg: PostgresServer, redis_server: RedisServer, blob: AzuriteServer) -> Iterator[World]:
    """A fresh source database and Redis db loaded with the realistic test data, and an empty container."""
    n = next(_counter)
    w = World(pg, redis_server, blob, f"app_{n}", 1 + n % 15, f"backups-{n}-{os.getpid()}")
    pg.create_database(w.database)
    pg.psql(data.PG_SCHEMA, w.database)
    client = w.rcli()
    client.flushdb()
    data.load_redis(client)
    yield w
    client.flushdb()


@pytest.fixture
def world(pg_server: PostgresServer, redis_srv: RedisServer, blob: AzuriteServer) -> Iterator[World]:
    with make_world(pg_server, redis_srv, blob) as w:
        yield w
