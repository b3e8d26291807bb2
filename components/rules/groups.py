"""Pure builders of the Prometheus rule groups (recording and alerting) from the stack settings.

Every group is a plain dict in Prometheus rule-file shape, so the same data goes into the
PrometheusRule custom resources, into `build/<stack>/prometheus/rules.yaml` and into promtool.

Guards against false firing, used throughout:
- ratios divide by `clamp_min(total, TINY)`: no traffic gives 0, never NaN or Inf;
- latency quantiles are kept only where requests were counted (`and ... > 0`), so
  histogram_quantile never returns NaN into an alert;
- ratio alerts also require a minimum request rate (settings.min_request_rate / min_execution_rate);
- a metric whose disappearance is itself trouble is checked with absent().
"""

from __future__ import annotations

from typing import Any

from components.settings import BACKUP_TARGETS as BACKUP_TARGETS  # re-exported: what BackupTooOld watches
from components.settings import Settings
from components.topology import (
    API_DASHBOARD,
    BACKEND_APP,
    BACKEND_JOB,
    BACKUP_DASHBOARD,
    BACKUP_JOB,
    BACKUP_JOBS_REGEX,
    CLAUDE_DASHBOARD,
    EXECUTIONS_DASHBOARD,
    PAGE_BURNS,
    SLO_WINDOWS,
    SYSTEM_DASHBOARD,
    TICKET_BURNS,
    WAL_SLOT,
    WAL_STREAM_JOB,
    topology,
)

Rule = dict[str, Any]
Group = dict[str, Any]

BACKEND = f'job="{BACKEND_JOB}"'
BACKUP = f'job="{BACKUP_JOB}"'
WAL_STREAM = f'job="{WAL_STREAM_JOB}"'
# Divisor floor: any real request rate is far above it, so the ratio is exact when traffic
# exists and 0 (not NaN) when it does not.
TINY = "1e-9"
DEFAULT_MODEL = "__default__"
BACKUP_MISSING_GRACE = "5m"  # how long the backup metric may be absent before BackupTooOld fires
# Fixed thresholds of the platform alerts (not worth a setting each).
POD_RESTARTS_PER_HOUR = 3
MEMORY_NEAR_LIMIT = 0.9
VOLUME_FREE_MIN = 0.15
CONNECTIONS_NEAR_LIMIT = 0.8
POSTGRES_REPLICATION_LAG_SECONDS = 300
REDIS_MEMORY_NEAR_MAX = 0.9
CONCURRENCY_SATURATION = 0.9
# Share of max_slot_wal_keep_size a slot may retain before the server is close to invalidating it.
SLOT_RETENTION_NEAR_LIMIT = 0.8

# Dashboard each alert links to.
API, EXECUTIONS, CLAUDE, SYSTEM, BACKUP_DR = API_DASHBOARD, EXECUTIONS_DASHBOARD, CLAUDE_DASHBOARD, SYSTEM_DASHBOARD, BACKUP_DASHBOARD

VALUE = "{{ $value | humanize }}"
PERCENT = "{{ $value | humanizePercentage }}"
DURATION = "{{ $value | humanizeDuration }}"
NS = "{{ $labels.namespace }}"


def _num(value: float) -> str:
    """A PromQL number literal without float noise (0.05, not 0.05000000000000001)."""
    return f"{value:.10g}"


def le_matcher(bound: float) -> str:
    """Matches a histogram bucket bound however the client spelled it (`1` or `1.0`)."""
    spellings = sorted({f"{bound:g}", repr(float(bound))})
    return "|".join(s.replace(".", "\\\\.") for s in spellings)


def dashboard_url(settings: Settings, uid: str) -> str:
    return topology(settings).dashboard_url(uid)


def runbook_url(settings: Settings, alert: str) -> str:
    return topology(settings).runbook_url(alert)


def alert(
    settings: Settings,
    name: str,
    expr: str,
    severity: str,
    summary: str,
    description: str,
    dashboard: str,
    for_: str | None = None,
) -> Rule:
    rule: Rule = {"alert": name, "expr": expr.strip()}
    if for_:
        rule["for"] = for_
    rule["labels"] = {"severity": severity}
    rule["annotations"] = {
        "summary": summary,
        "description": description,
        "runbook_url": runbook_url(settings, name),
        "dashboard_url": dashboard_url(settings, dashboard),
    }
    return rule


def record(name: str, expr: str, labels: dict[str, str] | None = None) -> Rule:
    rule: Rule = {"record": name, "expr": expr.strip()}
    if labels:
        rule["labels"] = labels
    return rule


