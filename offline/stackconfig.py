"""Reads Pulumi.<stack>.yaml the way the Pulumi CLI hands config to a program."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from components.settings import PROJECT, SECRET_KEYS

REPO_ROOT = Path(__file__).resolve().parent.parent

# Stand-ins for `pulumi config set --secret` values; the render shows them as "[secret]".
PLACEHOLDER_SECRETS = {
    "teamsWebhookUrl": "https://placeholder.invalid/workflows/teams-webhook",
    "smtpPassword": "placeholder-smtp-password",
    "heartbeatUrl": "https://placeholder.invalid/heartbeat",
    "grafanaEntraClientSecret": "placeholder-entra-client-secret",
}


def _as_cli_string(value: Any) -> str:
    """The CLI passes every value as a string; structured values as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def project_defaults(project_file: Path = REPO_ROOT / "Pulumi.yaml") -> dict[str, Any]:
    """`{"ipa-ops:key": default}` from the project-level config schema of Pulumi.yaml."""
    project = yaml.safe_load(project_file.read_text())
    defaults: dict[str, Any] = {}
    for key, spec in (project.get("config") or {}).items():
        full_key = key if ":" in key else f"{PROJECT}:{key}"
        if isinstance(spec, dict) and "default" in spec:
            defaults[full_key] = spec["default"]
    return defaults


def load_stack_config(stack_file: Path, project_file: Path = REPO_ROOT / "Pulumi.yaml") -> tuple[dict[str, str], list[str]]:
    """Config as the CLI would pass it: Pulumi.yaml defaults, then the stack file, then
    placeholders for secrets that are not set. Returns (config, secret keys)."""
    stack = yaml.safe_load(stack_file.read_text()) or {}
    merged: dict[str, Any] = dict(project_defaults(project_file))
    secret_keys: list[str] = []
    for key, value in (stack.get("config") or {}).items():
        full_key = key if ":" in key else f"{PROJECT}:{key}"
        if isinstance(value, dict) and set(value) == {"secure"}:
            secret_keys.append(full_key)
            value = PLACEHOLDER_SECRETS.get(full_key.split(":", 1)[1], "placeholder-secret")
        merged[full_key] = value
    for key in sorted(SECRET_KEYS):
        full_key = f"{PROJECT}:{key}"
        if full_key not in merged:
            merged[full_key] = PLACEHOLDER_SECRETS[key]
        if full_key not in secret_keys:
            secret_keys.append(full_key)
    return {k: _as_cli_string(v) for k, v in merged.items()}, sorted(secret_keys)


def stack_file(stack: str) -> Path:
    return REPO_ROOT / f"Pulumi.{stack}.yaml"
