"""Backup and restore-drill CronJobs on AKS, their namespace, ServiceAccount and NetworkPolicies.

Every manifest is built by a pure function from the settings and plain values (image
reference, identity client id, blob endpoint), so tests check them without Pulumi.

Prerequisites in the cluster (docs/operations/disaster-recovery-plan.md): AKS workload identity
enabled, and the Secrets `postgresCredentialsSecret` (keys `username`, `password`) and
`redisCredentialsSecret` (key `password`) present in `backupNamespace`; a Pod can only read
Secrets of its own namespace.
"""

from __future__ import annotations

import math
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.pod_security import restricted_container, restricted_pod
from components.settings import Settings
from components.topology import BACKUP, CRONJOB_NAMES, DRILL, PUSHGATEWAY_PORT, topology
from components.topology import PUSHGATEWAY_POD_LABELS as PUSHGATEWAY_LABELS

APP = "ipa-backup"
UID = 10001  # the image's non-root user; numeric so kubelet can check runAsNonRoot
TMP = "/tmp"
WORK = "/work"
BACKUP_STARTING_DEADLINE_MAX_SECONDS = 300
# pg_dump and redis-cli stream straight to blob storage: small and steady.
BACKUP_RESOURCES = {
    "requests": {"cpu": "250m", "memory": "512Mi", "ephemeral-storage": "256Mi"},
    "limits": {"cpu": "2", "memory": "2Gi", "ephemeral-storage": "2Gi"},
}
# The drill decompresses the dump for pg_restore --jobs and loads the RDB into a local redis-server.
DRILL_RESOURCES = {
    "requests": {"cpu": "500m", "memory": "1Gi", "ephemeral-storage": "256Mi"},
    "limits": {"cpu": "2", "memory": "4Gi", "ephemeral-storage": "2Gi"},
}


def labels(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": component, "app.kubernetes.io/part-of": "ipa-ops"}


def namespace_manifest(settings: Settings) -> dict[str, Any]:
    """Pod Security Standard `restricted`, enforced: a pod spec that drifts from it is refused."""
    pss = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "audit", "warn")}
    pss["pod-security.kubernetes.io/enforce-version"] = "latest"
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": settings.backup_namespace, "labels": {**pss, "app.kubernetes.io/part-of": "ipa-ops"}},
    }


def service_account_manifest(settings: Settings, client_id: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": settings.backup_service_account,
            "namespace": settings.backup_namespace,
            "labels": {"app.kubernetes.io/name": APP, "azure.workload.identity/use": "true"},
            "annotations": {"azure.workload.identity/client-id": client_id},
        },
        # The pods never call the Kubernetes API; the workload identity webhook projects its own token.
        "automountServiceAccountToken": False,
    }


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _in_cluster(host: str) -> bool:
    return host.endswith(".svc") or ".svc." in host


def postgres_env(settings: Settings, database: str) -> list[dict[str, Any]]:
    return [
        {"name": "PGHOST", "value": settings.postgres_host},
        {"name": "PGPORT", "value": str(settings.postgres_port)},
        _secret_env("PGUSER", settings.postgres_credentials_secret, "username"),
        _secret_env("PGPASSWORD", settings.postgres_credentials_secret, "password"),
        {"name": "PGDATABASE", "value": database},
        # A managed (Azure) server outside the cluster is reached over TLS only.
        {"name": "PGSSLMODE", "value": settings.postgres_ssl_mode},
    ]


def redis_env(settings: Settings) -> list[dict[str, Any]]:
    """REDIS_URL carries no password; redis-cli and the tool read it from REDISCLI_AUTH."""
    return [
        {"name": "REDIS_URL", "value": f"redis://{settings.redis_host}:{settings.redis_port}/0"},
        _secret_env("REDISCLI_AUTH", settings.redis_credentials_secret, "password"),
    ]


def storage_env(settings: Settings, blob_account_url: Any) -> list[dict[str, Any]]:
    return [
        {"name": "BACKUP_CONTAINER", "value": settings.backup_container},
        {"name": "BACKUP_BLOB_ACCOUNT_URL", "value": blob_account_url},
        {"name": "PUSHGATEWAY_URL", "value": topology(settings).pushgateway_url},
    ]