def backend_pods(namespace: str) -> str:
    """One series per ipa-backend pod of the namespace, value 1: the right-hand side of a join.

    Pods are found by their label app=ipa-backend, not by name: kube-state-metrics exports it as
    `label_app` of kube_pod_labels (metricLabelsAllowlist pods=[app]). max by drops the exporter's
    own labels, so two kube-state-metrics replicas still give one series per pod.
    """
    return f'max by (namespace, pod) (kube_pod_labels{{namespace="{namespace}", label_app="{BACKEND_APP}"}})'


def on_backend_pods(expr: str, namespace: str) -> str:
    """`expr` (a vector with namespace and pod labels) restricted to the ipa-backend pods, its labels kept."""
    return f"{expr}\n* on (namespace, pod) group_left () {backend_pods(namespace)}"


def _ratio(numerator: str, denominator: str) -> str:
    """numerator/denominator with 0 (not NaN) at no traffic and 0 when the numerator has no series."""
    return f"(\n  {numerator}\n  or 0 * {denominator}\n)\n/ clamp_min({denominator}, {TINY})"


def _quantile(q: float, buckets: str, count: str, by: str) -> str:
    """histogram_quantile kept only where observations were counted, so never NaN."""
    return f"histogram_quantile({q}, sum by ({by}, le) (rate({buckets}[5m])))\nand on ({by}) (sum by ({by}) (rate({count}[5m])) > 0)"


# --- recording rules -----------------------------------------------------------------------------


def http_recording_rules(settings: Settings) -> list[Rule]:
    rules = [
        record("ipa:http_requests:rate5m", f"sum by (namespace, handler, method, status) (rate(http_requests_total{{{BACKEND}}}[5m]))"),
    ]
    for window in ("5m", "1h", "6h"):
        rules.append(
            record(f"ipa_namespace:http_requests:rate{window}", f"sum by (namespace) (rate(http_requests_total{{{BACKEND}}}[{window}]))")
        )
    le = le_matcher(settings.latency_slo_threshold_seconds)
    for window in SLO_WINDOWS:
        total = f"sum by (namespace) (rate(http_requests_total{{{BACKEND}}}[{window}]))"
        errors = f'sum by (namespace) (rate(http_requests_total{{{BACKEND}, status=~"5.."}}[{window}]))'
        rules.append(record(f"ipa:http_request_errors:ratio_rate{window}", _ratio(errors, total)))
        count = f"sum by (namespace) (rate(http_request_duration_seconds_count{{{BACKEND}}}[{window}]))"
        fast = f'sum by (namespace) (rate(http_request_duration_seconds_bucket{{{BACKEND}, le=~"{le}"}}[{window}]))'
        # slow = all - fast; clamp_min(…, 0) absorbs counter-reset noise between the two series.
        rules.append(record(f"ipa:http_request_slow:ratio_rate{window}", f"clamp_min({count} - {fast}, 0)\n/ clamp_min({count}, {TINY})"))
    buckets = f"http_request_duration_seconds_bucket{{{BACKEND}}}"
    count5m = f"http_request_duration_seconds_count{{{BACKEND}}}"
    for q, name in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
        rules.append(record(f"ipa:http_request_duration_seconds:{name}_5m", _quantile(q, buckets, count5m, "namespace")))
    rules.append(record("ipa_handler:http_request_duration_seconds:p95_5m", _quantile(0.95, buckets, count5m, "namespace, handler")))
    return rules


def execution_recording_rules() -> list[Rule]:
    total = f"sum by (namespace, workflow) (rate(ipa_executions_total{{{BACKEND}}}[5m]))"
    failed = f'sum by (namespace, workflow) (rate(ipa_executions_total{{{BACKEND}, status=~"failure|timeout"}}[5m]))'
    succeeded = f'sum by (namespace, workflow) (rate(ipa_executions_total{{{BACKEND}, status="success"}}[5m]))'
    duration_count = f"sum by (namespace, workflow) (rate(ipa_execution_duration_seconds_count{{{BACKEND}}}[5m]))"
    return [
        record("ipa:executions:rate5m", f"sum by (namespace, workflow, status) (rate(ipa_executions_total{{{BACKEND}}}[5m]))"),
        record("ipa:execution_failures:ratio_rate5m", _ratio(failed, total)),
        # Success share is undefined without executions: no value rather than a fake 0 or 1.
        record("ipa:execution_success:ratio_rate5m", f"(\n  {succeeded}\n  or 0 * {total}\n)\n/ ({total} > 0)"),
        record(
            "ipa:execution_duration_seconds:mean_5m",
            f"sum by (namespace, workflow) (rate(ipa_execution_duration_seconds_sum{{{BACKEND}}}[5m]))\n/ ({duration_count} > 0)",
        ),
        record(
            "ipa:execution_duration_seconds:p95_5m",
            _quantile(
                0.95,
                f"ipa_execution_duration_seconds_bucket{{{BACKEND}}}",
                f"ipa_execution_duration_seconds_count{{{BACKEND}}}",
                "namespace, workflow",
            ),
        ),
        record("ipa:executions_in_progress:sum", f"sum by (namespace, workflow) (ipa_executions_in_progress{{{BACKEND}}})"),
    ]


