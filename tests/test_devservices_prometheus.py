"""The Prometheus tool chain in .tools/bin and the devservices that run it on loopback, for real."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import requests
import yaml

from devservices import tools
from devservices.process import ServiceError, port_open
from devservices.prometheus import alertmanager, prometheus, pushgateway

MINIMUM = {"promtool": (2, 53), "prometheus": (2, 53), "amtool": (0, 28), "alertmanager": (0, 28), "pushgateway": (1, 0)}

ALERTMANAGER_CONFIG = {
    "route": {
        "receiver": "nobody",
        "group_wait": "0s",
        "routes": [{"receiver": "teams", "matchers": ['team="never-matches"']}],
    },
    "receivers": [
        {"name": "nobody"},
        # Needs Alertmanager >= 0.28; the URL file points at a closed loopback port.
        {"name": "teams", "msteamsv2_configs": [{"webhook_url_file": "WEBHOOK_FILE"}]},
    ],
}


def _write_alertmanager_config(folder: Path) -> Path:
    webhook = folder / "teams-webhook-url"
    webhook.write_text("http://127.0.0.1:9/teams\n")
    text = yaml.safe_dump(ALERTMANAGER_CONFIG).replace("WEBHOOK_FILE", str(webhook))
    path = folder / "alertmanager.yml"
    path.write_text(text)
    return path


def _write_rules(path: Path, rules: list[dict[str, object]]) -> Path:
    path.write_text(yaml.safe_dump({"groups": [{"name": "devservices-test", "rules": rules}]}))
    return path


def _version(binary: str) -> tuple[int, int]:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30, check=True)
    words = (out.stdout + out.stderr).split()
    number = words[words.index("version") + 1]
    major, minor = number.split(".")[:2]
    return int(major), int(minor)


@pytest.mark.parametrize("name", sorted(MINIMUM))
def test_tool_is_installed_with_minimum_version(name: str) -> None:
    assert _version(tools.tool(name)) >= MINIMUM[name]


def test_missing_tool_names_the_install_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tools, "TOOLS_DIR", tmp_path)
    with pytest.raises(ServiceError, match=r"scripts/setup/prometheus-tools\.sh"):
        tools.tool("promtool")


def test_amtool_accepts_msteamsv2_with_webhook_url_file(tmp_path: Path) -> None:
    config = _write_alertmanager_config(tmp_path)
    result = subprocess.run([tools.tool("amtool"), "check-config", str(config)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    both = tmp_path / "both.yml"
    both.write_text(config.read_text().replace("- webhook_url_file:", "- webhook_url: http://127.0.0.1:9/x\n    webhook_url_file:"))
    bad = subprocess.run([tools.tool("amtool"), "check-config", str(both)], capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0 and "webhook_url" in bad.stdout + bad.stderr


@pytest.mark.services
@pytest.mark.timeout(60)
def test_prometheus_rules_reload_and_alerts_reach_alertmanager(tmp_path: Path) -> None:
    rules = _write_rules(
        tmp_path / "rules.yaml",
        [
            {"record": "devservices:one", "expr": "vector(1)"},
            {"alert": "DevservicesAlwaysFiring", "expr": "vector(1)", "labels": {"severity": "info"}, "annotations": {"summary": "test"}},
        ],
    )
    with (
        alertmanager(tmp_path, _write_alertmanager_config(tmp_path)) as am,
        prometheus(tmp_path, [], rule_files=[rules], alertmanager_url=am.url) as prom,
    ):
        assert am.ready() and prom.ready()
        assert requests.get(prom.url + "/-/healthy", timeout=5).status_code == 200

        [sample] = prom.wait_for_series("devservices:one", timeout=20)
        assert float(sample["value"][1]) == 1.0
        assert all(rule["health"] == "ok" for group in prom.rule_groups() for rule in group["rules"])

        firing = prom.wait_for_alert("DevservicesAlwaysFiring", timeout=20)
        assert firing["labels"]["severity"] == "info"
        delivered = am.wait_for_alert("DevservicesAlwaysFiring", timeout=20)
        assert [r["name"] for r in delivered["receivers"]] == ["nobody"]

        _write_rules(rules, [{"record": "devservices:two", "expr": "vector(2)"}])
        prom.reload()
        [sample] = prom.wait_for_series("devservices:two", timeout=20)
        assert float(sample["value"][1]) == 2.0

        rules.write_text("groups: [{name: broken, rules: [{record: x, expr: 'rate('}]}]\n")
        with pytest.raises(ServiceError, match="reload failed"):
            prom.reload()
        port = prom.port
    assert not port_open(port)


@pytest.mark.services
@pytest.mark.timeout(30)
def test_alertmanager_keeps_a_posted_alert(tmp_path: Path) -> None:
    with alertmanager(tmp_path, _write_alertmanager_config(tmp_path)) as am:
        assert requests.get(am.url + "/-/ready", timeout=5).status_code == 200
        am.post_alerts(
            [
                {
                    "labels": {"alertname": "PostedByTest", "team": "never-matches", "severity": "warning"},
                    "annotations": {"summary": "posted"},
                }
            ]
        )
        [alert] = [a for a in am.alerts() if a["labels"]["alertname"] == "PostedByTest"]
        assert alert["annotations"]["summary"] == "posted"
        assert alert["status"]["state"] == "active"
        assert [r["name"] for r in alert["receivers"]] == ["teams"]
        port = am.port
    assert not port_open(port)


@pytest.mark.services
@pytest.mark.timeout(45)
def test_prometheus_scrapes_a_pushed_metric_with_its_own_labels(tmp_path: Path) -> None:
    with pushgateway(tmp_path) as pg:
        assert pg.ready()
        pushed = requests.put(
            pg.url + "/metrics/job/ipa-backup/target/postgres",
            data="# TYPE ipa_backup_size_bytes gauge\nipa_backup_size_bytes 12345\n",
            timeout=5,
        )
        assert pushed.status_code == 200, pushed.text
        scrape = [{"job_name": "pushgateway", "honor_labels": True, "static_configs": [{"targets": [pg.address]}]}]
        with prometheus(tmp_path, scrape) as prom:
            [target] = prom.wait_for_targets_up(count=1, timeout=20)
            assert target["labels"]["job"] == "pushgateway"
            [sample] = prom.wait_for_series("ipa_backup_size_bytes", timeout=20)
            assert sample["metric"]["job"] == "ipa-backup"
            assert sample["metric"]["target"] == "postgres"
            assert float(sample["value"][1]) == 12345.0
            now = time.time()
            series = prom.query_range("ipa_backup_size_bytes", now - 5, now, step=1)
            assert series and all(float(v) == 12345.0 for _, v in series[0]["values"])
        port = pg.port
    assert not port_open(port)


class _TeamsStandIn(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        self.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(202)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.services
@pytest.mark.timeout(30)
def test_alertmanager_renders_and_delivers_a_teams_card(tmp_path: Path) -> None:
    # Debian's alertmanager reads its default templates from a fixed path the setup script fills.
    server = HTTPServer(("127.0.0.1", 0), _TeamsStandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        webhook = tmp_path / "webhook-url"
        webhook.write_text(f"http://127.0.0.1:{server.server_port}/teams")
        config = tmp_path / "alertmanager.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "route": {"receiver": "teams", "group_wait": "0s"},
                    "receivers": [{"name": "teams", "msteamsv2_configs": [{"webhook_url_file": str(webhook)}]}],
                }
            )
        )
        with alertmanager(tmp_path, config) as am:
            am.post_alerts([{"labels": {"alertname": "TeamsCardTest", "severity": "critical"}}])
            deadline = time.monotonic() + 15
            while not _TeamsStandIn.received and time.monotonic() < deadline:
                time.sleep(0.1)
    finally:
        server.shutdown()
        server.server_close()
    [message] = _TeamsStandIn.received
    card = message["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert "TeamsCardTest" in json.dumps(card["content"])
