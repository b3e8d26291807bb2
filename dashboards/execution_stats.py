"""Execution Stats: do workflow executions succeed, how long do they take, how many run at once?"""

from __future__ import annotations

from typing import Any

from components.settings import Settings
from components.topology import EXECUTIONS_DASHBOARD
from dashboards.common import (
    BACKEND,
    RULES,
    Board,
    Query,
    alert_annotation,
    backend_variables,
    floor_steps,
    graph,
    limit_steps,
    single,
    workflow_variable,
)

UID = EXECUTIONS_DASHBOARD
ALERTS = ("ExecutionFailureRateHigh", "IpaBackendDown")
SELECTOR = f'{BACKEND}, workflow=~"$workflow"'
EXECUTIONS = f"ipa_executions_total{{{SELECTOR}}}"
SUCCESSES = f'ipa_executions_total{{{SELECTOR}, status="success"}}'


def _rate(metric: str, by: str = "") -> str:
    grouping = f"sum by ({by}) " if by else "sum "
    return f"{grouping}(rate({metric}[$__rate_interval]))"


def build(settings: Settings) -> dict[str, Any]:
    failure_limit = settings.execution_failure_ratio_threshold
    limit = settings.execution_concurrency_limit
    concurrency_steps = limit_steps(0.9 * limit, limit)
    mean = (
        f"{_rate(f'ipa_execution_duration_seconds_sum{{{SELECTOR}}}', 'workflow')}"
        f" / ({_rate(f'ipa_execution_duration_seconds_count{{{SELECTOR}}}', 'workflow')} > 0)"
    )
    board = Board(
        settings,
        UID,
        "Outcomes, duration, throughput and concurrency of ipa-backend workflow executions.",
        [*backend_variables(settings), workflow_variable()],
        [alert_annotation("Execution alerts", ALERTS)],
    )

    board.row("Overview")
    board.add(
        single(
            settings,
            "Success rate",
            "Share of finished executions with status success. ExecutionFailureRateHigh fires when failures and timeouts "
            f"exceed {failure_limit:.0%} for 10 minutes.",
            "percentunit",
            Query(f"{_rate(SUCCESSES)} / ({_rate(EXECUTIONS)} > 0)"),
            floor_steps(1 - failure_limit, 1 - failure_limit / 2),
            ["ExecutionFailureRateHigh"],
        ),
        6,
        4,
    )
    board.add(single(settings, "Throughput", "Executions finishing per second, any status.", "ops", Query(_rate(EXECUTIONS))), 6, 4)
    board.add(
        single(
            settings,
            "In progress",
            f"Executions running right now; the backend runs at most {limit} at once (orange from 90 %).",
            "short",
            Query(f"sum(ipa_executions_in_progress{{{SELECTOR}}})"),
            concurrency_steps,
        ),
        6,
        4,
    )
    board.add(
        single(
            settings,
            "Mean duration",
            "Mean time an execution takes from start to finish.",
            "s",
            Query(
                f"{_rate(f'ipa_execution_duration_seconds_sum{{{SELECTOR}}}')}"
                f" / ({_rate(f'ipa_execution_duration_seconds_count{{{SELECTOR}}}')} > 0)"
            ),
        ),
        6,
        4,
    )

    board.row("Outcomes")
    board.add(
        graph(
            settings,
            "Executions by status",
            "Executions finishing per second, by status (success, failure, cancelled, timeout).",
            "ops",
            [Query(_rate(EXECUTIONS, "status"), "{{status}}")],
            stack=True,
        )
    )
    board.add(
        graph(
            settings,
            "Failures by workflow and status",
            "Executions per second that did not succeed: which workflow, and how it ended.",
            "ops",
            [Query(_rate(f'ipa_executions_total{{{SELECTOR}, status!="success"}}', "workflow, status"), "{{workflow}} {{status}}")],
        )
    )
    board.add(
        graph(
            settings,
            "Failure ratio by workflow",
            "Share of each workflow's executions that failed or timed out (5m rule the alert uses); dashed line: the "
            f"{failure_limit:.0%} threshold.",
            "percentunit",
            [Query(f'ipa:execution_failures:ratio_rate5m{{{RULES}, workflow=~"$workflow"}}', "{{workflow}}")],
            limit_steps(None, failure_limit),
            ["ExecutionFailureRateHigh"],
        )
    )
    board.add(
        graph(
            settings,
            "Throughput by workflow",
            "Executions finishing per second, per workflow.",
            "ops",
            [
                Query(_rate(EXECUTIONS, "workflow"), "{{workflow}}"),
                Query(f'sum by (workflow) (ipa:executions:rate5m{{{RULES}, workflow=~"$workflow"}})', "{{workflow}} (5m rule)"),
            ],
        )
    )

    board.row("Duration")
    board.add(
        graph(
            settings,
            "Mean and p95 duration by workflow",
            "How long executions of each workflow take: mean and 95th percentile.",
            "s",
            [
                Query(mean, "mean {{workflow}}"),
                Query(
                    f"histogram_quantile(0.95, {_rate(f'ipa_execution_duration_seconds_bucket{{{SELECTOR}}}', 'le, workflow')})",
                    "p95 {{workflow}}",
                ),
            ],
        )
    )
    board.add(
        graph(
            settings,
            "Duration (5m rules)",
            "The mean and p95 duration recording rules, per workflow.",
            "s",
            [
                Query(f'ipa:execution_duration_seconds:mean_5m{{{RULES}, workflow=~"$workflow"}}', "mean {{workflow}}"),
                Query(f'ipa:execution_duration_seconds:p95_5m{{{RULES}, workflow=~"$workflow"}}', "p95 {{workflow}}"),
            ],
        )
    )

    board.row("Concurrency")
    board.add(
        graph(
            settings,
            "Executions in progress by workflow",
            f"Executions running at once, stacked per workflow; dashed lines at 90 % and 100 % of the limit ({limit}).",
            "short",
            [Query(f"sum by (workflow) (ipa_executions_in_progress{{{SELECTOR}}})", "{{workflow}}")],
            concurrency_steps,
            stack=True,
        )
    )
    board.add(
        graph(
            settings,
            "Concurrency saturation",
            f"Executions in progress as a share of the concurrency limit ({limit}); at 100 % new executions queue.",
            "percentunit",
            [Query(f"sum(ipa_executions_in_progress{{{BACKEND}}}) / {limit}", "saturation")],
            limit_steps(0.9, 1.0),
        )
    )
    return board.build()
