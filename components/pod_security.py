"""The Pod Security "restricted" profile, shared by every pod spec this program writes.

Non-root, no privilege escalation, every capability dropped, RuntimeDefault seccomp and a
read-only root filesystem: what the namespaces' `restricted` enforcement demands.
"""

from __future__ import annotations

from typing import Any

NOBODY = 65534


def restricted_pod(uid: int = NOBODY, fs_group: bool = False) -> dict[str, Any]:
    context: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if fs_group:
        context["fsGroup"] = uid  # writable volumes owned by the pod's group
    return context


def restricted_container(uid: int | None = None) -> dict[str, Any]:
    context: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if uid is not None:
        context["runAsUser"] = uid
        context["runAsGroup"] = uid
    return context
