"""Claude Usage: how much the backend calls Claude, how it fails, how slow it is, what it costs."""

from __future__ import annotations

from typing import Any

from components.settings import Settings
from components.topology import CLAUDE_DASHBOARD
from dashboards.common import (
    BACKEND,
    RULES,
    Board,
    Query,
    alert_annotation,
    backend_variables,
    bars,
    graph,
    grid,
    limit_steps,
    model_variable,
    single,
    steps,
)

UID = CLAUDE_DASHBOARD
ALERTS = ("ClaudeAPIErrors", "ClaudeCostBudgetExceeded")
SELECTOR = f'{BACKEND}, model=~"$model"'
RULE_SELECTOR = f'{RULES}, model=~"$model"'
HOURS_PER_MONTH = 730  # 365 * 24 / 12


def _rate(metric: str, by: str = "") -> str:
    grouping = f"sum by ({by}) " if by else "sum "
    return f"{grouping}(rate({metric}[$__rate_interval]))"


def _quantile(q: float, by: str) -> str:
    return f"histogram_quantile({q}, {_rate(f'claude_api_request_duration_seconds_bucket{{{SELECTOR}}}', by)})"


def build(settings: Settings) -> dict[str, Any]:
    budget = settings.claude_daily_budget_usd
    month_budget = budget * HOURS_PER_MONTH / 24
    default = settings.claude_default_pricing
    known = "|".join(sorted(settings.claude_pricing))
    default_text = (
        f"Models missing from the price table are priced at the default: input ${default.input:g}, output ${default.output:g}, "
        f"cache read ${default.cache_read:g}, cache write ${default.cache_write:g} per million tokens."
    )
    requests = f"claude_api_requests_total{{{SELECTOR}}}"
    errors = f"claude_api_errors_total{{{SELECTOR}}}"
    tokens = f"claude_tokens_total{{{SELECTOR}}}"
    cache_read = f'claude_tokens_total{{{SELECTOR}, type="cache_read"}}'
    prompt_tokens = f'claude_tokens_total{{{SELECTOR}, type=~"input|cache_read|cache_write"}}'
    rate_limited = f'claude_api_errors_total{{{SELECTOR}, error_type="rate_limit"}}'
    cost_hour = f"sum(ipa:claude_cost_usd:rate1h{{{RULE_SELECTOR}}})"
    cost_day = f"sum(ipa:claude_cost_usd:increase24h{{{RULE_SELECTOR}}})"
    board = Board(
        settings,
        UID,
        f"Claude API calls, errors, latency, tokens and estimated cost against the daily budget (${budget:g}). {default_text}",
        [*backend_variables(settings), model_variable()],
        [alert_annotation("Claude alerts", ALERTS, "orange")],
    )

    board.row("Overview")
    board.add(single(settings, "API calls", "Claude API requests per second.", "reqps", Query(_rate(requests))), 4, 4)
    board.add(
        single(
            settings,
            "API errors",
            f"Failed Claude API calls per second; ClaudeAPIErrors fires above {settings.claude_error_rate_threshold:g}/s for 2 minutes.",
            "reqps",
            Query(_rate(errors)),
            limit_steps(settings.claude_error_rate_threshold / 2, settings.claude_error_rate_threshold),
            ["ClaudeAPIErrors"],
        ),
        4,
        4,
    )
    board.add(
        single(
            settings,
            "Cost per hour (est.)",
            f"Estimated spend over the last hour, USD per hour; orange when it would exceed the daily budget (${budget:g}) over 24 hours.",
            "currencyUSD",
            Query(cost_hour),
            limit_steps(budget / 24, 2 * budget / 24),
            decimals=2,
        ),
        4,
        4,
    )
    board.add(
        single(
            settings,
            "Cost last 24h (est.)",
            f"Estimated spend over the last 24 hours; ClaudeCostBudgetExceeded fires above the daily budget of ${budget:g}.",
            "currencyUSD",
            Query(cost_day),
            limit_steps(0.8 * budget, budget),
            ["ClaudeCostBudgetExceeded"],
            decimals=2,
        ),
        4,
        4,
    )
    board.add(
        single(
            settings,
            "Projected month (est.)",
            f"The last hour's spend rate extended to a month ({HOURS_PER_MONTH} h); the monthly budget is the daily one "
            f"times {HOURS_PER_MONTH / 24:g} (${month_budget:,.0f}).",
            "currencyUSD",
            Query(f"{cost_hour} * {HOURS_PER_MONTH}"),
            limit_steps(0.8 * month_budget, month_budget),
            decimals=0,
        ),
        4,
        4,
    )
    board.add(
        single(
            settings,
            "Daily budget used",
            f"Estimated spend over the last 24 hours as a share of the daily budget (${budget:g}).",
            "percentunit",
            Query(f"{cost_day} / {budget:g}"),
            limit_steps(0.8, 1.0),
            ["ClaudeCostBudgetExceeded"],
        ),
        4,
        4,
    )

    board.row("Calls and errors")
    board.add(
        graph(
            settings,
            "API calls by model",
            "Claude API requests per second per model.",
            "reqps",
            [
                Query(_rate(requests, "model"), "{{model}}"),
                Query(f"sum by (model) (ipa:claude_requests:rate5m{{{RULE_SELECTOR}}})", "{{model}} (5m rule)"),
            ],
        )
    )
    board.add(
        graph(
            settings,
            "Errors by type",
            "Failed Claude API calls per second by error type; dashed line: the ClaudeAPIErrors threshold "
            f"({settings.claude_error_rate_threshold:g}/s in total).",
            "reqps",
            [
                Query(_rate(errors, "error_type"), "{{error_type}}"),
                Query(f"sum by (error_type) (ipa:claude_errors:rate5m{{{RULE_SELECTOR}}})", "{{error_type}} (5m rule)"),
            ],
            limit_steps(None, settings.claude_error_rate_threshold),
            ["ClaudeAPIErrors"],
            stack=False,
        )
    )
    board.add(
        graph(
            settings,
            "Error share by model",
            "Share of each model's calls that failed.",
            "percentunit",
            [Query(f"{_rate(errors, 'model')} / ({_rate(requests, 'model')} > 0)", "{{model}}")],
        )
    )
    board.add(
        graph(
            settings,
            "Rate-limited share",
            f"Share of calls rejected with rate_limit; a warning fires above {settings.claude_rate_limited_ratio_threshold:.0%}.",
            "percentunit",
            [Query(f"{_rate(rate_limited)} / ({_rate(requests)} > 0)", "rate limited")],
            limit_steps(None, settings.claude_rate_limited_ratio_threshold),
        )
    )

    board.row("Latency")
    latency_limit = settings.claude_latency_p95_threshold_seconds
    board.add(
        graph(
            settings,
            "Latency p50, p95, p99",
            f"Claude API call duration percentiles over all models; dashed line at the p95 warning threshold ({latency_limit:g}s).",
            "s",
            [Query(_quantile(0.5, "le"), "p50"), Query(_quantile(0.95, "le"), "p95"), Query(_quantile(0.99, "le"), "p99")],
            limit_steps(None, latency_limit),
        )
    )
    board.add(
        graph(
            settings,
            "p95 latency by model",
            "95th percentile Claude API call duration per model.",
            "s",
            [Query(_quantile(0.95, "le, model"), "{{model}}")],
            limit_steps(None, latency_limit),
        )
    )

    board.row("Tokens")
    board.add(
        graph(
            settings,
            "Tokens by model and type",
            "Tokens per second per model and token type (input, output, cache_read, cache_write).",
            "suffix: tok/s",
            [
                Query(_rate(tokens, "model, type"), "{{model}} {{type}}"),
                Query(f"sum by (model, type) (ipa:claude_tokens:rate5m{{{RULE_SELECTOR}}})", "{{model}} {{type}} (5m rule)"),
            ],
        )
    )
    board.add(
        graph(
            settings,
            "Cache-read share",
            "Share of prompt-side tokens (input + cache read + cache write) served from the prompt cache; higher is cheaper.",
            "percentunit",
            [Query(f"{_rate(cache_read, 'model')} / ({_rate(prompt_tokens, 'model')} > 0)", "{{model}}")],
            max_value=1,
        )
    )

    board.row("Cost")
    board.add(
        graph(
            settings,
            "Estimated cost per hour by model",
            "USD per hour by model from the token rates and the price table; dashed line: the daily budget spread over "
            f"24 hours (${budget / 24:.2f}/h).",
            "currencyUSD",
            [Query(f"sum by (model) (ipa:claude_cost_usd:rate1h{{{RULE_SELECTOR}}})", "{{model}}")],
            limit_steps(None, budget / 24),
            stack=True,
        )
    )
    board.add(
        graph(
            settings,
            "Estimated cost over 24h vs budget",
            f"Rolling 24-hour spend; the dashed lines are 80 % and 100 % of the daily budget (${budget:g}).",
            "currencyUSD",
            [Query(cost_day, "last 24h")],
            limit_steps(0.8 * budget, budget),
            ["ClaudeCostBudgetExceeded"],
        )
    )
    board.add(
        bars(
            settings,
            "Cost last 24h by model",
            "Estimated spend of each model over the last 24 hours.",
            "currencyUSD",
            Query(f"sum by (model) (ipa:claude_cost_usd:increase24h{{{RULE_SELECTOR}}})", "{{model}}", instant=True),
            limit_steps(0.8 * budget, budget),
            max_value=budget,
        )
    )
    board.add(
        single(
            settings,
            "Tokens at the default price",
            f"Tokens per second of models missing from the price table ({known}); their cost is estimated with the "
            f"default price. {default_text}",
            "suffix: tok/s",
            Query(f'sum(rate(claude_tokens_total{{{BACKEND}, model!~"{known}"}}[$__rate_interval])) or vector(0)'),
            steps((None, "green"), (1e-9, "orange")),
        ),
        6,
        8,
    )
    board.add(
        grid(
            settings,
            "Price table (USD per million tokens)",
            f"The prices the cost rules use, by model and token type; model __default__ is the price of unknown models. {default_text}",
            "currencyUSD",
            Query("ipa:claude_price_usd_per_mtok", instant=True),
        ),
        18,
        8,
    )
    return board.build()