def claude_recording_rules() -> list[Rule]:
    requests = f"sum by (namespace) (rate(claude_api_requests_total{{{BACKEND}}}[5m]))"
    limited = f'sum by (namespace) (rate(claude_api_errors_total{{{BACKEND}, error_type="rate_limit"}}[5m]))'
    return [
        record("ipa:claude_requests:rate5m", f"sum by (namespace, model) (rate(claude_api_requests_total{{{BACKEND}}}[5m]))"),
        record("ipa:claude_errors:rate5m", f"sum by (namespace, model, error_type) (rate(claude_api_errors_total{{{BACKEND}}}[5m]))"),
        record("ipa:claude_tokens:rate5m", f"sum by (namespace, model, type) (rate(claude_tokens_total{{{BACKEND}}}[5m]))"),
        record("ipa:claude_rate_limited:ratio_rate5m", _ratio(limited, requests)),
        record(
            "ipa:claude_request_duration_seconds:p95_5m",
            _quantile(
                0.95,
                f"claude_api_request_duration_seconds_bucket{{{BACKEND}}}",
                f"claude_api_request_duration_seconds_count{{{BACKEND}}}",
                "namespace, model",
            ),
        ),
    ]


def price_rules(settings: Settings) -> list[Rule]:
    """The static price table as series, so spend is a PromQL join (USD per million tokens)."""
    table = dict(sorted(settings.claude_pricing.items()))
    table[DEFAULT_MODEL] = settings.claude_default_pricing
    return [
        record("ipa:claude_price_usd_per_mtok", f"vector({_num(price)})", {"model": model, "type": token_type})
        for model, prices in table.items()
        for token_type, price in prices.as_dict().items()
    ]


def _spend(tokens: str) -> str:
    """USD of `tokens` (per namespace, model, type): table price, or the default price for models
    missing from the table."""
    return (
        f"sum by (namespace, model) (\n"
        f"    {tokens}\n"
        f"    * on (model, type) group_left () ipa:claude_price_usd_per_mtok\n"
        f"  or\n"
        f"    ({tokens}\n"
        f'      unless on (model) ipa:claude_price_usd_per_mtok{{model!="{DEFAULT_MODEL}"}})\n'
        f'    * on (type) group_left () ipa:claude_price_usd_per_mtok{{model="{DEFAULT_MODEL}"}}\n'
        f") / 1e6"
    )


def cost_recording_rules(settings: Settings) -> list[Rule]:
    per_hour = f"sum by (namespace, model, type) (rate(claude_tokens_total{{{BACKEND}}}[1h])) * 3600"
    per_day = f"sum by (namespace, model, type) (increase(claude_tokens_total{{{BACKEND}}}[24h]))"
    # Price rules come first: rules in a group are evaluated in order.
    return [
        *price_rules(settings),
        record("ipa:claude_cost_usd:rate1h", _spend(per_hour)),
        record("ipa:claude_cost_usd:increase24h", _spend(per_day)),
    ]


def backup_recording_rules() -> list[Rule]:
    # The newest backup wins when a target has several series (e.g. after a Pushgateway move).
    return [record("ipa:backup_age_seconds", f"min by (target) (time() - ipa_backup_last_success_timestamp_seconds{{{BACKUP}}})")]


def recording_groups(settings: Settings) -> list[Group]:
    return [
        {"name": "ipa-backend.recording", "rules": http_recording_rules(settings)},
        {"name": "ipa-executions.recording", "rules": execution_recording_rules()},
        {"name": "ipa-claude.recording", "rules": claude_recording_rules()},
        {"name": "ipa-claude-cost.recording", "rules": cost_recording_rules(settings)},
        {"name": "ipa-backup.recording", "rules": backup_recording_rules()},
    ]


# --- alerts --------------------------------------------------------------------------------------


def _traffic_guard(settings: Settings, window: str = "5m") -> str:
    return f"and on (namespace) ipa_namespace:http_requests:rate{window} >= {_num(settings.min_request_rate)}"


