"""What Prometheus scrapes beyond the chart's defaults, as pure functions of the settings:
the ipa-backend PodMonitor and the Helm values of the PostgreSQL and Redis exporters.

The exporters run in the monitoring namespace and read the credentials from the existing
Secrets named in the settings (a pod can only read Secrets of its own namespace, so those
Secrets must exist in the monitoring namespace too; docs/monitoring/architecture.md).
"""

from __future__ import annotations

from typing import Any

from components.chart_images import pinned
from components.exporter_credentials import POSTGRES, credential_dir, credential_file, credential_volumes
from components.pod_security import restricted_container, restricted_pod
from components.settings import Settings
from components.topology import BACKEND_APP as BACKEND_APP_LABEL
from components.topology import BACKEND_JOB, POSTGRES_EXPORTER_RELEASE, REDIS_EXPORTER_RELEASE, RELEASE_LABELS

SCRAPE_INTERVAL = "30s"

POSTGRES_EXPORTER = POSTGRES_EXPORTER_RELEASE  # chart name = release name = job label
REDIS_EXPORTER = REDIS_EXPORTER_RELEASE
POSTGRES_CREDENTIALS_DIR = credential_dir(POSTGRES)

POD_SECURITY_CONTEXT = restricted_pod()
CONTAINER_SECURITY_CONTEXT = restricted_container()


def backend_pod_monitor(settings: Settings) -> dict[str, Any]:
    """The PodMonitor manifest (without metadata.name/namespace) selecting app=ipa-backend pods.

    `jobLabel: app` makes the job the pods' `app` label value; the relabeling pins it to
    "ipa-backend" even if that label ever changes. The operator adds namespace, pod and container.
    """
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"labels": {**RELEASE_LABELS, "app.kubernetes.io/part-of": "ipa-ops"}},
        "spec": {
            "jobLabel": "app",
            "namespaceSelector": {"matchNames": [settings.backend_namespace]},
            "selector": {"matchLabels": {"app": BACKEND_APP_LABEL}},
            "podMetricsEndpoints": [
                {
                    "port": settings.backend_metrics_port,
                    "path": settings.backend_metrics_path,
                    "interval": SCRAPE_INTERVAL,
                    "relabelings": [{"action": "replace", "targetLabel": "job", "replacement": BACKEND_JOB}],
                }
            ],
        },
    }


def _service_monitor() -> dict[str, Any]:
    return {"enabled": True, "labels": dict(RELEASE_LABELS), "interval": SCRAPE_INTERVAL}


def postgres_exporter_values(settings: Settings) -> dict[str, Any]:
    """prometheus-postgres-exporter values: user and password read from files of the mounted Secret
    (with a Key Vault, the pod's CSI volume syncs that Secret first: components/exporter_credentials.py)."""
    volumes, mounts = credential_volumes(settings, (POSTGRES,))
    values: dict[str, Any] = {
        "serviceMonitor": _service_monitor(),
        "config": {
            "datasource": {
                "host": settings.postgres_host,
                "port": str(settings.postgres_port),
                "database": settings.postgres_database,
                "sslmode": settings.postgres_ssl_mode,
                "userFile": credential_file(POSTGRES, "username"),
                "passwordFile": credential_file(POSTGRES, "password"),
            },
        },
        "extraVolumes": volumes,
        "extraVolumeMounts": mounts,
        # fsGroup: the Secret's files are readable by the pod's group only.
        "podSecurityContext": restricted_pod(fs_group=True),
        "securityContext": CONTAINER_SECURITY_CONTEXT,
        "resources": settings.resources("postgresExporter"),
    }
    return pinned(settings.chart_images, POSTGRES_EXPORTER, values)


def redis_exporter_values(settings: Settings) -> dict[str, Any]:
    """prometheus-redis-exporter values. The password comes from the Secret by secretKeyRef:
    the exporter's password *file* option expects a JSON map of addresses, not a plain password."""
    values: dict[str, Any] = {
        "redisAddress": f"redis://{settings.redis_host}:{settings.redis_port}",
        "auth": {
            "enabled": True,
            "secret": {"name": settings.redis_credentials_secret, "key": "password"},
        },
        "serviceMonitor": _service_monitor(),
        "podSecurityContext": POD_SECURITY_CONTEXT,
        "securityContext": CONTAINER_SECURITY_CONTEXT,
        "resources": settings.resources("redisExporter"),
    }
    return pinned(settings.chart_images, REDIS_EXPORTER, values)
