"""The GitHub Actions workflows can't run here; actionlint and zizmor check them instead."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from offline.stackconfig import REPO_ROOT

WORKFLOWS = sorted((REPO_ROOT / ".github" / "workflows").glob("*.yml"))
BIN = Path(sys.executable).parent


def test_actionlint() -> None:
    assert WORKFLOWS
    result = subprocess.run([str(BIN / "actionlint"), *map(str, WORKFLOWS)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_finds_nothing() -> None:
    result = subprocess.run(
        [str(BIN / "zizmor"), "--offline", "--no-progress", str(REPO_ROOT / ".github" / "workflows")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings" in result.stdout + result.stderr


def test_workflows_do_what_the_readme_says() -> None:
    flows = {p.stem: yaml.safe_load(p.read_text()) for p in WORKFLOWS}
    ci, preview, deploy = flows["ci"], flows["preview"], flows["deploy"]
    # PyYAML reads the `on:` key as True.
    assert set(ci[True]) == {"push", "pull_request"}
    assert any(step.get("run") == "make test" for step in ci["jobs"]["test"]["steps"])
    assert set(preview[True]) == {"pull_request"}
    assert preview["jobs"]["preview"]["strategy"]["matrix"]["stack"] == ["dev", "prod"]
    # Each preview runs in the environment its stack deploys from, with that environment's kubeconfig secret.
    environments = {job["environment"] for job in deploy["jobs"].values()}
    assert environments == {"dev", "production"}
    assert preview["jobs"]["preview"]["environment"] == "${{ matrix.stack == 'prod' && 'production' || 'dev' }}"
    kubeconfig = next(s for s in preview["jobs"]["preview"]["steps"] if "KUBECONFIG_CONTENT" in (s.get("env") or {}))
    assert kubeconfig["env"]["KUBECONFIG_CONTENT"] == "${{ secrets.KUBECONFIG }}"
    pulumi_step = next(s for s in preview["jobs"]["preview"]["steps"] if str(s.get("uses", "")).startswith("pulumi/actions@"))
    assert pulumi_step["with"]["command"] == "preview" and pulumi_step["with"]["comment-on-pr"] is True
    assert deploy[True] == {"push": {"branches": ["main"]}}
    assert deploy["jobs"]["prod"]["needs"] == "dev" and deploy["jobs"]["prod"]["environment"] == "production"
    for flow in flows.values():
        for job in flow["jobs"].values():
            for step in job["steps"]:
                uses = step.get("uses")
                if uses:
                    assert len(uses.split("@")[1]) == 40, f"{uses} is not pinned to a commit"