def api_alerts(s: Settings) -> list[Rule]:
    return [
        alert(
            s,
            "HighErrorRate",
            f"ipa:http_request_errors:ratio_rate5m > {_num(s.error_rate_threshold)}\n{_traffic_guard(s)}",
            "critical",
            "ipa-backend is answering too many requests with 5xx errors",
            f"{PERCENT} of ipa-backend requests in namespace {NS} failed with 5xx over the last 5 minutes "
            f"(threshold {s.error_rate_threshold:.2%}, checked only above {_num(s.min_request_rate)} requests/s).",
            API,
            "5m",
        ),
        alert(
            s,
            "HighResponseTime",
            f"ipa:http_request_duration_seconds:p95_5m > {_num(s.latency_p95_threshold_seconds)}\n{_traffic_guard(s)}",
            "warning",
            "ipa-backend responds slowly (p95 latency above the threshold)",
            f"p95 latency of ipa-backend in namespace {NS} is {VALUE}s over the last 5 minutes "
            f"(threshold {_num(s.latency_p95_threshold_seconds)}s).",
            API,
            "5m",
        ),
        alert(
            s,
            "IpaBackendDown",
            f"sum(up{{{BACKEND}}}) == 0\nor absent(up{{{BACKEND}}})",
            "critical",
            "No ipa-backend target is up",
            "Prometheus has had no healthy ipa-backend target for 5 minutes (value {{ $value }}: 0 means every target "
            "fails its scrape, 1 means no target is discovered at all). The API is probably down.",
            API,
            "5m",
        ),
    ]


def slo_alerts(s: Settings) -> list[Rule]:
    rules = []
    specs = (
        ("Error", "ipa:http_request_errors:ratio_rate", 1 - s.availability_slo, f"availability objective {s.availability_slo:.2%}"),
        (
            "Latency",
            "ipa:http_request_slow:ratio_rate",
            1 - s.latency_slo,
            f"latency objective {s.latency_slo:.2%} of requests under {_num(s.latency_slo_threshold_seconds)}s",
        ),
    )
    for kind, metric, budget, objective in specs:
        for speed, burns, severity, for_, guard_window in (
            ("Fast", PAGE_BURNS, "critical", "2m", "1h"),
            ("Slow", TICKET_BURNS, "warning", "15m", "6h"),
        ):
            clauses = [
                f"(\n  {metric}{long_w} > {_num(rate * budget)}\n  and {metric}{short_w} > {_num(rate * budget)}\n)"
                for long_w, short_w, rate in burns
            ]
            expr = "(\n" + "\nor\n".join(clauses) + f"\n)\n{_traffic_guard(s, guard_window)}"
            pairs = " or ".join(f"{r:g}x over {lw} and {sw}" for lw, sw, r in burns)
            name = f"IpaBackend{kind}BudgetBurn{speed}"
            rules.append(
                alert(
                    s,
                    name,
                    expr,
                    severity,
                    f"ipa-backend is burning its {'' if kind == 'Error' else kind.lower() + ' '}error budget "
                    f"{'fast' if speed == 'Fast' else 'steadily'}",
                    f"ipa-backend in namespace {NS} spends the error budget of its {objective} at {pairs} the sustainable rate "
                    f"(current bad-request share {PERCENT}). At this pace the budget is gone "
                    f"{'within days' if speed == 'Fast' else 'before the month ends'}.",
                    API,
                    for_,
                )
            )
    return rules


def execution_alerts(s: Settings) -> list[Rule]:
    stuck = f"{s.execution_stuck_minutes}m"
    limit = s.execution_concurrency_limit
    return [
        alert(
            s,
            "ExecutionFailureRateHigh",
            f"ipa:execution_failures:ratio_rate5m > {_num(s.execution_failure_ratio_threshold)}\n"
            f"and on (namespace, workflow) sum by (namespace, workflow) (ipa:executions:rate5m) >= {_num(s.min_execution_rate)}",
            "warning",
            "Many workflow executions fail or time out",
            f"{PERCENT} of executions of workflow {{{{ $labels.workflow }}}} in namespace {NS} failed or timed out over "
            f"the last 5 minutes (threshold {s.execution_failure_ratio_threshold:.0%}).",
            EXECUTIONS,
            "10m",
        ),
        alert(
            s,
            "ExecutionsStuck",
            f"sum by (namespace, workflow) (min_over_time(ipa_executions_in_progress{{{BACKEND}}}[{stuck}])) > 0\n"
            f"unless on (namespace, workflow) (sum by (namespace, workflow) (increase(ipa_executions_total{{{BACKEND}}}[{stuck}])) > 0)",
            "warning",
            "Workflow executions are in progress but none completes",
            f"Workflow {{{{ $labels.workflow }}}} in namespace {NS} has had at least {VALUE} execution(s) in progress "
            f"for {s.execution_stuck_minutes} minutes without a single one finishing.",
            EXECUTIONS,
            "5m",
        ),
        alert(
            s,
            "ExecutionConcurrencySaturated",
            f"sum by (namespace, pod) (ipa_executions_in_progress{{{BACKEND}}}) >= {_num(CONCURRENCY_SATURATION * limit)}",
            "warning",
            "An ipa-backend pod runs executions at its concurrency limit",
            f"Pod {{{{ $labels.pod }}}} in namespace {NS} runs {VALUE} executions at once; its limit is {limit} "
            f"(alert at {CONCURRENCY_SATURATION:.0%}). New executions queue.",
            EXECUTIONS,
            "15m",
        ),
    ]


