"""Every pairing of the image's clients with the server majors it supports, both ways: a set taken from
one server restores into another, or is refused before anything is downloaded or touched."""

from __future__ import annotations

import json

import backup_testdata as data
import pytest
from conftest import PG_MAJORS, REDIS_MAJORS, make_world

from devservices.azurite import AzuriteServer
from devservices.postgres import PostgresServer
from devservices.redis import RedisServer

pytestmark = pytest.mark.services


def error_line(stderr: str) -> str:
    errors = [json.loads(line) for line in stderr.splitlines() if line.startswith("{") and '"level": "error"' in line]
    assert errors, stderr
    return str(errors[-1]["msg"])


@pytest.mark.parametrize(("source", "target"), [(s, t) for s in PG_MAJORS for t in PG_MAJORS])
def test_postgres_set_restores_into_every_supported_server(
    request: pytest.FixtureRequest, blob: AzuriteServer, source: int, target: int
) -> None:
    src: PostgresServer = request.getfixturevalue(f"pg{source}")
    dst: PostgresServer = request.getfixturevalue(f"pg{target}")
    redis_server: RedisServer = request.getfixturevalue("redis7")
    with make_world(src, redis_server, blob) as world:
        before = src.psql(data.PG_FINGERPRINT, world.database)
        world.backup_ok()
        database = f"{world.database}_from{source}"
        dst_env = {**dst.env(database), "PGDATABASE": database}
        result = world.run("restore", "--only", "postgres", env=dst_env)
        exists = dst.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{database}'").strip()
        if source > target:
            # pg_restore {target} can't read pg_dump {source}'s archive: refused before any download.
            assert result.returncode == 6, result.stderr
            message = error_line(result.stderr)
            assert f"PostgreSQL {target}" in message and str(source) in message
            assert "downloaded" not in result.stderr
            assert exists == "0"
        else:
            assert result.returncode == 0, result.stderr
            assert dst.psql(data.PG_FINGERPRINT, database) == before
            dst.drop_database(database)


@pytest.mark.parametrize(("source", "target"), [(s, t) for s in REDIS_MAJORS for t in REDIS_MAJORS])
def test_redis_set_restores_into_every_supported_server(
    request: pytest.FixtureRequest, blob: AzuriteServer, pg15: PostgresServer, source: int, target: int
) -> None:
    src: RedisServer = request.getfixturevalue(f"redis{source}")
    dst: RedisServer = request.getfixturevalue(f"redis{target}")
    with make_world(pg15, src, blob) as world:
        before = data.redis_fingerprint(world.rcli())
        world.backup_ok()
        target_client = world.rcli().__class__(host="127.0.0.1", port=dst.port, password=dst.password, db=world.redis_db)
        target_client.flushdb()
        # REDIS_URL names db 0, as the CronJob's does: the set's db number is kept all the same.
        result = world.run("restore", "--only", "redis", "--redis-url", dst.url_for(0))
        assert result.returncode == 0, result.stderr
        assert data.redis_fingerprint(target_client) == before
        target_client.flushdb()
