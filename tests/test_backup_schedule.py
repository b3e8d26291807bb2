"""Backup and drill CronJobs, namespace, ServiceAccount and NetworkPolicies: pure functions, the
component alone under mocks (its upstream outputs given as plain values), the program's wiring of
those outputs, the RPO check of the settings, and the Kubernetes schema of the rendered manifests."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from components.backup_schedule import (
    BackupSchedule,
    BackupScheduleArgs,
    Upstream,
    backup_starting_deadline_seconds,
    cronjob_manifest,
    drill_work_size_gi,
    network_policies,
    pod_spec,
)
from components.exporter_credentials import POSTGRES, REDIS, credential_file
from components.settings import SettingsError, load_settings
from components.topology import BACKUP, BASE_BACKUP, CRONJOB_NAMES, DRILL, WAL_STREAM, WAL_STREAM_PVC, pushgateway_url
from offline.runner import Run
from tests.conftest import RunStack, stack_settings

CRONJOB = "kubernetes:batch/v1:CronJob"
NAMESPACE = "kubernetes:core/v1:Namespace"
SERVICE_ACCOUNT = "kubernetes:core/v1:ServiceAccount"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
COMPONENT = "ipa-ops:backup:BackupSchedule"
SECRET_ENV = {"PGUSER"}  # passwords are files (tests/test_hardening.py), never environment variables
IMAGE = "ipaopsacr.azurecr.io/ipa-backup@sha256:" + "a" * 64
BLOB = "https://acct.blob.core.windows.net/"
CONTAINER = "backup-sets"
CLIENT_ID = "11111111-2222-4333-8444-555555555555"
PUSHGATEWAY_URL = "http://pushgateway.example.svc:9091"
UPSTREAM = Upstream(image=IMAGE, blob_account_url=BLOB, container=CONTAINER, pushgateway_url=PUSHGATEWAY_URL)
AKS_VERSION = "1.32.0"  # oldest AKS minor the manifests must load on
BACKUP_CRONJOB = CRONJOB_NAMES[BACKUP]
DRILL_CRONJOB = CRONJOB_NAMES[DRILL]


def schedule_args(stack: str, overrides: dict[str, Any] | None = None) -> BackupScheduleArgs:
    return BackupScheduleArgs.from_settings(stack_settings(stack, overrides))


def schedule_only() -> None:
    """The component alone, as __main__.py declares it, with its upstream outputs as plain values."""
    BackupSchedule(
        "backup-schedule",
        BackupScheduleArgs.from_settings(load_settings()),
        image=IMAGE,
        client_id=CLIENT_ID,
        blob_account_url=BLOB,
        container=CONTAINER,
        pushgateway_url=PUSHGATEWAY_URL,
    )


def run_schedule(run_stack: RunStack, stack: str) -> Run:
    return run_stack(stack, program=schedule_only)


def _cronjob(run: Run, name: str) -> dict[str, Any]:
    found = [r.inputs for r in run.of_type(CRONJOB) if r.inputs["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one CronJob {name}"
    return found[0]


def _container(cron: dict[str, Any]) -> dict[str, Any]:
    containers = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container["env"]}


def restricted_violations(template: dict[str, Any]) -> list[str]:
    """The Pod Security Standard `restricted` rules that apply to these pods."""
    spec = template["spec"]
    problems = []
    pod_ctx = spec.get("securityContext", {})
    if pod_ctx.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append("pod seccompProfile")
    for c in spec["containers"]:
        ctx = c.get("securityContext", {})
        if not (ctx.get("runAsNonRoot") or pod_ctx.get("runAsNonRoot")):
            problems.append(f"{c['name']}: runAsNonRoot")
        if ctx.get("runAsUser", pod_ctx.get("runAsUser")) in (None, 0):
            problems.append(f"{c['name']}: runAsUser")
        if ctx.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{c['name']}: allowPrivilegeEscalation")
        if ctx.get("capabilities", {}).get("drop") != ["ALL"] or ctx.get("capabilities", {}).get("add"):
            problems.append(f"{c['name']}: capabilities")
        if ctx.get("privileged"):
            problems.append(f"{c['name']}: privileged")
        if ctx.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{c['name']}: readOnlyRootFilesystem")
    for v in spec.get("volumes", []):
        if not set(v) - {"name"} <= {
            "emptyDir",
            "ephemeral",
            "secret",
            "configMap",
            "projected",
            "persistentVolumeClaim",
            "downwardAPI",
            "csi",
        }:
            problems.append(f"volume {v['name']}")
    if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
        problems.append("host namespaces")
    return problems


# --- pure functions ---------------------------------------------------------------------------


@pytest.mark.parametrize("component", [BACKUP, DRILL])
def test_pod_spec_is_restricted(stack: str, component: str) -> None:
    template = pod_spec(schedule_args(stack), component, UPSTREAM)
    assert restricted_violations(template) == []
    spec = template["spec"]
    mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["/tmp"] == "tmp"
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}} in spec["volumes"]
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False


def test_the_restricted_check_catches_a_violation() -> None:
    template = pod_spec(schedule_args("dev"), BACKUP, UPSTREAM)
    template["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    template["spec"]["containers"][0]["securityContext"]["capabilities"] = {"drop": ["NET_RAW"]}
    assert restricted_violations(template) == ["ipa-backup: capabilities", "ipa-backup: readOnlyRootFilesystem"]


def test_starting_deadline_stays_inside_the_rpo_slack() -> None:
    args = schedule_args("dev")  # */30, 20 min deadline, RPO 60: 10 min of slack
    assert backup_starting_deadline_seconds(args) == 300
    tight = schedule_args("dev", {"backupDeadlineMinutes": 28})  # 2 min slack
    assert backup_starting_deadline_seconds(tight) == 120
    none_left = schedule_args("dev", {"backupDeadlineMinutes": 30})
    assert backup_starting_deadline_seconds(none_left) == 60  # the controller needs some window


def test_network_policies_pure(stack: str) -> None:
    settings = schedule_args(stack)
    policies = {p["metadata"]["name"]: p["spec"] for p in network_policies(settings)}
    deny = policies["default-deny-all"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress", "Egress"]
    assert "egress" not in deny and deny["ingress"] == []
    ports = {
        name: {(p["protocol"], p["port"]) for rule in spec["egress"] for p in rule["ports"]}
        for name, spec in policies.items()
        if "egress" in spec
    }
    assert ports[f"{BACKUP_CRONJOB}-egress"] == {
        ("UDP", 53),
        ("TCP", 53),
        ("TCP", settings.postgres_port),
        ("TCP", settings.redis_port),
        ("TCP", 443),
        ("TCP", 9091),
    }
    assert ports[f"{DRILL_CRONJOB}-egress"] == {("UDP", 53), ("TCP", 53), ("TCP", settings.postgres_port), ("TCP", 443), ("TCP", 9091)}
    for spec in policies.values():
        assert spec["ingress"] == []  # nothing connects to these pods


def test_network_policy_targets(stack: str) -> None:
    settings = schedule_args(stack)
    backup = next(p["spec"] for p in network_policies(settings) if p["metadata"]["name"] == f"{BACKUP_CRONJOB}-egress")
    by_port = {rule["ports"][0]["port"]: rule for rule in backup["egress"]}
    assert by_port[53]["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    assert by_port[9091]["to"][0]["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": settings.monitoring_namespace}}
    assert by_port[9091]["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "prometheus-pushgateway"
    # In-cluster PostgreSQL and Redis: only their namespace (ipa-postgres.ipa.svc... -> ipa).
    assert by_port[settings.postgres_port]["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ipa"}}}]
    assert by_port[settings.redis_port]["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ipa"}}}]
    managed = schedule_args(stack, {"postgresHost": "ipa-prod.postgres.database.azure.com"})
    rules = next(p["spec"] for p in network_policies(managed) if p["metadata"]["name"] == f"{BACKUP_CRONJOB}-egress")["egress"]
    pg_rule = next(r for r in rules if r["ports"][0]["port"] == managed.postgres_port)
    assert "to" not in pg_rule  # a managed server has no fixed in-cluster address: the port only


def test_env_for_managed_postgres_requires_tls() -> None:
    managed = schedule_args("prod", {"postgresHost": "ipa-prod.postgres.database.azure.com"})
    env = _env(_container(cronjob_manifest(managed, BACKUP, UPSTREAM)))
    assert env["PGSSLMODE"]["value"] == "require"


def test_frequent_targets_env_only_with_pitr() -> None:
    """With the WAL stream on, frequent sets take what pitrFrequentBackupTargets names (prod: Redis only);
    without it every set takes both, the tool's default, and the variable is left out."""
    env = _env(_container(cronjob_manifest(schedule_args("prod"), BACKUP, UPSTREAM)))
    assert env["BACKUP_FREQUENT_TARGETS"]["value"] == "redis"
    both = schedule_args("prod", {"pitrFrequentBackupTargets": ["redis", "postgres"]})
    assert _env(_container(cronjob_manifest(both, BACKUP, UPSTREAM)))["BACKUP_FREQUENT_TARGETS"]["value"] == "postgres,redis"
    off = schedule_args("prod", {"pitrEnabled": False})
    assert "BACKUP_FREQUENT_TARGETS" not in _env(_container(cronjob_manifest(off, BACKUP, UPSTREAM)))
    assert "BACKUP_FREQUENT_TARGETS" not in _env(_container(cronjob_manifest(schedule_args("prod"), DRILL, UPSTREAM)))


