"""Point-in-time recovery of PostgreSQL on AKS: the WAL stream Deployment, its spool volume, its
PodMonitor and NetworkPolicy, and the base backup CronJob (only with `pitrEnabled`).

`ipa-backup wal-stream` runs `pg_receivewal` through the replication slot `WAL_SLOT` into the spool
volume and uploads what it received; `ipa-backup base-backup` runs `pg_basebackup` with its
`backup_manifest`, checks it with `pg_verifybackup` and uploads it. Both run in the backup namespace
as the backup ServiceAccount (the one BackupSchedule creates and the managed identity trusts), so the
storage, identity and network rules of the logical backups apply unchanged.

Every manifest is built by a pure function from `WalStreamArgs` and `Upstream`, so tests check them
without Pulumi. The server needs a user with the REPLICATION attribute and `max_slot_wal_keep_size`
(docs/operations/disaster-recovery-plan.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.args import args_from_settings
from components.backup_schedule import BACKUP_RESOURCES, Upstream, postgres_env, storage_env
from components.exporter_credentials import POSTGRES, credential_volumes
from components.network_policies import policy_peer
from components.pod_security import restricted_container, restricted_pod
from components.settings import Settings
from components.topology import (
    ANYWHERE,
    BASE_BACKUP,
    CRONJOB_NAMES,
    KUBE_DNS_NAMESPACE,
    KUBE_DNS_POD_LABELS,
    PROMETHEUS_POD_LABELS,
    PUSHGATEWAY_POD_LABELS,
    PUSHGATEWAY_PORT,
    RELEASE_LABELS,
    WAL_METRICS_PORT,
    WAL_METRICS_PORT_NAME,
    WAL_SLOT,
    WAL_STREAM,
    WAL_STREAM_JOB,
    WAL_STREAM_POD_LABELS,
    WAL_STREAM_PVC,
    Peer,
    server_peer,
)

CONTAINER = "ipa-backup"
UID = 10001  # the image's non-root user
TMP = "/tmp"
WORK = "/work"
SPOOL = "/var/lib/ipa-wal"
SCRAPE_INTERVAL = "30s"
PART_OF = {"app.kubernetes.io/part-of": "ipa-ops"}
BASE_BACKUP_POD_LABELS = {"app.kubernetes.io/name": "ipa-backup", "app.kubernetes.io/component": BASE_BACKUP}
# pg_receivewal and the uploader: small and steady.
WAL_STREAM_RESOURCES = {
    "requests": {"cpu": "50m", "memory": "128Mi", "ephemeral-storage": "64Mi"},
    "limits": {"cpu": "1", "memory": "512Mi", "ephemeral-storage": "1Gi"},
}
# pg_basebackup writes the backup to the work volume for pg_verifybackup, then compresses and uploads it:
# the logical backup's compressing and uploading budget.
BASE_BACKUP_RESOURCES = BACKUP_RESOURCES


@dataclass(frozen=True)
class WalStreamArgs:
    """The settings the WAL stream and the base backups read."""

    backup_namespace: str
    backup_service_account: str
    monitoring_namespace: str  # Prometheus (scrapes the stream) and the Pushgateway (base backup results)
    postgres_host: str
    postgres_port: int
    postgres_database: str
    postgres_ssl_mode: str
    postgres_credentials_secret: str
    redis_credentials_secret: str  # unused here; part of what the credential builders read
    credentials_key_vault_id: str  # with a Key Vault, the pods' CSI volume syncs the Secret
    storage_class: str
    wal_stream_storage_size: str
    wal_partial_upload_seconds: int
    base_backup_schedule: str
    base_backup_deadline_minutes: int
    backup_time_zone: str
    production_database_size_gb: float

    @classmethod
    def from_settings(cls, settings: Settings) -> WalStreamArgs:
        return args_from_settings(cls, settings)


def _labels(pod_labels: dict[str, str]) -> dict[str, str]:
    return {**pod_labels, **PART_OF}


def wal_stream_env(args: WalStreamArgs, upstream: Upstream) -> list[dict[str, Any]]:
    # The user needs the REPLICATION attribute; pg_receivewal and pg_basebackup connect with replication=true.
    return (
        postgres_env(args, args.postgres_database)
        + storage_env(upstream, push=False)  # it serves its metrics; Prometheus scrapes them
        + [
            {"name": "WAL_SPOOL_DIR", "value": SPOOL},
            {"name": "WAL_SLOT", "value": WAL_SLOT},
            {"name": "WAL_PARTIAL_UPLOAD_SECONDS", "value": str(args.wal_partial_upload_seconds)},
            {"name": "METRICS_PORT", "value": str(WAL_METRICS_PORT)},
            {"name": "TMPDIR", "value": TMP},
        ]
    )


def base_backup_env(args: WalStreamArgs, upstream: Upstream) -> list[dict[str, Any]]:
    return (
        postgres_env(args, args.postgres_database)
        + storage_env(upstream)
        + [
            {"name": "BACKUP_WORK_DIR", "value": WORK},
            {"name": "TMPDIR", "value": WORK},
        ]
    )


def base_backup_work_size_gi(args: WalStreamArgs) -> int:
    """The uncompressed base backup (the data directory plus its WAL) for pg_verifybackup: 1.5 times the
    database, at least 10 Gi."""
    return max(10, math.ceil(args.production_database_size_gb * 1.5))


def _container(
    image: Any, args: list[str], env: list[dict[str, Any]], resources: dict[str, Any], mounts: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        # No `command`: the image's entry point keeps tini as PID 1 in front of ipa-backup.
        "args": args,
        "env": env,
        "resources": resources,
        "securityContext": restricted_container(UID),
        "volumeMounts": mounts,
    }


def spool_claim(args: WalStreamArgs) -> dict[str, Any]:
    """The spool: WAL received and not yet uploaded survives a pod restart (the slot covers the rest)."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": WAL_STREAM_PVC, "namespace": args.backup_namespace, "labels": _labels(WAL_STREAM_POD_LABELS)},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": args.storage_class,
            "resources": {"requests": {"storage": args.wal_stream_storage_size}},
        },
    }


