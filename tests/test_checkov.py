"""checkov (offline/security_scan.py) on both stacks' own manifests and chart renders, the backup
image's Dockerfile and the workflows: no finding outside security/checkov-allowlist.yaml, and no
allowlist entry that matches nothing. Needs .tools/checkov (make setup-checkov), Helm and the chart
cache (like tests/test_chart_renders.py); no service."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from components.topology import RELEASE_NAME
from offline import charts
from offline import security_scan as scan
from tests.conftest import STACKS

Rendered = Callable[[str], Path]
pytestmark = pytest.mark.charts
BROKEN = "broken"  # a third "stack" of deliberately bad objects, scanned in the same checkov run

PRIVILEGED_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "privileged",
        "namespace": "x",
        # checkov honours such annotations; the scan must not.
        "annotations": {"checkov.io/skip1": "CKV_K8S_16=hidden by an annotation"},
    },
    "spec": {"containers": [{"name": "c", "image": "busybox", "securityContext": {"privileged": True}}]},
}


@pytest.fixture(scope="session")
def findings(rendered: Rendered, tmp_path_factory: pytest.TempPathFactory) -> list[scan.Finding]:
    charts.require_cache(charts.chart_cache())
    broken = tmp_path_factory.mktemp("broken") / BROKEN
    (broken / "kubernetes").mkdir(parents=True)
    (broken / "charts").mkdir()
    (broken / "kubernetes" / "pod-x-privileged.yaml").write_text(yaml.safe_dump(PRIVILEGED_POD))
    renders = {stack: rendered(stack) for stack in STACKS}
    assert all((out / "charts").is_dir() for out in renders.values()), "the renders lack their charts"
    return scan.scan({**renders, BROKEN: broken})


def test_no_finding_outside_the_allowlist_and_no_stale_entry(findings: list[scan.Finding]) -> None:
    real = [f for f in findings if f.stack != BROKEN]
    unaccepted, stale = scan.compare(real, scan.load_allowlist())
    lines = [f"not in the allowlist: {f.check_id} {f.object} ({f.stack}: {f.name})" for f in unaccepted]
    lines += [f"stale allowlist entry (matches no finding): {a.check_id} {a.object}" for a in stale]
    assert not lines, "\n".join(lines)


def test_every_part_is_scanned(findings: list[scan.Finding]) -> None:
    groups = {f.object.split(":", 1)[0] for f in findings}
    assert str(scan.DOCKERFILE) in groups
    assert {"kubernetes", f"charts/{RELEASE_NAME}"} <= groups, groups


def test_a_broken_object_is_found_even_when_annotated(findings: list[scan.Finding]) -> None:
    broken = {f.check_id for f in findings if f.stack == BROKEN}
    assert "CKV_K8S_16" in broken, broken  # privileged container, skipped by its annotation: still a finding
    unaccepted, _ = scan.compare([f for f in findings if f.stack == BROKEN], scan.load_allowlist())
    assert unaccepted


def test_allowlist_matching_and_staleness() -> None:
    finding = scan.Finding("CKV_K8S_43", "charts/x:Deployment.monitoring.x", "prod", "digest")
    everywhere = scan.Accepted("CKV_K8S_43", finding.object, "why")
    dev_only = scan.Accepted("CKV_K8S_43", finding.object, "why", stack="dev")
    other = scan.Accepted("CKV_K8S_11", finding.object, "why")
    assert scan.compare([finding], [everywhere]) == ([], [])
    assert scan.compare([finding], [dev_only]) == ([finding], [dev_only])
    assert scan.compare([finding], [everywhere, other]) == ([], [other])


def test_the_allowlist_is_well_formed(tmp_path: Path) -> None:
    entries = scan.load_allowlist()
    assert len({(a.check_id, a.object, a.stack) for a in entries}) == len(entries), "duplicate entries"
    assert all(a.reason.startswith(("Accepted", "Open")) for a in entries)
    bad = tmp_path / "allowlist.yaml"
    bad.write_text(yaml.safe_dump([{"check": "CKV_K8S_1", "object": "kubernetes:x"}]))
    with pytest.raises(ValueError, match="reason"):
        scan.load_allowlist(bad)


def test_a_file_checkov_cannot_read_stops_the_scan(tmp_path: Path) -> None:
    """checkov skips unreadable YAML without a word; the scan must not pass on it."""
    unreadable = tmp_path / "crd.yaml"
    unreadable.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: [\n")
    readable = tmp_path / "ok.yaml"
    readable.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}))
    problems = scan.unread_files({unreadable: 1, readable: 1})
    assert len(problems) == 1 and str(unreadable) in problems[0]


def test_a_skip_comment_in_the_dockerfile_stops_the_scan(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / scan.WORKFLOWS).mkdir(parents=True)
    (root / scan.DOCKERFILE).parent.mkdir(parents=True)
    (root / scan.DOCKERFILE).write_text("FROM scratch\n# checkov:skip=CKV_DOCKER_2: no\n")
    with pytest.raises(scan.ScanError, match="checkov:skip"):
        scan.stage({}, tmp_path / "scan", root)
