"""Backup and drill CronJobs, namespace, ServiceAccount and NetworkPolicies: pure functions, mocks,
the RPO check of the settings, and the Kubernetes schema of the rendered manifests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from components.backup_schedule import (
    BACKUP,
    DRILL,
    backup_starting_deadline_seconds,
    cronjob_manifest,
    network_policies,
    pod_spec,
)
from components.settings import SettingsError
from components.topology import CRONJOB_NAMES
from offline.runner import Run
from tests.conftest import RunStack, stack_settings

CRONJOB = "kubernetes:batch/v1:CronJob"
NAMESPACE = "kubernetes:core/v1:Namespace"
SERVICE_ACCOUNT = "kubernetes:core/v1:ServiceAccount"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
COMPONENT = "ipa-ops:backup:BackupSchedule"
SECRET_ENV = {"PGUSER", "PGPASSWORD", "REDISCLI_AUTH"}
IMAGE = "ipaopsacr.azurecr.io/ipa-backup@sha256:" + "a" * 64
BLOB = "https://acct.blob.core.windows.net/"
AKS_VERSION = "1.32.0"  # oldest AKS minor the manifests must load on
BACKUP_CRONJOB = CRONJOB_NAMES[BACKUP]
DRILL_CRONJOB = CRONJOB_NAMES[DRILL]


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
    template = pod_spec(stack_settings(stack), component, IMAGE, BLOB)
    assert restricted_violations(template) == []
    spec = template["spec"]
    mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["/tmp"] == "tmp"
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}} in spec["volumes"]
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False


def test_the_restricted_check_catches_a_violation() -> None:
    template = pod_spec(stack_settings("dev"), BACKUP, IMAGE, BLOB)
    template["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    template["spec"]["containers"][0]["securityContext"]["capabilities"] = {"drop": ["NET_RAW"]}
    assert restricted_violations(template) == ["ipa-backup: capabilities", "ipa-backup: readOnlyRootFilesystem"]


def test_starting_deadline_stays_inside_the_rpo_slack() -> None:
    settings = stack_settings("dev")  # */30, 20 min deadline, RPO 60: 10 min of slack
    assert backup_starting_deadline_seconds(settings) == 300
    tight = stack_settings("dev", {"backupDeadlineMinutes": 28})  # 2 min slack
    assert backup_starting_deadline_seconds(tight) == 120
    none_left = stack_settings("dev", {"backupDeadlineMinutes": 30})
    assert backup_starting_deadline_seconds(none_left) == 60  # the controller needs some window


def test_network_policies_pure(stack: str) -> None:
    settings = stack_settings(stack)
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
    settings = stack_settings(stack)
    backup = next(p["spec"] for p in network_policies(settings) if p["metadata"]["name"] == f"{BACKUP_CRONJOB}-egress")
    by_port = {rule["ports"][0]["port"]: rule for rule in backup["egress"]}
    assert by_port[53]["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    assert by_port[9091]["to"][0]["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": settings.monitoring_namespace}}
    assert by_port[9091]["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "prometheus-pushgateway"
    # In-cluster PostgreSQL and Redis: only their namespace (ipa-postgres.ipa.svc... -> ipa).
    assert by_port[settings.postgres_port]["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ipa"}}}]
    assert by_port[settings.redis_port]["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ipa"}}}]
    managed = stack_settings(stack, {"postgresHost": "ipa-prod.postgres.database.azure.com"})
    rules = next(p["spec"] for p in network_policies(managed) if p["metadata"]["name"] == f"{BACKUP_CRONJOB}-egress")["egress"]
    pg_rule = next(r for r in rules if r["ports"][0]["port"] == managed.postgres_port)
    assert "to" not in pg_rule  # a managed server has no fixed in-cluster address: the port only


def test_env_for_managed_postgres_requires_tls() -> None:
    managed = stack_settings("prod", {"postgresHost": "ipa-prod.postgres.database.azure.com"})
    env = _env(_container(cronjob_manifest(managed, BACKUP, IMAGE, BLOB)))
    assert env["PGSSLMODE"]["value"] == "require"


# --- the program, under mocks --------------------------------------------------------------------


def test_namespace_enforces_restricted_pod_security(run_stack: RunStack, stack: str) -> None:
    settings = stack_settings(stack)
    namespace = [r for r in run_stack(stack).of_type(NAMESPACE) if r.inputs["metadata"]["name"] == settings.backup_namespace]
    assert len(namespace) == 1 and namespace[0].parent_type == COMPONENT
    labels = namespace[0].inputs["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["pod-security.kubernetes.io/audit"] == "restricted"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"


def test_service_account_carries_the_identity_client_id(run_stack: RunStack, stack: str) -> None:
    settings = stack_settings(stack)
    run = run_stack(stack)
    account = run.one(SERVICE_ACCOUNT)
    assert account.inputs["metadata"]["name"] == settings.backup_service_account
    assert account.inputs["metadata"]["namespace"] == settings.backup_namespace
    client_id = run.one("azure-native:managedidentity:UserAssignedIdentity").outputs["clientId"]
    assert account.inputs["metadata"]["annotations"] == {"azure.workload.identity/client-id": client_id}
    assert account.inputs["automountServiceAccountToken"] is False


def test_backup_cronjob(run_stack: RunStack, stack: str) -> None:
    settings = stack_settings(stack)
    run = run_stack(stack)
    cron = _cronjob(run, BACKUP_CRONJOB)
    assert cron["metadata"]["namespace"] == settings.backup_namespace
    spec = cron["spec"]
    assert spec["schedule"] == settings.backup_schedule
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
    run = run_stack(stack)
    env = _env(_container(_cronjob(run, BACKUP_CRONJOB)))
    assert {
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD",
        "PGDATABASE",
        "REDIS_URL",
        "REDISCLI_AUTH",
        "BACKUP_CONTAINER",
        "BACKUP_BLOB_ACCOUNT_URL",
        "PUSHGATEWAY_URL",
    } <= set(env)
    assert env["PGHOST"]["value"] == settings.postgres_host
    assert env["PGPORT"]["value"] == str(settings.postgres_port)
    assert env["PGDATABASE"]["value"] == settings.postgres_database
    assert env["PGUSER"]["valueFrom"] == {"secretKeyRef": {"name": settings.postgres_credentials_secret, "key": "username"}}
    assert env["PGPASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": settings.postgres_credentials_secret, "key": "password"}}
    assert env["REDISCLI_AUTH"]["valueFrom"] == {"secretKeyRef": {"name": settings.redis_credentials_secret, "key": "password"}}
    for name in SECRET_ENV:
        assert "value" not in env[name]
    assert env["REDIS_URL"]["value"] == f"redis://{settings.redis_host}:{settings.redis_port}/0"
    assert "@" not in env["REDIS_URL"]["value"]  # no password in the URL
    assert env["BACKUP_CONTAINER"]["value"] == settings.backup_container
    assert env["BACKUP_BLOB_ACCOUNT_URL"]["value"] == f"https://{settings.storage_account_name}.blob.core.windows.net/"
    assert env["PUSHGATEWAY_URL"]["value"] == f"http://prometheus-pushgateway.{settings.monitoring_namespace}.svc:9091"
    assert "AZURE_STORAGE_CONNECTION_STRING" not in env  # workload identity only
    # Temporary files go to the writable emptyDir, not the image's /work on the read-only root.
    assert env["TMPDIR"]["value"] == env["BACKUP_WORK_DIR"]["value"] == "/tmp"


def test_drill_cronjob(run_stack: RunStack, stack: str) -> None:
    settings = stack_settings(stack)
    run = run_stack(stack)
    cron = _cronjob(run, DRILL_CRONJOB)
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
    assert "REDISCLI_AUTH" not in env and "REDIS_URL" not in env and "DRILL_REDIS_URL" not in env
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == settings.postgres_credentials_secret
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    claim = volumes["work"]["ephemeral"]["volumeClaimTemplate"]["spec"]
    assert claim["storageClassName"] == settings.storage_class
    assert env["BACKUP_WORK_DIR"]["value"] == env["TMPDIR"]["value"] == "/work"


def test_both_cronjobs_run_the_same_image(run_stack: RunStack, stack: str) -> None:
    run = run_stack(stack)
    images = {_container(_cronjob(run, name))["image"] for name in (BACKUP_CRONJOB, DRILL_CRONJOB)}
    assert len(images) == 1 and "@sha256:" in images.pop()


def test_every_cronjob_pod_is_covered_by_an_egress_policy(run_stack: RunStack, stack: str) -> None:
    run = run_stack(stack)
    policies = [r.inputs["spec"] for r in run.of_type(NETWORK_POLICY)]
    assert len(policies) == 3
    for name in (BACKUP_CRONJOB, DRILL_CRONJOB):
        labels = _cronjob(run, name)["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
        selecting = [
            p for p in policies if p["podSelector"].get("matchLabels") and p["podSelector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(selecting) == 1 and selecting[0]["egress"], name


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
        ]
    )


def test_the_schema_check_catches_a_bad_cronjob() -> None:
    bad = cronjob_manifest(stack_settings("dev"), BACKUP, IMAGE, BLOB)
    bad["spec"]["concurrencyPolicy"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, AKS_VERSION, strict=True)
