"""The Prometheus Pushgateway that the backup and drill Jobs push their results to.

Persistence keeps the last pushed values across a Pushgateway restart, so BackupTooOld and
RestoreDrillFailed don't fire (or worse, go quiet) because a pod moved. Prometheus scrapes it
with honorLabels so the pushed `job="ipa-backup"` survives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.args import args_from_settings
from components.chart_images import pinned
from components.pod_security import restricted_container, restricted_pod
from components.settings import Settings
from components.topology import PUSHGATEWAY_RELEASE as RELEASE
from components.topology import RELEASE_LABELS, pushgateway_url

CHART = "prometheus-pushgateway"
REPO = "https://prometheus-community.github.io/helm-charts"
DATA_DIR = "/data"


@dataclass(frozen=True)
class PushgatewayArgs:
    pushgateway_chart_version: str
    storage_class: str
    resources: dict[str, dict[str, str]]  # requests and limits (the `containerResources` setting)
    chart_images: dict[str, str]  # the digest pins (components/chart_images.py)

    @classmethod
    def from_settings(cls, settings: Settings) -> PushgatewayArgs:
        return args_from_settings(cls, settings, resources=settings.resources("pushgateway"))


def pushgateway_values(args: PushgatewayArgs, namespace: pulumi.Input[str]) -> dict[str, Any]:
    """Helm values of prometheus-pushgateway (chart 3.8.0)."""
    values: dict[str, Any] = {
        # The chart mounts the volume but only these flags make the Pushgateway use it.
        "extraArgs": [f"--persistence.file={DATA_DIR}/pushgateway.data", "--persistence.interval=1m"],
        "persistentVolume": {
            "enabled": True,
            "size": "2Gi",
            "storageClass": args.storage_class,
            "mountPath": DATA_DIR,
            "accessModes": ["ReadWriteOnce"],
        },
        "strategy": {"type": "Recreate"},  # one ReadWriteOnce volume: never two pods at once
        "serviceMonitor": {
            "enabled": True,
            "namespace": namespace,
            "honorLabels": True,
            "additionalLabels": dict(RELEASE_LABELS),
        },
        "automountServiceAccountToken": False,  # it never calls the Kubernetes API
        "securityContext": restricted_pod(fs_group=True),
        "containerSecurityContext": restricted_container(),
        "resources": args.resources,
    }
    return pinned(args.chart_images, RELEASE, values)


class Pushgateway(pulumi.ComponentResource):
    """The Pushgateway in the monitoring `namespace`; `url` is where the Jobs push."""

    def __init__(
        self, name: str, args: PushgatewayArgs, *, namespace: pulumi.Input[str], opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("ipa-ops:monitoring:Pushgateway", name, None, opts)
        self.release = k8s.helm.v3.Release(
            f"{name}-release",
            name=RELEASE,
            chart=CHART,
            version=args.pushgateway_chart_version,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=REPO),
            namespace=namespace,
            values=pushgateway_values(args, namespace),
            atomic=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        # The chart names its Service after the release, in the release's namespace.
        self.url: pulumi.Output[str] = pulumi.Output.from_input(namespace).apply(pushgateway_url)
        self.register_outputs({"url": self.url})
