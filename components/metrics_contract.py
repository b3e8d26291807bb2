"""The metrics contract: every metric ipa-backend and the backup jobs expose, and the standard exporter
metrics the rules and dashboards read. The one source for the rules' and dashboards' known-metric
checks, the stand-ins (devservices/) and docs/monitoring/metrics.md (`make generate`).

ipa-backup (backup_image/ipa_backup/metrics.py) cannot import this package; it writes the backup
metrics itself and tests/test_metrics_contract.py holds what it writes to BACKUP_METRICS.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from components.settings import BACKUP_TARGETS as BACKUP_TARGETS  # re-exported: the metrics name their targets
from components.settings import FIELDS, LATENCY_BUCKETS
from components.topology import WAL_STREAM_JOB

BACKEND = "ipa-backend"  # exposed on the backend pods' /metrics, scraped as job="ipa-backend"
BACKUP = "ipa-backup"  # pushed to the Pushgateway by the backup and drill jobs, job="ipa-backup"
WAL_STREAM = WAL_STREAM_JOB  # served on the WAL stream pod's /metrics, scraped as job="ipa-wal-stream"

EXECUTION_STATUSES = ("success", "failure", "cancelled", "timeout")
CLAUDE_ERROR_TYPES = ("rate_limit", "overloaded", "api_error", "timeout", "connection", "invalid_request", "authentication")
TOKEN_TYPES = ("input", "output", "cache_read", "cache_write")
HISTOGRAM_SUFFIXES = ("bucket", "sum", "count")


def _default(key: str) -> str:
    return f"`{key}` (default {FIELDS[key].metadata['default']:g})"


@dataclass(frozen=True)
class Metric:
    name: str
    type: str  # counter, gauge or histogram
    labels: tuple[str, ...]
    help: str  # the exposition's HELP text
    meaning: str  # the longer text of docs/monitoring/metrics.md
    exposed_by: str  # BACKEND, BACKUP or WAL_STREAM
    values: dict[str, tuple[str, ...]] = field(default_factory=dict)  # label -> its only allowed values
    buckets: tuple[float, ...] = ()
    bucket_note: str = ""

    @property
    def series(self) -> tuple[str, ...]:
        """The names Prometheus stores (a histogram is its _bucket, _sum and _count series)."""
        if self.type == "histogram":
            return tuple(f"{self.name}_{suffix}" for suffix in HISTOGRAM_SUFFIXES)
        return (self.name,)


BACKEND_METRICS = (
    Metric(
        "http_requests_total",
        "counter",
        ("method", "handler", "status"),
        "HTTP requests served",
        "HTTP requests answered, counted when the response is sent. `status` is the 3-digit code (`200`, `404`, `503`).",
        BACKEND,
    ),
    Metric(
        "http_request_duration_seconds",
        "histogram",
        ("method", "handler"),
        "HTTP request latency",
        "Time from receiving the request to sending the response.",
        BACKEND,
        buckets=LATENCY_BUCKETS,  # the bounds latencySloThresholdSeconds may take (components/settings.py)
        bucket_note=f"must include {_default('latencySloThresholdSeconds')} and cover {_default('latencyP95ThresholdSeconds')}",
    ),
    Metric(
        "ipa_executions_total",
        "counter",
        ("workflow", "status"),
        "Workflow executions finished",
        "Workflow executions finished, with their outcome (exactly these `status` values).",
        BACKEND,
        values={"status": EXECUTION_STATUSES},
    ),
    Metric(
        "ipa_execution_duration_seconds",
        "histogram",
        ("workflow",),
        "Workflow execution time",
        "Duration of finished executions, any outcome.",
        BACKEND,
        buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800),
    ),
    Metric(
        "ipa_executions_in_progress",
        "gauge",
        ("workflow",),
        "Workflow executions running now",
        "Executions running now in this pod.",
        BACKEND,
    ),
    Metric(
        "claude_api_requests_total",
        "counter",
        ("model",),
        "Claude API requests",
        "Calls to the Claude API, every attempt including retries and failed ones.",
        BACKEND,
    ),
    Metric(
        "claude_api_errors_total",
        "counter",
        ("model", "error_type"),
        "Claude API errors",
        "Failed Claude calls: `rate_limit` is 429, `overloaded` 529, `api_error` 5xx, `invalid_request` 400, "
        "`authentication` 401/403. Each failed call also counts in `claude_api_requests_total`.",
        BACKEND,
        values={"error_type": CLAUDE_ERROR_TYPES},
    ),
    Metric(
        "claude_api_request_duration_seconds",
        "histogram",
        ("model",),
        "Claude API request latency",
        "Duration of a Claude call (streaming: until the last token).",
        BACKEND,
        buckets=(0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
        bucket_note=f"must cover {_default('claudeLatencyP95ThresholdSeconds')}",
    ),
    Metric(
        "claude_tokens_total",
        "counter",
        ("model", "type"),
        "Claude tokens used",
        "Tokens billed, from the API's `usage` field.",
        BACKEND,
        values={"type": TOKEN_TYPES},
    ),
)

# Help texts as ipa-backup writes them.
BACKUP_METRICS = (
    Metric(
        "ipa_backup_last_success_timestamp_seconds",
        "gauge",
        ("target",),
        "Point in time the newest successful backup captured",
        "Unix time of the point in time the newest successful backup captured (not when it finished). Pushed only on success.",
        BACKUP,
        values={"target": BACKUP_TARGETS},
    ),
    Metric(
        "ipa_backup_duration_seconds",
        "gauge",
        ("target",),
        "Duration of the last successful backup",
        "Duration of the last backup.",
        BACKUP,
        values={"target": BACKUP_TARGETS},
    ),
    Metric(
        "ipa_backup_size_bytes",
        "gauge",
        ("target",),
        "Stored size of the last successful backup",
        "Size of the last backup.",
        BACKUP,
        values={"target": BACKUP_TARGETS},
    ),
    Metric(
        "ipa_restore_drill_last_success_timestamp_seconds",
        "gauge",
        (),
        "Time of the last successful restore drill",
        "Unix time the last successful restore drill finished.",
        BACKUP,
    ),
    Metric(
        "ipa_restore_drill_duration_seconds",
        "gauge",
        ("target",),
        "Restore duration in the last successful drill",
        "Restore time of each target in the last drill.",
        BACKUP,
        values={"target": BACKUP_TARGETS},
    ),
    Metric(
        "ipa_restore_drill_pitr_duration_seconds",
        "gauge",
        (),
        "Point-in-time restore duration in the last successful drill",
        "With base backups in the container: `pitr-restore --latest` into a scratch data directory until the image's "
        "PostgreSQL answers on it. Pushed only when the drill passed.",
        BACKUP,
    ),
)

# Point-in-time recovery: `ipa-backup base-backup` pushes these (job="ipa-backup") after a verified base backup.
BASE_BACKUP_METRICS = (
    Metric(
        "ipa_base_backup_last_success_timestamp_seconds",
        "gauge",
        (),
        "Point in time the newest complete base backup is consistent at",
        "Unix time of the point the newest verified base backup restores to at least (its end). Pushed only on success.",
        BACKUP,
    ),
    Metric(
        "ipa_base_backup_size_bytes",
        "gauge",
        (),
        "Stored size of the newest complete base backup",
        "Compressed size of the newest base backup in blob storage.",
        BACKUP,
    ),
    Metric(
        "ipa_base_backup_duration_seconds",
        "gauge",
        (),
        "Duration of the newest successful base backup run",
        "Duration of the last successful base backup run, from start to its manifest.",
        BACKUP,
    ),
)

# `ipa-backup wal-stream` serves these on its metrics port; the PodMonitor scrapes them as job="ipa-wal-stream".
WAL_STREAM_METRICS = (
    Metric(
        "ipa_wal_stream_up",
        "gauge",
        (),
        "1 while pg_receivewal runs and uploads succeed",
        "1 while the receiver streams WAL through its replication slot and its uploads succeed, 0 otherwise.",
        WAL_STREAM,
    ),
    Metric(
        "ipa_wal_stream_lag_seconds",
        "gauge",
        (),
        "Age of the oldest WAL the server has flushed that is not in blob storage",
        "Age of the oldest WAL the server has flushed that is not yet in blob storage (what losing the cluster now would "
        "lose), seconds; it includes the wait for the next partial-segment upload.",
        WAL_STREAM,
    ),
    Metric(
        "ipa_wal_stream_lag_bytes",
        "gauge",
        (),
        "The server's current WAL position minus the position covered by uploads",
        "The server's current WAL position minus the position covered by uploads, bytes.",
        WAL_STREAM,
    ),
    Metric(
        "ipa_wal_stream_uploaded_lsn",
        "gauge",
        (),
        "WAL position (as a number) up to which blob storage holds the WAL",
        "The WAL position (LSN as a number of bytes) up to which blob storage holds the WAL; its rate is the archive's throughput.",
        WAL_STREAM,
    ),
    Metric(
        "ipa_wal_last_upload_timestamp_seconds",
        "gauge",
        (),
        "Time of the last successful WAL upload (segment or partial)",
        "Unix time of the last successful upload of a WAL segment or partial segment. A quiet database uploads nothing new, "
        "so alerts read the lag, not this.",
        WAL_STREAM,
    ),
)

METRICS = {m.name: m for m in (*BACKEND_METRICS, *BACKUP_METRICS, *BASE_BACKUP_METRICS, *WAL_STREAM_METRICS)}

# The contract as Prometheus stores it.
CONTRACT_METRICS = frozenset(series for m in METRICS.values() for series in m.series)

# Standard series of the exporters kube-prometheus-stack and this program deploy that the rules use;
# tests/test_rule_metrics.py refuses names no rule uses.
EXPORTER_METRICS: dict[str, frozenset[str]] = {
    "prometheus": frozenset({"up"}),  # scrape health, written by Prometheus itself
    "kube-state-metrics": frozenset(
        {
            "kube_job_failed",
            "kube_job_status_start_time",
            "kube_pod_container_status_restarts_total",
            "kube_pod_container_status_waiting_reason",
            "kube_pod_container_resource_limits",
            "kube_pod_labels",  # label_app only with metricLabelsAllowlist pods=[app] (monitoring_values.py)
        }
    ),
    "cadvisor": frozenset({"container_memory_working_set_bytes"}),
    "kubelet": frozenset({"kubelet_volume_stats_available_bytes", "kubelet_volume_stats_capacity_bytes"}),
    "postgres-exporter": frozenset(
        {
            "pg_up",
            "pg_stat_activity_count",
            "pg_settings_max_connections",
            "pg_replication_lag_seconds",
            # replication_slot collector (on by default; PostgreSQL 13+ for the last two), labels slot_name, slot_type:
            # safe_wal_size is NULL, so the series is missing, while max_slot_wal_keep_size is -1 (unlimited).
            "pg_replication_slot_slot_is_active",
            "pg_replication_slot_safe_wal_size_bytes",
            "pg_replication_slot_wal_status",  # value 1, label wal_status: reserved, extended, unreserved or lost
        }
    ),
    "redis-exporter": frozenset(
        {
            "redis_up",
            "redis_memory_used_bytes",
            "redis_memory_max_bytes",
            "redis_connected_clients",
            "redis_config_maxclients",
            "redis_rejected_connections_total",
        }
    ),
}
STANDARD_METRICS = frozenset(name for names in EXPORTER_METRICS.values() for name in names)

# Standard series the dashboards read beyond EXPORTER_METRICS; tests/test_dashboards.py refuses names no
# dashboard uses. devservices/standin_exporters.py serves all of them, with the real exporters' names and labels.
DASHBOARD_EXPORTER_METRICS: dict[str, frozenset[str]] = {
    "prometheus": frozenset({"ALERTS"}),  # the firing-alert series Prometheus writes
    "kube-state-metrics": frozenset(
        {
            "kube_pod_status_ready",
            "kube_pod_container_resource_requests",
            "kube_job_status_succeeded",
            "kube_job_status_failed",
            "kube_cronjob_status_last_successful_time",
        }
    ),
    "node-exporter": frozenset(
        {
            "node_cpu_seconds_total",
            "node_memory_MemAvailable_bytes",
            "node_memory_MemTotal_bytes",
            "node_network_receive_bytes_total",
            "node_network_transmit_bytes_total",
            "node_filesystem_avail_bytes",
            "node_filesystem_size_bytes",
            "node_disk_read_bytes_total",
            "node_disk_written_bytes_total",
            "node_uname_info",
        }
    ),
    "cadvisor": frozenset(
        {
            "container_cpu_usage_seconds_total",
            "container_cpu_cfs_periods_total",
            "container_cpu_cfs_throttled_periods_total",
            "container_network_receive_bytes_total",
            "container_network_transmit_bytes_total",
            "container_fs_reads_bytes_total",
            "container_fs_writes_bytes_total",
        }
    ),
    "kubelet": frozenset({"kubelet_volume_stats_used_bytes"}),
    "postgres-exporter": frozenset({"pg_stat_database_numbackends", "pg_database_size_bytes"}),
    "redis-exporter": frozenset(),
}
DASHBOARD_STANDARD_METRICS = frozenset(name for names in DASHBOARD_EXPORTER_METRICS.values() for name in names)
