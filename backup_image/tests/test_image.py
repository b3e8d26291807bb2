"""The image rootfs is what the Dockerfile ships and what the other tests run: its packages are
exactly backup_image/packages.txt, its Python wheels exactly requirements.txt, its entry point works
and keeps tini as PID 1 in front of the tool."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import REPO_ROOT, World
from procs import wait_for_child
from test_signals import table_locked

from devservices.image import IMAGE_ROOTFS, IN_IMAGE

# Every test runs the image built by `make setup` (scripts/image-rootfs.sh), which `make unit` does not build.
pytestmark = pytest.mark.services

IMAGE_DIR = REPO_ROOT / "backup_image"


def pinned(path: Path, separator: str) -> dict[str, str]:
    lines = [line.strip() for line in path.read_text().splitlines()]
    return dict(line.split(separator, 1) for line in lines if line and not line.startswith("#"))


def in_image(*argv: str) -> str:
    result = subprocess.run([str(IN_IMAGE), *argv], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def dockerfile_entrypoint() -> list[str]:
    match = re.search(r"^ENTRYPOINT (\[.*\])$", (IMAGE_DIR / "Dockerfile").read_text(), re.MULTILINE)
    assert match, "the Dockerfile has no exec-form ENTRYPOINT"
    entrypoint: list[str] = json.loads(match.group(1))
    return entrypoint


def test_rootfs_has_exactly_the_pinned_debian_packages() -> None:
    want = pinned(IMAGE_DIR / "packages.txt", "=")
    installed = dict(line.split("\t") for line in in_image("dpkg-query", "-W", "-f", "${Package}\\t${Version}\\n", *want).splitlines())
    assert {name: installed.get(name) for name in want} == want


def test_rootfs_python_has_exactly_the_pinned_wheels() -> None:
    want = {name.lower().replace("_", "-"): version for name, version in pinned(IMAGE_DIR / "requirements.txt", "==").items()}
    frozen = in_image("/opt/ipa-backup/bin/pip", "freeze", "--disable-pip-version-check")
    got = {
        name.lower().replace("_", "-"): version for name, version in (line.split("==", 1) for line in frozen.splitlines() if "==" in line)
    }
    assert {name: got.get(name) for name in want} == want, frozen
    # The tool itself, installed from its wheel like any dependency.
    assert "Version: " in in_image("/opt/ipa-backup/bin/pip", "show", "--disable-pip-version-check", "ipa-backup")


def test_dockerfile_ships_the_tested_rootfs_and_nothing_else() -> None:
    instructions = [
        line.split()[0] for line in (IMAGE_DIR / "Dockerfile").read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    assert instructions[:2] == ["FROM", "ADD"]
    assert "RUN" not in instructions and "COPY" not in instructions  # no step that would differ from the rootfs
    text = (IMAGE_DIR / "Dockerfile").read_text()
    assert "FROM scratch" in text and "ADD build/image-rootfs.tar /" in text
    ignore = (IMAGE_DIR / "Dockerfile.dockerignore").read_text().split()
    assert ignore[-2:] == ["*", "!build/image-rootfs.tar"]


def test_entrypoint_runs_the_tool_as_the_image_user() -> None:
    entrypoint = dockerfile_entrypoint()
    assert entrypoint[0] == "/usr/bin/tini"  # PID 1 forwards signals and reaps children
    assert in_image(*entrypoint, "--version").strip().startswith("ipa-backup ")
    assert in_image("id", "-u").strip() == "10001"
    # The tool and its dependencies belong to root: the image user can't change them.
    assert (IMAGE_ROOTFS / "opt/ipa-backup/bin/ipa-backup").stat().st_uid == 0
    assert in_image("sh", "-c", "test -w /opt/ipa-backup/lib && echo writable || echo read-only").strip() == "read-only"


def test_image_carries_one_postgres_client_per_supported_major() -> None:
    majors = sorted(p.parent.parent.name for p in (IMAGE_ROOTFS / "usr/lib/postgresql").glob("*/bin/pg_restore"))
    assert majors == ["15", "17"]
    for major in majors:
        assert f"(PostgreSQL) {major}." in in_image(f"/usr/lib/postgresql/{major}/bin/pg_restore", "--version")


def test_tini_entrypoint_forwards_sigterm_to_the_tool(world: World) -> None:
    """What Kubernetes does at activeDeadlineSeconds: SIGTERM to PID 1 (tini), which must reach the tool."""
    entrypoint = dockerfile_entrypoint()
    with table_locked(world, "app.users"):  # pg_dump waits: a backup that hangs
        proc = subprocess.Popen(
            [str(IN_IMAGE), *entrypoint, "backup"],
            env={**os.environ, **world.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for_child(proc.pid, "pg_dump")
        proc.send_signal(signal.SIGTERM)  # to tini
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "stopped by SIGTERM" in stderr
    assert world.newest_complete() is None  # the interrupted set stays incomplete
