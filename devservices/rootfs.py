"""build/servers-rootfs: Debian 13's PostgreSQL 17 and Redis 8, for servers this machine's own
Debian packages don't have (built by scripts/servers-rootfs.sh, run with chroot)."""

from __future__ import annotations

from pathlib import Path

from devservices.process import REPO_ROOT, ServiceError

SERVERS_ROOTFS = REPO_ROOT / "build" / "servers-rootfs"
SERVERS_HINT = "run `bash scripts/servers-rootfs.sh` (make setup does)"


def servers_rootfs() -> Path:
    if not (SERVERS_ROOTFS / ".stamp").is_file():
        raise ServiceError(f"{SERVERS_ROOTFS} is missing: {SERVERS_HINT}")
    return SERVERS_ROOTFS
