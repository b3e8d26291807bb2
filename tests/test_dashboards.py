"""The Grafana dashboards: schema-valid, every query parses and reads only known metrics, every
contract metric is shown somewhere, and they ship as sidecar ConfigMaps."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import promql_parser
import pytest

from components.grafana_dashboards import FOLDER_ANNOTATION, GrafanaDashboards, GrafanaDashboardsArgs, config_map_name
from components.metrics_contract import CONTRACT_METRICS, DASHBOARD_STANDARD_METRICS, METRICS, STANDARD_METRICS
from components.rules.groups import recording_names, rule_groups
from dashboards import build_all
from dashboards.common import DASHBOARDS, FOLDER
from tests.conftest import RunStack, stack_settings

SCHEMA = json.loads((Path(__file__).parent / "schemas" / "grafana-dashboard.schema.json").read_text())
UIDS = ("api-performance", "execution-stats", "claude-usage", "system-resources", "backup-dr")
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"

# The metrics contract by name; a histogram counts as shown when any of its series is queried.
CONTRACT = {name: metric.series for name, metric in METRICS.items()}
# Standard exporter series the dashboards read beyond those the rules read.
EXTRA_EXPORTER_METRICS = DASHBOARD_STANDARD_METRICS

# What Grafana puts in place of its variables before the query reaches Prometheus.
SUBSTITUTIONS = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "6h",
    "${datasource}": "prometheus",
    "$datasource": "prometheus",
    "$job": "ipa-backend",
    "$namespace": "ipa",
    "$workflow": ".*",
    "$model": ".*",
    "$instance": ".*",
    "$target": ".*",
}


def substitute(expr: str) -> str:
    for variable in sorted(SUBSTITUTIONS, key=len, reverse=True):
        expr = expr.replace(variable, SUBSTITUTIONS[variable])
    assert "$" not in expr, f"unsubstituted variable in {expr!r}"
    return expr


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def targets(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, expr) of every panel query."""
    for panel in panels(dashboard):
        for target in panel["targets"]:
            yield panel["title"], target["expr"]


def all_exprs(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Panel queries, alert annotations and variable queries (label_values' series selector)."""
    yield from targets(dashboard)
    for annotation in dashboard["annotations"]["list"]:
        yield f"annotation {annotation['name']}", annotation["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((.+), *(\w+)\)", variable["query"])
            assert match, f"variable {variable['name']}: not a label_values() query: {variable['query']}"
            yield f"variable {variable['name']}", match.group(1)


def metric_names(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            names.update(m.value for m in node.matchers.matchers if m.name == "__name__")

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


@pytest.fixture(scope="module", params=("dev", "prod"))
def boards(request: pytest.FixtureRequest) -> dict[str, dict[str, Any]]:
    return build_all(stack_settings(str(request.param)))


def test_the_five_dashboards_with_stable_uids(boards: dict[str, dict[str, Any]]) -> None:
    assert tuple(boards) == UIDS
    for uid, dashboard in boards.items():
        assert dashboard["uid"] == uid
        assert dashboard["title"] == DASHBOARDS[uid]


def test_every_dashboard_validates_against_the_schema(boards: dict[str, dict[str, Any]]) -> None:
    validator = jsonschema.Draft7Validator(SCHEMA)
    for uid, dashboard in boards.items():
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(dashboard)]
        assert not errors, f"{uid}: {errors[:5]}"


def test_the_schema_rejects_what_grafana_rejects(boards: dict[str, dict[str, Any]]) -> None:
    validator = jsonschema.Draft7Validator(SCHEMA)
    good = boards["api-performance"]
    broken: list[Callable[[dict[str, Any]], None]] = [
        lambda d: d.pop("schemaVersion"),
        lambda d: d["panels"][1].update(unknownKey=1),
        lambda d: d["panels"][1]["gridPos"].update(w=25),
        lambda d: d["panels"][1]["fieldConfig"]["defaults"]["thresholds"].update(mode="relative"),
        lambda d: d["templating"]["list"][0].update(type="dropdown"),
        lambda d: d["links"][0].pop("keepTime"),
        lambda d: d["panels"][0].pop("panels"),
    ]
    for index, breaks in enumerate(broken):
        dashboard = copy.deepcopy(good)
        breaks(dashboard)
        assert not validator.is_valid(dashboard), f"case {index} was accepted"


def test_every_panel_is_described_and_queries_the_datasource_variable(boards: dict[str, dict[str, Any]]) -> None:
    for uid, dashboard in boards.items():
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), f"{uid}: duplicate panel ids"
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
        for panel in panels(dashboard):
            where = f"{uid}/{panel['title']}"
            assert panel["description"].strip(), where
            assert panel["fieldConfig"]["defaults"]["unit"], where
            assert panel["fieldConfig"]["defaults"]["thresholds"]["steps"], where
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
            assert panel["targets"], where
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}", where


