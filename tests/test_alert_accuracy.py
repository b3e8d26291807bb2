"""Alert accuracy on labelled scenarios, evaluated by `promtool test rules` on the dev render.

Each scenario is four hours of synthetic but realistic series for every source the rules read
(ipa-backend, the backup pushes, kube-state-metrics, kubelet, the exporters). At its end each
scenario says which alerts must be firing; every other alert must be quiet, except the few a
scenario lists as `allowed` (a real consequence that is neither required nor wrong).

All alerts are asked "quiet?" at the end of each scenario; promtool names each one that fires.
Precision = correct firings / all firings, recall = correct firings / required firings,
over the whole suite; the test fails below 95 %.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.rules.groups import alert_names, rule_groups
from tests.conftest import stack_settings
from tests.rules.runner import run_promtool, write_test_file

MINUTES = 240  # every scenario lasts 4 hours, sampled each minute; alerts are read at the end
B = 'job="ipa-backend", namespace="ipa"'
Series = dict[str, list[float]]
FIRED = re.compile(r"name: (?P<scenario>[^\n]*),\s*\n\s*alertname: (?P<alert>\w+), time:")


def const(value: float) -> list[float]:
    return [value] * (MINUTES + 1)


def ramp(before: float, after: float, start: int, end: int = MINUTES) -> list[float]:
    """`before` until minute `start`, then linear to `after` at minute `end` (and after)."""
    out = []
    for m in range(MINUTES + 1):
        if m <= start:
            out.append(before)
        elif m >= end:
            out.append(after)
        else:
            out.append(before + (after - before) * (m - start) / (end - start))
    return out


def step(before: float, after: float, start: int, end: int = MINUTES + 1) -> list[float]:
    """`after` during minutes [start, end), `before` otherwise."""
    return [after if start <= m < end else before for m in range(MINUTES + 1)]


def counter(per_minute: list[float], start: float = 1000.0) -> list[float]:
    """A counter whose increase during each minute is the given value."""
    out, total = [], start
    for m, inc in enumerate(per_minute):
        if m:
            total += inc
        out.append(round(total, 6))
    return out


def times(a: list[float], b: list[float]) -> list[float]:
    return [x * y for x, y in zip(a, b, strict=True)]


@dataclass
class Traffic:
    """Knobs of one scenario, each a per-minute series (see `const`, `ramp`, `step`)."""

    requests: list[float] = field(default_factory=lambda: const(600))  # HTTP requests per minute
    error_share: list[float] = field(default_factory=lambda: const(0.001))
    slow_share: list[float] = field(default_factory=lambda: const(0.0))  # share taking 2.5-5 s
    backend_up: list[float] = field(default_factory=lambda: const(1))
    deploy_at: int | None = None  # pod ipa-backend-0 replaced by ipa-backend-2 at this minute
    executions: list[float] = field(default_factory=lambda: const(60))
    execution_failure_share: list[float] = field(default_factory=lambda: const(0.01))
    claude_calls: list[float] = field(default_factory=lambda: const(60))
    claude_rate_limited_share: list[float] = field(default_factory=lambda: const(0.0))
    claude_failed_share: list[float] = field(default_factory=lambda: const(0.002))
    opus_output_tokens: list[float] = field(default_factory=lambda: const(0.0))  # per minute
    backup_every: int = 30
    postgres_backups_stop_at: int | None = None
    backup_series_end: int | None = None  # the Pushgateway lost every pushed series here
    failed_backup_job_at: int | None = None
    drill_age_days: float = 2.0
    drill_seconds: float = 1800.0
    pushgateway_up: list[float] = field(default_factory=lambda: const(1))
    pg_up: list[float] = field(default_factory=lambda: const(1))
    # Point-in-time recovery: the WAL stream (scraped from its pod), daily base backups, the server's slot.
    wal_stream_up: list[float] = field(default_factory=lambda: const(1))
    wal_lag_seconds: list[float] = field(default_factory=lambda: const(8))
    base_backup_age_hours: float = 6.0  # at the end of the scenario
    slot_safe_wal_bytes: list[float] = field(default_factory=lambda: const(15 * 2**30))
    crash_looping: list[float] = field(default_factory=lambda: const(0))
    # A pod named like the backend but labelled app=ipa-backend-migrate (not a backend pod).
    migrate_crash_looping: list[float] = field(default_factory=lambda: const(0))


def _http(t: Traffic) -> Series:
    series: Series = {}
    pods = [("ipa-backend-0", step(1, 0, t.deploy_at) if t.deploy_at is not None else const(1)), ("ipa-backend-1", const(1))]
    if t.deploy_at is not None:
        pods.append(("ipa-backend-2", step(0, 1, t.deploy_at)))
    for pod, share in pods:
        scale = [s / (len(pods) - (1 if t.deploy_at is not None else 0)) for s in share]
        reqs = times(t.requests, scale)
        errors = times(reqs, t.error_share)
        ok = [r - e for r, e in zip(reqs, errors, strict=True)]
        slow = times(reqs, t.slow_share)
        fast = [r - s for r, s in zip(reqs, slow, strict=True)]
        labels = f'{B}, pod="{pod}", handler="/api/v1/executions", method="POST"'
        series[f'http_requests_total{{{labels}, status="201"}}'] = counter(ok)
        series[f'http_requests_total{{{labels}, status="500"}}'] = counter(errors)
        buckets = {"0.25": 0.7, "0.5": 0.95, "1.0": 0.998, "2.5": 1.0}
        for le, share_fast in buckets.items():
            series[f'http_request_duration_seconds_bucket{{{labels}, le="{le}"}}'] = counter([f * share_fast for f in fast])
        for le in ("5.0", "+Inf"):
            series[f'http_request_duration_seconds_bucket{{{labels}, le="{le}"}}'] = counter(reqs)
        series[f"http_request_duration_seconds_count{{{labels}}}"] = counter(reqs)
        up = times(t.backend_up, [1.0 if s else float("nan") for s in share])
        series[f'up{{{B}, pod="{pod}"}}'] = up
        # kube-state-metrics' pod labels (app=ipa-backend) exist while the pod does: the platform alerts join on them.
        series[f'kube_pod_labels{{job="kube-state-metrics", namespace="ipa", pod="{pod}", uid="uid-{pod}", label_app="ipa-backend"}}'] = [
            1.0 if s else float("nan") for s in share
        ]
        series[
            f'kube_pod_container_status_waiting_reason{{job="kube-state-metrics", namespace="ipa", pod="{pod}", '
            'container="backend", reason="CrashLoopBackOff"}'
        ] = t.crash_looping
        restarts = counter([c * 0.5 for c in t.crash_looping], 0)
        series[
            f'kube_pod_container_status_restarts_total{{job="kube-state-metrics", namespace="ipa", pod="{pod}", container="backend"}}'
        ] = restarts
        series[f'container_memory_working_set_bytes{{job="kubelet", namespace="ipa", pod="{pod}", container="backend"}}'] = const(5e8)
        series[
            f'kube_pod_container_resource_limits{{job="kube-state-metrics", namespace="ipa", pod="{pod}", '
            'container="backend", resource="memory", unit="byte"}'
        ] = const(1073741824)
    migrate = 'job="kube-state-metrics", namespace="ipa", pod="ipa-backend-migrate-7xk2p"'
    series[f'kube_pod_labels{{{migrate}, uid="uid-migrate", label_app="ipa-backend-migrate"}}'] = const(1)
    series[f'kube_pod_container_status_waiting_reason{{{migrate}, container="migrate", reason="CrashLoopBackOff"}}'] = (
        t.migrate_crash_looping
    )
    series[f'kube_pod_container_status_restarts_total{{{migrate}, container="migrate"}}'] = counter(
        [c * 0.5 for c in t.migrate_crash_looping], 0
    )
    # While the backend is down nothing is scraped: its series end (stale), `up` reads 0.
    for name, values in series.items():
        if not name.startswith(("up{", "kube_", "container_")):
            series[name] = [v if u else float("nan") for v, u in zip(values, t.backend_up, strict=True)]
    return series


def _executions(t: Traffic) -> Series:
    series: Series = {}
    for workflow in ("invoice-intake", "email-triage"):
        labels = f'{B}, pod="ipa-backend-1", workflow="{workflow}"'
        failed = times(t.executions, t.execution_failure_share)
        ok = [e - f for e, f in zip(t.executions, failed, strict=True)]
        series[f'ipa_executions_total{{{labels}, status="success"}}'] = counter(ok)
        series[f'ipa_executions_total{{{labels}, status="failure"}}'] = counter(failed)
        series[f"ipa_executions_in_progress{{{labels}}}"] = const(3)
    return series


def _claude(t: Traffic) -> Series:
    labels = f'{B}, pod="ipa-backend-1", model="claude-sonnet-4-5"'
    limited = times(t.claude_calls, t.claude_rate_limited_share)
    failed = times(t.claude_calls, t.claude_failed_share)
    series = {
        f"claude_api_requests_total{{{labels}}}": counter(t.claude_calls),
        f'claude_api_errors_total{{{labels}, error_type="rate_limit"}}': counter(limited),
        f'claude_api_errors_total{{{labels}, error_type="overloaded"}}': counter(failed),
        f'claude_tokens_total{{{labels}, type="input"}}': counter(const(6000)),  # 100 tokens/s
        f'claude_tokens_total{{{labels}, type="output"}}': counter(const(600)),
        f'claude_tokens_total{{{B}, pod="ipa-backend-1", model="claude-opus-4-5", type="output"}}': counter(t.opus_output_tokens),
    }
    for le, share in (("5", 0.6), ("10", 0.9), ("30", 1.0)):
        series[f'claude_api_request_duration_seconds_bucket{{{labels}, le="{le}"}}'] = counter([c * share for c in t.claude_calls])
    series[f'claude_api_request_duration_seconds_bucket{{{labels}, le="+Inf"}}'] = counter(t.claude_calls)
    series[f"claude_api_request_duration_seconds_count{{{labels}}}"] = counter(t.claude_calls)
    return series


def _backups(t: Traffic) -> Series:
    series: Series = {}
    end = t.backup_series_end if t.backup_series_end is not None else MINUTES + 1
    for target in ("postgres", "redis"):
        stop = t.postgres_backups_stop_at if target == "postgres" and t.postgres_backups_stop_at is not None else MINUTES + 1
        values = []
        for m in range(MINUTES + 1):
            last_run = min(m, stop) // t.backup_every * t.backup_every
            values.append(float(last_run * 60 - 300))  # each backup captures 5 minutes before it is pushed
        series[f'ipa_backup_last_success_timestamp_seconds{{job="ipa-backup", target="{target}"}}'] = values
        series[f'ipa_backup_duration_seconds{{job="ipa-backup", target="{target}"}}'] = const(240)
        series[f'ipa_restore_drill_duration_seconds{{job="ipa-backup", target="{target}"}}'] = const(
            t.drill_seconds if target == "postgres" else 300
        )
    series['ipa_restore_drill_last_success_timestamp_seconds{job="ipa-backup"}'] = const(-t.drill_age_days * 86400)
    series['ipa_base_backup_last_success_timestamp_seconds{job="ipa-backup"}'] = const(MINUTES * 60 - t.base_backup_age_hours * 3600)
    # A Pushgateway that is down or lost its state serves none of the pushed series.
    gone = [m >= end or not up for m, up in enumerate(t.pushgateway_up)]
    for name, values in series.items():
        series[name] = [float("nan") if g else v for v, g in zip(values, gone, strict=True)]
    job = 'job="kube-state-metrics", namespace="ipa-backup"'
    ok_job = "ipa-backup-29000000"
    series[f'kube_job_failed{{{job}, job_name="{ok_job}", condition="true"}}'] = const(0)
    series[f'kube_job_status_start_time{{{job}, job_name="{ok_job}"}}'] = const(-600)
    if t.failed_backup_job_at is not None:
        bad = "ipa-backup-29000030"
        series[f'kube_job_failed{{{job}, job_name="{bad}", condition="true"}}'] = step(float("nan"), 1, t.failed_backup_job_at)
        series[f'kube_job_status_start_time{{{job}, job_name="{bad}"}}'] = step(
            float("nan"), (t.failed_backup_job_at - 20) * 60, t.failed_backup_job_at
        )
    return series


def _platform(t: Traffic) -> Series:
    pg, redis = 'job="postgres-exporter", instance="10.0.1.5:9187"', 'job="redis-exporter", instance="10.0.2.5:9121"'
    series = {
        'up{job="prometheus-pushgateway", namespace="monitoring", instance="10.0.0.7:9091"}': t.pushgateway_up,
        f"pg_up{{{pg}}}": t.pg_up,
        f'pg_stat_activity_count{{{pg}, datname="ipa", state="active"}}': const(20),
        f"pg_settings_max_connections{{{pg}}}": const(100),
        f"redis_up{{{redis}}}": const(1),
        f"redis_memory_used_bytes{{{redis}}}": const(2e8),
        f"redis_memory_max_bytes{{{redis}}}": const(1e9),
        f"redis_connected_clients{{{redis}}}": const(40),
        f"redis_config_maxclients{{{redis}}}": const(10000),
        f"redis_rejected_connections_total{{{redis}}}": const(0),
    }
    for ns, pvc in (
        ("monitoring", "prometheus-kube-prometheus-stack-prometheus-db-prometheus-kube-prometheus-stack-prometheus-0"),
        ("ipa", "data-ipa-postgres-0"),
    ):
        labels = f'job="kubelet", namespace="{ns}", persistentvolumeclaim="{pvc}"'
        series[f"kubelet_volume_stats_available_bytes{{{labels}}}"] = const(4e10)
        series[f"kubelet_volume_stats_capacity_bytes{{{labels}}}"] = const(1e11)
    return series


def _wal(t: Traffic) -> Series:
    stream = 'job="ipa-wal-stream", namespace="ipa-backup", pod="ipa-wal-stream-0"'
    pg = 'job="postgres-exporter", instance="10.0.1.5:9187", slot_name="ipa_wal_stream"'
    # A stopped pod's series go stale: no samples, not zeros.
    gone = [float("nan") if not up else None for up in t.wal_stream_up]
    return {
        f"ipa_wal_stream_up{{{stream}}}": [g if g is not None else 1.0 for g in gone],
        f"ipa_wal_stream_lag_seconds{{{stream}}}": [g if g is not None else v for g, v in zip(gone, t.wal_lag_seconds, strict=True)],
        f"pg_replication_slot_safe_wal_size_bytes{{{pg}}}": [
            v if up else float("nan") for v, up in zip(t.slot_safe_wal_bytes, t.pg_up, strict=True)
        ],
        f"pg_replication_slot_slot_is_active{{{pg}}}": [
            float(s) if up else float("nan") for s, up in zip(t.wal_stream_up, t.pg_up, strict=True)
        ],
    }


def all_series(t: Traffic) -> Series:
    return {**_http(t), **_executions(t), **_claude(t), **_backups(t), **_platform(t), **_wal(t)}


def encode(values: list[float]) -> str:
    """promtool's series notation; NaN here means "no sample" (`_`)."""
    return " ".join("_" if v != v else f"{v:.10g}" for v in values)


