"""The rule builders (pure) and the PrometheusRule resources the AlertRules component declares (mocks)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from components.rules import AlertRules, AlertRulesArgs, prometheus_rule_body
from components.rules.groups import alert_names, dashboard_url, le_matcher, price_rules, recording_names, rule_groups
from components.topology import GRAFANA_SERVICE, RELEASE_NAME
from tests.conftest import RunStack, stack_settings

REPO = Path(__file__).resolve().parent.parent
REQUIRED_ALERTS = {
    "HighErrorRate": "critical",
    "HighResponseTime": "warning",
    "ClaudeAPIErrors": "critical",
    "IpaBackendDown": "critical",
    "ExecutionFailureRateHigh": "warning",
    "BackupTooOld": "critical",
    "BackupJobFailed": "warning",
    "RestoreDrillFailed": "critical",
    "RestoreTooSlow": "warning",
    "ClaudeCostBudgetExceeded": "warning",
}
CONTRACT_RECORDS = [
    "ipa:http_requests:rate5m",
    *(f"ipa:http_request_errors:ratio_rate{w}" for w in ("5m", "30m", "1h", "2h", "6h", "1d", "3d")),
    *(f"ipa:http_request_slow:ratio_rate{w}" for w in ("5m", "30m", "1h", "2h", "6h", "1d", "3d")),
    "ipa:http_request_duration_seconds:p50_5m",
    "ipa:http_request_duration_seconds:p95_5m",
    "ipa:http_request_duration_seconds:p99_5m",
    "ipa_handler:http_request_duration_seconds:p95_5m",
    "ipa:executions:rate5m",
    "ipa:execution_failures:ratio_rate5m",
    "ipa:execution_duration_seconds:mean_5m",
    "ipa:execution_duration_seconds:p95_5m",
    "ipa:claude_requests:rate5m",
    "ipa:claude_errors:rate5m",
    "ipa:claude_tokens:rate5m",
    "ipa:claude_price_usd_per_mtok",
    "ipa:claude_cost_usd:rate1h",
    "ipa:claude_cost_usd:increase24h",
    "ipa:backup_age_seconds",
]


def _alerts(stack: str, overrides: dict[str, object] | None = None) -> dict[str, dict]:
    groups = rule_groups(stack_settings(stack, overrides))
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def test_every_spec_alert_exists_with_its_severity(stack: str) -> None:
    alerts = _alerts(stack)
    assert {name: alerts[name]["labels"]["severity"] for name in REQUIRED_ALERTS if name in alerts} == REQUIRED_ALERTS


def test_every_contract_recording_rule_exists(stack: str) -> None:
    assert set(CONTRACT_RECORDS) <= set(recording_names(rule_groups(stack_settings(stack))))


def test_alert_names_are_unique_and_rules_well_formed(stack: str) -> None:
    groups = rule_groups(stack_settings(stack))
    names = alert_names(groups)
    assert len(names) == len(set(names))
    assert len({g["name"] for g in groups}) == len(groups)
    for group in groups:
        assert group["rules"], group["name"]
        for rule in group["rules"]:
            assert ("alert" in rule) != ("record" in rule), rule
            assert rule["expr"].strip() == rule["expr"]


def test_every_alert_carries_severity_summary_description_runbook_and_dashboard(stack: str) -> None:
    settings = stack_settings(stack)
    for name, rule in _alerts(stack).items():
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        notes = rule["annotations"]
        assert set(notes) == {"summary", "description", "runbook_url", "dashboard_url"}, name
        assert notes["summary"] and "{{" not in notes["summary"], f"{name}: the summary must be static"
        assert "{{" in notes["description"], f"{name}: the description must be templated"
        assert notes["runbook_url"] == f"{settings.runbook_base_url}/{name}.md"
        assert re.fullmatch(rf"http://{re.escape(GRAFANA_SERVICE)}\.monitoring\.svc/d/[a-z-]+", notes["dashboard_url"]), name
        assert (REPO / "docs" / "runbooks" / f"{name}.md").is_file(), f"docs/runbooks/{name}.md is missing"


def test_runbooks_have_every_section_and_alerts_md_lists_every_alert() -> None:
    alerts_doc = (REPO / "docs" / "monitoring" / "alerts.md").read_text()
    for name in _alerts("prod"):
        text = (REPO / "docs" / "runbooks" / f"{name}.md").read_text()
        assert text.startswith(f"# {name}\n"), name
        for section in ("## Meaning", "## Impact", "## Diagnosis", "## Fix", "## When it is safe to silence"):
            assert section in text, f"{name}.md lacks {section}"
        assert f"[{name}](../runbooks/{name}.md)" in alerts_doc, f"alerts.md does not list {name}"
    listed = set(re.findall(r"\[(\w+)\]\(\.\./runbooks/", alerts_doc))
    assert listed == set(_alerts("prod")), "alerts.md lists alerts that do not exist"


def test_dashboard_link_uses_the_external_grafana_url_when_set() -> None:
    settings = stack_settings("dev", {"grafanaExternalUrl": "https://grafana.example.com/"})
    assert dashboard_url(settings, "backup-dr") == "https://grafana.example.com/d/backup-dr"
    rule = _alerts("dev", {"grafanaExternalUrl": "https://grafana.example.com"})["BackupTooOld"]
    assert rule["annotations"]["dashboard_url"] == "https://grafana.example.com/d/backup-dr"


def test_thresholds_and_objectives_come_from_settings() -> None:
    alerts = _alerts(
        "dev",
        {
            "errorRateThreshold": 0.02,
            "minRequestRate": 0.5,
            "latencyP95ThresholdSeconds": 1.5,
            "claudeErrorRateThreshold": 0.3,
            "rpoTargetMinutes": 120,
            "rtoTargetMinutes": 100,
            "restoreDrillPeriodDays": 14,
            "drillSchedule": "0 3 * * 0",
            "claudeDailyBudgetUsd": 12.5,
            "executionFailureRatioThreshold": 0.25,
            "availabilitySlo": 0.999,
            "backupNamespace": "dr",
        },
    )
    assert "ratio_rate5m > 0.02" in alerts["HighErrorRate"]["expr"]
    assert ">= 0.5" in alerts["HighErrorRate"]["expr"]
    assert "p95_5m > 1.5" in alerts["HighResponseTime"]["expr"]
    assert "> 0.3" in alerts["ClaudeAPIErrors"]["expr"]
    assert "> 7200" in alerts["BackupTooOld"]["expr"]
    assert "> 3000" in alerts["RestoreTooSlow"]["expr"]  # half of 100 minutes
    assert f"> {15 * 86400}" in alerts["RestoreDrillFailed"]["expr"]
    assert "> 12.5" in alerts["ClaudeCostBudgetExceeded"]["expr"]
    assert "> 0.25" in alerts["ExecutionFailureRateHigh"]["expr"]
    assert 'namespace="dr"' in alerts["BackupJobFailed"]["expr"]
    # 14.4 x (1 - 0.999) and 6 x (1 - 0.999)
    assert "ratio_rate1h > 0.0144" in alerts["IpaBackendErrorBudgetBurnFast"]["expr"]
    assert "ratio_rate6h > 0.006" in alerts["IpaBackendErrorBudgetBurnFast"]["expr"]


def test_spec_alert_conditions_and_durations(stack: str) -> None:
    alerts = _alerts(stack)
    # BackupTooOld has no `for`: an RPO breach fires at once, not minutes later.
    expected_for = {
        "HighErrorRate": "5m",
        "HighResponseTime": "5m",
        "ClaudeAPIErrors": "2m",
        "IpaBackendDown": "5m",
        "ExecutionFailureRateHigh": "10m",
        "BackupTooOld": None,
    }
    assert {name: alerts[name].get("for") for name in expected_for} == expected_for
    assert 'absent(up{job="ipa-backend"})' in alerts["IpaBackendDown"]["expr"]
    for target in ("postgres", "redis"):
        assert (
            f'absent_over_time(ipa_backup_last_success_timestamp_seconds{{job="ipa-backup", target="{target}"}}[5m])'
            in alerts["BackupTooOld"]["expr"]
        )
    assert "absent(ipa_restore_drill_last_success_timestamp_seconds" in alerts["RestoreDrillFailed"]["expr"]
    assert 'status=~"failure|timeout"' in "".join(
        r["expr"]
        for g in rule_groups(stack_settings(stack))
        for r in g["rules"]
        if r.get("record") == "ipa:execution_failures:ratio_rate5m"
    )


def test_backend_pods_are_selected_by_their_app_label(stack: str) -> None:
    """The metrics contract names the backend pods by the label app=ipa-backend; a pod's name proves nothing."""
    alerts = _alerts(stack)
    settings = stack_settings(stack)
    join = (
        f"* on (namespace, pod) group_left () max by (namespace, pod) "
        f'(kube_pod_labels{{namespace="{settings.backend_namespace}", label_app="ipa-backend"}})'
    )
    for name in ("IpaBackendPodRestarting", "IpaBackendCrashLooping", "IpaBackendMemoryNearLimit"):
        assert join in alerts[name]["expr"], name
    exprs = [r["expr"] for g in rule_groups(settings) for r in g["rules"]]
    assert not [e for e in exprs if "ipa-backend-" in e], "a rule still matches backend pods by name"


