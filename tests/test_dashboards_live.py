"""Live: a real Prometheus scrapes the stand-in backend, the stand-in exporters and a Pushgateway
holding the backup metrics, evaluates the rendered recording rules, and every panel query of
every dashboard returns data."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dashboards import build_all
from devservices.prometheus import Prometheus, prometheus, pushgateway
from devservices.standin import StandinBackend
from devservices.standin_exporters import StandinExporters, push_backup_metrics
from tests.conftest import stack_settings
from tests.test_dashboards import all_exprs, substitute, targets

STACK = "dev"
DEADLINE_SECONDS = 120.0


def has_data(result: list[dict[str, Any]]) -> bool:
    """At least one series with a real number (NaN from a 0/0 is Grafana's "No data" too)."""
    return any(math.isfinite(float(series["value"][1])) for series in result)


def wait_for_data(prom: Prometheus, queries: dict[str, str], timeout: float) -> dict[str, list[dict[str, Any]]]:
    """Poll until every query has data or time runs out; the last results of all queries."""
    deadline = time.monotonic() + timeout
    while True:
        results = {key: prom.query(expr) for key, expr in queries.items()}
        if all(has_data(r) for r in results.values()) or time.monotonic() > deadline:
            return results
        time.sleep(2)


@pytest.mark.services
@pytest.mark.timeout(300)
def test_every_panel_query_returns_data(tmp_path: Path, rendered: Callable[[str], Path]) -> None:
    settings = stack_settings(STACK)
    rules = rendered(STACK) / "prometheus" / "rules.yaml"
    boards = build_all(settings)
    panel_queries = {
        f"{uid}/{title}/{i}": substitute(expr) for uid, board in boards.items() for i, (title, expr) in enumerate(targets(board))
    }
    # Variable selectors must find series too, or the dashboard opens with empty drop-downs.
    variable_queries = {
        f"{uid}/{title}": substitute(expr)
        for uid, board in boards.items()
        for title, expr in all_exprs(board)
        if title.startswith("variable ")
    }

    with (
        StandinBackend(traffic_per_second=40, executions_per_second=6, claude_calls_per_second=6) as backend,
        StandinExporters(
            namespace=settings.backend_namespace,
            backup_namespace=settings.backup_namespace,
            monitoring_namespace=settings.monitoring_namespace,
            database=settings.postgres_database,
        ) as exporters,
        pushgateway(tmp_path) as gateway,
    ):
        push_backup_metrics(gateway.url, time.time())
        scrape: list[dict[str, Any]] = [
            {
                "job_name": "ipa-backend",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{backend.port}"], "labels": {"namespace": settings.backend_namespace, "pod": "ipa-backend-0"}}
                ],
            },
            {"job_name": "pushgateway", "honor_labels": True, "static_configs": [{"targets": [gateway.address]}]},
            *exporters.scrape_configs(),
        ]
        with prometheus(tmp_path, scrape, [rules]) as prom:
            prom.wait_for_targets_up(count=len(scrape))
            results = wait_for_data(prom, {**panel_queries, **variable_queries}, DEADLINE_SECONDS)
            broken_rules = [(r["name"], r["lastError"]) for g in prom.rule_groups() for r in g["rules"] if r["health"] == "err"]

    assert not broken_rules, f"recording/alerting rules failing to evaluate: {broken_rules}"
    with_data = [key for key in panel_queries if has_data(results[key])]
    print(
        f"panel queries with data: {len(with_data)}/{len(panel_queries)}; "
        f"variable queries with data: {sum(has_data(results[k]) for k in variable_queries)}/{len(variable_queries)}"
    )
    empty = {key: panel_queries[key] for key in panel_queries if key not in with_data}
    assert not empty, f"{len(empty)} panel queries returned no data: {empty}"
    empty_variables = [key for key in variable_queries if not has_data(results[key])]
    assert not empty_variables, f"variable queries without series: {empty_variables}"
