"""The topology: every shared name built once from the settings, used alike by rules, dashboards and
the Alertmanager config, and written by the render to topology.json and settings.json."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from components.alertmanager_config import grafana_base_url
from components.rules.groups import alert_groups, runbook_url
from components.settings import FIELDS, SECRET_KEYS
from components.topology import RELEASE_LABELS, RELEASE_NAME, topology
from dashboards import build_all
from offline.mocks import SECRET_MARK
from tests.conftest import STACKS, stack_settings


@pytest.mark.parametrize("base", ["https://runbooks.example.com/docs", "https://runbooks.example.com/docs/"])
def test_runbook_url_has_no_double_slash(base: str) -> None:
    settings = stack_settings("dev", {"runbookBaseUrl": base})
    expected = "https://runbooks.example.com/docs/HighErrorRate.md"
    assert topology(settings).runbook_url("HighErrorRate") == expected
    assert runbook_url(settings, "HighErrorRate") == expected
    # Alerts and dashboards link to the same runbook.
    dashboard_links = [
        link["url"]
        for panel in build_all(settings)["api-performance"]["panels"]
        for link in panel.get("links", [])
        if link["title"] == "Runbook: HighErrorRate"
    ]
    assert dashboard_links and set(dashboard_links) == {expected}
    alerts = {r["alert"]: r for g in alert_groups(settings) for r in g["rules"]}
    assert alerts["HighErrorRate"]["annotations"]["runbook_url"] == expected


def test_grafana_url_external_or_in_cluster() -> None:
    internal = topology(stack_settings("dev", {"grafanaExternalUrl": ""}))
    assert internal.grafana_url == f"http://{RELEASE_NAME}-grafana.{internal.monitoring_namespace}.svc"
    external = stack_settings("dev", {"grafanaExternalUrl": "https://grafana.example.com/"})
    assert topology(external).grafana_url == grafana_base_url(external) == "https://grafana.example.com"
    assert topology(external).dashboard_url("backup-dr") == "https://grafana.example.com/d/backup-dr"


@pytest.mark.parametrize("stack", STACKS)
def test_every_name_is_present(stack: str) -> None:
    topo = topology(stack_settings(stack))
    for field in dataclasses.fields(topo):
        assert getattr(topo, field.name), field.name
    assert topo.release_labels == RELEASE_LABELS == {"release": RELEASE_NAME}
    assert set(topo.cronjob_names) == {"backup", "restore-drill", "base-backup"}
    assert set(topo.dashboards) == set(build_all(stack_settings(stack)))
    assert topo.slo_period and all(
        w in topo.slo_windows for long_w, short_w, _ in topo.page_burns + topo.ticket_burns for w in (long_w, short_w)
    )


@pytest.mark.parametrize("stack", STACKS)
def test_render_writes_topology_and_settings(stack: str, rendered: Any) -> None:
    out = rendered(stack)
    settings = stack_settings(stack)
    written = json.loads((out / "topology.json").read_text())
    assert written == json.loads(json.dumps(topology(settings).as_dict()))
    resolved = json.loads((out / "settings.json").read_text())
    assert set(resolved) == set(FIELDS)
    for key in SECRET_KEYS:
        assert resolved[key] == SECRET_MARK
    assert resolved["monitoringNamespace"] == settings.monitoring_namespace
    assert resolved["backupSchedule"] == settings.backup_schedule
