"""The README's settings table from components/settings.py; `make generate` (offline/generate.py) writes it."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from components.settings import FIELDS, REQUIRED, Secret, config_key


def _show(default: Any) -> str:
    if default is REQUIRED:
        return "required"
    if isinstance(default, Secret):
        return "empty" if not default.reveal() else "set"
    if dataclasses.is_dataclass(default) and not isinstance(default, type):
        default = {config_key(k): v for k, v in dataclasses.asdict(default).items()}
    if isinstance(default, dict):
        return "see Pulumi.dev.yaml"
    if isinstance(default, tuple):
        default = list(default)
    return "`" + json.dumps(default) + "`" if default not in ("", []) else "empty"


def table() -> str:
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for key, f in FIELDS.items():
        secret = " **Secret**: `pulumi config set --secret`." if f.metadata["secret"] else ""
        description = f.metadata["description"].replace("|", "\\|").replace(" Secret.", "")
        rows.append(f"| `ipa-ops:{key}` | {_show(f.metadata['default'])} | {description}{secret} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
