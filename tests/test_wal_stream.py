"""The WAL stream Deployment, spool volume, PodMonitor, NetworkPolicies and base backup CronJob: pure
functions, the component alone under mocks (upstream outputs as plain values), the program's wiring
(declared only with pitrEnabled), and the Prometheus selection of its PodMonitor."""

from __future__ import annotations

from typing import Any

import pytest

from components.exporter_credentials import POSTGRES, credential_dir, credential_file
from components.monitoring_values import kube_prometheus_stack_values
from components.settings import SettingsError, load_settings
from components.topology import (
    BASE_BACKUP,
    CRONJOB_NAMES,
    PROMETHEUS_POD_LABELS,
    RELEASE_LABELS,
    WAL_METRICS_PORT,
    WAL_SLOT,
    WAL_STREAM,
    WAL_STREAM_JOB,
    WAL_STREAM_POD_LABELS,
    WAL_STREAM_PVC,
    topology,
)
from components.wal_stream import (
    SPOOL,
    Upstream,
    WalStream,
    WalStreamArgs,
    base_backup_cronjob,
    base_backup_work_size_gi,
    deployment,
    network_policies,
    pod_monitor,
    spool_claim,
)
from tests.conftest import RunStack, stack_settings
from tests.test_backup_schedule import restricted_violations

IMAGE = "ipaopsacr.azurecr.io/ipa-backup@sha256:" + "b" * 64
BLOB = "https://acct.blob.core.windows.net/"
CONTAINER = "backup-sets"
PUSHGATEWAY_URL = "http://pushgateway.example.svc:9091"
UPSTREAM = Upstream(image=IMAGE, blob_account_url=BLOB, container=CONTAINER, pushgateway_url=PUSHGATEWAY_URL)
COMPONENT = "ipa-ops:backup:WalStream"


def wal_args(stack: str, overrides: dict[str, Any] | None = None) -> WalStreamArgs:
    return WalStreamArgs.from_settings(stack_settings(stack, overrides))


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container["env"]}


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --- pure functions ---------------------------------------------------------------------------


def test_one_receiver_at_a_time_on_the_spool_volume(stack: str) -> None:
    args = wal_args(stack)
    manifest = deployment(args, UPSTREAM)
    spec = manifest["spec"]
    assert manifest["metadata"] == {"name": WAL_STREAM, "namespace": args.backup_namespace, "labels": manifest["metadata"]["labels"]}
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}  # never two streamers on the slot
    pod = spec["template"]
    assert _selects(spec["selector"]["matchLabels"], pod["metadata"]["labels"])
    assert restricted_violations(pod) == []
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["spool"] == {"name": "spool", "persistentVolumeClaim": {"claimName": WAL_STREAM_PVC}}
    claim = spool_claim(args)
    assert claim["metadata"]["name"] == WAL_STREAM_PVC and claim["metadata"]["namespace"] == args.backup_namespace
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == args.wal_stream_storage_size
    assert claim["spec"]["storageClassName"] == args.storage_class