@dataclass
class Scenario:
    name: str
    traffic: Callable[[], Traffic]
    fire: frozenset[str]
    allowed: frozenset[str] = frozenset()


def s(name: str, traffic: Callable[[], Traffic], fire: set[str] | None = None, allowed: set[str] | None = None) -> Scenario:
    return Scenario(name, traffic, frozenset(fire or ()), frozenset(allowed or ()))


SCENARIOS = [
    s("normal traffic", Traffic),
    s(
        "nightly low traffic: 0.05 requests/s, a third of them 5xx and slow, few executions",
        lambda: Traffic(
            requests=const(3),
            error_share=const(0.33),
            slow_share=const(0.33),
            executions=const(0.2),
            execution_failure_share=const(0.5),
            claude_calls=const(1),
            claude_rate_limited_share=const(0.5),
        ),
    ),
    s(
        "short deploy blip: one minute of 20 % errors while a pod is replaced",
        lambda: Traffic(error_share=step(0.001, 0.2, 225, 226), deploy_at=225),
    ),
    s(
        "real outage: half the requests fail for the last 40 minutes",
        lambda: Traffic(error_share=step(0.001, 0.5, 200)),
        {"HighErrorRate", "IpaBackendErrorBudgetBurnFast", "IpaBackendErrorBudgetBurnSlow"},
    ),
    s(
        "backend crash: every pod crash-loops for the last 30 minutes",
        lambda: Traffic(backend_up=step(1, 0, 210), crash_looping=step(0, 1, 210)),
        {"IpaBackendDown", "IpaBackendCrashLooping", "IpaBackendPodRestarting"},
    ),
    s(
        "a pod named ipa-backend-migrate-* but not labelled app=ipa-backend crash-loops for the last 30 minutes",
        lambda: Traffic(migrate_crash_looping=step(0, 1, 210)),
    ),
    s(
        "slow latency degradation: the share of 2.5-5 s requests grows to 20 % over three hours",
        lambda: Traffic(slow_share=ramp(0, 0.2, 60)),
        {"HighResponseTime", "IpaBackendLatencyBudgetBurnFast", "IpaBackendLatencyBudgetBurnSlow"},
    ),
    s(
        "Claude rate-limit burst: 30 % of calls rate-limited for 40 minutes at 0.25 calls/s",
        lambda: Traffic(claude_calls=const(15), claude_rate_limited_share=step(0, 0.3, 200)),
        {"ClaudeRateLimited"},
    ),
    s("Claude rate-limit spike: two minutes of 429s at 1 call/s", lambda: Traffic(claude_rate_limited_share=step(0, 1.0, 236, 238))),
    s(
        "Claude outage: every call fails for 30 minutes, executions fail with it",
        lambda: Traffic(claude_failed_share=step(0.002, 1.0, 210), execution_failure_share=step(0.01, 0.6, 210)),
        {"ClaudeAPIErrors", "ExecutionFailureRateHigh"},
    ),
    s("backup late: postgres backups stopped two hours ago", lambda: Traffic(postgres_backups_stop_at=120), {"BackupTooOld"}),
    s("backup failed: one Job failed, the next run succeeded", lambda: Traffic(failed_backup_job_at=200), {"BackupJobFailed"}),
    s(
        "backup metrics vanished: the Pushgateway lost its pushed series an hour ago",
        lambda: Traffic(backup_series_end=180),
        {"BackupTooOld", "BaseBackupTooOld", "RestoreDrillFailed"},
    ),
    s(
        "Pushgateway down for 40 minutes",
        lambda: Traffic(pushgateway_up=step(1, 0, 200)),
        {"PushgatewayDown", "BackupTooOld", "BaseBackupTooOld", "RestoreDrillFailed"},
    ),
    s("slow restore drill: postgres restore took 2.5 h of a 4 h RTO", lambda: Traffic(drill_seconds=9000), {"RestoreTooSlow"}),
    s("restore drill overdue: the last success is 9 days old", lambda: Traffic(drill_age_days=9), {"RestoreDrillFailed"}),
    s(
        "cost spike: claude-opus-4-5 writes 1000 output tokens/s for 90 minutes",
        lambda: Traffic(opus_output_tokens=step(0, 60000, 150)),
        {"ClaudeCostBudgetExceeded"},
    ),
    s("PostgreSQL down for 40 minutes", lambda: Traffic(pg_up=step(1, 0, 200)), {"PostgresDown"}),
    s("WAL stream pod gone for 10 minutes", lambda: Traffic(wal_stream_up=step(1, 0, 230)), {"WalStreamDown"}),
    s("WAL stream blip: one failed upload pass", lambda: Traffic(wal_stream_up=step(1, 0, 236, 237))),
    s("WAL uploads lag 2 minutes behind (storage slow)", lambda: Traffic(wal_lag_seconds=step(8, 120, 230)), {"WalArchiveLagHigh"}),
    s("base backup missed: the newest is 2 days old", lambda: Traffic(base_backup_age_hours=48), {"BaseBackupTooOld"}),
    s(
        "replication slot near its limit: the stream stalls while the server keeps writing",
        lambda: Traffic(slot_safe_wal_bytes=ramp(15 * 2**30, 2**30, 150)),
        {"WalSlotRetentionNearLimit"},
    ),
]