def test_burn_rate_alerts_use_the_workbook_windows(stack: str) -> None:
    alerts = _alerts(stack)
    settings = stack_settings(stack)
    budget = 1 - settings.latency_slo
    fast = alerts["IpaBackendLatencyBudgetBurnFast"]["expr"]
    slow = alerts["IpaBackendLatencyBudgetBurnSlow"]["expr"]
    for window, rate in (("1h", 14.4), ("5m", 14.4), ("6h", 6), ("30m", 6)):
        assert f"ipa:http_request_slow:ratio_rate{window} > {rate * budget:.10g}" in fast
    for window, rate in (("1d", 3), ("2h", 3), ("3d", 1), ("6h", 1)):
        assert f"ipa:http_request_slow:ratio_rate{window} > {rate * budget:.10g}" in slow
    assert alerts["IpaBackendLatencyBudgetBurnFast"]["labels"]["severity"] == "critical"
    assert alerts["IpaBackendLatencyBudgetBurnSlow"]["labels"]["severity"] == "warning"


def test_price_table_has_every_model_type_and_the_default() -> None:
    settings = stack_settings("dev", {"claudePricing": {"m-1": {"input": 2, "output": 4, "cacheRead": 0.2, "cacheWrite": 2.5}}})
    rules = price_rules(settings)
    table = {(r["labels"]["model"], r["labels"]["type"]): r["expr"] for r in rules}
    assert table == {
        ("m-1", "input"): "vector(2)",
        ("m-1", "output"): "vector(4)",
        ("m-1", "cache_read"): "vector(0.2)",
        ("m-1", "cache_write"): "vector(2.5)",
        ("__default__", "input"): "vector(15)",
        ("__default__", "output"): "vector(75)",
        ("__default__", "cache_read"): "vector(1.5)",
        ("__default__", "cache_write"): "vector(18.75)",
    }
    assert {r["record"] for r in rules} == {"ipa:claude_price_usd_per_mtok"}


