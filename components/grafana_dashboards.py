"""The IPA Grafana dashboards, shipped as ConfigMaps that the kube-prometheus-stack Grafana
sidecar loads: label `grafana_dashboard: "1"`, folder from the `grafana_folder` annotation
(the chart's `grafana.sidecar.dashboards.folderAnnotation`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.settings import Settings
from dashboards import build_all
from dashboards.common import FOLDER

DASHBOARD_LABEL = "grafana_dashboard"
FOLDER_ANNOTATION = "grafana_folder"


def config_map_name(uid: str) -> str:
    return f"grafana-dashboard-{uid}"


@dataclass(frozen=True)
class GrafanaDashboardsArgs:
    """The dashboards (uid -> Grafana JSON model), built from the settings by `dashboards.build_all`."""

    dashboards: dict[str, dict[str, Any]]

    @classmethod
    def from_settings(cls, settings: Settings) -> GrafanaDashboardsArgs:
        return cls(dashboards=build_all(settings))


def dashboard_config_maps(dashboards: dict[str, dict[str, Any]], namespace: pulumi.Input[str]) -> dict[str, dict[str, Any]]:
    """uid -> the ConfigMap metadata and data for that dashboard (pure; tested without Pulumi)."""
    return {
        uid: {
            "metadata": {
                "name": config_map_name(uid),
                "namespace": namespace,
                "labels": {
                    DASHBOARD_LABEL: "1",
                    "app.kubernetes.io/name": "ipa-dashboards",
                    "app.kubernetes.io/part-of": "ipa-ops",
                    "app.kubernetes.io/managed-by": "pulumi",
                },
                "annotations": {FOLDER_ANNOTATION: FOLDER},
            },
            # sort_keys: two renders of the same commit stay byte-identical.
            "data": {f"{uid}.json": json.dumps(dashboard, indent=2, sort_keys=True)},
        }
        for uid, dashboard in dashboards.items()
    }


class GrafanaDashboards(pulumi.ComponentResource):
    """One ConfigMap per IPA dashboard in the monitoring `namespace`."""

    def __init__(
        self, name: str, args: GrafanaDashboardsArgs, *, namespace: pulumi.Input[str], opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("ipa-ops:monitoring:GrafanaDashboards", name, None, opts)
        self.config_maps: dict[str, k8s.core.v1.ConfigMap] = {}
        for uid, spec in dashboard_config_maps(args.dashboards, namespace).items():
            metadata = spec["metadata"]
            self.config_maps[uid] = k8s.core.v1.ConfigMap(
                f"{name}-{uid}",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=metadata["name"],
                    namespace=metadata["namespace"],
                    labels=metadata["labels"],
                    annotations=metadata["annotations"],
                ),
                data=spec["data"],
                opts=pulumi.ResourceOptions(parent=self),
            )
        self.register_outputs({"configMaps": {uid: cm.metadata.name for uid, cm in self.config_maps.items()}})
