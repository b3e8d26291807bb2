"""Sets that hold some targets: BACKUP_FREQUENT_TARGETS=redis (PostgreSQL's WAL streamed) makes frequent
sets Redis-only, while the first set of a UTC day or ISO week holds both. The manifest names the targets,
`list` shows them, restore/verify/drill take the newest set holding what they need, and the metrics of
the target a set did not take stay as they were."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import backup_testdata as data
import pytest
import requests
from azure.storage.blob import BlobServiceClient, ContainerClient
from conftest import World
from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway
from prometheus_client.parser import text_string_to_metric_families

from devservices.prometheus import pushgateway

pytestmark = pytest.mark.services

REDIS_ONLY = {"BACKUP_FREQUENT_TARGETS": "redis"}


def container(world: World) -> ContainerClient:
    return BlobServiceClient.from_connection_string(world.blob.connection_string).get_container_client(world.container)


def manifest_of(world: World, out: dict[str, Any]) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads(container(world).download_blob(f"{out['tier']}/{out['set_id']}/manifest.json").readall())
    return manifest


def rewrite_manifest(world: World, out: dict[str, Any], manifest: dict[str, Any]) -> None:
    container(world).upload_blob(f"{out['tier']}/{out['set_id']}/manifest.json", json.dumps(manifest).encode(), overwrite=True)


def backup(world: World, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = world.run("backup", env={**REDIS_ONLY, **(env or {})})
    assert result.returncode == 0, result.stderr
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def test_frequent_sets_hold_redis_only_and_each_command_takes_the_newest_set_holding_its_targets(world: World) -> None:
    first = backup(world)
    world.pg.psql("INSERT INTO app.users (id, name, email) VALUES (900001, 'after', 'after@example.com')", world.database)
    world.rcli().set("after-first", "1")
    # A Redis-only set never connects to PostgreSQL: a wrong password does not matter to it.
    second = backup(world, {"PGPASSWORD": "wrong"})
    assert first["tier"] == "weekly" and first["targets"] == ["postgres", "redis"]
    assert second["tier"] == "frequent" and second["targets"] == ["redis"]
    manifest = manifest_of(world, second)
    assert list(manifest["targets"]) == ["redis"] and [f["name"] for f in manifest["files"]] == ["redis.rdb.zst"]
    assert manifest["captured_at_epoch"] == manifest["targets"]["redis"]["captured_at_epoch"]
    assert sorted(b.name.rsplit("/", 1)[1] for b in container(world).list_blobs(f"frequent/{second['set_id']}/")) == [
        "manifest.json",
        "redis.rdb.zst",
    ]

    rows = {r["set_id"]: r for r in world.sets()}
    assert rows[first["set_id"]]["targets"] == ["postgres", "redis"] and rows[second["set_id"]]["targets"] == ["redis"]
    table = world.run("list")
    assert table.returncode == 0, table.stderr
    line = next(x for x in table.stdout.splitlines() if second["set_id"] in x)
    assert line.split()[3] == "redis" and "TARGETS" in table.stdout

    assert json.loads(world.run("verify").stdout)["set_id"] == first["set_id"]  # both targets: the weekly set
    only_redis = world.run("verify", "--only", "redis")
    assert only_redis.returncode == 0 and json.loads(only_redis.stdout) == {"set_id": second["set_id"], "verified": True, "files": 1}

    # Redis alone: the newest set holding Redis, with the key written after the first set.
    world.rcli().flushdb()
    redis_restore = world.run("restore", "--only", "redis")
    assert redis_restore.returncode == 0, redis_restore.stderr
    assert json.loads(redis_restore.stdout)["set_id"] == second["set_id"] and world.rcli().get("after-first") == b"1"
    # Both: the newest set holding both, the weekly one (without the row inserted after it).
    world.pg.drop_database(world.database)
    world.rcli().flushdb()
    both = world.run("restore")
    assert both.returncode == 0, both.stderr
    assert json.loads(both.stdout)["set_id"] == first["set_id"]
    assert world.pg.psql("SELECT count(*) FROM app.users WHERE id = 900001", world.database).strip() == "0"
    assert world.rcli().get("after-first") is None

    drill = world.run("drill")
    assert drill.returncode == 0, drill.stderr
    assert json.loads(drill.stdout)["set_id"] == first["set_id"]

    # A Redis-only set named for a restore of both: refused before anything is touched.
    named = world.run("restore", second["set_id"], "--force")
    assert named.returncode == 5
    assert f"backup set {second['set_id']} holds redis only, not postgres" in named.stderr
    named_pg = world.run("verify", second["set_id"], "--only", "postgres")
    assert named_pg.returncode == 5 and "not postgres" in named_pg.stderr


def test_without_a_complete_set_holding_both_a_full_restore_is_refused_by_name(world: World) -> None:
    first = backup(world)
    second = backup(world)
    container(world).delete_blob(f"{first['tier']}/{first['set_id']}/manifest.json")  # the weekly set, incomplete now
    for command in (["restore", "--force"], ["drill"], ["verify"]):
        result = world.run(*command)
        assert result.returncode == 5, (command, result.stderr)
        assert f"no complete backup set holding postgres and redis in container '{world.container}'" in result.stderr
        assert f"the newest, {second['set_id']}, holds redis" in result.stderr
    assert world.run("restore", "--only", "redis", "--force").returncode == 0


def test_every_set_holds_both_by_default_and_a_bad_value_is_refused(world: World) -> None:
    backup(world, {"BACKUP_FREQUENT_TARGETS": ""})
    assert backup(world, {"BACKUP_FREQUENT_TARGETS": ""})["targets"] == ["postgres", "redis"]
    assert backup(world, {"BACKUP_FREQUENT_TARGETS": "postgres,redis"})["targets"] == ["postgres", "redis"]
    assert backup(world, {"BACKUP_FREQUENT_TARGETS": "redis, postgres"})["targets"] == ["postgres", "redis"]
    for bad in ("mysql", "postgres", "redis,redis", "redis;postgres", "redis,mysql"):
        result = world.run("backup", env={"BACKUP_FREQUENT_TARGETS": bad})
        assert result.returncode == 2
        assert f"BACKUP_FREQUENT_TARGETS={bad!r} is not accepted; accepted: redis or postgres,redis" in result.stderr


def test_a_manifest_without_targets_holds_both_and_one_that_disagrees_with_its_files_is_refused(world: World) -> None:
    out = backup(world)
    manifest = manifest_of(world, out)
    old = {k: v for k, v in manifest.items() if k != "targets"}
    rewrite_manifest(world, out, old)
    assert world.run("verify").returncode == 0
    assert json.loads(world.run("list", "--json").stdout)[0]["targets"] == ["postgres", "redis"]
    world.rcli().flushdb()
    restored = world.run("restore", "--only", "redis")
    assert restored.returncode == 0, restored.stderr
    assert data.redis_fingerprint(world.rcli())

    # It claims Redis only but lists the PostgreSQL dump.
    rewrite_manifest(world, out, {**manifest, "targets": {"redis": manifest["targets"]["redis"]}})
    result = world.run("verify", out["set_id"], "--only", "redis")
    assert result.returncode == 5
    assert "lists postgres-globals.sql.zst, postgres.dump.zst but holds only redis" in result.stderr
    # It names a target the tool does not know.
    rewrite_manifest(world, out, {**manifest, "targets": {**manifest["targets"], "mysql": {}}})
    unknown = world.run("verify", out["set_id"])
    assert unknown.returncode == 5 and "accepted: one or both of postgres, redis" in unknown.stderr


def series(url: str) -> list[tuple[str, str, float]]:
    """(metric, target, value) of every ipa_ sample, duplicates kept."""
    text = requests.get(f"{url}/metrics", timeout=10).text
    return sorted(
        (s.name, s.labels.get("target", ""), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("ipa_") and s.labels.get("job") == "ipa-backup"
    )


def test_a_redis_only_set_pushes_redis_and_keeps_postgres_last_success(world: World, tmp_path: Path) -> None:
    with pushgateway(tmp_path) as gateway:
        env = {"PUSHGATEWAY_URL": gateway.url}
        first = backup(world, env)
        before = {(n, t): v for n, t, v in series(gateway.url)}
        second = backup(world, env)
        after = series(gateway.url)
        assert len(after) == len({(n, t) for n, t, _ in after}) == 6  # three metrics, two targets, each once
        values = {(n, t): v for n, t, v in after}
        redis_captured = manifest_of(world, second)["targets"]["redis"]["captured_at_epoch"]
        assert values[("ipa_backup_last_success_timestamp_seconds", "redis")] == redis_captured
        assert (
            values[("ipa_backup_last_success_timestamp_seconds", "postgres")]
            == (manifest_of(world, first)["targets"]["postgres"]["captured_at_epoch"])
        )
        for name in ("ipa_backup_last_success_timestamp_seconds", "ipa_backup_duration_seconds", "ipa_backup_size_bytes"):
            assert values[(name, "postgres")] == before[(name, "postgres")]
        groups = {tuple(sorted(g["labels"].items())) for g in requests.get(f"{gateway.url}/api/v1/metrics", timeout=10).json()["data"]}
        assert groups == {(("job", "ipa-backup"), ("target", "postgres")), (("job", "ipa-backup"), ("target", "redis"))}


def test_backup_metrics_of_the_shared_group_move_to_per_target_groups(world: World, tmp_path: Path) -> None:
    """An earlier tool pushed both targets into job="ipa-backup" alone; the Pushgateway would refuse the
    per-target push (the same series twice), so the first push moves them and keeps the drill's metrics."""
    backup(world)  # the weekly set, before the gateway: the next set holds Redis only
    with pushgateway(tmp_path) as gateway:
        registry = CollectorRegistry()
        last = Gauge("ipa_backup_last_success_timestamp_seconds", "old", ["target"], registry=registry)
        size = Gauge("ipa_backup_size_bytes", "old", ["target"], registry=registry)
        for target, value in (("postgres", 1000.0), ("redis", 1000.0)):
            last.labels(target).set(value)
            size.labels(target).set(7.0)
        Gauge("ipa_restore_drill_last_success_timestamp_seconds", "drill", registry=registry).set(500.0)
        Gauge("ipa_restore_drill_duration_seconds", "drill", ["target"], registry=registry).labels("redis").set(3.5)
        pushadd_to_gateway(gateway.url, job="ipa-backup", registry=registry)

        second = backup(world, {"PUSHGATEWAY_URL": gateway.url})
        after = series(gateway.url)
        assert len(after) == len({(n, t) for n, t, _ in after})
        values = {(n, t): v for n, t, v in after}
        assert values[("ipa_backup_last_success_timestamp_seconds", "postgres")] == 1000.0  # moved, not lost
        assert values[("ipa_backup_size_bytes", "postgres")] == 7.0
        assert (
            values[("ipa_backup_last_success_timestamp_seconds", "redis")]
            == (manifest_of(world, second)["targets"]["redis"]["captured_at_epoch"])
        )
        assert values[("ipa_restore_drill_last_success_timestamp_seconds", "")] == 500.0
        assert values[("ipa_restore_drill_duration_seconds", "redis")] == 3.5
        groups = requests.get(f"{gateway.url}/api/v1/metrics", timeout=10).json()["data"]
        shared = next(g for g in groups if g["labels"] == {"job": "ipa-backup"})
        assert not any(name.startswith("ipa_backup_") for name in shared)


