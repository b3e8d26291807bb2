"""The stand-in backend serves the whole backend metrics contract and its fault switches change the traffic."""

from __future__ import annotations

import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from components.metrics_contract import CLAUDE_ERROR_TYPES, EXECUTION_STATUSES, TOKEN_TYPES
from devservices.process import port_open
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
        time.sleep(0.5)
        metrics = scrape(backend)
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