def claude_alerts(s: Settings) -> list[Rule]:
    claude_traffic = f"and on (namespace) sum by (namespace) (ipa:claude_requests:rate5m) >= {_num(s.min_request_rate)}"
    return [
        alert(
            s,
            "ClaudeAPIErrors",
            f"sum by (namespace) (ipa:claude_errors:rate5m) > {_num(s.claude_error_rate_threshold)}",
            "critical",
            "Calls to the Claude API are failing",
            f"ipa-backend in namespace {NS} gets {VALUE} Claude API errors per second (threshold {_num(s.claude_error_rate_threshold)}/s).",
            CLAUDE,
            "2m",
        ),
        alert(
            s,
            "ClaudeRateLimited",
            f"ipa:claude_rate_limited:ratio_rate5m > {_num(s.claude_rate_limited_ratio_threshold)}\n{claude_traffic}",
            "warning",
            "Many Claude API calls are rate-limited",
            f"{PERCENT} of Claude API calls from namespace {NS} were rejected with rate_limit over the last 5 minutes "
            f"(threshold {s.claude_rate_limited_ratio_threshold:.0%}).",
            CLAUDE,
            "5m",
        ),
        alert(
            s,
            "ClaudeHighLatency",
            f"ipa:claude_request_duration_seconds:p95_5m > {_num(s.claude_latency_p95_threshold_seconds)}\n"
            f"and on (namespace, model) ipa:claude_requests:rate5m >= {_num(s.min_request_rate)}",
            "warning",
            "Claude API calls are slow",
            f"p95 latency of Claude API calls to model {{{{ $labels.model }}}} from namespace {NS} is {VALUE}s "
            f"(threshold {_num(s.claude_latency_p95_threshold_seconds)}s).",
            CLAUDE,
            "10m",
        ),
        alert(
            s,
            "ClaudeCostBudgetExceeded",
            f"sum by (namespace) (ipa:claude_cost_usd:increase24h) > {_num(s.claude_daily_budget_usd)}",
            "warning",
            "Estimated Claude spend over the last 24 hours is above the daily budget",
            f'ipa-backend in namespace {NS} spent an estimated {{{{ $value | printf "%.2f" }}}} USD on the Claude API '
            f"over the last 24 hours; the daily budget is {_num(s.claude_daily_budget_usd)} USD.",
            CLAUDE,
            "15m",
        ),
    ]


def backup_too_old_expr(s: Settings) -> str:
    """One age comparison per threshold: targets sharing a threshold share the clause, so with every
    target at the RPO the expression has the one number the drill checks."""
    by_limit: dict[int, list[str]] = {}
    for target, minutes in s.backup_max_age_minutes.items():
        by_limit.setdefault(minutes * 60, []).append(target)
    ages = "\nor ".join(
        f'min by (target) (time() - ipa_backup_last_success_timestamp_seconds{{{BACKUP}, target=~"{"|".join(targets)}"}}) > {limit}'
        for limit, targets in sorted(by_limit.items())
    )
    missing = "".join(
        f'\nor absent_over_time(ipa_backup_last_success_timestamp_seconds{{{BACKUP}, target="{t}"}}[{BACKUP_MISSING_GRACE}])'
        for t in BACKUP_TARGETS
    )
    return ages + missing