def backup_env(settings: Settings, blob_account_url: Any) -> list[dict[str, Any]]:
    # The image points both at /work; in the read-only backup pod only the /tmp emptyDir is writable.
    scratch = [{"name": "BACKUP_WORK_DIR", "value": TMP}, {"name": "TMPDIR", "value": TMP}]
    return postgres_env(settings, settings.postgres_database) + redis_env(settings) + storage_env(settings, blob_account_url) + scratch


def drill_database(settings: Settings) -> str:
    return f"{settings.postgres_database}_restore_drill"


def drill_env(settings: Settings, blob_account_url: Any) -> list[dict[str, Any]]:
    """The drill restores into a scratch database on the same server and a redis-server inside
    the pod, so it needs no Redis credentials at all."""
    return (
        postgres_env(settings, settings.postgres_database)
        + storage_env(settings, blob_account_url)
        + [
            {"name": "DRILL_PGDATABASE", "value": drill_database(settings)},
            {"name": "BACKUP_WORK_DIR", "value": WORK},
            {"name": "TMPDIR", "value": WORK},  # the scratch redis-server and RDB land here too, not in /tmp
        ]
    )


def drill_work_size_gi(settings: Settings) -> int:
    """Scratch space for the decompressed dump and RDB: twice the database, at least 10 Gi."""
    return max(10, math.ceil(settings.production_database_size_gb * 2))


def container_security_context() -> dict[str, Any]:
    return restricted_container(UID)


def pod_spec(settings: Settings, component: str, image: Any, blob_account_url: Any) -> dict[str, Any]:
    """The Job's pod template for `ipa-backup backup` or `ipa-backup drill`."""
    is_drill = component == DRILL
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": TMP}]
    if is_drill:
        # A generic ephemeral volume on the cluster's disk class, deleted with the pod: a
        # production-sized dump doesn't fit the node's ephemeral storage.
        volumes.append(
            {
                "name": "work",
                "ephemeral": {
                    "volumeClaimTemplate": {
                        "metadata": {"labels": labels(component)},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "storageClassName": settings.storage_class,
                            "resources": {"requests": {"storage": f"{drill_work_size_gi(settings)}Gi"}},
                        },
                    }
                },
            }
        )
        mounts.append({"name": "work", "mountPath": WORK})
    return {
        "metadata": {"labels": {**labels(component), "azure.workload.identity/use": "true"}},
        "spec": {
            "serviceAccountName": settings.backup_service_account,
            "automountServiceAccountToken": False,
            "restartPolicy": "Never",
            "securityContext": restricted_pod(UID, fs_group=True),
            "containers": [
                {
                    "name": APP,
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    # No `command`: the image's entry point keeps tini as PID 1 in front of ipa-backup.
                    "args": ["drill" if is_drill else "backup"],
                    "env": drill_env(settings, blob_account_url) if is_drill else backup_env(settings, blob_account_url),
                    "resources": DRILL_RESOURCES if is_drill else BACKUP_RESOURCES,
                    "securityContext": container_security_context(),
                    "volumeMounts": mounts,
                }
            ],
            "volumes": volumes,
        },
    }


def backup_starting_deadline_seconds(settings: Settings) -> int:
    """A late start eats into the RPO slack (rpo - longest gap - deadline); never less than a
    minute, since the CronJob controller may look only every 10 s."""
    slack_seconds = (settings.rpo_target_minutes - settings.backup_longest_gap_minutes - settings.backup_deadline_minutes) * 60
    return max(60, min(BACKUP_STARTING_DEADLINE_MAX_SECONDS, slack_seconds))


