"""Every metric name in every rule expression is in the metrics contract (components/metrics_contract.py), is one of
our recording rules, or is a standard exporter metric the contract lists."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import promql_parser

from components.metrics_contract import CONTRACT_METRICS, STANDARD_METRICS
from components.rules.groups import recording_names, rule_groups
from tests.conftest import stack_settings

CHILDREN = ("lhs", "rhs", "expr", "args", "vector_selector", "param")


def metric_names(node: Any) -> Iterator[str]:
    """Every metric name selected anywhere in a parsed PromQL expression."""
    if isinstance(node, promql_parser.VectorSelector):
        if node.name:
            yield node.name
        for matcher in node.matchers.matchers:  # {__name__="x"} spelling
            if matcher.name == "__name__":
                yield matcher.value
        return
    for attribute in CHILDREN:
        child = getattr(node, attribute, None)
        if child is None:
            continue
        for item in child if isinstance(child, list) else [child]:
            yield from metric_names(item)


def test_walker_finds_names_in_every_kind_of_node() -> None:
    expr = promql_parser.parse(
        'sum by (a) (rate(x_total{job="j"}[5m])) / on (a) clamp_min(y, 1) or absent(z{k="v"}) '
        "unless -max_over_time(w[1h:1m]) > bool quantile(0.9, v)"
    )
    assert sorted(metric_names(expr)) == ["v", "w", "x_total", "y", "z"]


def test_every_metric_of_every_rule_is_known(stack: str) -> None:
    groups = rule_groups(stack_settings(stack))
    ours = set(recording_names(groups))
    allowed = CONTRACT_METRICS | STANDARD_METRICS | ours
    unknown: dict[str, set[str]] = {}
    used: set[str] = set()
    for group in groups:
        for rule in group["rules"]:
            names = set(metric_names(promql_parser.parse(rule["expr"])))
            assert names or rule.get("record") == "ipa:claude_price_usd_per_mtok", f"no metric found in {rule}"
            used |= names
            bad = names - allowed
            if bad:
                unknown[rule.get("alert") or rule["record"]] = bad
    assert not unknown, f"metrics outside the contract, our recording rules and metrics_contract.EXPORTER_METRICS: {unknown}"
    # The lists are not padding: every contract/exporter name we list is needed by some rule
    # or is a contract metric only the dashboards use.
    unused_exporter = STANDARD_METRICS - used
    assert not unused_exporter, f"metrics_contract.EXPORTER_METRICS lists exporter metrics no rule uses: {sorted(unused_exporter)}"
