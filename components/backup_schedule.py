"""Backup and restore-drill CronJobs on AKS, their namespace, ServiceAccount and NetworkPolicies.

Every manifest is built by a pure function from `BackupScheduleArgs` (the settings it reads)
and `Upstream` (the other components' outputs: image reference, blob endpoint and container,
Pushgateway URL), so tests check them without Pulumi.

Prerequisites in the cluster (docs/operations/disaster-recovery-plan.md): AKS workload identity
enabled, and the Secrets `postgresCredentialsSecret` (keys `username`, `password`) and
`redisCredentialsSecret` (key `password`) present in `backupNamespace`; a Pod can only read
Secrets of its own namespace.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import pulumi
import pulumi_kubernetes as k8s

from components.args import args_from_settings
from components.exporter_credentials import POSTGRES, REDIS, CredentialSettings, credential_file, credential_volumes
from components.pod_security import restricted_container, restricted_pod
from components.settings import Settings
from components.topology import BACKUP, BACKUP_APP, CRONJOB_NAMES, DRILL, PUSHGATEWAY_PORT
from components.topology import PUSHGATEWAY_POD_LABELS as PUSHGATEWAY_LABELS

APP = BACKUP_APP
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


@dataclass(frozen=True)
class BackupScheduleArgs:
    """The settings the CronJobs, their namespace, ServiceAccount and NetworkPolicies read."""

    backup_namespace: str
    backup_service_account: str
    monitoring_namespace: str  # where the Pushgateway runs: the egress policies let the Jobs reach it
    postgres_host: str
    postgres_port: int
    postgres_database: str
    postgres_ssl_mode: str
    postgres_credentials_secret: str
    redis_host: str
    redis_port: int
    redis_credentials_secret: str
    credentials_key_vault_id: str  # with a Key Vault, the pods' CSI volume syncs the two Secrets
    backup_schedule: str
    drill_schedule: str
    backup_time_zone: str
    backup_deadline_minutes: int
    backup_longest_gap_minutes: int
    rpo_target_minutes: int
    rto_target_minutes: int
    storage_class: str
    production_database_size_gb: float
    pitr_enabled: bool
    wal_partial_upload_seconds: int  # the drill's PITR part waits for the stream's next upload
    frequent_backup_targets: tuple[str, ...]  # what every run takes; the first set of a UTC day or ISO week takes both

    @classmethod
    def from_settings(cls, settings: Settings) -> BackupScheduleArgs:
        return args_from_settings(
            cls,
            settings,
            backup_longest_gap_minutes=settings.backup_longest_gap_minutes,
            frequent_backup_targets=settings.frequent_backup_targets,
        )


@dataclass(frozen=True)
class Upstream:
    """What the Jobs take from the other components' outputs."""

    image: pulumi.Input[str]  # BackupImage.ref
    blob_account_url: pulumi.Input[str]  # BackupStorage.blob_endpoint
    container: pulumi.Input[str]  # BackupStorage.container_name
    pushgateway_url: pulumi.Input[str]  # Pushgateway.url


def labels(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": component, "app.kubernetes.io/part-of": "ipa-ops"}


def namespace_manifest(args: BackupScheduleArgs) -> dict[str, Any]:
    """Pod Security Standard `restricted`, enforced: a pod spec that drifts from it is refused."""
    pss = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "audit", "warn")}
    pss["pod-security.kubernetes.io/enforce-version"] = "latest"
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": args.backup_namespace, "labels": {**pss, "app.kubernetes.io/part-of": "ipa-ops"}},
    }


