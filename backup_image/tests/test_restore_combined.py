"""A restore of both targets is one act: every check of both comes before either is touched, and a
failure or a stop in the Redis part leaves the PostgreSQL database as it was too."""

from __future__ import annotations

import json
import os
import signal

import backup_testdata as data
import pytest
import redis
from conftest import World, make_world, other_redis
from test_redis_restore import run_until_staging

from devservices.azurite import AzuriteServer
from devservices.postgres import PostgresServer
from devservices.redis import RedisServer

pytestmark = pytest.mark.services


def error_message(stderr: str) -> str:
    errors = [json.loads(line) for line in stderr.splitlines() if line.startswith("{") and '"level": "error"' in line]
    assert errors, stderr
    return str(errors[-1]["msg"])


def live_state(world: World) -> tuple[str, str, str]:
    """The live database's content, its oid (a swap would change it) and the databases beside it."""
    content = world.pg.psql(data.PG_FINGERPRINT, world.database)
    oid = world.pg.psql(f"SELECT oid FROM pg_database WHERE datname = '{world.database}'")
    side = world.pg.psql("SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database WHERE datname LIKE '%\\_\\_ipa\\_%'")
    return content, oid, side


def diverge(world: World) -> None:
    """The live data moves on after the backup, so a restore that went through would show."""
    world.pg.psql("DELETE FROM app.executions WHERE id % 2 = 0", world.database)
    world.rcli().set("written after the backup", "1")


def test_a_redis_refusal_after_the_download_leaves_postgres_untouched(
    pg_server: PostgresServer, redis7: RedisServer, redis8: RedisServer, blob: AzuriteServer
) -> None:
    with make_world(pg_server, redis8, blob) as world:
        # A vector set: Redis 7 can't hold it, which only the loaded RDB shows (after the download).
        world.rcli().execute_command("VADD", "vectors", "VALUES", 3, 0.1, 0.2, 0.3, "element-1")
        world.backup_ok()
        diverge(world)
        before = live_state(world)
        target7 = other_redis(redis7, world.redis_db)
        target7.flushdb()
        result = world.run("restore", "--force", "--redis-url", redis7.url_for(0))
        assert result.returncode == 6, result.stderr
        assert "vectorset" in error_message(result.stderr)
        assert '"downloaded ' in result.stderr  # refused after the download: the helper had to load the RDB
        assert live_state(world) == before
        assert target7.dbsize() == 0


@pytest.mark.parametrize("fault", ["Redis out of memory", "SIGTERM"])
def test_a_failure_in_the_redis_part_leaves_postgres_as_it_was(world: World, fault: str) -> None:
    pipe = world.rcli().pipeline()
    for i in range(3000):
        pipe.set(f"bulk:{i}", os.urandom(2048))  # enough batches to stop the tool midway
    pipe.execute()
    world.backup_ok()
    diverge(world)
    before, redis_before = live_state(world), data.redis_fingerprint(world.rcli())
    admin: redis.Redis = world.rcli(0)

    # Both targets: PostgreSQL's copy is restored by the time Redis keys reach the staging database.
    def inject(pid: int, _staging: int) -> None:
        if fault == "SIGTERM":
            os.kill(pid, signal.SIGTERM)
        else:
            admin.config_set("maxmemory", 1)

    try:
        code, stderr = run_until_staging(world, inject, restore=("--force",))
    finally:
        admin.config_set("maxmemory", 0)
    assert code == (143 if fault == "SIGTERM" else 6), stderr
    assert '"restoring beside the live database"' in stderr  # PostgreSQL's copy was made, and then dropped
    assert live_state(world) == before
    assert data.redis_fingerprint(world.rcli()) == redis_before