def deployment(args: WalStreamArgs, upstream: Upstream) -> dict[str, Any]:
    # The password as a file readable by the pod's group (fsGroup), never an environment variable.
    secret_volumes, secret_mounts = credential_volumes(args, (POSTGRES,))
    container = _container(
        upstream.image,
        ["wal-stream"],
        wal_stream_env(args, upstream),
        WAL_STREAM_RESOURCES,
        [{"name": "spool", "mountPath": SPOOL}, {"name": "tmp", "mountPath": TMP}, *secret_mounts],
    )
    container["ports"] = [{"name": WAL_METRICS_PORT_NAME, "containerPort": WAL_METRICS_PORT, "protocol": "TCP"}]
    # Restarts a receiver that no longer answers at all; a lost connection is the tool's to retry
    # (it reports ipa_wal_stream_up 0 meanwhile, and WalStreamDown fires).
    container["livenessProbe"] = {
        "httpGet": {"path": "/metrics", "port": WAL_METRICS_PORT_NAME},
        "initialDelaySeconds": 30,
        "periodSeconds": 30,
        "timeoutSeconds": 5,
        "failureThreshold": 4,
    }
    # Ready once it serves its metrics: a rollout (Recreate) reports the new receiver as up only then.
    container["readinessProbe"] = {"httpGet": {"path": "/metrics", "port": WAL_METRICS_PORT_NAME}, "periodSeconds": 10}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": WAL_STREAM, "namespace": args.backup_namespace, "labels": _labels(WAL_STREAM_POD_LABELS)},
        "spec": {
            "replicas": 1,
            # Never two receivers at once: the old pod releases the slot (and the ReadWriteOnce spool)
            # before the new one starts.
            "strategy": {"type": "Recreate"},
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": dict(WAL_STREAM_POD_LABELS)},
            "template": {
                "metadata": {"labels": {**_labels(WAL_STREAM_POD_LABELS), "azure.workload.identity/use": "true"}},
                "spec": {
                    "serviceAccountName": args.backup_service_account,
                    "automountServiceAccountToken": False,
                    "securityContext": restricted_pod(UID, fs_group=True),
                    # Time to upload the partial segment after SIGTERM.
                    "terminationGracePeriodSeconds": 60,
                    "containers": [container],
                    "volumes": [
                        {"name": "spool", "persistentVolumeClaim": {"claimName": WAL_STREAM_PVC}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
                        *secret_volumes,
                    ],
                },
            },
        },
    }


