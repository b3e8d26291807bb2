"""Push the backup metrics (docs/monitoring/metrics.md) to the Pushgateway with pushadd, only after a success.

pushadd (HTTP POST) replaces only the metric names it sends within job="ipa-backup", so a
drill's push never erases the backup's metrics and a failed run, which pushes nothing, never
erases the last success.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway

from ipa_backup.errors import BackupError

JOB = "ipa-backup"


class MetricsError(BackupError):
    exit_code = 7


def push_backup(url: str, results: dict[str, tuple[float, float, int]]) -> None:
    """results: target -> (captured_at epoch seconds, duration seconds, stored bytes)."""
    registry = CollectorRegistry()
    last = Gauge(
        "ipa_backup_last_success_timestamp_seconds", "Point in time the newest successful backup captured", ["target"], registry=registry
    )
    duration = Gauge("ipa_backup_duration_seconds", "Duration of the last successful backup", ["target"], registry=registry)
    size = Gauge("ipa_backup_size_bytes", "Stored size of the last successful backup", ["target"], registry=registry)
    for target, (captured_at, seconds, stored) in results.items():
        last.labels(target).set(captured_at)
        duration.labels(target).set(seconds)
        size.labels(target).set(stored)
    _push(url, registry)


def push_drill(url: str, finished_at: float, durations: dict[str, float]) -> None:
    registry = CollectorRegistry()
    Gauge("ipa_restore_drill_last_success_timestamp_seconds", "Time of the last successful restore drill", registry=registry).set(
        finished_at
    )
    restore = Gauge("ipa_restore_drill_duration_seconds", "Restore duration in the last successful drill", ["target"], registry=registry)
    for target, seconds in durations.items():
        restore.labels(target).set(seconds)
    _push(url, registry)


def _push(url: str, registry: CollectorRegistry) -> None:
    try:
        pushadd_to_gateway(url, job=JOB, registry=registry, timeout=30)
    except OSError as exc:
        raise MetricsError(f"pushing metrics to {_redacted(url)} failed: {exc}") from exc


def _redacted(url: str) -> str:
    """The URL without a user or password it may carry."""
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