def backup_alerts(s: Settings) -> list[Rule]:
    # No `for`: the age condition fires at the first evaluation past the limit. The age is computed
    # here, not read from ipa:backup_age_seconds, which another group records up to one interval ago.
    # A vanished metric fires only after BACKUP_MISSING_GRACE without samples, so a Pushgateway
    # restart or one failed scrape is no page.
    drill_period = (s.restore_drill_period_days + 1) * 86400
    return [
        alert(
            s,
            "BackupTooOld",
            backup_too_old_expr(s),
            "critical",
            "The newest successful backup is older than its limit, or its metric is missing",
            f"The newest successful {{{{ $labels.target }}}} backup captured data {DURATION} ago; {_logical_limit(s)}. "
            f"A value of 1 means the backup metric has been missing for {BACKUP_MISSING_GRACE}.",
            BACKUP_DR,
        ),
        alert(
            s,
            "BackupJobFailed",
            "max by (namespace, job_name) "
            f'(kube_job_failed{{namespace="{s.backup_namespace}", job_name=~"{BACKUP_JOBS_REGEX}", condition="true"}}) > 0\n'
            f"and on (namespace, job_name)\n"
            "  (time() - max by (namespace, job_name) "
            f'(kube_job_status_start_time{{namespace="{s.backup_namespace}", job_name=~"{BACKUP_JOBS_REGEX}"}}) < 86400)',
            "warning",
            "A backup Job failed",
            f"Backup Job {{{{ $labels.job_name }}}} in namespace {{{{ $labels.namespace }}}} failed ({VALUE} failed pod(s)) "
            f"within the last 24 hours.",
            BACKUP_DR,
        ),
        alert(
            s,
            "RestoreDrillFailed",
            f"time() - max(ipa_restore_drill_last_success_timestamp_seconds{{{BACKUP}}}) > {drill_period}\n"
            f"or absent(ipa_restore_drill_last_success_timestamp_seconds{{{BACKUP}}})",
            "critical",
            "No successful restore drill within its period",
            f"The last successful restore drill finished {DURATION} ago (1 means never recorded); one must succeed "
            f"every {s.restore_drill_period_days} days, plus a day of grace.",
            BACKUP_DR,
            "30m",
        ),
        alert(
            s,
            "RestoreTooSlow",
            f"max by (target) (ipa_restore_drill_duration_seconds{{{BACKUP}}}) > {_num(s.rto_target_minutes * 60 / 2)}",
            "warning",
            "The last restore drill took more than half the RTO",
            f"Restoring {{{{ $labels.target }}}} took {DURATION} in the last drill; the RTO is {s.rto_target_minutes} minutes "
            f"and a restore may use at most half of it.",
            BACKUP_DR,
        ),
        alert(
            s,
            "PushgatewayDown",
            'max(up{job=~".*pushgateway.*"}) == 0\nor absent(up{job=~".*pushgateway.*"})',
            "warning",
            "The Pushgateway is down: backup and drill metrics cannot arrive",
            "Prometheus cannot scrape the Pushgateway (value {{ $value }}). Backup and restore-drill results are not "
            "recorded; BackupTooOld and RestoreDrillFailed will follow.",
            BACKUP_DR,
            "10m",
        ),
    ]


def _logical_limit(s: Settings) -> str:
    limits = s.backup_max_age_minutes
    if len(set(limits.values())) == 1:
        return f"the RPO is {s.rpo_target_minutes} minutes"
    return (
        f"the limit is {limits['redis']} minutes for redis (the RPO) and {limits['postgres']} minutes for postgres, "
        "dumped once a day while the WAL stream carries its RPO (WalStreamDown, WalArchiveLagHigh)"
    )


