"""API Performance: is ipa-backend up, how busy, how many errors, how fast, and is the SLO holding?"""

from __future__ import annotations

from typing import Any

from components.settings import Settings
from components.topology import API_DASHBOARD, PAGE_BURNS, SLO_WINDOWS
from dashboards.common import (
    BACKEND,
    RULES,
    Board,
    Query,
    alert_annotation,
    backend_variables,
    bars,
    floor_steps,
    graph,
    limit_steps,
    single,
    steps,
)

UID = API_DASHBOARD
ALERTS = ("HighErrorRate", "HighResponseTime", "IpaBackendDown")
REQUESTS = f"http_requests_total{{{BACKEND}}}"
ERRORS_5XX = f'http_requests_total{{{BACKEND}, status=~"5.."}}'
BUCKETS = f"http_request_duration_seconds_bucket{{{BACKEND}}}"


def _quantile(q: float, by: str = "le") -> str:
    return f"histogram_quantile({q}, sum by ({by}) (rate({BUCKETS}[$__rate_interval])))"


def build(settings: Settings) -> dict[str, Any]:
    error_limit = settings.error_rate_threshold
    latency_limit = settings.latency_p95_threshold_seconds
    error_budget = 1 - settings.availability_slo
    latency_budget = 1 - settings.latency_slo
    # The page alerts' burn-rate factors (6 over 6h, 14.4 over 1h): orange from the slower, red from the faster.
    factors = sorted(int(rate) if rate.is_integer() else rate for _, _, rate in PAGE_BURNS)  # 6, not 6.0, in the JSON
    burn = limit_steps(factors[0], factors[-1])
    board = Board(
        settings,
        UID,
        "Latency, throughput, errors and SLOs of ipa-backend (Prometheus job ipa-backend).",
        backend_variables(settings),
        [alert_annotation("API alerts", ALERTS)],
    )

    board.row("Overview")
    board.add(
        single(
            settings,
            "Request rate",
            "Requests per second served by all ipa-backend pods.",
            "reqps",
            Query(f"sum(rate({REQUESTS}[$__rate_interval]))"),
        ),
        6,
        4,
    )
    board.add(
        single(
            settings,
            "5xx error ratio",
            f"Share of requests answered with a 5xx status. HighErrorRate fires above {error_limit:.1%} for 5 minutes.",
            "percentunit",
            Query(f"sum(rate({ERRORS_5XX}[$__rate_interval])) / (sum(rate({REQUESTS}[$__rate_interval])) > 0)"),
            limit_steps(error_limit / 2, error_limit),
            ["HighErrorRate"],
        ),
        6,
        4,
    )
    board.add(
        single(
            settings,
            "p95 latency",
            f"95th percentile of request duration. HighResponseTime fires above {latency_limit:g}s for 5 minutes.",
            "s",
            Query(_quantile(0.95)),
            limit_steps(latency_limit / 2, latency_limit),
            ["HighResponseTime"],
        ),
        6,
        4,
    )
    board.add(
        single(
            settings,
            "Pods up",
            "ipa-backend pods Prometheus scrapes successfully. IpaBackendDown fires when none is up for 5 minutes.",
            "short",
            Query(f"sum(up{{{BACKEND}}})"),
            floor_steps(1),
            ["IpaBackendDown"],
        ),
        6,
        4,
    )

    board.row("Traffic")
    board.add(
        graph(
            settings,
            "Request rate by handler",
            "Requests per second per route and method.",
            "reqps",
            [Query(f"sum by (handler, method) (rate({REQUESTS}[$__rate_interval]))", "{{method}} {{handler}}")],
        )
    )
    board.add(
        graph(
            settings,
            "Responses by status",
            "Requests per second per HTTP status code.",
            "reqps",
            [Query(f"sum by (status) (rate({REQUESTS}[$__rate_interval]))", "{{status}}")],
            stack=True,
        )
    )

    board.row("Errors")
    board.add(
        graph(
            settings,
            "5xx error ratio",
            "Share of 5xx responses, live and as the 5m recording rule the alerts use; the dashed line is the "
            f"HighErrorRate threshold ({error_limit:.1%}).",
            "percentunit",
            [
                Query(f"sum(rate({ERRORS_5XX}[$__rate_interval])) / (sum(rate({REQUESTS}[$__rate_interval])) > 0)", "5xx share"),
                Query(f"ipa:http_request_errors:ratio_rate5m{{{RULES}}}", "5xx share (5m rule)"),
            ],
            limit_steps(None, error_limit),
            ["HighErrorRate"],
        )
    )
    board.add(
        graph(
            settings,
            "Error ratio by handler and status",
            "Share of each route's requests that ended in a 4xx or 5xx status: which route fails, and how.",
            "percentunit",
            [
                Query(
                    f'sum by (handler, status) (rate(http_requests_total{{{BACKEND}, status=~"[45].."}}[$__rate_interval]))'
                    f" / ignoring (status) group_left () (sum by (handler) (rate({REQUESTS}[$__rate_interval])) > 0)",
                    "{{status}} {{handler}}",
                )
            ],
            limit_steps(None, error_limit),
            ["HighErrorRate"],
        )
    )

    board.row("Latency")
    board.add(
        graph(
            settings,
            "Latency p50, p95, p99",
            f"Request duration percentiles over all routes; the dashed line is the HighResponseTime threshold ({latency_limit:g}s on p95).",
            "s",
            [Query(_quantile(0.5), "p50"), Query(_quantile(0.95), "p95"), Query(_quantile(0.99), "p99")],
            limit_steps(None, latency_limit),
            ["HighResponseTime"],
        )
    )
    board.add(
        bars(
            settings,
            "Slowest handlers (p95, 5m)",
            "The ten routes with the highest 95th percentile latency.",
            "s",
            Query(f"topk(10, ipa_handler:http_request_duration_seconds:p95_5m{{{RULES}}})", "{{handler}}", instant=True),
            limit_steps(latency_limit / 2, latency_limit),
            ["HighResponseTime"],
        )
    )
    board.add(
        graph(
            settings,
            "p95 latency by handler",
            "95th percentile request duration per route.",
            "s",
            [Query(_quantile(0.95, "le, handler"), "{{handler}}")],
            limit_steps(None, latency_limit),
        )
    )
    board.add(
        graph(
            settings,
            "Latency percentiles (5m rules)",
            "The p50/p95/p99 recording rules the alerts evaluate, for comparison with the live panel.",
            "s",
            [
                Query(f"ipa:http_request_duration_seconds:p50_5m{{{RULES}}}", "p50"),
                Query(f"ipa:http_request_duration_seconds:p95_5m{{{RULES}}}", "p95"),
                Query(f"ipa:http_request_duration_seconds:p99_5m{{{RULES}}}", "p99"),
            ],
            limit_steps(None, latency_limit),
        )
    )

    board.row("SLO and error budget")
    board.add(
        single(
            settings,
            "Availability (1d)",
            f"Share of non-5xx requests over the last day; objective {settings.availability_slo:.2%}.",
            "percentunit",
            Query(f"1 - ipa:http_request_errors:ratio_rate1d{{{RULES}}}"),
            floor_steps(settings.availability_slo),
            ["HighErrorRate"],
            decimals=3,
        ),
        6,
        4,
    )
    board.add(
        single(
            settings,
            "Availability error budget left (3d)",
            f"Share of the availability error budget ({error_budget:.2%} of requests) not yet spent over the last 3 days; "
            "below 0 the objective is missed.",
            "percentunit",
            Query(f"1 - ipa:http_request_errors:ratio_rate3d{{{RULES}}} / {error_budget:g}"),
            steps((None, "red"), (0, "orange"), (0.25, "green")),
        ),
        6,
        4,
    )
    board.add(
        single(
            settings,
            "Fast requests (1d)",
            f"Share of requests faster than {settings.latency_slo_threshold_seconds:g}s over the last day; objective "
            f"{settings.latency_slo:.2%}.",
            "percentunit",
            Query(f"1 - ipa:http_request_slow:ratio_rate1d{{{RULES}}}"),
            floor_steps(settings.latency_slo),
            ["HighResponseTime"],
            decimals=3,
        ),
        6,
        4,
    )
    board.add(
        single(
            settings,
            "Latency error budget left (3d)",
            f"Share of the latency error budget ({latency_budget:.2%} of requests may be slower than "
            f"{settings.latency_slo_threshold_seconds:g}s) not yet spent over the last 3 days.",
            "percentunit",
            Query(f"1 - ipa:http_request_slow:ratio_rate3d{{{RULES}}} / {latency_budget:g}"),
            steps((None, "red"), (0, "orange"), (0.25, "green")),
        ),
        6,
        4,
    )
    board.add(
        graph(
            settings,
            "Availability budget burn rate",
            "How many times faster than sustainable the error budget is spent, per window. 1 spends the budget exactly "
            "over the SLO period; "
            f"{' and '.join(f'{f:g}' for f in factors)} are the multiwindow alert factors.",
            "none",
            [Query(f"ipa:http_request_errors:ratio_rate{window}{{{RULES}}} / {error_budget:g}", window) for window in SLO_WINDOWS],
            burn,
        )
    )
    board.add(
        graph(
            settings,
            "Latency budget burn rate",
            f"How fast the budget of requests slower than {settings.latency_slo_threshold_seconds:g}s is spent, per window.",
            "none",
            [Query(f"ipa:http_request_slow:ratio_rate{window}{{{RULES}}} / {latency_budget:g}", window) for window in SLO_WINDOWS],
            burn,
        )
    )
    board.add(
        graph(
            settings,
            "Slow request ratio",
            f"Share of requests slower than the latency objective bound ({settings.latency_slo_threshold_seconds:g}s).",
            "percentunit",
            [Query(f"ipa:http_request_slow:ratio_rate5m{{{RULES}}}", "slow share (5m)")],
            limit_steps(None, latency_budget),
        ),
        24,
    )
    return board.build()
