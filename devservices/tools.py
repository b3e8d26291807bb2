"""Paths of the Prometheus tool chain installed into .tools/bin by scripts/setup/prometheus-tools.sh."""

from __future__ import annotations

from devservices.process import TOOLS_DIR, require_binary

INSTALL_HINT = "run `bash scripts/setup/prometheus-tools.sh` (as root)"
TOOL_NAMES = ("promtool", "prometheus", "amtool", "alertmanager", "pushgateway")


def tool(name: str) -> str:
    """The path of `.tools/bin/<name>`; ServiceError with the install hint when it is absent."""
    if name not in TOOL_NAMES:
        raise ValueError(f"unknown tool {name!r}; expected one of {', '.join(TOOL_NAMES)}")
    return require_binary(TOOLS_DIR / "bin" / name, INSTALL_HINT)