def pitr_alerts(s: Settings) -> list[Rule]:
    """The WAL stream and base backups (only with pitrEnabled). The stream's metrics are scraped, not
    pushed: a dead pod's series go stale, so its absence is the stream being down."""
    limit_bytes = s.max_slot_wal_keep_size_gb * 2**30
    safe_floor = _num((1 - SLOT_RETENTION_NEAR_LIMIT) * limit_bytes)
    return [
        alert(
            s,
            "WalStreamDown",
            f"max(ipa_wal_stream_up{{{WAL_STREAM}}}) < 1\nor absent(ipa_wal_stream_up{{{WAL_STREAM}}})",
            "critical",
            "The WAL stream is down: new commits are not archived",
            f"The WAL receiver reports up={{{{ $value }}}} (1 with no labels: its metrics are missing). Commits since it stopped "
            f"exist only on the server; replication slot {WAL_SLOT} keeps the WAL there until the stream resumes.",
            BACKUP_DR,
            "2m",
        ),
        alert(
            s,
            "WalArchiveLagHigh",
            f"max(ipa_wal_stream_lag_seconds{{{WAL_STREAM}}}) > {s.wal_lag_budget_seconds}",
            "critical",
            "WAL is reaching blob storage too late for the RPO",
            f"The oldest WAL not yet uploaded is {DURATION} old; the lag budget is {s.wal_lag_budget_seconds} s, which with the "
            f"{s.wal_partial_upload_seconds} s partial upload interval keeps the RPO ({s.rpo_target_minutes} min) and the "
            f"{s.pitr_rpo_bound_seconds} s design goal.",
            BACKUP_DR,
        ),
        alert(
            s,
            "BaseBackupTooOld",
            f"time() - max(ipa_base_backup_last_success_timestamp_seconds{{{BACKUP}}}) > {s.base_backup_max_age_minutes * 60}\n"
            f"or absent_over_time(ipa_base_backup_last_success_timestamp_seconds{{{BACKUP}}}[{BACKUP_MISSING_GRACE}])",
            "warning",
            "The newest base backup is older than its schedule allows, or its metric is missing",
            f"The newest successful base backup started {DURATION} ago (1 means the metric has been missing for "
            f"{BACKUP_MISSING_GRACE}); one is due every {s.base_backup_max_age_minutes} minutes (schedule gap plus deadline). "
            "Restores replay more WAL until the next one.",
            BACKUP_DR,
        ),
        alert(
            s,
            "WalSlotRetentionNearLimit",
            f"min by (slot_name) (pg_replication_slot_safe_wal_size_bytes) < {safe_floor}\n"
            'or max by (slot_name) (pg_replication_slot_wal_status{wal_status=~"unreserved|lost"})\n'
            "or max by (slot_name) (pg_replication_slot_slot_is_active unless on (slot_name) pg_replication_slot_safe_wal_size_bytes)",
            "critical",
            "A replication slot retains WAL near max_slot_wal_keep_size, or has no limit",
            f"Slot {{{{ $labels.slot_name }}}}: {VALUE} bytes of WAL may still be written before the server invalidates it "
            f"(alert below {_num(100 - SLOT_RETENTION_NEAR_LIMIT * 100)} % of max_slot_wal_keep_size = {s.max_slot_wal_keep_size_gb} GB). "
            "A value of 1 means the slot is unreserved or lost, or the server has no max_slot_wal_keep_size.",
            BACKUP_DR,
            "5m",
        ),
    ]