def test_panels_do_not_overlap(boards: dict[str, dict[str, Any]]) -> None:
    for uid, dashboard in boards.items():
        taken: dict[tuple[int, int], str] = {}
        for panel in dashboard["panels"]:
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, f"{uid}/{panel.get('title')}"
            for x in range(pos["x"], pos["x"] + pos["w"]):
                for y in range(pos["y"], pos["y"] + pos["h"]):
                    assert (x, y) not in taken, f"{uid}: {panel.get('title')} overlaps {taken[(x, y)]}"
                    taken[(x, y)] = panel.get("title", "")


def test_ranges_follow_the_time_picker(boards: dict[str, dict[str, Any]]) -> None:
    """Raw counters are read over $__rate_interval (or $__range); fixed windows only come from recording rules."""
    for uid, dashboard in boards.items():
        for title, expr in targets(dashboard):
            for window in re.findall(r"(?<=[}\w])\[([^\]]+)\]", expr):
                assert window in ("$__rate_interval", "$__range"), f"{uid}/{title}: fixed window [{window}] in {expr}"
        assert any("$__rate_interval" in expr for _, expr in targets(dashboard)) or uid == "backup-dr", uid


def test_links_to_each_other_and_to_runbooks(boards: dict[str, dict[str, Any]]) -> None:
    settings = stack_settings("dev")
    alerts = {r.get("alert") for g in rule_groups(settings) for r in g["rules"]}
    for uid, dashboard in boards.items():
        urls = {link["url"] for link in dashboard["links"]}
        assert {f"/d/{other}" for other in UIDS if other != uid} <= urls, uid
        assert any(url.startswith("https://") and "runbooks" in url for url in urls), uid
        panel_links = [link["url"] for p in panels(dashboard) for link in p.get("links", [])]
        if uid != "system-resources":
            assert panel_links, f"{uid}: no panel links to a runbook"
        for url in panel_links:
            assert re.fullmatch(re.escape(settings.runbook_base_url) + r"/[A-Z][A-Za-z]+\.md", url), url
            alert = url.rsplit("/", 1)[1].removesuffix(".md")
            assert alert in alerts, f"{url}: no such alert"
        if uid != "system-resources":
            exprs = [a["expr"] for a in dashboard["annotations"]["list"]]
            assert exprs and all(e.startswith('ALERTS{alertstate="firing"') for e in exprs), uid


def test_every_query_parses_after_substitution(boards: dict[str, dict[str, Any]]) -> None:
    count = 0
    for uid, dashboard in boards.items():
        for title, expr in all_exprs(dashboard):
            try:
                promql_parser.parse(substitute(expr))
            except ValueError as err:
                pytest.fail(f"{uid}/{title}: {err}\n{expr}")
            count += 1
    assert count > 100


def test_every_metric_is_in_the_contract_a_rule_or_a_standard_exporter(boards: dict[str, dict[str, Any]]) -> None:
    settings = stack_settings("dev")
    recorded = set(recording_names(rule_groups(settings)))
    allowed = CONTRACT_METRICS | STANDARD_METRICS | EXTRA_EXPORTER_METRICS | recorded
    used: set[str] = set()
    for uid, dashboard in boards.items():
        for title, expr in all_exprs(dashboard):
            names = metric_names(substitute(expr))
            assert names, f"{uid}/{title}: no metric in {expr}"
            unknown = names - allowed
            assert not unknown, f"{uid}/{title}: unknown metrics {unknown}"
            used |= names
    unused = EXTRA_EXPORTER_METRICS - used
    assert not unused, f"metrics_contract.DASHBOARD_EXPORTER_METRICS lists names no dashboard uses: {sorted(unused)}"
    assert EXTRA_EXPORTER_METRICS.isdisjoint(STANDARD_METRICS), "listed twice: keep it in EXPORTER_METRICS only"