def test_a_daily_run_with_postgres_down_still_takes_redis_and_leaves_the_daily_slot_open(world: World, tmp_path: Path) -> None:
    """Redis's RPO must not wait for PostgreSQL: the week's first run, PostgreSQL refusing it, stores Redis as a
    frequent set, pushes Redis's metrics only, and still fails (exit 3); the next run takes the weekly set."""
    with pushgateway(tmp_path) as gateway:
        failed = world.run("backup", env={**REDIS_ONLY, "PGPASSWORD": "wrong", "PUSHGATEWAY_URL": gateway.url})
        assert failed.returncode == 3, failed.stderr
        assert "taking Redis alone as a frequent set" in failed.stderr
        out = json.loads(failed.stdout)
        assert (out["tier"], out["targets"]) == ("frequent", ["redis"])
        assert [(n, t) for n, t, _ in series(gateway.url)] == [
            ("ipa_backup_duration_seconds", "redis"),
            ("ipa_backup_last_success_timestamp_seconds", "redis"),
            ("ipa_backup_size_bytes", "redis"),
        ]
        rows = world.sets()
        assert [(r["tier"], r["targets"], r["complete"]) for r in rows] == [("frequent", ["redis"], True)]
        assert backup(world)["tier"] == "weekly"
    # Without the stream (every set takes both) a PostgreSQL failure stores nothing, as before.
    both = world.run("backup", env={"PGPASSWORD": "wrong"})
    assert both.returncode == 3 and both.stdout == "" and len(world.sets()) == 2