# --- the component, under mocks -----------------------------------------------------------------


def test_namespace_enforces_restricted_pod_security(run_stack: RunStack, stack: str) -> None:
    settings = stack_settings(stack)
    namespace = [r for r in run_schedule(run_stack, stack).of_type(NAMESPACE) if r.inputs["metadata"]["name"] == settings.backup_namespace]
    assert len(namespace) == 1 and namespace[0].parent_type == COMPONENT
    labels = namespace[0].inputs["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["pod-security.kubernetes.io/audit"] == "restricted"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"


def test_service_account_carries_the_identity_client_id(run_stack: RunStack, stack: str) -> None:
    settings = stack_settings(stack)
    account = run_schedule(run_stack, stack).one(SERVICE_ACCOUNT)
    assert account.inputs["metadata"]["name"] == settings.backup_service_account
    assert account.inputs["metadata"]["namespace"] == settings.backup_namespace
    assert account.inputs["metadata"]["annotations"] == {"azure.workload.identity/client-id": CLIENT_ID}
    assert account.inputs["automountServiceAccountToken"] is False


def test_backup_cronjob(run_stack: RunStack, stack: str) -> None:
    settings = stack_settings(stack)
    cron = _cronjob(run_schedule(run_stack, stack), BACKUP_CRONJOB)
    assert cron["metadata"]["namespace"] == settings.backup_namespace
    spec = cron["spec"]
    assert spec["schedule"] == settings.backup_schedule  # with PITR too: it carries Redis's RPO
    assert spec["timeZone"] == settings.backup_time_zone
    assert spec["concurrencyPolicy"] == "Forbid"
    assert 60 <= spec["startingDeadlineSeconds"] <= 300
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    job = spec["jobTemplate"]["spec"]
    # The very deadline the settings' RPO check counts on.
    assert job["activeDeadlineSeconds"] == settings.backup_deadline_minutes * 60
    assert (settings.backup_longest_gap_minutes * 60 + job["activeDeadlineSeconds"]) <= settings.rpo_target_minutes * 60
    assert job["backoffLimit"] == 1
    assert job["ttlSecondsAfterFinished"] >= 3600  # failed Jobs stay visible to BackupJobFailed
    template = job["template"]
    assert template["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert template["spec"]["serviceAccountName"] == settings.backup_service_account
    assert restricted_violations(template) == []
    container = _container(cron)
    assert "command" not in container and container["args"] == ["backup"]  # the image's tini entry point stays
    assert set(container["resources"]) == {"requests", "limits"}
    assert {"cpu", "memory"} <= set(container["resources"]["requests"]) and "memory" in container["resources"]["limits"]


def test_backup_env_follows_spec_and_takes_credentials_by_reference(run_stack: RunStack, stack: str) -> None:
    settings = stack_settings(stack)
    env = _env(_container(_cronjob(run_schedule(run_stack, stack), BACKUP_CRONJOB)))
    assert {
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD_FILE",
        "PGDATABASE",
        "REDIS_URL",
        "REDIS_PASSWORD_FILE",
        "BACKUP_CONTAINER",
        "BACKUP_BLOB_ACCOUNT_URL",
        "PUSHGATEWAY_URL",
    } <= set(env)
    assert env["PGHOST"]["value"] == settings.postgres_host
    assert env["PGPORT"]["value"] == str(settings.postgres_port)
    assert env["PGDATABASE"]["value"] == settings.postgres_database
    assert env["PGUSER"]["valueFrom"] == {"secretKeyRef": {"name": settings.postgres_credentials_secret, "key": "username"}}
    assert env["PGPASSWORD_FILE"]["value"] == credential_file(POSTGRES, "password")
    assert env["REDIS_PASSWORD_FILE"]["value"] == credential_file(REDIS, "password")
    assert "PGPASSWORD" not in env and "REDISCLI_AUTH" not in env
    for name in SECRET_ENV:
        assert "value" not in env[name]
    assert env["REDIS_URL"]["value"] == f"redis://{settings.redis_host}:{settings.redis_port}/0"
    assert "@" not in env["REDIS_URL"]["value"]  # no password in the URL
    # What the storage and the Pushgateway hand over (test_main_program_wires_the_outputs_into_the_jobs).
    assert env["BACKUP_CONTAINER"]["value"] == CONTAINER
    assert env["BACKUP_BLOB_ACCOUNT_URL"]["value"] == BLOB
    assert env["PUSHGATEWAY_URL"]["value"] == PUSHGATEWAY_URL
    assert "AZURE_STORAGE_CONNECTION_STRING" not in env  # workload identity only
    # Temporary files go to the writable emptyDir, not the image's /work on the read-only root.
    assert env["TMPDIR"]["value"] == env["BACKUP_WORK_DIR"]["value"] == "/tmp"
    assert env["BACKUP_FREQUENT_TARGETS"]["value"] == ",".join(settings.frequent_backup_targets)  # dev: postgres,redis


def volumes_of(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in template["spec"]["volumes"]}


def test_drill_cronjob(run_stack: RunStack, stack: str) -> None:
    settings = stack_settings(stack)
    cron = _cronjob(run_schedule(run_stack, stack), DRILL_CRONJOB)
    spec = cron["spec"]
    assert spec["schedule"] == settings.drill_schedule
    assert spec["timeZone"] == settings.backup_time_zone
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] > 0
    job = spec["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] == settings.rto_target_minutes * 60
    assert job["ttlSecondsAfterFinished"] > 0 and job["backoffLimit"] >= 0
    template = job["template"]
    assert template["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert restricted_violations(template) == []
    container = _container(cron)
    assert container["args"] == ["drill"]
    env = _env(container)
    # Scratch targets: another database, and a redis-server inside the pod (no Redis credentials).
    assert env["DRILL_PGDATABASE"]["value"] not in ("", env["PGDATABASE"]["value"])
    assert "REDIS_PASSWORD_FILE" not in env and "REDIS_URL" not in env and "DRILL_REDIS_URL" not in env
    assert env["PGPASSWORD_FILE"]["value"] == credential_file(POSTGRES, "password")
    assert volumes_of(template)["postgres-credentials"]["secret"]["secretName"] == settings.postgres_credentials_secret
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    claim = volumes["work"]["ephemeral"]["volumeClaimTemplate"]["spec"]
    assert claim["storageClassName"] == settings.storage_class
    assert env["BACKUP_WORK_DIR"]["value"] == env["TMPDIR"]["value"] == "/work"
    assert (env["BACKUP_CONTAINER"]["value"], env["BACKUP_BLOB_ACCOUNT_URL"]["value"]) == (CONTAINER, BLOB)
    assert env["PUSHGATEWAY_URL"]["value"] == PUSHGATEWAY_URL


def test_the_drill_rehearses_pitr_with_the_streams_interval_and_room_for_it() -> None:
    """With PITR the drill also recovers the newest base backup and its WAL: it waits for the stream's
    next upload (its interval) and needs room for the archive beside the recovered data directory."""
    on, off = schedule_args("prod", {"walPartialUploadSeconds": 20}), schedule_args("prod", {"pitrEnabled": False})
    assert on.pitr_enabled and not off.pitr_enabled
    env_on = _env(pod_spec(on, DRILL, UPSTREAM)["spec"]["containers"][0])
    env_off = _env(pod_spec(off, DRILL, UPSTREAM)["spec"]["containers"][0])
    assert env_on["WAL_PARTIAL_UPLOAD_SECONDS"]["value"] == "20" and "WAL_PARTIAL_UPLOAD_SECONDS" not in env_off
    size = on.production_database_size_gb
    assert drill_work_size_gi(on) == max(10, math.ceil(size * 2.5)) and drill_work_size_gi(off) == max(10, math.ceil(size * 2))


def test_both_cronjobs_run_the_given_image(run_stack: RunStack, stack: str) -> None:
    run = run_schedule(run_stack, stack)
    assert {_container(_cronjob(run, name))["image"] for name in (BACKUP_CRONJOB, DRILL_CRONJOB)} == {IMAGE}


def test_every_cronjob_pod_is_covered_by_an_egress_policy(run_stack: RunStack, stack: str) -> None:
    run = run_schedule(run_stack, stack)
    policies = [r.inputs["spec"] for r in run.of_type(NETWORK_POLICY)]
    assert len(policies) == 3
    for name in (BACKUP_CRONJOB, DRILL_CRONJOB):
        labels = _cronjob(run, name)["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
        selecting = [
            p for p in policies if p["podSelector"].get("matchLabels") and p["podSelector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(selecting) == 1 and selecting[0]["egress"], name


# --- the program: the other components' outputs reach the Jobs -----------------------------------


def test_main_program_wires_the_outputs_into_the_jobs(run_stack: RunStack, stack: str) -> None:
    settings = stack_settings(stack)
    run = run_stack(stack)
    (identity,) = [
        r for r in run.of_type("azure-native:managedidentity:UserAssignedIdentity") if r.inputs["resourceName"].startswith("id-ipa-backup")
    ]
    client_id = identity.outputs["clientId"]
    assert run.one(SERVICE_ACCOUNT).inputs["metadata"]["annotations"] == {"azure.workload.identity/client-id": client_id}
    account = run.one("azure-native:storage:StorageAccount").outputs
    container = run.one("azure-native:storage:BlobContainer").outputs
    images = set()
    for name in (BACKUP_CRONJOB, DRILL_CRONJOB):
        container_spec = _container(_cronjob(run, name))
        env = _env(container_spec)
        assert env["BACKUP_BLOB_ACCOUNT_URL"]["value"] == account["primaryEndpoints"]["blob"]
        assert env["BACKUP_BLOB_ACCOUNT_URL"]["value"] == f"https://{settings.storage_account_name}.blob.core.windows.net/"
        assert env["BACKUP_CONTAINER"]["value"] == container["name"] == settings.backup_container
        assert env["PUSHGATEWAY_URL"]["value"] == pushgateway_url(settings.monitoring_namespace)
        assert env["PUSHGATEWAY_URL"]["value"] == f"http://prometheus-pushgateway.{settings.monitoring_namespace}.svc:9091"
        images.add(container_spec["image"])
    assert len(images) == 1 and "@sha256:" in images.pop()


# --- the RPO check of the settings ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "gap"),
    [
        ({"backupSchedule": "0 * * * *"}, 60),  # 60 + 20 > 60
        ({"backupSchedule": "*/45 * * * *"}, 45),  # 45 + 20 > 60
        ({"backupSchedule": "*/30 * * * *", "backupDeadlineMinutes": 31}, 30),
        ({"backupSchedule": "*/15 * * * *", "rpoTargetMinutes": 30}, 15),  # 15 + 20 > 30
    ],
)
def test_settings_refuse_a_schedule_that_cannot_meet_the_rpo(stack: str, overrides: dict[str, Any], gap: int) -> None:
    with pytest.raises(SettingsError) as err:
        stack_settings(stack, overrides)
    message = str(err.value)
    assert "ipa-ops:backupSchedule" in message and f"longest gap between runs ({gap} min)" in message


@pytest.mark.parametrize("schedule", ["*/30 * * * *", "*/20 * * * *", "5,35 * * * *"])
def test_settings_accept_a_schedule_that_meets_the_rpo(stack: str, schedule: str) -> None:
    settings = stack_settings(stack, {"backupSchedule": schedule})
    assert settings.backup_longest_gap_minutes + settings.backup_deadline_minutes <= settings.rpo_target_minutes


# --- the render validates against the Kubernetes schema -----------------------------------------


def test_rendered_backup_manifests_validate_against_the_kubernetes_schema(rendered, stack: str) -> None:  # type: ignore[no-untyped-def]
    folder = Path(rendered(stack)) / "kubernetes"
    settings = stack_settings(stack)
    ours = []
    for path in sorted(folder.glob("*.yaml")):
        manifest = yaml.safe_load(path.read_text())
        meta = manifest["metadata"]
        if manifest["apiVersion"].startswith("secrets-store.csi.x-k8s.io/"):
            continue  # the Key Vault sync's custom resource (tests/test_hardening.py); no built-in schema
        if meta.get("namespace") == settings.backup_namespace or meta["name"] == settings.backup_namespace:
            ours.append(path.name)
            kubernetes_validate.validate(manifest, AKS_VERSION, strict=True)
    assert sorted(ours) == sorted(
        [
            f"namespace-cluster-{settings.backup_namespace}.yaml",
            f"serviceaccount-{settings.backup_namespace}-{settings.backup_service_account}.yaml",
            f"cronjob-{settings.backup_namespace}-{BACKUP_CRONJOB}.yaml",
            f"cronjob-{settings.backup_namespace}-{DRILL_CRONJOB}.yaml",
            f"networkpolicy-{settings.backup_namespace}-default-deny-all.yaml",
            f"networkpolicy-{settings.backup_namespace}-{BACKUP_CRONJOB}-egress.yaml",
            f"networkpolicy-{settings.backup_namespace}-{DRILL_CRONJOB}-egress.yaml",
            # components/wal_stream.py, with pitrEnabled (tests/test_wal_stream.py)
            *(
                [
                    f"deployment-{settings.backup_namespace}-{WAL_STREAM}.yaml",
                    f"persistentvolumeclaim-{settings.backup_namespace}-{WAL_STREAM_PVC}.yaml",
                    f"cronjob-{settings.backup_namespace}-{CRONJOB_NAMES[BASE_BACKUP]}.yaml",
                    f"networkpolicy-{settings.backup_namespace}-{WAL_STREAM}.yaml",
                    f"networkpolicy-{settings.backup_namespace}-{CRONJOB_NAMES[BASE_BACKUP]}-egress.yaml",
                ]
                if settings.pitr_enabled
                else []
            ),
        ]
    )


def test_the_schema_check_catches_a_bad_cronjob() -> None:
    bad = cronjob_manifest(schedule_args("dev"), BACKUP, UPSTREAM)
    bad["spec"]["concurrencyPolicy"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, AKS_VERSION, strict=True)