def test_every_contract_metric_is_on_a_dashboard(boards: dict[str, dict[str, Any]]) -> None:
    used = {name for dashboard in boards.values() for _, expr in targets(dashboard) for name in metric_names(substitute(expr))}
    shown = {metric for metric, series in CONTRACT.items() if used & set(series)}
    coverage = len(shown) / len(CONTRACT)
    print(f"contract metrics on a dashboard: {len(shown)}/{len(CONTRACT)} = {coverage:.0%}")
    assert coverage == 1.0, f"not on any dashboard: {sorted(set(CONTRACT) - shown)}"


def test_cost_panels_use_the_cost_rules_budget_and_default_price() -> None:
    settings = stack_settings(
        "dev", {"claudeDailyBudgetUsd": 250, "claudeDefaultPricing": {"input": 11, "output": 55, "cacheRead": 1.1, "cacheWrite": 13.75}}
    )
    claude = build_all(settings)["claude-usage"]
    by_title = {p["title"]: p for p in panels(claude)}
    day = by_title["Cost last 24h (est.)"]
    assert "ipa:claude_cost_usd:increase24h" in day["targets"][0]["expr"]
    assert [s["value"] for s in day["fieldConfig"]["defaults"]["thresholds"]["steps"]] == [None, 200, 250]
    assert "ipa:claude_cost_usd:rate1h" in by_title["Cost per hour (est.)"]["targets"][0]["expr"]
    assert by_title["Daily budget used"]["targets"][0]["expr"].endswith("/ 250")
    assert "input $11, output $55" in by_title["Price table (USD per million tokens)"]["description"]
    assert by_title["Price table (USD per million tokens)"]["targets"][0]["expr"] == "ipa:claude_price_usd_per_mtok"
    api = build_all(stack_settings("dev", {"errorRateThreshold": 0.02}))["api-performance"]
    ratio = next(p for p in panels(api) if p["title"] == "5xx error ratio" and p["type"] == "stat")
    assert ratio["fieldConfig"]["defaults"]["thresholds"]["steps"][-1]["value"] == 0.02


def test_dashboards_ship_as_sidecar_config_maps(run_stack: RunStack) -> None:
    settings = stack_settings("prod")
    run = run_stack(
        "prod",
        program=lambda: GrafanaDashboards(
            "grafana-dashboards", GrafanaDashboardsArgs.from_settings(settings), namespace=settings.monitoring_namespace
        ),
    )
    maps = run.of_type(CONFIG_MAP)
    assert len(maps) == len(UIDS)
    for uid in UIDS:
        recorded = next(m for m in maps if m.inputs["metadata"]["name"] == config_map_name(uid))
        metadata = recorded.inputs["metadata"]
        assert metadata["namespace"] == settings.monitoring_namespace
        assert metadata["labels"]["grafana_dashboard"] == "1"
        assert metadata["annotations"] == {FOLDER_ANNOTATION: FOLDER} and FOLDER == "IPA Platform"
        assert list(recorded.inputs["data"]) == [f"{uid}.json"]
        assert json.loads(recorded.inputs["data"][f"{uid}.json"])["uid"] == uid
        assert recorded.parent_type == "ipa-ops:monitoring:GrafanaDashboards"


def test_the_folder_annotation_is_the_one_grafana_reads() -> None:
    from components.monitoring_values import GRAFANA_FOLDER_ANNOTATION, kube_prometheus_stack_values

    values = kube_prometheus_stack_values(stack_settings("dev"))
    assert FOLDER_ANNOTATION == GRAFANA_FOLDER_ANNOTATION == values["grafana"]["sidecar"]["dashboards"]["folderAnnotation"]
    assert values["grafana"]["sidecar"]["dashboards"]["label"] == "grafana_dashboard"


def test_the_render_writes_each_dashboard(rendered: Callable[[str], Path], stack: str) -> None:
    folder = rendered(stack) / "grafana" / "dashboards"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{uid}.json" for uid in UIDS)
    expected = build_all(stack_settings(stack))
    for uid in UIDS:
        assert json.loads((folder / f"{uid}.json").read_text()) == expected[uid]


def test_standin_exporters_serve_every_standard_metric() -> None:
    import requests
    from prometheus_client.parser import text_string_to_metric_families

    from devservices.standin_exporters import JOBS, StandinExporters

    served: set[str] = set()
    with StandinExporters() as exporters:
        for path in JOBS.values():
            text = requests.get(exporters.url + path, timeout=5).text
            served |= {s.name for family in text_string_to_metric_families(text) for s in family.samples}
    missing = (STANDARD_METRICS | EXTRA_EXPORTER_METRICS) - served - {"up", "ALERTS"}
    assert not missing, f"stand-in exporters lack {sorted(missing)}"
