"""Runs promtool test files against the rules of a fresh render.

Test files name their rules as `rule_files: [RULES]`; the runner points that at the rendered
`prometheus/rules.yaml` (or at a copy without annotations, for the coverage tests: annotations are
checked by test_rules.py and by annotations.test.yaml, and leaving them out keeps each case short).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from components.topology import BACKUP, CRONJOB_NAMES
from devservices.tools import tool

HERE = Path(__file__).resolve().parent
FAILED_ALERT = re.compile(r"name: (?P<group>[^\n]*),\s*\n\s*alertname: (?P<alert>\w+), time: (?P<time>\S+),")


def rules_without_annotations(rules: Path, out: Path) -> Path:
    data = yaml.safe_load(rules.read_text())
    for group in data["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def write_test_file(test: dict[str, Any], rules: Path, out: Path) -> Path:
    test = dict(test)
    test["rule_files"] = [str(rules)]
    # Without an explicit order promtool evaluates groups in random (map) order, so an alert would
    # see this step's or the previous step's recorded value by chance. Recording groups go first.
    names = [g["name"] for g in yaml.safe_load(rules.read_text())["groups"]]
    test["group_eval_order"] = sorted(names, key=lambda n: (not n.endswith(".recording"), n))
    out.write_text(yaml.safe_dump(test, sort_keys=False, width=1000))
    return out


def run_promtool(test_files: list[Path], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`promtool test rules`; its report (failures go to stderr) comes back merged in .stdout."""
    return subprocess.run(
        [tool("promtool"), "test", "rules", *map(str, test_files)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )


def load_test(name: str) -> dict[str, Any]:
    """A test file, with `$BACKUP_CRONJOB` standing for the backup CronJob's name (its Jobs are named after it)."""
    text = (HERE / name).read_text().replace("$BACKUP_CRONJOB", CRONJOB_NAMES[BACKUP])
    data: dict[str, Any] = yaml.safe_load(text)
    return data
