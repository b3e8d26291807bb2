"""Alertmanager routing as Alertmanager computes it: `amtool config routes test` on the rendered file."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path

from devservices.tools import tool
from drill.artifacts import ArtifactError


def _label(name: str, value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{name}="{escaped}"'


def receivers(config: Path, labels: Mapping[str, str]) -> list[str]:
    """The receivers an alert with `labels` reaches, in the order of the routing tree."""
    argv = [tool("amtool"), "config", "routes", "test", f"--config.file={config}", *(_label(k, v) for k, v in sorted(labels.items()))]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise ArtifactError(f"amtool config routes test {dict(labels)} failed: {(result.stderr or result.stdout).strip()}")
    return [r for r in result.stdout.strip().split(",") if r]


def receiver(config: Path, labels: Mapping[str, str]) -> str:
    """The one receiver (the drill's routes use no `continue`)."""
    found = receivers(config, labels)
    if len(found) != 1:
        raise ArtifactError(f"alert {dict(labels)} reaches {found or 'no receiver'}; the drill expects exactly one")
    return found[0]