def service_account_manifest(args: BackupScheduleArgs, client_id: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": args.backup_service_account,
            "namespace": args.backup_namespace,
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


class PostgresClient(CredentialSettings, Protocol):
    """What a pod that connects to PostgreSQL reads: BackupScheduleArgs and WalStreamArgs."""

    @property
    def postgres_host(self) -> str: ...
    @property
    def postgres_port(self) -> int: ...
    @property
    def postgres_ssl_mode(self) -> str: ...


def postgres_env(args: PostgresClient, database: str) -> list[dict[str, Any]]:
    return [
        {"name": "PGHOST", "value": args.postgres_host},
        {"name": "PGPORT", "value": str(args.postgres_port)},
        _secret_env("PGUSER", args.postgres_credentials_secret, "username"),
        # A file, not an environment variable: the tool hands it to libpq as a private PGPASSFILE.
        {"name": "PGPASSWORD_FILE", "value": credential_file(POSTGRES, "password")},
        {"name": "PGDATABASE", "value": database},
        # A managed (Azure) server outside the cluster is reached over TLS only.
        {"name": "PGSSLMODE", "value": args.postgres_ssl_mode},
    ]


def redis_env(args: BackupScheduleArgs) -> list[dict[str, Any]]:
    """REDIS_URL carries no password; the tool reads it from the mounted Secret's file."""
    return [
        {"name": "REDIS_URL", "value": f"redis://{args.redis_host}:{args.redis_port}/0"},
        {"name": "REDIS_PASSWORD_FILE", "value": credential_file(REDIS, "password")},
    ]


def storage_env(upstream: Upstream, *, push: bool = True) -> list[dict[str, Any]]:
    """The container, its endpoint (workload identity, no key) and, for Jobs that push results, the Pushgateway."""
    env = [
        {"name": "BACKUP_CONTAINER", "value": upstream.container},
        {"name": "BACKUP_BLOB_ACCOUNT_URL", "value": upstream.blob_account_url},
    ]
    return env + ([{"name": "PUSHGATEWAY_URL", "value": upstream.pushgateway_url}] if push else [])


def backup_env(args: BackupScheduleArgs, upstream: Upstream) -> list[dict[str, Any]]:
    # The image points both at /work; in the read-only backup pod only the /tmp emptyDir is writable.
    scratch = [{"name": "BACKUP_WORK_DIR", "value": TMP}, {"name": "TMPDIR", "value": TMP}]
    # With PITR the WAL stream carries PostgreSQL's RPO: its logical dumps shrink to the daily and weekly sets.
    targets = [{"name": "BACKUP_FREQUENT_TARGETS", "value": ",".join(args.frequent_backup_targets)}] if args.pitr_enabled else []
    return postgres_env(args, args.postgres_database) + redis_env(args) + storage_env(upstream) + scratch + targets


def drill_database(args: BackupScheduleArgs) -> str:
    return f"{args.postgres_database}_restore_drill"


def drill_env(args: BackupScheduleArgs, upstream: Upstream) -> list[dict[str, Any]]:
    """The drill restores into a scratch database on the same server and a redis-server inside
    the pod, so it needs no Redis credentials at all."""
    return (
        postgres_env(args, args.postgres_database)
        + storage_env(upstream)
        + [
            {"name": "DRILL_PGDATABASE", "value": drill_database(args)},
            {"name": "BACKUP_WORK_DIR", "value": WORK},
            {"name": "TMPDIR", "value": WORK},  # the scratch redis-server and RDB land here too, not in /tmp
        ]
        + ([{"name": "WAL_PARTIAL_UPLOAD_SECONDS", "value": str(args.wal_partial_upload_seconds)}] if args.pitr_enabled else [])
    )


def drill_work_size_gi(args: BackupScheduleArgs) -> int:
    """Scratch space for the decompressed dump and RDB: twice the database, at least 10 Gi; with PITR,
    2.5 times, for the base backup's archive beside the data directory it recovers."""
    return max(10, math.ceil(args.production_database_size_gb * (2.5 if args.pitr_enabled else 2)))


def container_security_context() -> dict[str, Any]:
    return restricted_container(UID)


def pod_spec(args: BackupScheduleArgs, component: str, upstream: Upstream) -> dict[str, Any]:
    """The Job's pod template for `ipa-backup backup` or `ipa-backup drill`."""
    is_drill = component == DRILL
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": TMP}]
    # The credentials as files readable by the pod's group (fsGroup), never environment variables.
    secret_volumes, secret_mounts = credential_volumes(args, (POSTGRES,) if is_drill else (POSTGRES, REDIS))
    volumes += secret_volumes
    mounts += secret_mounts
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
                            "storageClassName": args.storage_class,
                            "resources": {"requests": {"storage": f"{drill_work_size_gi(args)}Gi"}},
                        },
                    }
                },
            }
        )
        mounts.append({"name": "work", "mountPath": WORK})
    return {
        "metadata": {"labels": {**labels(component), "azure.workload.identity/use": "true"}},
        "spec": {
            "serviceAccountName": args.backup_service_account,
            "automountServiceAccountToken": False,
            "restartPolicy": "Never",
            "securityContext": restricted_pod(UID, fs_group=True),
            "containers": [
                {
                    "name": APP,
                    "image": upstream.image,
                    "imagePullPolicy": "IfNotPresent",
                    # No `command`: the image's entry point keeps tini as PID 1 in front of ipa-backup.
                    "args": ["drill" if is_drill else "backup"],
                    "env": drill_env(args, upstream) if is_drill else backup_env(args, upstream),
                    "resources": DRILL_RESOURCES if is_drill else BACKUP_RESOURCES,
                    "securityContext": container_security_context(),
                    "volumeMounts": mounts,
                }
            ],
            "volumes": volumes,
        },
    }