def pod_monitor(args: WalStreamArgs) -> dict[str, Any]:
    """Selected by the chart's Prometheus through the release label, like the ipa-backend PodMonitor;
    the job label is pinned to the Deployment's name."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": WAL_STREAM, "namespace": args.monitoring_namespace, "labels": {**RELEASE_LABELS, **PART_OF}},
        "spec": {
            "namespaceSelector": {"matchNames": [args.backup_namespace]},
            "selector": {"matchLabels": dict(WAL_STREAM_POD_LABELS)},
            "podMetricsEndpoints": [
                {
                    "port": WAL_METRICS_PORT_NAME,
                    "path": "/metrics",
                    "interval": SCRAPE_INTERVAL,
                    "relabelings": [{"action": "replace", "targetLabel": "job", "replacement": WAL_STREAM_JOB}],
                }
            ],
        },
    }


def base_backup_cronjob(args: WalStreamArgs, upstream: Upstream) -> dict[str, Any]:
    labels = _labels(BASE_BACKUP_POD_LABELS)
    secret_volumes, secret_mounts = credential_volumes(args, (POSTGRES,))
    pod = {
        "metadata": {"labels": {**labels, "azure.workload.identity/use": "true"}},
        "spec": {
            "serviceAccountName": args.backup_service_account,
            "automountServiceAccountToken": False,
            "restartPolicy": "Never",
            "securityContext": restricted_pod(UID, fs_group=True),
            "containers": [
                _container(
                    upstream.image,
                    ["base-backup"],
                    base_backup_env(args, upstream),
                    BASE_BACKUP_RESOURCES,
                    [{"name": "work", "mountPath": WORK}, *secret_mounts],
                )
            ],
            "volumes": [
                *secret_volumes,
                {
                    # A generic ephemeral volume on the cluster's disk class, deleted with the pod.
                    "name": "work",
                    "ephemeral": {
                        "volumeClaimTemplate": {
                            "metadata": {"labels": labels},
                            "spec": {
                                "accessModes": ["ReadWriteOnce"],
                                "storageClassName": args.storage_class,
                                "resources": {"requests": {"storage": f"{base_backup_work_size_gi(args)}Gi"}},
                            },
                        }
                    },
                },
            ],
        },
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": CRONJOB_NAMES[BASE_BACKUP], "namespace": args.backup_namespace, "labels": labels},
        "spec": {
            "schedule": args.base_backup_schedule,
            "timeZone": args.backup_time_zone,
            "concurrencyPolicy": "Forbid",
            # A late base backup beats a skipped day; BaseBackupTooOld counts the deadline in.
            "startingDeadlineSeconds": 3600,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": labels},
                "spec": {
                    "activeDeadlineSeconds": args.base_backup_deadline_minutes * 60,
                    "backoffLimit": 1,
                    # Long enough for BackupJobFailed (topology.BACKUP_JOBS_REGEX) to see a failed Job.
                    "ttlSecondsAfterFinished": 86400,
                    "template": pod,
                },
            },
        },
    }


def _rule(peer: Peer, ports: list[tuple[str, int]]) -> dict[str, Any]:
    return {"to": [policy_peer(peer)], "ports": [{"protocol": protocol, "port": port} for protocol, port in ports]}


def network_policies(args: WalStreamArgs) -> list[dict[str, Any]]:
    """The backup namespace denies everything by default (BackupSchedule); these let the stream and the
    base backup reach DNS, PostgreSQL and Azure (storage, Entra ID), the base backup the Pushgateway,
    and Prometheus the stream's metrics port."""
    dns = _rule(Peer(namespace=KUBE_DNS_NAMESPACE, pod_labels=dict(KUBE_DNS_POD_LABELS)), [("UDP", 53), ("TCP", 53)])
    postgres = _rule(server_peer(args.postgres_host), [("TCP", args.postgres_port)])
    https = _rule(Peer(cidr=ANYWHERE), [("TCP", 443)])  # Azure Storage and Entra ID have no fixed addresses
    pushgateway = _rule(Peer(namespace=args.monitoring_namespace, pod_labels=dict(PUSHGATEWAY_POD_LABELS)), [("TCP", PUSHGATEWAY_PORT)])
    prometheus = Peer(namespace=args.monitoring_namespace, pod_labels=dict(PROMETHEUS_POD_LABELS))

    def policy(name: str, pods: dict[str, str], egress: list[dict[str, Any]], ingress: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": args.backup_namespace, "labels": dict(PART_OF)},
            "spec": {
                "podSelector": {"matchLabels": dict(pods)},
                "policyTypes": ["Ingress", "Egress"],
                "egress": egress,
                "ingress": ingress,
            },
        }

    scrape = {"from": [policy_peer(prometheus)], "ports": [{"protocol": "TCP", "port": WAL_METRICS_PORT}]}
    return [
        policy(WAL_STREAM, WAL_STREAM_POD_LABELS, [dns, postgres, https], [scrape]),
        policy(f"{CRONJOB_NAMES[BASE_BACKUP]}-egress", BASE_BACKUP_POD_LABELS, [dns, postgres, https, pushgateway], []),
    ]