def test_stream_runs_as_the_backup_identity_with_the_tools_environment(stack: str) -> None:
    settings = stack_settings(stack)
    pod = deployment(WalStreamArgs.from_settings(settings), UPSTREAM)["spec"]["template"]
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert pod["spec"]["serviceAccountName"] == settings.backup_service_account  # the one the managed identity trusts
    assert pod["spec"]["automountServiceAccountToken"] is False
    (container,) = pod["spec"]["containers"]
    assert "command" not in container and container["args"] == ["wal-stream"]
    assert container["image"] == IMAGE
    env = _env(container)
    assert env["WAL_SPOOL_DIR"]["value"] == SPOOL
    assert {"name": "spool", "mountPath": SPOOL} in container["volumeMounts"]
    assert env["WAL_SLOT"]["value"] == WAL_SLOT
    assert env["WAL_PARTIAL_UPLOAD_SECONDS"]["value"] == str(settings.wal_partial_upload_seconds)
    assert env["METRICS_PORT"]["value"] == str(WAL_METRICS_PORT)
    assert env["BACKUP_CONTAINER"]["value"] == CONTAINER and env["BACKUP_BLOB_ACCOUNT_URL"]["value"] == BLOB
    assert env["PGHOST"]["value"] == settings.postgres_host and env["PGSSLMODE"]["value"] == settings.postgres_ssl_mode
    # The user name from the Secret; the password only as a mounted file of it, never in the environment.
    assert env["PGUSER"]["valueFrom"]["secretKeyRef"]["name"] == settings.postgres_credentials_secret
    assert "PGPASSWORD" not in env and env["PGPASSWORD_FILE"]["value"] == credential_file(POSTGRES, "password")
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == credential_dir(POSTGRES)]
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == settings.postgres_credentials_secret
    assert "PUSHGATEWAY_URL" not in env  # its metrics are scraped, and its policy allows no push
    assert container["ports"] == [{"name": "metrics", "containerPort": WAL_METRICS_PORT, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"]["port"] == "metrics"


def test_partial_upload_interval_follows_the_setting() -> None:
    pod = deployment(wal_args("dev", {"walPartialUploadSeconds": 7}), UPSTREAM)["spec"]["template"]
    assert _env(pod["spec"]["containers"][0])["WAL_PARTIAL_UPLOAD_SECONDS"]["value"] == "7"


def test_pod_monitor_is_selected_by_prometheus_and_selects_the_stream(stack: str) -> None:
    settings = stack_settings(stack)
    args = WalStreamArgs.from_settings(settings)
    monitor = pod_monitor(args)
    prometheus = kube_prometheus_stack_values(settings)["prometheus"]["prometheusSpec"]
    assert _selects(prometheus["podMonitorSelector"]["matchLabels"], monitor["metadata"]["labels"])
    assert monitor["metadata"]["labels"]["release"] == RELEASE_LABELS["release"]
    assert prometheus["podMonitorNamespaceSelector"] == {}  # any namespace: the monitor lives in the monitoring one
    assert monitor["metadata"]["namespace"] == settings.monitoring_namespace
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [settings.backup_namespace]}
    pod = deployment(args, UPSTREAM)["spec"]["template"]
    assert _selects(monitor["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"])
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == pod["spec"]["containers"][0]["ports"][0]["name"]
    assert endpoint["relabelings"] == [{"action": "replace", "targetLabel": "job", "replacement": WAL_STREAM_JOB}]


def test_base_backup_cronjob(stack: str) -> None:
    settings = stack_settings(stack)
    cron = base_backup_cronjob(WalStreamArgs.from_settings(settings), UPSTREAM)
    assert cron["metadata"]["name"] == CRONJOB_NAMES[BASE_BACKUP] and cron["metadata"]["name"].startswith("ipa-backup")
    spec = cron["spec"]
    assert spec["schedule"] == settings.base_backup_schedule and spec["timeZone"] == settings.backup_time_zone
    assert spec["concurrencyPolicy"] == "Forbid"
    job = spec["jobTemplate"]["spec"]
    # The deadline BaseBackupTooOld counts on.
    assert job["activeDeadlineSeconds"] == settings.base_backup_deadline_minutes * 60
    assert settings.base_backup_max_age_minutes * 60 >= job["activeDeadlineSeconds"]
    pod = job["template"]
    assert restricted_violations(pod) == []
    assert pod["spec"]["serviceAccountName"] == settings.backup_service_account
    (container,) = pod["spec"]["containers"]
    assert container["args"] == ["base-backup"]
    env = _env(container)
    assert env["PUSHGATEWAY_URL"]["value"] == PUSHGATEWAY_URL and env["BACKUP_WORK_DIR"]["value"] == "/work"
    assert "PGPASSWORD" not in env and env["PGPASSWORD_FILE"]["value"] == credential_file(POSTGRES, "password")
    assert any(m["mountPath"] == credential_dir(POSTGRES) for m in container["volumeMounts"])
    work = next(v for v in pod["spec"]["volumes"] if v["name"] == "work")
    size = work["ephemeral"]["volumeClaimTemplate"]["spec"]["resources"]["requests"]["storage"]
    assert size == f"{base_backup_work_size_gi(WalStreamArgs.from_settings(settings))}Gi"


def test_base_backup_work_volume_grows_with_the_database() -> None:
    assert base_backup_work_size_gi(wal_args("dev")) == 30  # 20 GB * 1.5
    assert base_backup_work_size_gi(wal_args("dev", {"productionDatabaseSizeGb": 2})) == 10
    assert base_backup_work_size_gi(wal_args("dev", {"productionDatabaseSizeGb": 101})) == 152


def _rule_allows(rules: list[dict[str, Any]], key: str, namespace: str, labels: dict[str, str], port: int) -> bool:
    for rule in rules:
        for peer in rule[key]:
            ns_ok = peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") == namespace
            pods_ok = _selects(peer.get("podSelector", {}).get("matchLabels", {}), labels)
            if ns_ok and pods_ok and any(p["port"] == port for p in rule["ports"]):
                return True
    return False


def test_network_policies_open_only_what_the_pods_need(stack: str) -> None:
    settings = stack_settings(stack)
    args = WalStreamArgs.from_settings(settings)
    policies = {p["metadata"]["name"]: p["spec"] for p in network_policies(args)}
    stream = policies[WAL_STREAM]
    base = policies[f"{CRONJOB_NAMES[BASE_BACKUP]}-egress"]
    pod_labels = deployment(args, UPSTREAM)["spec"]["template"]["metadata"]["labels"]
    assert _selects(stream["podSelector"]["matchLabels"], pod_labels)
    cron_labels = base_backup_cronjob(args, UPSTREAM)["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert _selects(base["podSelector"]["matchLabels"], cron_labels)
    assert not _selects(base["podSelector"]["matchLabels"], pod_labels) and not _selects(stream["podSelector"]["matchLabels"], cron_labels)
    # Prometheus scrapes the stream's metrics port; nothing else comes in.
    assert _rule_allows(stream["ingress"], "from", settings.monitoring_namespace, PROMETHEUS_POD_LABELS, WAL_METRICS_PORT)
    assert not _rule_allows(stream["ingress"], "from", settings.backend_namespace, {"app": "ipa-backend"}, WAL_METRICS_PORT)
    assert base["ingress"] == []
    # PostgreSQL in its namespace, HTTPS for storage and Entra ID; only the base backup pushes results.
    postgres_ns = settings.postgres_host.split(".")[1]
    for spec in (stream, base):
        assert _rule_allows(spec["egress"], "to", postgres_ns, {}, settings.postgres_port)
        assert any(r["ports"] == [{"protocol": "TCP", "port": 443}] for r in spec["egress"])
    assert not _rule_allows(
        stream["egress"], "to", settings.monitoring_namespace, {"app.kubernetes.io/name": "prometheus-pushgateway"}, 9091
    )
    assert _rule_allows(
        base["egress"],
        "to",
        settings.monitoring_namespace,
        {"app.kubernetes.io/name": "prometheus-pushgateway", "app.kubernetes.io/instance": "prometheus-pushgateway"},
        9091,
    )


def test_the_policy_check_fails_without_the_scrape_rule() -> None:
    settings = stack_settings("dev")
    stream = next(p["spec"] for p in network_policies(WalStreamArgs.from_settings(settings)) if p["metadata"]["name"] == WAL_STREAM)
    assert not _rule_allows([], "from", settings.monitoring_namespace, PROMETHEUS_POD_LABELS, WAL_METRICS_PORT)
    assert not _rule_allows(stream["ingress"], "from", settings.monitoring_namespace, PROMETHEUS_POD_LABELS, 9999)


def test_prometheus_may_reach_the_stream_from_the_monitoring_namespace(stack: str) -> None:
    flows = {f.name: f for f in topology(stack_settings(stack)).network_flows}
    flow = flows["prometheus-wal-stream"]
    assert flow.destination.pod_labels == WAL_STREAM_POD_LABELS and flow.ports == (("TCP", WAL_METRICS_PORT),)
    assert "prometheus-wal-stream" not in {f.name for f in topology(stack_settings(stack, {"pitrEnabled": False})).network_flows}


# --- the component under mocks --------------------------------------------------------------------


def wal_stream_only() -> None:
    WalStream(
        "wal-stream",
        WalStreamArgs.from_settings(load_settings()),
        image=IMAGE,
        blob_account_url=BLOB,
        container=CONTAINER,
        pushgateway_url=PUSHGATEWAY_URL,
    )


def test_component_declares_its_objects(run_stack: RunStack, stack: str) -> None:
    run = run_stack(stack, program=wal_stream_only)
    settings = stack_settings(stack)
    kinds = sorted((r.type.rsplit(":", 1)[-1], r.inputs["metadata"]["name"]) for r in run.recorded if r.type.startswith("kubernetes:"))
    assert kinds == sorted(
        [
            ("CronJob", CRONJOB_NAMES[BASE_BACKUP]),
            ("Deployment", WAL_STREAM),
            ("NetworkPolicy", f"{CRONJOB_NAMES[BASE_BACKUP]}-egress"),
            ("NetworkPolicy", WAL_STREAM),
            ("PersistentVolumeClaim", WAL_STREAM_PVC),
            ("PodMonitor", WAL_STREAM),
        ]
    )
    for r in run.recorded:
        if r.type.startswith("kubernetes:"):
            assert r.parent_type == COMPONENT
            expected = settings.monitoring_namespace if r.type.endswith("PodMonitor") else settings.backup_namespace
            assert r.inputs["metadata"]["namespace"] == expected, r.name
    deployment_inputs = run.one("kubernetes:apps/v1:Deployment").inputs
    assert deployment_inputs["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE


@pytest.mark.parametrize("enabled", [True, False])
def test_program_declares_the_stream_only_with_pitr(run_stack: RunStack, enabled: bool) -> None:
    run = run_stack("dev", {"pitrEnabled": enabled})
    declared = [r for r in run.recorded if r.type == COMPONENT]
    assert len(declared) == (1 if enabled else 0)
    deployments = [r.inputs["metadata"]["name"] for r in run.of_type("kubernetes:apps/v1:Deployment")]
    assert (WAL_STREAM in deployments) is enabled


# --- the settings of point-in-time recovery -------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"walLagBudgetSeconds": 3590},
            ["ipa-ops:walLagBudgetSeconds = 3590", "rpoTargetMinutes (3600 s)", "walPartialUploadSeconds (15 s)"],
        ),
        ({"walPartialUploadSeconds": 0}, ["ipa-ops:walPartialUploadSeconds", "1-300"]),
        ({"walPartialUploadSeconds": 301}, ["ipa-ops:walPartialUploadSeconds", "1-300"]),
        ({"baseBackupSchedule": "0 1 * * 0"}, ["ipa-ops:baseBackupSchedule = '0 1 * * 0'", "at least daily", "10080 min"]),
        ({"baseBackupSchedule": "daily"}, ["ipa-ops:baseBackupSchedule", "5-field cron"]),
        ({"baseBackupDeadlineMinutes": 1440}, ["ipa-ops:baseBackupDeadlineMinutes = 1440", "longest gap of baseBackupSchedule (1440 min)"]),
        ({"maxSlotWalKeepSizeGb": 1}, ["ipa-ops:maxSlotWalKeepSizeGb = 1", "at least walPerDayGb (2)"]),
        ({"walStreamStorageSize": "512Mi"}, ["ipa-ops:walStreamStorageSize = '512Mi'", "at least 1Gi"]),
        ({"walStreamStorageSize": "lots"}, ["ipa-ops:walStreamStorageSize", "Kubernetes quantity"]),
        ({"walPerDayGb": 0}, ["ipa-ops:walPerDayGb", "greater than 0"]),
        ({"pitrFrequentBackupTargets": ["postgres"]}, ["ipa-ops:pitrFrequentBackupTargets", "holding 'redis'"]),
        ({"pitrFrequentBackupTargets": ["redis", "mysql"]}, ["ipa-ops:pitrFrequentBackupTargets", "optionally 'postgres'"]),
        ({"pitrFrequentBackupTargets": ["redis", "redis"]}, ["ipa-ops:pitrFrequentBackupTargets", "each once"]),
        ({"pitrEnabled": "yes"}, ["ipa-ops:pitrEnabled = 'yes'", "true or false"]),
    ],
)
def test_pitr_settings_refuse_bad_values(overrides: dict[str, Any], expected: list[str]) -> None:
    with pytest.raises(SettingsError) as err:
        stack_settings("prod", overrides)
    for text in expected:
        assert text in str(err.value)


