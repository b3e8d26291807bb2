"""Metric names the rules may use: the metrics contract (docs/monitoring/metrics.md) and the standard exporter
metrics the stack relies on. tests/test_rule_metrics.py holds every rule expression to these."""

from __future__ import annotations

# The contract, as Prometheus stores it (a histogram is its _bucket, _sum and _count series).
_HISTOGRAMS = ("http_request_duration_seconds", "ipa_execution_duration_seconds", "claude_api_request_duration_seconds")
CONTRACT_METRICS = frozenset({
    "http_requests_total",
    "ipa_executions_total",
    "ipa_executions_in_progress",
    "claude_api_requests_total",
    "claude_api_errors_total",
    "claude_tokens_total",
    "ipa_backup_last_success_timestamp_seconds",
    "ipa_backup_duration_seconds",
    "ipa_backup_size_bytes",
    "ipa_restore_drill_last_success_timestamp_seconds",
    "ipa_restore_drill_duration_seconds",
    *(f"{h}_{suffix}" for h in _HISTOGRAMS for suffix in ("bucket", "sum", "count")),
})

# Standard series of the exporters kube-prometheus-stack and this program deploy.
EXPORTER_METRICS: dict[str, frozenset[str]] = {
    "prometheus": frozenset({"up"}),  # scrape health, written by Prometheus itself
    "kube-state-metrics": frozenset({
        "kube_job_failed",
        "kube_job_status_start_time",
        "kube_pod_container_status_restarts_total",
        "kube_pod_container_status_waiting_reason",
        "kube_pod_container_resource_limits",
        "kube_pod_labels",  # label_app only with metricLabelsAllowlist pods=[app] (monitoring_values.py)
    }),
    "cadvisor": frozenset({"container_memory_working_set_bytes"}),
    "kubelet": frozenset({"kubelet_volume_stats_available_bytes", "kubelet_volume_stats_capacity_bytes"}),
    "postgres-exporter": frozenset({
        "pg_up",
        "pg_stat_activity_count",
        "pg_settings_max_connections",
        "pg_replication_lag_seconds",
    }),
    "redis-exporter": frozenset({
        "redis_up",
        "redis_memory_used_bytes",
        "redis_memory_max_bytes",
        "redis_connected_clients",
        "redis_config_maxclients",
        "redis_rejected_connections_total",
    }),
}

STANDARD_METRICS = frozenset(name for names in EXPORTER_METRICS.values() for name in names)
