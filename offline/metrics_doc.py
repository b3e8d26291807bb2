"""The tables of docs/monitoring/metrics.md from components/metrics_contract.py; `make generate` (offline/generate.py)
writes them between their marker comments. The prose around them is kept as written."""

from __future__ import annotations

from collections.abc import Iterable

from components.metrics_contract import (
    BACKEND_METRICS,
    BACKUP_METRICS,
    BASE_BACKUP_METRICS,
    DASHBOARD_EXPORTER_METRICS,
    EXPORTER_METRICS,
    METRICS,
    WAL_STREAM_METRICS,
    Metric,
)

DOC = "docs/monitoring/metrics.md"
SOURCES = {"prometheus": "Prometheus", "cadvisor": "cAdvisor (kubelet)"}  # display names; the rest as keyed


class MarkerError(Exception):
    """The document lacks a table's marker lines."""


def _code(names: Iterable[str]) -> str:
    return ", ".join(f"`{n}`" for n in names)


def _labels(metric: Metric) -> str:
    if not metric.labels:
        return "—"
    return ", ".join(f"`{label}` ({_code(metric.values[label])})" if label in metric.values else f"`{label}`" for label in metric.labels)


def metrics_table(metrics: tuple[Metric, ...]) -> str:
    rows = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    rows += [f"| `{m.name}` | {m.type} | {_labels(m)} | {m.meaning} |" for m in metrics]
    return "\n".join(rows)


def buckets_table() -> str:
    rows = ["| histogram | buckets (seconds) |", "|---|---|"]
    for m in METRICS.values():
        if m.type == "histogram":
            note = f" — {m.bucket_note}" if m.bucket_note else ""
            rows.append(f"| `{m.name}` | {', '.join(f'{b:g}' for b in m.buckets)}{note} |")
    return "\n".join(rows)


def exporters_table() -> str:
    rows = ["| source | the rules use | the dashboards also use |", "|---|---|---|"]
    for source in dict.fromkeys([*EXPORTER_METRICS, *DASHBOARD_EXPORTER_METRICS]):
        rules = _code(sorted(EXPORTER_METRICS.get(source, ()))) or "—"
        dashboards = _code(sorted(DASHBOARD_EXPORTER_METRICS.get(source, ()))) or "—"
        rows.append(f"| {SOURCES.get(source, source)} | {rules} | {dashboards} |")
    return "\n".join(rows)


TABLES = {
    "backend": lambda: metrics_table(BACKEND_METRICS),
    "buckets": buckets_table,
    "backup": lambda: metrics_table(BACKUP_METRICS),
    "base-backup": lambda: metrics_table(BASE_BACKUP_METRICS),
    "wal-stream": lambda: metrics_table(WAL_STREAM_METRICS),
    "exporters": exporters_table,
}


def document(text: str) -> str:
    """The document with every table between its `metrics-contract:<table>` markers written from the contract."""
    for name, table in TABLES.items():
        start, end = f"<!-- metrics-contract:{name}:start -->\n", f"<!-- metrics-contract:{name}:end -->"
        head, found, rest = text.partition(start)
        _, found_end, tail = rest.partition(end)
        if not found or not found_end:
            raise MarkerError(f"{DOC} needs the lines {start.strip()} and {end} around the {name} table")
        text = head + start + table() + "\n" + end + tail
    return text
