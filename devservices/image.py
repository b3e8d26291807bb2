"""The backup image's userland (build/image-rootfs, `make image-rootfs`) and how to run in it:
`IN_IMAGE` (scripts/in-image.sh) runs a command there as the image's user."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from devservices.process import REPO_ROOT, ServiceError

IMAGE_ROOTFS = REPO_ROOT / "build" / "image-rootfs"
IN_IMAGE = REPO_ROOT / "scripts" / "in-image.sh"
IPA_BACKUP = [str(IN_IMAGE), "ipa-backup"]  # the tool as it ships
IMAGE_UID = 10001  # the image's user, who runs the tool


def require_image() -> None:
    if not (IMAGE_ROOTFS / "opt/ipa-backup/bin/ipa-backup").exists():
        raise ServiceError(f"{IMAGE_ROOTFS} has no ipa-backup: run `make image-rootfs`")


def host_path(inside: str | Path) -> Path:
    """Where a path the image's programs see lies on this machine."""
    return IMAGE_ROOTFS / Path(inside).relative_to("/")


def image_path(host: Path) -> str:
    """A path under the rootfs as the image's programs see it."""
    return "/" + str(host.relative_to(IMAGE_ROOTFS))


def image_workdir(prefix: str) -> Path:
    """A new folder under the image's /work that the image's user may write (a path on this machine)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=host_path("/work")))
    os.chown(folder, IMAGE_UID, IMAGE_UID)
    return folder