class WalStream(pulumi.ComponentResource):
    """The WAL stream and base backups, in the backup namespace. The caller makes it depend on
    BackupSchedule (namespace, ServiceAccount, default deny) and on the monitoring stack (PodMonitor CRD)."""

    def __init__(
        self,
        name: str,
        args: WalStreamArgs,
        *,
        image: pulumi.Input[str],
        blob_account_url: pulumi.Input[str],
        container: pulumi.Input[str],
        pushgateway_url: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("ipa-ops:backup:WalStream", name, None, opts)
        upstream = Upstream(image=image, blob_account_url=blob_account_url, container=container, pushgateway_url=pushgateway_url)
        child = pulumi.ResourceOptions(parent=self)
        for policy in network_policies(args):
            k8s.networking.v1.NetworkPolicy(
                f"{name}-{policy['metadata']['name']}", metadata=policy["metadata"], spec=policy["spec"], opts=child
            )
        claim = spool_claim(args)
        # No depends_on between the two: a WaitForFirstConsumer claim binds only once the pod exists.
        k8s.core.v1.PersistentVolumeClaim(f"{name}-{WAL_STREAM_PVC}", metadata=claim["metadata"], spec=claim["spec"], opts=child)
        stream = deployment(args, upstream)
        k8s.apps.v1.Deployment(f"{name}-deployment", metadata=stream["metadata"], spec=stream["spec"], opts=child)
        monitor = pod_monitor(args)
        k8s.apiextensions.CustomResource(
            f"{name}-pod-monitor",
            api_version=monitor["apiVersion"],
            kind=monitor["kind"],
            metadata=monitor["metadata"],
            spec=monitor["spec"],
            opts=child,
        )
        cron = base_backup_cronjob(args, upstream)
        k8s.batch.v1.CronJob(f"{name}-{CRONJOB_NAMES[BASE_BACKUP]}", metadata=cron["metadata"], spec=cron["spec"], opts=child)
        self.register_outputs({"deployment": WAL_STREAM, "cronjob": CRONJOB_NAMES[BASE_BACKUP]})