def cronjob_manifest(settings: Settings, component: str, image: Any, blob_account_url: Any) -> dict[str, Any]:
    is_drill = component == DRILL
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": CRONJOB_NAMES[component], "namespace": settings.backup_namespace, "labels": labels(component)},
        "spec": {
            "schedule": settings.drill_schedule if is_drill else settings.backup_schedule,
            "timeZone": settings.backup_time_zone,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 3600 if is_drill else backup_starting_deadline_seconds(settings),
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": labels(component)},
                "spec": {
                    # The whole Job (retries included) ends by this deadline: the RPO check counts on it.
                    "activeDeadlineSeconds": (settings.rto_target_minutes if is_drill else settings.backup_deadline_minutes) * 60,
                    "backoffLimit": 1,
                    # Long enough for BackupJobFailed to see a failed Job and for someone to read its logs.
                    "ttlSecondsAfterFinished": 7 * 86400 if is_drill else 86400,
                    "template": pod_spec(settings, component, image, blob_account_url),
                },
            },
        },
    }


def _dest_for(host: str, port: int) -> dict[str, Any]:
    """An egress rule to a server: in-cluster by namespace, elsewhere any address on the port."""
    rule: dict[str, Any] = {"ports": [{"protocol": "TCP", "port": port}]}
    parts = host.split(".")
    if _in_cluster(host) and len(parts) >= 3:
        rule["to"] = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": parts[1]}}}]
    return rule


def network_policies(settings: Settings) -> list[dict[str, Any]]:
    """Default deny for the namespace, then per component only what it needs."""
    ns = settings.backup_namespace
    dns = {
        "to": [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
            }
        ],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }
    # Azure Storage and Entra ID (workload identity token exchange) have no fixed addresses.
    https = {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"protocol": "TCP", "port": 443}]}
    pushgateway = {
        "to": [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": settings.monitoring_namespace}},
                "podSelector": {"matchLabels": dict(PUSHGATEWAY_LABELS)},
            }
        ],
        "ports": [{"protocol": "TCP", "port": PUSHGATEWAY_PORT}],
    }
    postgres = _dest_for(settings.postgres_host, settings.postgres_port)
    redis = _dest_for(settings.redis_host, settings.redis_port)

    def policy(name: str, selector: dict[str, Any], egress: list[dict[str, Any]] | None) -> dict[str, Any]:
        spec: dict[str, Any] = {"podSelector": selector, "policyTypes": ["Ingress", "Egress"]}
        if egress is not None:
            spec["egress"] = egress
        spec["ingress"] = []
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns, "labels": {"app.kubernetes.io/part-of": "ipa-ops"}},
            "spec": spec,
        }

    return [
        policy("default-deny-all", {}, None),
        policy(
            f"{CRONJOB_NAMES[BACKUP]}-egress",
            {"matchLabels": {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": BACKUP}},
            [dns, postgres, redis, https, pushgateway],
        ),
        policy(
            f"{CRONJOB_NAMES[DRILL]}-egress",
            {"matchLabels": {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": DRILL}},
            [dns, postgres, https, pushgateway],
        ),
    ]


class BackupSchedule(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        settings: Settings,
        image: pulumi.Input[str],
        client_id: pulumi.Input[str],
        blob_account_url: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("ipa-ops:backup:BackupSchedule", name, None, opts)
        manifest = namespace_manifest(settings)
        namespace = k8s.core.v1.Namespace(f"{name}-namespace", metadata=manifest["metadata"], opts=pulumi.ResourceOptions(parent=self))
        in_ns = pulumi.ResourceOptions(parent=self, depends_on=[namespace])
        sa = service_account_manifest(settings, client_id)
        account = k8s.core.v1.ServiceAccount(
            f"{name}-service-account",
            metadata=sa["metadata"],
            automount_service_account_token=sa["automountServiceAccountToken"],
            opts=in_ns,
        )
        for policy in network_policies(settings):
            k8s.networking.v1.NetworkPolicy(
                f"{name}-{policy['metadata']['name']}", metadata=policy["metadata"], spec=policy["spec"], opts=in_ns
            )
        after_sa = pulumi.ResourceOptions(parent=self, depends_on=[namespace, account])
        for component in (BACKUP, DRILL):
            cron = cronjob_manifest(settings, component, image, blob_account_url)
            k8s.batch.v1.CronJob(f"{name}-{CRONJOB_NAMES[component]}", metadata=cron["metadata"], spec=cron["spec"], opts=after_sa)
        self.register_outputs({"namespace": settings.backup_namespace})
