"""`make render`: the layout of docs/operations/render.md, byte-identical twice, secrets masked, bad
settings refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from offline.stackconfig import PLACEHOLDER_SECRETS, REPO_ROOT, stack_file
from tests.conftest import STACKS


def render(stack: str, out: Path, stack_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "offline.render", "--stack", stack, "--out", str(out)]
    if stack_path:
        argv += ["--stack-file", str(stack_path)]
    return subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("stack", STACKS)
def test_layout_and_identical_renders(stack: str, tmp_path: Path, rendered) -> None:  # type: ignore[no-untyped-def]
    """`make render`'s command, and the session's in-process render of the same commit: byte-identical."""
    first, second = rendered(stack), tmp_path / "b"
    result = render(stack, second)
    assert result.returncode == 0, result.stderr
    files = tree(first)
    assert files == tree(second), "two renders of the same commit differ"
    for required in ("resources.json", "prometheus/rules.yaml", "alertmanager/alertmanager.yaml"):
        assert required in files
    for folder in ("kubernetes", "helm", "grafana/dashboards"):
        assert (first / folder).is_dir()
    assert yaml.safe_load(files["prometheus/rules.yaml"])["groups"] is not None


@pytest.mark.parametrize("stack", STACKS)
def test_secrets_never_reach_the_render(stack: str, rendered) -> None:  # type: ignore[no-untyped-def]
    out = rendered(stack)
    text = "\n".join(p.read_text() for p in out.rglob("*") if p.is_file())
    for secret in PLACEHOLDER_SECRETS.values():
        assert secret not in text
    assert '"[secret]"' in (out / "resources.json").read_text()


BAD = [
    ("ipa-ops:backupSchedule", "every hour"),
    ("ipa-ops:backupSchedule", "0 */3 * * *"),
    ("ipa-ops:backupSchedule", "61 * * * *"),
    ("ipa-ops:backupShedule", "*/30 * * * *"),
    ("ipa-ops:rpoTargetMinutes", -5),
    ("ipa-ops:rtoTargetMinutes", "four hours"),
    ("ipa-ops:backupRetentionDays", 3),
    ("ipa-ops:alertEmailTo", ["not-an-address"]),
]


@pytest.mark.parametrize(("key", "value"), BAD)
def test_invalid_settings_render_nothing(key: str, value: object, tmp_path: Path) -> None:
    stack = yaml.safe_load(stack_file("dev").read_text())
    stack["config"][key] = value
    bad = tmp_path / "Pulumi.bad.yaml"
    bad.write_text(yaml.safe_dump(stack))
    out = tmp_path / "out"
    result = render("bad", out, bad)
    assert result.returncode != 0
    assert key in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()
