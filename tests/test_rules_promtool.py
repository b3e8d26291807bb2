"""promtool on the rendered rules: lint for both stacks, and the unit tests in tests/rules/, which
must cover every alert (firing and quiet) and every recording rule."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.rules.groups import alert_names, recording_names, rule_groups
from components.topology import topology
from devservices.tools import tool
from tests.conftest import stack_settings
from tests.rules.runner import HERE, load_test, rules_without_annotations, run_promtool, write_test_file

Rendered = Callable[[str], Path]
PROD_FILES = sorted(p.name for p in HERE.glob("*.prod.test.yaml"))  # cases of limits only the prod settings give
UNIT_FILES = sorted(p.name for p in HERE.glob("*.test.yaml") if p.name not in ("annotations.test.yaml", *PROD_FILES))


def test_rendered_rules_pass_promtool_lint(rendered: Rendered, stack: str) -> None:
    rules = rendered(stack) / "prometheus" / "rules.yaml"
    result = subprocess.run(
        [tool("promtool"), "check", "rules", "--lint=all", "--lint-fatal", str(rules)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    expected = sum(len(g["rules"]) for g in rule_groups(stack_settings(stack)))
    assert f"SUCCESS: {expected} rules found" in result.stdout, result.stdout


def test_rendered_rules_are_the_built_groups(rendered: Rendered, stack: str) -> None:
    data = yaml.safe_load((rendered(stack) / "prometheus" / "rules.yaml").read_text())
    assert sorted(g["name"] for g in data["groups"]) == sorted(g["name"] for g in rule_groups(stack_settings(stack)))


@pytest.mark.parametrize("name", UNIT_FILES)
def test_promtool_unit_tests(rendered: Rendered, tmp_path: Path, name: str) -> None:
    rules = rules_without_annotations(rendered("dev") / "prometheus" / "rules.yaml", tmp_path / "rules.yaml")
    test_file = write_test_file(load_test(name), rules, tmp_path / name)
    result = run_promtool([test_file])
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout[-8000:]


@pytest.mark.parametrize("name", PROD_FILES)
def test_promtool_prod_unit_tests(rendered: Rendered, tmp_path: Path, name: str) -> None:
    rules = rules_without_annotations(rendered("prod") / "prometheus" / "rules.yaml", tmp_path / "rules.yaml")
    result = run_promtool([write_test_file(load_test(name), rules, tmp_path / name)])
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout[-8000:]


def _with_dev_dashboard_links(test: dict[str, Any]) -> dict[str, Any]:
    """The file names only the dashboard uid that matters; the Grafana host comes from the dev topology."""
    dev = topology(stack_settings("dev"))
    for group in test["tests"]:
        for case in group.get("alert_rule_test", []):
            for alert in case.get("exp_alerts", []):
                notes = alert.get("exp_annotations", {})
                if "dashboard_url" in notes:
                    match = re.fullmatch(r"http://[^/]+/d/([a-z-]+)", notes["dashboard_url"])
                    assert match, notes["dashboard_url"]
                    notes["dashboard_url"] = dev.dashboard_url(match[1])
    return test


def test_promtool_annotations(rendered: Rendered, tmp_path: Path) -> None:
    test_file = write_test_file(
        _with_dev_dashboard_links(load_test("annotations.test.yaml")),
        rendered("dev") / "prometheus" / "rules.yaml",
        tmp_path / "annotations.test.yaml",
    )
    result = run_promtool([test_file])
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout[-8000:]


def test_a_wrong_expectation_fails(rendered: Rendered, tmp_path: Path) -> None:
    """The harness can fail: a firing alert expected quiet is reported by name."""
    test = load_test("api.test.yaml")
    test["tests"] = [t for t in test["tests"] if t["name"].startswith("IpaBackendDown fires when every target fails")]
    for case in test["tests"][0]["alert_rule_test"]:
        case["exp_alerts"] = []
    result = run_promtool([write_test_file(test, rendered("dev") / "prometheus" / "rules.yaml", tmp_path / "wrong.yaml")])
    assert result.returncode != 0
    assert "alertname: IpaBackendDown, time: 10m" in result.stdout


def _all_cases() -> list[dict[str, Any]]:
    return [group for name in [*UNIT_FILES, "annotations.test.yaml"] for group in load_test(name)["tests"]]


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for group in _all_cases():
        for case in group.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = set(alert_names(rule_groups(stack_settings("dev"))))
    assert names - firing == set(), "alerts without a firing case"
    assert names - quiet == set(), "alerts without a quiet case"
    assert (firing | quiet) <= names, "test cases for alerts that do not exist"


def test_every_recording_rule_is_checked_by_value() -> None:
    exprs = [case["expr"] for group in _all_cases() for case in group.get("promql_expr_test", [])]
    names = recording_names(rule_groups(stack_settings("dev")))
    regexes = [m.group(1) for e in exprs for m in [re.search(r'__name__=~"([^"]+)"', e)] if m]
    uncovered = [
        n
        for n in names
        if not any(re.search(rf"(?<![\w:]){re.escape(n)}(?![\w:])", e) for e in exprs) and not any(re.fullmatch(r, n) for r in regexes)
    ]
    assert uncovered == []
