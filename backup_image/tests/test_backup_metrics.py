"""Metrics pushed to a real Pushgateway (docs/monitoring/metrics.md): only on success, with pushadd, and
captured-at as the timestamp."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from azure.storage.blob import BlobServiceClient
from conftest import World
from prometheus_client.parser import text_string_to_metric_families

from devservices.prometheus import pushgateway

pytestmark = pytest.mark.services


def pushed(url: str) -> dict[tuple[str, str], float]:
    """(metric, target label) -> value for job="ipa-backup"."""
    text = requests.get(f"{url}/metrics", timeout=10).text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("job") == "ipa-backup" and sample.name.startswith("ipa_"):
                out[(sample.name, sample.labels.get("target", ""))] = sample.value
    return out


def test_push_on_success_only_and_pushadd_keeps_other_metrics(world: World, tmp_path: Path) -> None:
    with pushgateway(tmp_path) as gateway:
        env = {"PUSHGATEWAY_URL": gateway.url}
        result = world.run("backup", env=env)
        assert result.returncode == 0, result.stderr
        set_id = json.loads(result.stdout)["set_id"]
        tier = json.loads(result.stdout)["tier"]
        container = BlobServiceClient.from_connection_string(world.blob.connection_string).get_container_client(world.container)
        manifest = json.loads(container.download_blob(f"{tier}/{set_id}/manifest.json").readall())
        metrics = pushed(gateway.url)
        for target in ("postgres", "redis"):
            assert metrics[("ipa_backup_last_success_timestamp_seconds", target)] == manifest["targets"][target]["captured_at_epoch"]
            assert metrics[("ipa_backup_duration_seconds", target)] > 0
            assert metrics[("ipa_backup_size_bytes", target)] > 0
        assert metrics[("ipa_backup_size_bytes", "postgres")] == sum(f["size"] for f in manifest["files"] if f["target"] == "postgres")

        failed = world.run("backup", env={**env, "PGPASSWORD": "wrong"})
        assert failed.returncode == 3
        assert pushed(gateway.url) == metrics  # a failure pushes nothing and erases nothing

        drill = world.run("drill", env=env)
        assert drill.returncode == 0, drill.stderr
        after = pushed(gateway.url)
        report = json.loads(drill.stdout)
        assert after[("ipa_restore_drill_duration_seconds", "postgres")] == report["durations"]["postgres"]
        assert after[("ipa_restore_drill_duration_seconds", "redis")] == report["durations"]["redis"]
        assert after[("ipa_restore_drill_last_success_timestamp_seconds", "")] > manifest["captured_at_epoch"]
        # pushadd: the drill's push left the backup's metrics in place.
        assert {k: v for k, v in after.items() if k[0].startswith("ipa_backup_")} == metrics