def test_latency_bucket_matcher_accepts_both_spellings() -> None:
    assert le_matcher(1.0) == "1|1\\\\.0"
    assert le_matcher(0.5) == "0\\\\.5"


def test_rules_are_deterministic(stack: str) -> None:
    assert rule_groups(stack_settings(stack)) == rule_groups(stack_settings(stack))


@pytest.mark.parametrize("stack_name", ["dev", "prod"])
def test_component_declares_the_prometheus_rules(run_stack: RunStack, stack_name: str) -> None:
    settings = stack_settings(stack_name)
    run = run_stack(
        stack_name,
        program=lambda: AlertRules("alert-rules", AlertRulesArgs.from_settings(settings), namespace=settings.monitoring_namespace),
    )
    rules = run.of_type("kubernetes:monitoring.coreos.com/v1:PrometheusRule")
    # Pulumi names carry the component's name; the Kubernetes objects keep theirs.
    assert sorted(r.name for r in rules) == ["alert-rules-ipa-alerts", "alert-rules-ipa-recording-rules"]
    assert sorted(r.inputs["metadata"]["name"] for r in rules) == ["ipa-alerts", "ipa-recording-rules"]
    component = run.one("ipa-ops:monitoring:AlertRules", "alert-rules")
    declared: list[dict] = []
    for rule in rules:
        assert rule.parent == component.urn
        assert rule.inputs["apiVersion"] == "monitoring.coreos.com/v1"
        assert rule.inputs["kind"] == "PrometheusRule"
        assert rule.inputs["metadata"]["namespace"] == settings.monitoring_namespace
        assert rule.inputs["metadata"]["labels"]["release"] == RELEASE_NAME
        declared += rule.inputs["spec"]["groups"]
    assert sorted(declared, key=lambda g: g["name"]) == sorted(rule_groups(settings), key=lambda g: g["name"])


def test_main_program_declares_the_rules(run_stack: RunStack) -> None:
    run = run_stack("dev")
    assert len(run.of_type("kubernetes:monitoring.coreos.com/v1:PrometheusRule")) == 2


def test_rule_body_shape() -> None:
    body = prometheus_rule_body("x", "monitoring", [{"name": "g", "rules": []}])
    assert body["metadata"] == {
        "name": "x",
        "namespace": "monitoring",
        "labels": {"release": RELEASE_NAME, "app.kubernetes.io/part-of": "ipa-ops", "app.kubernetes.io/component": "rules"},
    }
