"""The stand-in backend serves the whole backend metrics contract and its fault switches change the traffic;
the heartbeat stand-in takes Alertmanager's webhook payloads and refuses anything else."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from components.metrics_contract import CLAUDE_ERROR_TYPES, EXECUTION_STATUSES, TOKEN_TYPES
from devservices.heartbeat_standin import HeartbeatStandin
from devservices.process import port_open
from devservices.prometheus import alertmanager
from devservices.standin import STATUSES, StandinBackend


def scrape(backend: StandinBackend) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = requests.get(backend.url + "/metrics", timeout=5).text
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def total(samples: list[tuple[dict[str, str], float]], **match: str) -> float:
    return sum(v for labels, v in samples if all(labels.get(k) == want for k, want in match.items()))


def test_serves_every_backend_metric_with_every_enumerated_label_value() -> None:
    with StandinBackend(traffic_per_second=200) as backend:
        deadline = time.monotonic() + 10
        while total((metrics := scrape(backend)).get("http_requests_total", [])) <= 20 and time.monotonic() < deadline:
            time.sleep(0.05)
    for name in (
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "ipa_executions_total",
        "ipa_execution_duration_seconds_bucket",
        "ipa_executions_in_progress",
        "claude_api_requests_total",
        "claude_api_errors_total",
        "claude_api_request_duration_seconds_bucket",
        "claude_tokens_total",
    ):
        assert name in metrics, name
    assert {labels["status"] for labels, _ in metrics["http_requests_total"]} == set(STATUSES)
    assert {labels["status"] for labels, _ in metrics["ipa_executions_total"]} == set(EXECUTION_STATUSES)
    assert {labels["error_type"] for labels, _ in metrics["claude_api_errors_total"]} == set(CLAUDE_ERROR_TYPES)
    assert {labels["type"] for labels, _ in metrics["claude_tokens_total"]} == set(TOKEN_TYPES)
    les = {labels["le"] for labels, _ in metrics["http_request_duration_seconds_bucket"]}
    assert les == {"0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "30.0", "+Inf"}
    assert total(metrics["http_requests_total"]) > 20


def test_fault_switches_change_the_traffic() -> None:
    backend = StandinBackend(traffic_per_second=1000, claude_calls_per_second=10)
    backend.set_fault("errors_5xx", 0.5)
    backend.set_fault("slow", 4.0)
    backend.set_fault("claude_errors", 50)
    backend.set_fault("execution_failures", 1.0)
    backend.tick(1.0)
    m = backend.metrics
    requests_total = sum(m.http_requests.labels(mth, h, s)._value.get() for mth, h, *_ in _endpoints() for s in STATUSES)
    errors = sum(m.http_requests.labels(mth, h, s)._value.get() for mth, h, *_ in _endpoints() for s in ("500", "503"))
    assert requests_total == 1000
    assert 0.4 < errors / requests_total < 0.6
    claude_errors = sum(
        m.claude_errors.labels(model, e)._value.get()
        for model in ("claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-5")
        for e in CLAUDE_ERROR_TYPES
    )
    assert claude_errors == 50
    with pytest.raises(ValueError, match="unknown fault"):
        backend.set_fault("no-such-fault", 1)


def test_down_stops_serving_and_comes_back() -> None:
    with StandinBackend() as backend:
        assert port_open(backend.port)
        backend.set_fault("down", True)
        assert not port_open(backend.port)
        backend.set_fault("down", False)
        assert requests.get(backend.url + "/healthz", timeout=5).status_code == 200
    assert not port_open(backend.port)


def _endpoints() -> list[tuple[str, str]]:
    from devservices.standin import ENDPOINTS

    return [(method, handler) for method, handler, _share, _ok in ENDPOINTS]


# --- the heartbeat stand-in -------------------------------------------------------------------------


def webhook(status: str = "firing", version: str = "4", alertname: str = "Watchdog") -> dict[str, Any]:
    """The body Alertmanager's webhook_configs POST (notify/webhook: version 4)."""
    return {
        "version": version,
        "groupKey": '{}:{alertname="Watchdog"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "heartbeat",
        "groupLabels": {"alertname": alertname},
        "commonLabels": {"alertname": alertname, "severity": "none"},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": [{"status": status, "labels": {"alertname": alertname, "severity": "none"}, "annotations": {}}],
    }


def test_heartbeat_standin_records_webhook_payloads_and_refuses_others() -> None:
    with HeartbeatStandin() as hb:
        assert requests.post(hb.webhook_url(), json=webhook(), timeout=5).status_code == 200
        for bad in (webhook(version="3"), {"status": "firing"}, {**webhook(), "alerts": []}):
            assert requests.post(hb.webhook_url(), json=bad, timeout=5).status_code == 400
        assert requests.post(hb.webhook_url(), data=b"not json", timeout=5).status_code == 400
        [beat] = hb.beats
        assert (beat.status, beat.alertnames, beat.receiver, beat.path) == ("firing", ("Watchdog",), "heartbeat", "/heartbeat/watchdog")
        assert len(hb.rejected) == 4 and "version '3'" in hb.rejected[0]
    assert not port_open(hb.port)


@pytest.mark.services
def test_alertmanager_heartbeats_reach_the_standin_and_stop_when_the_alert_expires(tmp_path: Path) -> None:
    """Real Alertmanager, a webhook receiver with url_file and send_resolved false: a beat at least every
    repeat_interval + group_interval while the Watchdog is valid, none once its endsAt has passed."""
    with HeartbeatStandin() as hb:
        url_file = tmp_path / "url"
        url_file.write_text(hb.webhook_url())
        config = {
            "route": {
                "receiver": "null",
                "routes": [
                    {
                        "receiver": "heartbeat",
                        "matchers": ['alertname = "Watchdog"'],
                        "group_wait": "0s",
                        "group_interval": "500ms",
                        "repeat_interval": "2s",
                    }
                ],
            },
            "receivers": [
                {"name": "null"},
                {"name": "heartbeat", "webhook_configs": [{"url_file": str(url_file), "send_resolved": False}]},
            ],
        }
        config_path = tmp_path / "alertmanager.yaml"
        config_path.write_text(yaml.safe_dump(config))
        with alertmanager(tmp_path, config_path) as am:
            valid_for = 7.0
            ends = time.time() + valid_for
            ends_at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ends)) + f".{int(ends % 1 * 1000):03d}Z"
            am.post_alerts([{"labels": {"alertname": "Watchdog", "severity": "none"}, "endsAt": ends_at}])
            deadline = ends + 2.5 + 1.0  # one beat interval of silence after the expiry
            while time.time() < deadline:
                time.sleep(0.1)
        beats = hb.beats
    times = [b.received_at for b in beats]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(beats) >= 3, beats
    assert all(1.5 <= g <= 2.5 + 1.0 for g in gaps), gaps
    assert all(b.status == "firing" and b.alertnames == ("Watchdog",) for b in beats)
    assert max(times) <= ends + 1.0, f"a beat {max(times) - ends:.1f}s after the Watchdog expired"
    assert json.dumps(hb.rejected) == "[]"
