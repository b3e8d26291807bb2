"""checkov on what the project ships: each stack's own manifests (build/<stack>/kubernetes), its chart
renders (build/<stack>/charts), backup_image/Dockerfile and .github/workflows.

    python -m offline.security_scan [build/dev build/prod]

Prints every finding and whether security/checkov-allowlist.yaml accepts it; exits 1 when a finding
is not accepted or an allowlist entry matches nothing (stale). tests/test_checkov.py runs the same.
checkov lives in its own venv, .tools/checkov (scripts/setup/checkov.sh); it runs offline
(--skip-download) and nothing in a scanned file can hide a finding: `checkov.io/skip*` annotations
are removed before the scan, and a `checkov:skip` comment in the Dockerfile or a workflow stops it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from components.topology import BACKUP, BASE_BACKUP, CRONJOB_NAMES, DRILL, RELEASE_NAME
from offline.kube_schema import Manifest, load_manifests
from offline.stackconfig import REPO_ROOT

CHECKOV_VENV = REPO_ROOT / ".tools" / "checkov"
ALLOWLIST = REPO_ROOT / "security" / "checkov-allowlist.yaml"
FRAMEWORKS = ("kubernetes", "dockerfile", "github_actions")
DOCKERFILE = Path("backup_image") / "Dockerfile"
WORKFLOWS = Path(".github") / "workflows"
SKIP_ANNOTATION = "checkov.io/skip"
SKIP_COMMENT = "checkov:skip"
# checkov skips bigger files silently (5 MB by default); the chart renders are megabytes.
MAX_FILE_SIZE = str(100_000_000)
# checkov's own YAML reader, asked how many Kubernetes objects it finds in each file: a file it cannot
# read is skipped without a word, so the scan would pass on nothing.
PARSE_PROBE = """
import json, sys
from checkov.kubernetes.parser.parser import parse
counts = {}
for name in sys.argv[1:]:
    parsed = parse(name)
    counts[name] = -1 if parsed is None else len(parsed[0])
