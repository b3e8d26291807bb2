"""The Prometheus Pushgateway that the backup and drill Jobs push their results to.

Persistence keeps the last pushed values across a Pushgateway restart, so BackupTooOld and
RestoreDrillFailed don't fire (or worse, go quiet) because a pod moved. Prometheus scrapes it
with honorLabels so the pushed `job="ipa-backup"` survives.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.pod_security import restricted_container, restricted_pod
from components.settings import Settings
from components.topology import PUSHGATEWAY_RELEASE as RELEASE
from components.topology import RELEASE_LABELS, topology

CHART = "prometheus-pushgateway"
REPO = "https://prometheus-community.github.io/helm-charts"
DATA_DIR = "/data"


def pushgateway_url(settings: Settings) -> str:
    return topology(settings).pushgateway_url


def pushgateway_values(settings: Settings) -> dict[str, Any]:
    """Helm values of prometheus-pushgateway (chart 3.8.0)."""
    return {
        # The chart mounts the volume but only these flags make the Pushgateway use it.
        "extraArgs": [f"--persistence.file={DATA_DIR}/pushgateway.data", "--persistence.interval=1m"],
        "persistentVolume": {
            "enabled": True,
            "size": "2Gi",
            "storageClass": settings.storage_class,
            "mountPath": DATA_DIR,
            "accessModes": ["ReadWriteOnce"],
        },
        "strategy": {"type": "Recreate"},  # one ReadWriteOnce volume: never two pods at once
        "serviceMonitor": {
            "enabled": True,
            "namespace": settings.monitoring_namespace,
            "honorLabels": True,
            "additionalLabels": dict(RELEASE_LABELS),
        },
        "automountServiceAccountToken": False,  # it never calls the Kubernetes API
        "securityContext": restricted_pod(fs_group=True),
        "containerSecurityContext": restricted_container(),
        "resources": {
            "requests": {"cpu": "20m", "memory": "32Mi"},
            "limits": {"memory": "128Mi"},
        },
    }


class Pushgateway(pulumi.ComponentResource):
    def __init__(self, name: str, settings: Settings, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("ipa-ops:monitoring:Pushgateway", name, None, opts)
        self.release = k8s.helm.v3.Release(
            f"{name}-release",
            name=RELEASE,
            chart=CHART,
            version=settings.pushgateway_chart_version,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=REPO),
            namespace=settings.monitoring_namespace,
            values=pushgateway_values(settings),
            atomic=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.url = pushgateway_url(settings)
        self.register_outputs({"url": self.url})
