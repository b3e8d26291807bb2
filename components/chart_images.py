"""The charts' images pinned by digest, through each chart's own image values.

The `chartImages` setting maps an image name below to `<tag>@sha256:<64 hex>`; prod requires
every one (components/settings.py). scripts/pin-chart-images.sh resolves the digests of the
tags the pinned charts render, on a machine that can reach the registries, and writes them
into Pulumi.prod.yaml (docs/monitoring/image-pinning.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from components.topology import POSTGRES_EXPORTER_RELEASE, PUSHGATEWAY_RELEASE, REDIS_EXPORTER_RELEASE, RELEASE_NAME

Values = dict[str, Any]


def _kps(*path: str) -> Callable[[str, str], Values]:
    """kube-prometheus-stack and grafana: `image.tag` and `image.sha` (hex only) at `path`."""

    def values(tag: str, digest: str) -> Values:
        fragment: Values = {"image": {"tag": tag, "sha": digest.removeprefix("sha256:")}}
        for key in reversed(path):
            fragment = {key: fragment}
        return fragment

    return values


def _kube_state_metrics(tag: str, digest: str) -> Values:
    return {"kube-state-metrics": {"image": {"tag": tag, "sha": digest}}}  # this chart wants "sha256:..."


def _node_exporter(tag: str, digest: str) -> Values:
    # The pinned tag already names the distroless variant; the chart would append "-distroless" again.
    return {"prometheus-node-exporter": {"image": {"tag": tag, "distroless": False, "digest": digest}}}


def _tag_only(tag: str, digest: str) -> Values:
    """Charts without a digest value: the digest rides on the tag (`repo:tag@sha256:...`)."""
    return {"image": {"tag": f"{tag}@{digest}"}}


# image name -> (Helm release, the values that pin it)
CHART_IMAGES: dict[str, tuple[str, Callable[[str, str], Values]]] = {
    "prometheus": (RELEASE_NAME, _kps("prometheus", "prometheusSpec")),
    "alertmanager": (RELEASE_NAME, _kps("alertmanager", "alertmanagerSpec")),
    "prometheusOperator": (RELEASE_NAME, _kps("prometheusOperator")),
    "configReloader": (RELEASE_NAME, _kps("prometheusOperator", "prometheusConfigReloader")),
    "admissionWebhookCertgen": (RELEASE_NAME, _kps("prometheusOperator", "admissionWebhooks", "patch")),
    "grafana": (RELEASE_NAME, _kps("grafana")),
    "grafanaSidecar": (RELEASE_NAME, _kps("grafana", "sidecar")),
    "kubeStateMetrics": (RELEASE_NAME, _kube_state_metrics),
    "nodeExporter": (RELEASE_NAME, _node_exporter),
    "postgresExporter": (POSTGRES_EXPORTER_RELEASE, _tag_only),
    "redisExporter": (REDIS_EXPORTER_RELEASE, _tag_only),
    "pushgateway": (PUSHGATEWAY_RELEASE, _tag_only),
}


def merge(base: Values, extra: Values) -> Values:
    """`base` with `extra` merged in, maps key by key (as Helm merges values)."""
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def pinned(images: dict[str, str], release: str, values: Values) -> Values:
    """`values` of `release` with each of its images in `images` (name -> tag@sha256:...) pinned."""
    for name, reference in sorted(images.items()):
        image_release, pin = CHART_IMAGES[name]
        if image_release == release:
            tag, digest = reference.split("@", 1)
            values = merge(values, pin(tag, digest))
    return values


# image name -> its repository (without the registry), to recognise it in a chart render
REPOSITORIES = {
    "prometheus": "prometheus/prometheus",
    "alertmanager": "prometheus/alertmanager",
    "prometheusOperator": "prometheus-operator/prometheus-operator",
    "configReloader": "prometheus-operator/prometheus-config-reloader",
    "admissionWebhookCertgen": "jkroepke/kube-webhook-certgen",
    "grafana": "grafana/grafana",
    "grafanaSidecar": "kiwigrid/k8s-sidecar",
    "kubeStateMetrics": "kube-state-metrics/kube-state-metrics",
    "nodeExporter": "prometheus/node-exporter",
    "postgresExporter": "prometheuscommunity/postgres-exporter",
    "redisExporter": "oliver006/redis_exporter",
    "pushgateway": "prometheus/pushgateway",
}
CONFIG_RELOADER_FLAG = "--prometheus-config-reloader="


def image_references(objects: list[Values]) -> set[str]:
    """Every image a chart render runs: containers, the operator's Prometheus and Alertmanager,
    and the config-reloader the operator adds to them (a flag of the operator)."""
    found: set[str] = set()
    for obj in objects:
        spec = obj.get("spec") or {}
        if obj.get("kind") in ("Prometheus", "Alertmanager") and spec.get("image"):
            found.add(spec["image"])
        pod = ((spec.get("template") or {}).get("spec")) or {}
        for container in (pod.get("initContainers") or []) + (pod.get("containers") or []):
            found.add(container["image"])
            found.update(a.removeprefix(CONFIG_RELOADER_FLAG) for a in container.get("args") or [] if a.startswith(CONFIG_RELOADER_FLAG))
    return found


def images_by_name(references: set[str]) -> dict[str, str]:
    """name -> `registry/repository:tag` (any digest dropped) of each image of CHART_IMAGES."""
    named: dict[str, str] = {}
    for reference in sorted(references):
        unpinned = reference.split("@", 1)[0]
        repository = unpinned.rsplit(":", 1)[0]
        for name, path in REPOSITORIES.items():
            if repository == path or repository.endswith("/" + path):
                named[name] = unpinned
    missing = sorted(set(CHART_IMAGES) - set(named))
    if missing:
        raise ValueError(f"the chart render runs no image for {missing}: update REPOSITORIES in components/chart_images.py")
    return named


def with_pins(stack_text: str, pins: dict[str, str], marker: str = "  # --- generated by") -> str:
    """The stack file with its `ipa-ops:chartImages` block replaced by `pins`, among the stack's own
    values (before the generated defaults); the rest of the file, comments too, unchanged."""
    lines = stack_text.splitlines()
    kept: list[str] = []
    skipping = False
    for line in lines:
        if line.startswith("  ipa-ops:chartImages:"):
            skipping = True
            continue
        if skipping and line.startswith("    "):
            continue
        skipping = False
        kept.append(line)
    block = ["  ipa-ops:chartImages:"] + [f"    {name}: {pins[name]}" for name in sorted(pins)]
    at = next((i for i, line in enumerate(kept) if line.startswith(marker)), len(kept))
    return "\n".join(kept[:at] + block + kept[at:]) + "\n"


def main(argv: list[str]) -> int:
    """`list <build dir>`: name and unpinned reference of each chart image of a render.
    `write <stack file> name=tag@sha256:... ...`: puts the pins into the stack file."""
    import sys
    from pathlib import Path

    from offline.charts import read_chart_renders

    if len(argv) >= 2 and argv[0] == "list":
        objects = [o for release in read_chart_renders(Path(argv[1])).values() for o in release]
        for name, reference in sorted(images_by_name(image_references(objects)).items()):
            print(name, reference)
        return 0
    if len(argv) >= 2 and argv[0] == "write":
        path = Path(argv[1])
        pins = dict(pair.split("=", 1) for pair in argv[2:])
        path.write_text(with_pins(path.read_text(), pins))
        return 0
    print(main.__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