def test_pitr_checks_apply_only_with_pitr() -> None:
    off = stack_settings("prod", {"pitrEnabled": False, "walLagBudgetSeconds": 3590, "baseBackupSchedule": "0 1 * * 0"})
    assert not off.pitr_enabled


def test_rpo_counts_the_wal_stream_when_it_is_on() -> None:
    on = stack_settings("prod")
    assert on.pitr_rpo_bound_seconds == on.wal_partial_upload_seconds + on.wal_lag_budget_seconds <= 60
    # Redis has no stream: every run takes it, against the RPO. PostgreSQL is dumped once a day, and its
    # BackupTooOld waits a day plus the schedule's gap and the deadline...
    assert on.frequent_backup_targets == ("redis",)
    assert on.backup_max_age_minutes == {"postgres": 1440 + 30 + 20, "redis": on.rpo_target_minutes}
    # ...unless every run takes it too (dev), and without PITR both are at the RPO again, with its own check.
    assert stack_settings("dev").backup_max_age_minutes == {"postgres": 60, "redis": 60}
    off = stack_settings("prod", {"pitrEnabled": False, "pitrFrequentBackupTargets": ["redis"]})
    assert off.frequent_backup_targets == ("postgres", "redis")
    assert off.backup_max_age_minutes == {"postgres": off.rpo_target_minutes, "redis": off.rpo_target_minutes}
    with pytest.raises(SettingsError, match="longest gap between runs"):
        stack_settings("prod", {"pitrEnabled": False, "backupSchedule": "0 2 * * *"})