def scenario_tests(alerts: list[str]) -> dict[str, Any]:
    return {
        "rule_files": ["RULES"],
        # Rules are evaluated every 2 minutes (Prometheus: 30 s): every `for:` (>= 2m) and range (>= 5m) keeps
        # its meaning, at half the evaluations of a 1-minute interval, which made this the slowest unit test.
        "evaluation_interval": "2m",
        "tests": [
            {
                "name": scenario.name,
                "interval": "1m",
                "input_series": [{"series": k, "values": encode(v)} for k, v in all_series(scenario.traffic()).items()],
                "alert_rule_test": [{"eval_time": f"{MINUTES}m", "alertname": a, "exp_alerts": []} for a in alerts],
            }
            for scenario in SCENARIOS
        ],
    }


def fired_alerts(output: str) -> dict[str, set[str]]:
    fired: dict[str, set[str]] = {sc.name: set() for sc in SCENARIOS}
    for match in FIRED.finditer(output):
        fired[match["scenario"]].add(match["alert"])
    return fired


def test_alert_accuracy(rendered: Callable[[str], Path], tmp_path: Path) -> None:
    alerts = alert_names(rule_groups(stack_settings("dev")))
    required = set().union(*(sc.fire for sc in SCENARIOS))
    assert required <= set(alerts), f"scenarios name unknown alerts: {required - set(alerts)}"
    test_file = write_test_file(scenario_tests(alerts), rendered("dev") / "prometheus" / "rules.yaml", tmp_path / "accuracy.yaml")
    result = run_promtool([test_file], timeout=600)
    output = result.stdout
    # Anything but "alert X fired" (a bad series, a parse error) must not pass as "nothing fired".
    assert output.count("alertname:") == len(FIRED.findall(output)), output[-4000:]
    assert result.returncode == 0 or "FAILED" in output, output[-4000:]
    fired = fired_alerts(output)
    true_pos = false_pos = false_neg = 0
    lines = []
    for sc in SCENARIOS:
        got = fired[sc.name]
        tp, fn, fp = got & sc.fire, sc.fire - got, got - sc.fire - sc.allowed
        true_pos, false_neg, false_pos = true_pos + len(tp), false_neg + len(fn), false_pos + len(fp)
        verdict = "ok" if not fn and not fp else f"MISSED {sorted(fn)} WRONG {sorted(fp)}"
        lines.append(f"  {sc.name}: fired {sorted(got)} -> {verdict}")
    precision = true_pos / max(true_pos + false_pos, 1)
    recall = true_pos / max(true_pos + false_neg, 1)
    report = (
        f"alert accuracy over {len(SCENARIOS)} scenarios x {len(alerts)} alerts: "
        f"precision {precision:.1%}, recall {recall:.1%} (TP {true_pos}, FP {false_pos}, FN {false_neg})\n" + "\n".join(lines)
    )
    print(report)
    assert true_pos > 0, report
    assert precision >= 0.95 and recall >= 0.95, report


def test_the_suite_covers_the_issue_scenarios() -> None:
    names = " | ".join(sc.name for sc in SCENARIOS).lower()
    for word in (
        "normal",
        "nightly low traffic",
        "deploy blip",
        "real outage",
        "latency degradation",
        "rate-limit burst",
        "claude outage",
        "backup late",
        "backup failed",
        "metrics vanished",
        "slow restore drill",
        "cost spike",
    ):
        assert word in names, word
    assert any(not sc.fire for sc in SCENARIOS) and all(sc.name for sc in SCENARIOS)


def test_fired_alerts_parser() -> None:
    output = (
        "  FAILED:\n    name: normal traffic,\n    alertname: HighErrorRate, time: 4h, \n        exp:[], \n"
        "    name: " + SCENARIOS[-1].name + ",\n    alertname: ClaudeCostBudgetExceeded, time: 4h, \n"
    )
    fired = fired_alerts(output)
    assert fired["normal traffic"] == {"HighErrorRate"}
    assert fired[SCENARIOS[-1].name] == {"ClaudeCostBudgetExceeded"}
