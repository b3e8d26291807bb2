"""`make render STACK=<stack>`: the whole stack, offline, in the layout of docs/operations/render.md.

    python -m offline.render --stack dev [--stack-file PATH] [--out DIR]

Writes into a temporary folder and moves it into place only when everything succeeded,
so invalid settings or a failing program render nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from components.settings import FIELDS, Secret, Settings, SettingsError, config_key, parse_settings
from components.topology import topology
from offline.capacity import capacity_markdown
from offline.charts import ChartError, chart_cache, write_chart_renders
from offline.mocks import SECRET_MARK, Recorded
from offline.runner import Run, run_program
from offline.stackconfig import REPO_ROOT, load_stack_config, stack_file

HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
EMPTY_ALERTMANAGER = {"route": {"receiver": "null"}, "receivers": [{"name": "null"}]}


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings (PromQL, templates), so the files read well in review."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=True, allow_unicode=True, width=120)


def dump_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-")


def kubernetes_objects(recorded: list[Recorded]) -> list[dict[str, Any]]:
    """Every Kubernetes object the program declares (custom resources too), as a manifest."""
    objects = []
    for r in recorded:
        if not r.custom or not r.type.startswith("kubernetes:") or r.type == HELM_RELEASE:
            continue
        manifest = dict(r.masked_inputs)
        metadata = dict(manifest.get("metadata") or {})
        metadata.setdefault("name", r.name)
        manifest["metadata"] = metadata
        objects.append(manifest)
    return objects


def manifest_file_name(manifest: dict[str, Any]) -> str:
    meta = manifest["metadata"]
    parts = [manifest.get("kind", "object"), meta.get("namespace", "cluster"), meta["name"]]
    return _slug("-".join(str(p) for p in parts)) + ".yaml"


def prometheus_rules(objects: list[dict[str, Any]]) -> dict[str, Any]:
    groups = [
        group
        for obj in sorted(objects, key=manifest_file_name)
        if obj.get("kind") == "PrometheusRule"
        for group in obj.get("spec", {}).get("groups", [])
    ]
    return {"groups": groups}


def alertmanager_config(releases: list[Recorded]) -> dict[str, Any]:
    for release in releases:
        config = (release.masked_inputs.get("values") or {}).get("alertmanager", {}).get("config")
        if config:
            return dict(config)
    return EMPTY_ALERTMANAGER


def dashboards(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Dashboards shipped as ConfigMaps for the Grafana sidecar, by uid."""
    found: dict[str, dict[str, Any]] = {}
    for obj in objects:
        labels = obj["metadata"].get("labels") or {}
        if obj.get("kind") != "ConfigMap" or labels.get("grafana_dashboard") != "1":
            continue
        for key, text in (obj.get("data") or {}).items():
            if key.endswith(".json"):
                dashboard = json.loads(text)
                found[dashboard["uid"]] = dashboard
    return found


def _plain(value: Any) -> Any:
    """A settings value as JSON data: nested objects with their config (camelCase) keys, secrets masked."""
    if isinstance(value, Secret):
        return SECRET_MARK
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {config_key(f.name): _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def resolved_settings(settings: Settings) -> dict[str, Any]:
    """Every setting of the stack by its config key, defaults filled in, secrets as "[secret]"."""
    return {key: SECRET_MARK if f.metadata["secret"] else _plain(getattr(settings, f.name)) for key, f in FIELDS.items()}


def write_layout(run: Run, out: Path, settings: Settings | None = None) -> None:
    resources = [{"type": r.type, "name": r.name, "inputs": r.masked_inputs} for r in sorted(run.recorded, key=lambda r: (r.type, r.name))]
    objects = kubernetes_objects(run.recorded)
    releases = sorted(run.of_type(HELM_RELEASE), key=lambda r: r.name)
    files: dict[str, str] = {"resources.json": dump_json(resources)}
    for manifest in objects:
        name = "kubernetes/" + manifest_file_name(manifest)
        if name in files:
            raise RuntimeError(f"two Kubernetes objects render to {name}")
        files[name] = dump_yaml(manifest)
    for release in releases:
        release_name = release.masked_inputs.get("name") or release.name
        files[f"helm/{release_name}.values.yaml"] = dump_yaml(release.masked_inputs.get("values") or {})
    files["prometheus/rules.yaml"] = dump_yaml(prometheus_rules(objects))
    files["alertmanager/alertmanager.yaml"] = dump_yaml(alertmanager_config(releases))
    for uid, dashboard in dashboards(objects).items():
        files[f"grafana/dashboards/{uid}.json"] = dump_json(dashboard)
    if settings is not None:
        files["settings.json"] = dump_json(resolved_settings(settings))
        files["topology.json"] = dump_json(topology(settings).as_dict())
        files["capacity.md"] = capacity_markdown(settings)
    for folder in ("kubernetes", "helm", "prometheus", "alertmanager", "grafana/dashboards"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    for relative, text in files.items():
        (out / relative).write_text(text)


def render(stack: str, stack_path: Path, out: Path, charts: bool | None = None) -> Run:
    """`charts`: render the Helm releases through their charts too (offline/charts.py); by default
    when the chart cache is there."""
    config, secret_keys = load_stack_config(stack_path)
    settings = parse_settings(config)  # invalid settings stop here, before anything runs or is written
    run = run_program(stack, config, secret_keys)
    cache = chart_cache()
    with tempfile.TemporaryDirectory(prefix=f"render-{stack}-", dir=out.parent if out.parent.exists() else None) as tmp:
        staging = Path(tmp) / "out"
        write_layout(run, staging, settings)
        if charts or (charts is None and cache.is_dir()):
            write_chart_renders(staging, cache)
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(out)
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", required=True, help="stack name, e.g. dev or prod")
    parser.add_argument("--stack-file", type=Path, help="stack settings file (default: Pulumi.<stack>.yaml)")
    parser.add_argument("--out", type=Path, help="output folder (default: build/<stack>)")
    args = parser.parse_args(argv)
    stack_path = args.stack_file or stack_file(args.stack)
    out = args.out or REPO_ROOT / "build" / args.stack
    if not stack_path.is_file():
        print(f"render: no stack settings file {stack_path}", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        run = render(args.stack, stack_path, out)
    except SettingsError as err:
        # A stale render of earlier settings must not pass for this one.
        shutil.rmtree(out, ignore_errors=True)
        print(f"render: {stack_path.name}: {err}", file=sys.stderr)
        return 1
    except ChartError as err:
        print(f"render: {args.stack}: {err}", file=sys.stderr)
        return 1
    charts = "charts rendered" if (out / "charts").is_dir() else f"no chart cache at {chart_cache()}, charts not rendered"
    print(f"render: {args.stack}: {len(run.recorded)} resources, {charts} -> {out} in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