# --- the restore Job template of the DR plan ---------------------------------------------------------


def _restore_job(target: str) -> dict[str, Any]:
    import string
    from pathlib import Path

    import yaml

    plan = (Path(__file__).resolve().parents[1] / "docs" / "operations" / "disaster-recovery-plan.md").read_text()
    block = plan.split("<!-- pitr-restore-job -->\n```yaml\n", 1)[1].split("```", 1)[0]
    text = string.Template(block).substitute(
        NS="ipa", IMAGE=IMAGE, TARGET=target, PGDATA_DIR="/var/lib/postgresql/data/pgdata", BLOB=BLOB, PVC="data-ipa-postgres-0"
    )
    job: dict[str, Any] = yaml.safe_load(text)
    return job


@pytest.mark.parametrize("target", ['"--latest"', '"--to-time", "2026-05-04T13:45:09Z"'])
def test_dr_plan_restore_job_is_a_valid_restricted_job(target: str) -> None:
    import kubernetes_validate

    job = _restore_job(target)
    kubernetes_validate.validate(job, "1.32.0", strict=True)
    pod = job["spec"]["template"]
    assert restricted_violations(pod) == []
    (container,) = pod["spec"]["containers"]
    assert container["args"][0] == "pitr-restore" and "--pgdata" in container["args"] and "--force" in container["args"]
    assert {e["name"] for e in container["env"]} >= {"BACKUP_CONTAINER", "BACKUP_BLOB_ACCOUNT_URL"}
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert claims == ["data-ipa-postgres-0"] and job["metadata"]["namespace"] == "ipa"  # the StatefulSet's own namespace


def test_the_restore_job_check_fails_on_a_broken_template() -> None:
    import kubernetes_validate

    job = _restore_job('"--latest"')
    job["spec"]["template"]["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    assert restricted_violations(job["spec"]["template"]) != []
    job["spec"]["backoffLimit"] = "none"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, "1.32.0", strict=True)
