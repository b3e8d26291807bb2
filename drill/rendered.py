"""The drill's only input: a render of the dev stack (build/dev, docs/operations/render.md).

`load(build_dir)` reads settings.json (parsed by the project's one settings parser, so derived
values such as the longest backup gap are the program's own), topology.json, the rule file, the
Alertmanager configuration, the Kubernetes manifests and the monitoring chart's values.
Masked secrets ("[secret]") get the offline placeholders: the drill makes its own secrets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from components.settings import PROJECT, Settings, SettingsError, parse_settings
from drill.artifacts import ArtifactError, load_manifests
from offline.stackconfig import PLACEHOLDER_SECRETS

SECRET_MARK = "[secret]"
RENDER_HINT = "run `.venv/bin/python -m offline.render --stack dev` (make drill does)"


@dataclass(frozen=True)
class Rendered:
    build_dir: Path
    settings: Settings
    raw_settings: dict[str, Any]  # settings.json as written (keys the Settings class may not know yet stay readable)
    topology: dict[str, Any]
    rules: dict[str, Any]
    alertmanager_path: Path
    alertmanager: dict[str, Any]
    manifests: list[dict[str, Any]]
    kps_values: dict[str, Any]  # helm/<release_name of topology.json>.values.yaml


def _read(path: Path) -> str:
    if not path.is_file():
        raise ArtifactError(f"{path} is missing: {RENDER_HINT}")
    return path.read_text()


def parse_rendered_settings(raw: dict[str, Any]) -> Settings:
    """Settings from settings.json; masked secrets become the offline placeholders."""
    config = {f"{PROJECT}:{k}": (PLACEHOLDER_SECRETS.get(k, "placeholder-secret") if v == SECRET_MARK else v) for k, v in raw.items()}
    try:
        return parse_settings(config)
    except SettingsError as err:
        raise ArtifactError(f"settings.json does not parse: {err}") from err


def load(build_dir: Path) -> Rendered:
    raw_settings = json.loads(_read(build_dir / "settings.json"))
    topology = json.loads(_read(build_dir / "topology.json"))
    am_path = build_dir / "alertmanager" / "alertmanager.yaml"
    kubernetes = build_dir / "kubernetes"
    if not kubernetes.is_dir():
        raise ArtifactError(f"{kubernetes} is missing: {RENDER_HINT}")
    return Rendered(
        build_dir=build_dir,
        settings=parse_rendered_settings(raw_settings),
        raw_settings=raw_settings,
        topology=topology,
        rules=yaml.safe_load(_read(build_dir / "prometheus" / "rules.yaml")) or {},
        alertmanager_path=am_path,
        alertmanager=yaml.safe_load(_read(am_path)) or {},
        manifests=load_manifests(kubernetes),
        kps_values=yaml.safe_load(_read(build_dir / "helm" / f"{topology['release_name']}.values.yaml")) or {},
    )