def backup_starting_deadline_seconds(args: BackupScheduleArgs) -> int:
    """A late start eats into the RPO slack (rpo - longest gap - deadline); never less than a
    minute, since the CronJob controller may look only every 10 s."""
    slack_seconds = (args.rpo_target_minutes - args.backup_longest_gap_minutes - args.backup_deadline_minutes) * 60
    return max(60, min(BACKUP_STARTING_DEADLINE_MAX_SECONDS, slack_seconds))


def cronjob_manifest(args: BackupScheduleArgs, component: str, upstream: Upstream) -> dict[str, Any]:
    is_drill = component == DRILL
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": CRONJOB_NAMES[component], "namespace": args.backup_namespace, "labels": labels(component)},
        "spec": {
            "schedule": args.drill_schedule if is_drill else args.backup_schedule,
            "timeZone": args.backup_time_zone,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 3600 if is_drill else backup_starting_deadline_seconds(args),
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": labels(component)},
                "spec": {
                    # The whole Job (retries included) ends by this deadline: the RPO check counts on it.
                    "activeDeadlineSeconds": (args.rto_target_minutes if is_drill else args.backup_deadline_minutes) * 60,
                    "backoffLimit": 1,
                    # Long enough for BackupJobFailed to see a failed Job and for someone to read its logs.
                    "ttlSecondsAfterFinished": 7 * 86400 if is_drill else 86400,
                    "template": pod_spec(args, component, upstream),
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


def network_policies(args: BackupScheduleArgs) -> list[dict[str, Any]]:
    """Default deny for the namespace, then per component only what it needs."""
    ns = args.backup_namespace
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
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": args.monitoring_namespace}},
                "podSelector": {"matchLabels": dict(PUSHGATEWAY_LABELS)},
            }
        ],
        "ports": [{"protocol": "TCP", "port": PUSHGATEWAY_PORT}],
    }
    postgres = _dest_for(args.postgres_host, args.postgres_port)
    redis = _dest_for(args.redis_host, args.redis_port)

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
    """The backup and restore-drill CronJobs, run as the identity `client_id` names, writing to
    the storage container and pushing their results to the Pushgateway."""

    def __init__(
        self,
        name: str,
        args: BackupScheduleArgs,
        *,
        image: pulumi.Input[str],
        client_id: pulumi.Input[str],
        blob_account_url: pulumi.Input[str],
        container: pulumi.Input[str],
        pushgateway_url: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("ipa-ops:backup:BackupSchedule", name, None, opts)
        upstream = Upstream(image=image, blob_account_url=blob_account_url, container=container, pushgateway_url=pushgateway_url)
        manifest = namespace_manifest(args)
        namespace = k8s.core.v1.Namespace(f"{name}-namespace", metadata=manifest["metadata"], opts=pulumi.ResourceOptions(parent=self))
        in_ns = pulumi.ResourceOptions(parent=self, depends_on=[namespace])
        sa = service_account_manifest(args, client_id)
        account = k8s.core.v1.ServiceAccount(
            f"{name}-service-account",
            metadata=sa["metadata"],
            automount_service_account_token=sa["automountServiceAccountToken"],
            opts=in_ns,
        )
        for policy in network_policies(args):
            k8s.networking.v1.NetworkPolicy(
                f"{name}-{policy['metadata']['name']}", metadata=policy["metadata"], spec=policy["spec"], opts=in_ns
            )
        after_sa = pulumi.ResourceOptions(parent=self, depends_on=[namespace, account])
        for component in (BACKUP, DRILL):
            cron = cronjob_manifest(args, component, upstream)
            k8s.batch.v1.CronJob(f"{name}-{CRONJOB_NAMES[component]}", metadata=cron["metadata"], spec=cron["spec"], opts=after_sa)
        self.register_outputs({"namespace": args.backup_namespace})
