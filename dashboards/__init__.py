"""The IPA Grafana dashboards as code: each module's `build(settings)` returns one dashboard's JSON."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from components.settings import Settings


def builders() -> dict[str, Callable[[Settings], dict[str, Any]]]:
    """uid -> build function of every dashboard (imported here so the modules can share `common`)."""
    from dashboards import api_performance, backup_dr, claude_usage, execution_stats, system_resources

    return {
        api_performance.UID: api_performance.build,
        execution_stats.UID: execution_stats.build,
        claude_usage.UID: claude_usage.build,
        system_resources.UID: system_resources.build,
        backup_dr.UID: backup_dr.build,
    }


def build_all(settings: Settings) -> dict[str, dict[str, Any]]:
    """Every dashboard of the stack, by uid."""
    return {uid: build(settings) for uid, build in builders().items()}
