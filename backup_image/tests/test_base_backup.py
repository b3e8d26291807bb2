"""base-backup against real PostgreSQL 15 and 17: pg_basebackup over the replication protocol,
pg_verifybackup, one tar per backup with its manifest written last, metrics pushed on success only;
(pitr-restore never using an incomplete one: test_pitr.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient
from conftest import World, make_world
from pitr_support import TICKS
from test_backup_metrics import pushed

from devservices.azurite import AzuriteServer
from devservices.postgres import PostgresServer
from devservices.prometheus import pushgateway
from devservices.redis import RedisServer

pytestmark = pytest.mark.services
FAST = {"BASE_BACKUP_CHECKPOINT": "fast"}


@pytest.fixture
def any_world(pg17: PostgresServer, redis_srv: RedisServer, blob: AzuriteServer) -> Iterator[World]:
    """PostgreSQL 17 here; the PITR tests take base backups of 15 and 17 too."""
    pg = pg17
    with make_world(pg, redis_srv, blob) as world:
        pg.psql(TICKS, world.database)
        yield world


def test_base_backup_verified_stored_manifest_last_and_pushed(any_world: World, tmp_path: Path) -> None:
    world = any_world
    container = BlobServiceClient.from_connection_string(world.blob.connection_string).get_container_client(world.container)
    with pushgateway(tmp_path) as gateway:
        env = {**FAST, "PUSHGATEWAY_URL": gateway.url}
        failed = world.run("base-backup", env={**env, "PGPASSWORD": "wrong"})
        assert failed.returncode == 3, failed.stderr
        assert "password authentication failed" in failed.stderr
        assert pushed(gateway.url) == {}  # a failure pushes nothing

        result = world.run("base-backup", env=env)
        assert result.returncode == 0, result.stderr
        out = json.loads(result.stdout)
        prefix = f"base/{out['tier']}/{out['backup_id']}/"
        assert out["tier"] == "weekly"  # the week's first
        assert sorted(b.name for b in container.list_blobs(name_starts_with="base/")) == [prefix + "base.tar.zst", prefix + "manifest.json"]
        manifest = json.loads(container.download_blob(prefix + "manifest.json").readall())
        assert manifest["major"] == world.pg.major
        assert manifest["system_id"] == world.pg.psql("SELECT system_identifier FROM pg_control_system()").strip()
        assert manifest["files"][0]["size"] == container.get_blob_client(prefix + "base.tar.zst").get_blob_properties().size
        metrics = pushed(gateway.url)
        assert metrics[("ipa_base_backup_last_success_timestamp_seconds", "")] == manifest["consistent_at_epoch"]
        assert metrics[("ipa_base_backup_size_bytes", "")] == manifest["files"][0]["size"]
        assert metrics[("ipa_base_backup_duration_seconds", "")] > 0

    second = world.run("base-backup", env=FAST)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["tier"] == "daily"  # the week already has its weekly one