def platform_alerts(s: Settings) -> list[Rule]:
    ns = f'namespace="{s.backend_namespace}"'
    volumes = f'namespace=~"{s.monitoring_namespace}|{s.backend_namespace}", persistentvolumeclaim=~"prometheus-.*|.*postgres.*"'
    pod = "{{ $labels.pod }}"
    return [
        alert(
            s,
            "IpaBackendPodRestarting",
            on_backend_pods(f"increase(kube_pod_container_status_restarts_total{{{ns}}}[1h])", s.backend_namespace)
            + f"\n> {POD_RESTARTS_PER_HOUR}",
            "warning",
            "An ipa-backend container restarts repeatedly",
            f"Container {{{{ $labels.container }}}} of pod {pod} restarted {VALUE} times in the last hour.",
            SYSTEM,
        ),
        alert(
            s,
            "IpaBackendCrashLooping",
            on_backend_pods(
                f'max_over_time(kube_pod_container_status_waiting_reason{{{ns}, reason="CrashLoopBackOff"}}[5m])', s.backend_namespace
            )
            + "\n>= 1",
            "warning",
            "An ipa-backend container is crash-looping",
            f"Container {{{{ $labels.container }}}} of pod {pod} has been in CrashLoopBackOff for 10 minutes.",
            SYSTEM,
            "10m",
        ),
        alert(
            s,
            "IpaBackendMemoryNearLimit",
            "(\n"
            + on_backend_pods(
                f'sum by (namespace, pod, container) (container_memory_working_set_bytes{{{ns}, container!="", container!="POD"}})',
                s.backend_namespace,
            )
            + f'\n)\n/ sum by (namespace, pod, container) (kube_pod_container_resource_limits{{{ns}, resource="memory"}} > 0)\n'
            f"> {_num(MEMORY_NEAR_LIMIT)}",
            "warning",
            "An ipa-backend container is close to its memory limit",
            f"Container {{{{ $labels.container }}}} of pod {pod} uses {PERCENT} of its memory limit; it will be OOM-killed at 100 %.",
            SYSTEM,
            "15m",
        ),
        alert(
            s,
            "PersistentVolumeFillingUp",
            f"kubelet_volume_stats_available_bytes{{{volumes}}}\n/ (kubelet_volume_stats_capacity_bytes{{{volumes}}} > 0)\n"
            f"< {_num(VOLUME_FREE_MIN)}",
            "warning",
            "A Prometheus or PostgreSQL volume is almost full",
            f"Volume claim {{{{ $labels.persistentvolumeclaim }}}} in namespace {NS} has only {PERCENT} free space.",
            SYSTEM,
            "5m",
        ),
        alert(
            s,
            "PostgresDown",
            "pg_up == 0\nor absent(pg_up)",
            "critical",
            "PostgreSQL is down or its exporter is gone",
            "postgres-exporter reports pg_up={{ $value }} for {{ $labels.instance }} (1 with no instance label: no "
            "exporter data at all). The IPA backend cannot read or write its state.",
            SYSTEM,
            "5m",
        ),
        alert(
            s,
            "PostgresTooManyConnections",
            "sum by (instance) (pg_stat_activity_count)\n/ on (instance) (max by (instance) (pg_settings_max_connections) > 0)\n"
            f"> {_num(CONNECTIONS_NEAR_LIMIT)}",
            "warning",
            "PostgreSQL connections are near max_connections",
            f"PostgreSQL {{{{ $labels.instance }}}} uses {PERCENT} of max_connections; new connections will be refused at 100 %.",
            SYSTEM,
            "10m",
        ),
        alert(
            s,
            "PostgresReplicationLag",
            f"max by (instance) (pg_replication_lag_seconds) > {POSTGRES_REPLICATION_LAG_SECONDS}",
            "warning",
            "A PostgreSQL replica lags behind the primary",
            f"Replica {{{{ $labels.instance }}}} is {DURATION} behind the primary (threshold {POSTGRES_REPLICATION_LAG_SECONDS}s).",
            SYSTEM,
            "10m",
        ),
        alert(
            s,
            "RedisDown",
            "redis_up == 0\nor absent(redis_up)",
            "critical",
            "Redis is down or its exporter is gone",
            "redis-exporter reports redis_up={{ $value }} for {{ $labels.instance }} (1 with no instance label: no exporter data at all).",
            SYSTEM,
            "5m",
        ),
        alert(
            s,
            "RedisMemoryNearLimit",
            f"redis_memory_used_bytes / on (instance) (redis_memory_max_bytes > 0) > {_num(REDIS_MEMORY_NEAR_MAX)}",
            "warning",
            "Redis memory is near maxmemory",
            f"Redis {{{{ $labels.instance }}}} uses {PERCENT} of maxmemory; it will evict keys or refuse writes.",
            SYSTEM,
            "10m",
        ),
        alert(
            s,
            "RedisTooManyConnections",
            f"redis_connected_clients / on (instance) (redis_config_maxclients > 0) > {_num(CONNECTIONS_NEAR_LIMIT)}",
            "warning",
            "Redis client connections are near maxclients",
            f"Redis {{{{ $labels.instance }}}} serves {PERCENT} of maxclients.",
            SYSTEM,
            "10m",
        ),
        alert(
            s,
            "RedisRejectingConnections",
            "increase(redis_rejected_connections_total[5m]) > 0",
            "warning",
            "Redis rejects client connections",
            f"Redis {{{{ $labels.instance }}}} rejected {VALUE} connections in the last 5 minutes (maxclients reached).",
            SYSTEM,
        ),
    ]


def alert_groups(settings: Settings) -> list[Group]:
    return [
        {"name": "ipa-backend.alerts", "rules": api_alerts(settings)},
        {"name": "ipa-slo.alerts", "rules": slo_alerts(settings)},
        {"name": "ipa-executions.alerts", "rules": execution_alerts(settings)},
        {"name": "ipa-claude.alerts", "rules": claude_alerts(settings)},
        {"name": "ipa-backup.alerts", "rules": backup_alerts(settings)},
        *([{"name": "ipa-pitr.alerts", "rules": pitr_alerts(settings)}] if settings.pitr_enabled else []),
        {"name": "ipa-platform.alerts", "rules": platform_alerts(settings)},
    ]


def rule_groups(settings: Settings) -> list[Group]:
    """Every group the stack deploys: recording groups first."""
    return recording_groups(settings) + alert_groups(settings)


def alert_names(groups: list[Group]) -> list[str]:
    return [r["alert"] for g in groups for r in g["rules"] if "alert" in r]


def recording_names(groups: list[Group]) -> list[str]:
    """Distinct recorded series names, in order (the price table records one name many times)."""
    return list(dict.fromkeys(r["record"] for g in groups for r in g["rules"] if "record" in r))
