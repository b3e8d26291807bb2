"""Push the backup metrics (docs/monitoring/metrics.md) to the Pushgateway with pushadd, only after a success.

pushadd (HTTP POST) replaces only the metric names it sends within its group, so a drill's push
never erases the backup's metrics and a failed run, which pushes nothing, never erases the last
success. The backup metrics have one group per target (job="ipa-backup", target=<target>): a set
that holds Redis only replaces Redis's values and leaves PostgreSQL's last success in place.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, Gauge, delete_from_gateway, push_to_gateway, pushadd_to_gateway

from ipa_backup.errors import BackupError

JOB = "ipa-backup"
BACKUP_METRICS = {
    "ipa_backup_last_success_timestamp_seconds": "Point in time the newest successful backup captured",
    "ipa_backup_duration_seconds": "Duration of the last successful backup",
    "ipa_backup_size_bytes": "Stored size of the last successful backup",
}
GROUP_FIELDS = ("labels", "last_push_successful", "push_time_seconds", "push_failure_time_seconds")  # not metrics


class MetricsError(BackupError):
    exit_code = 7


def push_backup(url: str, results: dict[str, tuple[float, float, int]]) -> None:
    """results: target -> (captured_at epoch seconds, duration seconds, stored bytes), for the targets
    the set holds; each goes to its target's group."""
    _move_shared_group(url, set(results))
    for target, values in results.items():
        _push_target(url, target, dict(zip(BACKUP_METRICS, values, strict=True)))


def _push_target(url: str, target: str, values: dict[str, float]) -> None:
    registry = CollectorRegistry()
    for name, value in values.items():
        # The label as well as the grouping key: what is pushed reads the same with or without the gateway.
        Gauge(name, BACKUP_METRICS[name], ["target"], registry=registry).labels(target).set(value)
    _push(url, registry, {"target": target})


def _groups(url: str) -> list[dict[str, Any]]:
    """The gateway's groups (its API), each with its grouping labels and metric families."""
    try:
        with urllib.request.urlopen(f"{_base(url)}/api/v1/metrics", timeout=30) as response:
            groups: list[dict[str, Any]] = json.load(response).get("data") or []
    except (OSError, ValueError) as exc:
        raise MetricsError(f"reading the groups of {_redacted(url)} failed: {exc}") from exc
    return groups


def _move_shared_group(url: str, fresh: set[str]) -> None:
    """Tools before the per-target groups pushed both targets into the one group job="ipa-backup". The
    Pushgateway refuses a push that would expose a series twice, so those backup metrics leave that
    group: each target's values move to its own group (unless this run pushes fresh ones), and the group
    is rewritten with what else it holds (the drill's and the base backup's metrics, values unchanged)."""
    shared = next((g for g in _groups(url) if g.get("labels") == {"job": JOB}), None)
    if shared is None or not any(name in shared for name in BACKUP_METRICS):
        return
    kept = CollectorRegistry()
    gauges: dict[str, Gauge] = {}
    moved: dict[str, dict[str, float]] = {}
    for name, family in shared.items():
        if name in GROUP_FIELDS:
            continue
        for sample in family.get("metrics") or []:
            labels = {k: v for k, v in sample["labels"].items() if k not in ("job", "instance")}
            if name in BACKUP_METRICS:
                if labels.get("target") and labels["target"] not in fresh:
                    moved.setdefault(labels["target"], {})[name] = float(sample["value"])
                continue
            if name not in gauges:
                gauges[name] = Gauge(name, family.get("help") or name, sorted(labels), registry=kept)
            (gauges[name].labels(**labels) if labels else gauges[name]).set(float(sample["value"]))
    try:
        if gauges:
            push_to_gateway(url, job=JOB, registry=kept, timeout=30)  # PUT: the group holds exactly these now
        else:
            delete_from_gateway(url, job=JOB, timeout=30)
    except OSError as exc:
        raise MetricsError(f"moving the backup metrics of {_redacted(url)} into per-target groups failed: {exc}") from exc
    for target, values in moved.items():
        _push_target(url, target, values)


def push_base_backup(url: str, consistent_at: float, seconds: float, stored: int) -> None:
    """After a base backup's manifest is stored; `consistent_at`: the point in time it restores to at least."""
    registry = CollectorRegistry()
    Gauge(
        "ipa_base_backup_last_success_timestamp_seconds",
        "Point in time the newest complete base backup is consistent at",
        registry=registry,
    ).set(consistent_at)
    Gauge("ipa_base_backup_size_bytes", "Stored size of the newest complete base backup", registry=registry).set(stored)
    Gauge("ipa_base_backup_duration_seconds", "Duration of the newest successful base backup run", registry=registry).set(seconds)
    _push(url, registry)


def push_drill(url: str, finished_at: float, durations: dict[str, float], pitr_seconds: float | None = None) -> None:
    """`pitr_seconds`: the drill's point-in-time restore, when it ran and passed."""
    registry = CollectorRegistry()
    Gauge("ipa_restore_drill_last_success_timestamp_seconds", "Time of the last successful restore drill", registry=registry).set(
        finished_at
    )
    restore = Gauge("ipa_restore_drill_duration_seconds", "Restore duration in the last successful drill", ["target"], registry=registry)
    for target, seconds in durations.items():
        restore.labels(target).set(seconds)
    if pitr_seconds is not None:
        Gauge(
            "ipa_restore_drill_pitr_duration_seconds",
            "Point-in-time restore duration in the last successful drill",
            registry=registry,
        ).set(pitr_seconds)
    _push(url, registry)


def _push(url: str, registry: CollectorRegistry, grouping_key: dict[str, str] | None = None) -> None:
    try:
        pushadd_to_gateway(url, job=JOB, registry=registry, grouping_key=grouping_key, timeout=30)
    except OSError as exc:
        raise MetricsError(f"pushing metrics to {_redacted(url)} failed: {exc}") from exc


def _base(url: str) -> str:
    """The gateway's base URL as prometheus_client reads it: `host:port` means http."""
    return (url if "://" in url else f"http://{url}").rstrip("/")


def _redacted(url: str) -> str:
    """The URL without a user or password it may carry."""
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