print(json.dumps(counts))
"""


class ScanError(RuntimeError):
    """checkov is missing, failed, or could not read a file of the scan."""


@dataclass(frozen=True, order=True)
class Finding:
    """One failed (or suppressed) check on one object: `object` is `<file group>:<checkov resource>`,
    the file group `kubernetes`, `charts/<release>`, `backup_image/Dockerfile` or `.github/workflows/<file>`."""

    check_id: str
    object: str
    stack: str
    name: str


@dataclass(frozen=True)
class Accepted:
    """An allowlist entry: check id, object (as in Finding), why it is accepted, and optionally the
    one stack it is accepted in."""

    check_id: str
    object: str
    reason: str
    stack: str = ""

    def accepts(self, finding: Finding) -> bool:
        return (self.check_id, self.object) == (finding.check_id, finding.object) and self.stack in ("", finding.stack)


def stage(renders: Mapping[str, Path], scan: Path, root: Path = REPO_ROOT) -> dict[Path, int]:
    """The scan folder: <stack>/kubernetes/*.yaml, <stack>/charts/<release>.yaml (without the CRDs:
    no check reads them and they are most of the bytes), the Dockerfile and the workflows.
    Returns the number of Kubernetes objects in each YAML file."""
    objects: dict[Path, int] = {}
    for stack, out in renders.items():
        for folder in ("kubernetes", "charts"):
            target = scan / stack / folder
            target.mkdir(parents=True)
            for path in sorted((out / folder).glob("*.yaml")):
                manifests = [unsuppressed(m) for m in load_manifests(path.read_text()) if m.get("kind") != "CustomResourceDefinition"]
                (target / path.name).write_text(yaml.dump_all(manifests, Dumper=yaml.CSafeDumper, sort_keys=True))
                objects[target / path.name] = len(manifests)
    (scan / DOCKERFILE).parent.mkdir(parents=True)
    shutil.copy(root / DOCKERFILE, scan / DOCKERFILE)
    shutil.copytree(root / WORKFLOWS, scan / WORKFLOWS)
    for path in [scan / DOCKERFILE, *sorted((scan / WORKFLOWS).rglob("*"))]:
        if path.is_file() and SKIP_COMMENT in path.read_text():
            raise ScanError(f"{path.relative_to(scan)} suppresses checks with {SKIP_COMMENT!r}: use security/checkov-allowlist.yaml")
    return objects


def unsuppressed(manifest: Manifest) -> Manifest:
    """The object without `checkov.io/skip*` annotations (on it or its pod template), which checkov
    would honour: only the allowlist accepts findings."""
    for metadata in (manifest.get("metadata"), ((manifest.get("spec") or {}).get("template") or {}).get("metadata")):
        annotations = (metadata or {}).get("annotations") or {}
        for key in [k for k in annotations if k.startswith(SKIP_ANNOTATION)]:
            del annotations[key]
    return manifest


def _checkov_env() -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/root")}
    return {**env, "CHECKOV_MAX_FILE_SIZE": MAX_FILE_SIZE, "LOG_LEVEL": "ERROR"}


def unread_files(objects: Mapping[Path, int], venv: Path = CHECKOV_VENV) -> list[str]:
    """Files whose Kubernetes objects checkov does not all read."""
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", PARSE_PROBE, *map(str, objects)],
        capture_output=True,
        text=True,
        env=_checkov_env(),
        check=False,
    )
    if done.returncode != 0:
        raise ScanError(f"checkov's parser failed: {done.stderr.strip()[-2000:]}")
    counts = json.loads(done.stdout)
    return [f"{path}: checkov reads {counts[str(path)]} of {n} objects" for path, n in objects.items() if counts[str(path)] != n]


def _group(file_path: str) -> tuple[str, str]:
    """(stack, file group) of a path that checkov reports relative to the scan folder."""
    parts = Path(file_path.lstrip("/")).parts
    if parts[:2] == WORKFLOWS.parts:
        return "", "/".join(parts)
    if Path(*parts) == DOCKERFILE:
        return "", str(DOCKERFILE)
    stack, folder, name = parts[0], parts[1], parts[-1]
    return stack, folder if folder == "kubernetes" else f"{folder}/{name.removesuffix('.yaml')}"


def findings(report: Any) -> list[Finding]:
    found = []
    for section in report if isinstance(report, list) else [report]:
        results = section.get("results") or {}
        for result in (results.get("failed_checks") or []) + (results.get("skipped_checks") or []):
            stack, group = _group(result["file_path"])
            found.append(Finding(result["check_id"], f"{group}:{result['resource']}", stack, result.get("check_name", "")))
    return sorted(set(found))


def run_checkov(scan: Path, venv: Path = CHECKOV_VENV) -> list[Finding]:
    binary = venv / "bin" / "checkov"
    if not os.access(binary, os.X_OK):
        raise ScanError(f"no checkov at {binary}: run `make setup-checkov`")
    args = [str(binary), "--directory", ".", "--framework", *FRAMEWORKS, "--output", "json", "--quiet", "--skip-download"]
    done = subprocess.run(args, cwd=scan, capture_output=True, text=True, env=_checkov_env(), check=False)
    if done.returncode not in (0, 1) or not done.stdout.strip():
        raise ScanError(f"checkov failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return findings(json.loads(done.stdout))


def scan(renders: Mapping[str, Path], root: Path = REPO_ROOT, venv: Path = CHECKOV_VENV) -> list[Finding]:
    """Every finding on the renders (stack -> build/<stack>), the Dockerfile and the workflows."""
    with tempfile.TemporaryDirectory(prefix="checkov-") as tmp:
        folder = Path(tmp) / "scan"
        objects = stage(renders, folder, root)
        unread = unread_files(objects, venv)
        if unread:
            raise ScanError("checkov cannot read every object: " + "; ".join(unread))
        return run_checkov(folder, venv)


# Names the allowlist writes as placeholders, so that renaming the release or a CronJob stays a one-line change.
PLACEHOLDERS = {
    "$RELEASE": RELEASE_NAME,
    "$BASE_BACKUP_CRONJOB": CRONJOB_NAMES[BASE_BACKUP],
    "$BACKUP_CRONJOB": CRONJOB_NAMES[BACKUP],
    "$DRILL_CRONJOB": CRONJOB_NAMES[DRILL],
}


def load_allowlist(path: Path = ALLOWLIST) -> list[Accepted]:
    entries = yaml.safe_load(path.read_text()) or []
    accepted = []
    for entry in entries:
        missing = {"check", "object", "reason"} - set(entry)
        if missing or not str(entry.get("reason", "")).strip() or set(entry) - {"check", "object", "reason", "stack"}:
            raise ValueError(f"{path}: entry {entry} needs check, object and a reason (and optionally stack), nothing else")
        obj = str(entry["object"])
        for placeholder, name in PLACEHOLDERS.items():
            obj = obj.replace(placeholder, name)
        accepted.append(Accepted(str(entry["check"]), obj, str(entry["reason"]).strip(), str(entry.get("stack", ""))))
    return accepted


def compare(found: Iterable[Finding], accepted: Iterable[Accepted]) -> tuple[list[Finding], list[Accepted]]:
    """(findings no entry accepts, entries that match no finding)."""
    found, accepted = list(found), list(accepted)
    unaccepted = [f for f in found if not any(a.accepts(f) for a in accepted)]
    stale = [a for a in accepted if not any(a.accepts(f) for f in found)]
    return unaccepted, stale


def counts(found: Iterable[Finding]) -> dict[str, int]:
    """Findings by stack and file group: {"dev kubernetes": 2, "dev charts": 70, "Dockerfile": ...}."""
    totals: dict[str, int] = {}
    for f in found:
        group = f.object.split(":", 1)[0]
        key = f"{f.stack} {group.split('/', 1)[0]}" if f.stack else group
        totals[key] = totals.get(key, 0) + 1
    return dict(sorted(totals.items()))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    folders = [Path(a) for a in args] or [REPO_ROOT / "build" / s for s in ("dev", "prod")]
    renders = {folder.name: folder for folder in folders}
    try:
        found = scan(renders)
    except ScanError as err:
        print(f"security_scan: {err}", file=sys.stderr)
        return 1
    unaccepted, stale = compare(found, load_allowlist())
    for f in found:
        mark = "NEW" if f in unaccepted else "allowed"
        print(f"{mark:8} {f.stack or '-':5} {f.check_id:12} {f.object}  ({f.name})")
    for a in stale:
        print(f"stale    {a.check_id} {a.object}: matches no finding")
    print(f"security_scan: {len(found)} findings {counts(found)}, {len(unaccepted)} not in the allowlist, {len(stale)} stale entries")
    return 1 if unaccepted or stale else 0


if __name__ == "__main__":
    sys.exit(main())
