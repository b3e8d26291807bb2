"""Consistency under concurrent writes, and 50 consecutive backups under write load with 0 failures."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
from conftest import REDIS_PASSWORD, World, other_redis

from devservices.redis import RedisServer

pytestmark = pytest.mark.services

LEDGER = """
CREATE TABLE ledger_accounts (id int PRIMARY KEY, balance bigint NOT NULL);
INSERT INTO ledger_accounts SELECT i, 1000 FROM generate_series(1, 50) i;
CREATE TABLE ledger_log (n bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());
CREATE TABLE ledger_counter (n bigint NOT NULL);
INSERT INTO ledger_counter VALUES (0);
"""

# One transfer: money moves between two accounts and the log gets exactly the counter's next number.
TRANSFER = """BEGIN;
UPDATE ledger_accounts SET balance = balance - {amount} WHERE id = {a};
UPDATE ledger_accounts SET balance = balance + {amount} WHERE id = {b};
UPDATE ledger_counter SET n = n + 1;
INSERT INTO ledger_log (n) SELECT n FROM ledger_counter;
COMMIT;
"""


@contextmanager
def write_load(world: World, max_seconds: float = 240.0) -> Iterator[dict[str, int]]:
    """Transactions into PostgreSQL (one psql session) and MULTI/EXEC pairs into Redis, until the block ends."""
    stop = threading.Event()
    done = {"pg": 0, "redis": 0}
    psql = subprocess.Popen(
        [str(world.pg.bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**world.pg.env(world.database)},
        text=True,
    )
    client = redis.Redis(host="127.0.0.1", port=world.redis.port, password=REDIS_PASSWORD, db=world.redis_db)

    def pg_writer() -> None:
        assert psql.stdin is not None
        deadline = time.monotonic() + max_seconds
        i = 0
        while not stop.is_set() and time.monotonic() < deadline:
            i += 1
            psql.stdin.write(TRANSFER.format(amount=i % 17 + 1, a=1 + i % 50, b=1 + (i * 7 + 3) % 50))
            psql.stdin.flush()
            done["pg"] += 1
            time.sleep(0.002)

    def redis_writer() -> None:
        deadline = time.monotonic() + max_seconds
        while not stop.is_set() and time.monotonic() < deadline:
            pipe = client.pipeline(transaction=True)
            pipe.incr("load:counter")
            pipe.rpush("load:log", done["redis"] + 1)
            pipe.execute()
            done["redis"] += 1
            time.sleep(0.002)

    threads = [threading.Thread(target=pg_writer), threading.Thread(target=redis_writer)]
    for t in threads:
        t.start()
    try:
        yield done
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        assert psql.stdin is not None
        psql.stdin.close()
        assert psql.wait(timeout=60) == 0, psql.stderr.read() if psql.stderr else ""


def assert_consistent(world: World, database: str, r: redis.Redis) -> tuple[int, int]:
    """Invariants of the write load hold in a restored copy; returns (pg transfers, redis pairs)."""
    total, counter, logged, max_n = (
        world.pg.psql(
            "SELECT (SELECT sum(balance) FROM ledger_accounts), (SELECT n FROM ledger_counter),"
            " (SELECT count(*) FROM ledger_log), (SELECT coalesce(max(n), 0) FROM ledger_log)",
            database,
        )
        .strip()
        .split("|")
    )
    assert int(total) == 50 * 1000
    assert int(counter) == int(logged) == int(max_n)
    counter_r = int(r.get("load:counter") or 0)
    assert r.llen("load:log") == counter_r
    return int(counter), counter_r


def test_concurrent_writes_give_a_consistent_set(world: World, redis8: RedisServer) -> None:
    world.pg.psql(LEDGER, world.database)
    with write_load(world) as done:
        time.sleep(0.5)
        out = world.backup_ok()
        time.sleep(0.5)
    assert done["pg"] > 50 and done["redis"] > 50
    target_db = f"{world.database}_consistent"
    target = other_redis(redis8, world.redis_db)  # the set's db keeps its number on the other server
    target.flushdb()
    result = world.run("restore", out["set_id"], "--pg-database", target_db, "--redis-url", redis8.url_for(0))
    assert result.returncode == 0, result.stderr
    pg_n, redis_n = assert_consistent(world, target_db, target)
    # The set caught the load in the middle: some writes, but not all of them.
    assert 0 < pg_n < done["pg"] and 0 < redis_n < done["redis"]
    target.flushdb()


def test_fifty_backups_under_write_load_without_a_failure(world: World, redis8: RedisServer) -> None:
    world.pg.psql(LEDGER, world.database)
    failures = []
    started = time.monotonic()
    with write_load(world):
        for i in range(50):
            result = world.run("backup", env={"BACKUP_PROGRESS_SECONDS": "3600"})
            if result.returncode != 0:
                failures.append((i, result.stderr[-500:]))
    elapsed = time.monotonic() - started
    assert failures == []
    sets = world.sets()
    assert len(sets) == 50 and all(s["complete"] for s in sets)
    print(f"50 backups under load in {elapsed:.1f}s")
    # The newest of them restores consistently.
    target = other_redis(redis8, world.redis_db)
    target.flushdb()
    result = world.run("restore", "--pg-database", f"{world.database}_newest", "--redis-url", redis8.url_for(0))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["set_id"] == sets[0]["set_id"]
    assert assert_consistent(world, f"{world.database}_newest", target)[0] > 0
    target.flushdb()
