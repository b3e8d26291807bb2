"""The monitoring stack hardened: the dead man's switch, the Grafana sidecar's reach, NetworkPolicies,
exporter credentials, secrets as files, resources, prod HA, image digests and Entra ID sign-in.
Pure-function and mock tests; each check is also fed something broken."""

from __future__ import annotations

import copy
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.alertmanager_config import (
    ALERTMANAGER_SECRETS,
    HEARTBEAT_SECRET,
    HEARTBEAT_SECRET_KEY,
    SECRETS_DIR,
    alertmanager_config,
    secret_file,
)
from components.backup_schedule import BackupScheduleArgs, Upstream, pod_spec
from components.chart_images import CHART_IMAGES, image_references, images_by_name, with_pins
from components.exporter_credentials import POSTGRES, PROVIDER_CLASS, REDIS, credential_volumes
from components.monitoring import MonitoringStack, MonitoringStackArgs
from components.monitoring_scrape import postgres_exporter_values
from components.monitoring_values import GRAFANA_ADMIN_SECRET, GRAFANA_SIDECAR_ROLE, grafana_sidecar_role, kube_prometheus_stack_values
from components.network_policies import NetworkPolicies, NetworkPoliciesArgs, monitoring_network_policies
from components.settings import CHART_IMAGE_NAMES, DEFAULT_RESOURCES, Settings, SettingsError, parse_settings
from components.topology import (
    ALERTMANAGER_POD_LABELS,
    BACKUP,
    DRILL,
    GRAFANA_POD_LABELS,
    HEARTBEAT_RECEIVER,
    PROMETHEUS_POD_LABELS,
    PUSHGATEWAY_POD_LABELS,
    RELEASE_NAME,
    Peer,
    server_peer,
    topology,
)
from offline.charts import read_chart_renders
from offline.runner import Run
from offline.stackconfig import PLACEHOLDER_SECRETS, REPO_ROOT, load_stack_config
from tests.conftest import RunStack, stack_settings

SECRET = "kubernetes:core/v1:Secret"


def run_monitoring(run_stack: RunStack, stack: str, overrides: dict[str, Any] | None = None) -> Run:
    settings = stack_settings(stack, overrides)
    return run_stack(stack, overrides, program=lambda: MonitoringStack("monitoring", MonitoringStackArgs.from_settings(settings)))


def refused(overrides: dict[str, Any], stack: str = "dev") -> str:
    with pytest.raises(SettingsError) as err:
        stack_settings(stack, overrides)
    return str(err.value)


# --- the dead man's switch ---------------------------------------------------------------------


def test_watchdog_goes_to_the_heartbeat_receiver(stack: str) -> None:
    settings = stack_settings(stack)
    config = alertmanager_config(settings)
    route = next(r for r in config["route"]["routes"] if r["matchers"] == ['alertname = "Watchdog"'])
    assert route is config["route"]["routes"][0]  # before every severity route
    assert route["receiver"] == HEARTBEAT_RECEIVER == "heartbeat"
    assert route["repeat_interval"] == settings.heartbeat_interval == "5m"
    assert route["group_wait"] == "0s"
    # Flushed more often than it repeats, so no beat is skipped.
    assert route["group_interval"] == "30s"
    (receiver,) = [r for r in config["receivers"] if r["name"] == HEARTBEAT_RECEIVER]
    (webhook,) = receiver["webhook_configs"]
    assert webhook["url_file"] == secret_file(HEARTBEAT_SECRET, HEARTBEAT_SECRET_KEY) == f"{SECRETS_DIR}/alertmanager-heartbeat/url"
    assert webhook["send_resolved"] is False
    assert "url" not in webhook
    assert PLACEHOLDER_SECRETS["heartbeatUrl"] not in yaml.safe_dump(config)


def test_heartbeat_interval_is_a_setting() -> None:
    config = alertmanager_config(stack_settings("prod", {"heartbeatInterval": "2m"}))
    assert config["route"]["routes"][0]["repeat_interval"] == "2m"


@pytest.mark.parametrize("bad", ["30s", "2h", "5 minutes", ""])
def test_heartbeat_interval_refused_outside_1m_to_1h(bad: str) -> None:
    message = refused({"heartbeatInterval": bad})
    assert "ipa-ops:heartbeatInterval" in message and repr(bad) in message and "from 1m to 1h" in message


def test_heartbeat_url_must_be_https() -> None:
    message = refused({"heartbeatUrl": "http://hc-ping.example/should-not-show"})
    assert "ipa-ops:heartbeatUrl" in message and "https:// URL" in message
    assert "should-not-show" not in message


def test_heartbeat_secret_is_mounted_into_alertmanager(stack: str, run_stack: RunStack) -> None:
    settings = stack_settings(stack)
    spec = kube_prometheus_stack_values(settings)["alertmanager"]["alertmanagerSpec"]
    assert HEARTBEAT_SECRET in spec["secrets"] and list(ALERTMANAGER_SECRETS) == spec["secrets"]
    run = run_monitoring(run_stack, stack)
    secrets = {r.inputs["metadata"]["name"]: r for r in run.of_type(SECRET)}
    heartbeat = secrets[HEARTBEAT_SECRET]
    assert heartbeat.inputs["metadata"]["namespace"] == settings.monitoring_namespace
    assert heartbeat.inputs["stringData"] == {HEARTBEAT_SECRET_KEY: PLACEHOLDER_SECRETS["heartbeatUrl"]}
    assert heartbeat.masked_inputs["stringData"] == {HEARTBEAT_SECRET_KEY: "[secret]"}


def test_every_file_the_config_reads_is_a_mounted_secret_key(stack: str) -> None:
    """Each `*_file` path is /etc/alertmanager/secrets/<secret>/<key> of a Secret in alertmanagerSpec.secrets."""
    settings = stack_settings(stack)
    mounted = kube_prometheus_stack_values(settings)["alertmanager"]["alertmanagerSpec"]["secrets"]
    paths = files_read(alertmanager_config(settings))
    assert len(paths) == 4
    for path in paths:
        assert unmounted(path, mounted) is None
    assert unmounted(f"{SECRETS_DIR}/alertmanager-heartbeat/url", ["alertmanager-smtp"]) is not None


def files_read(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k.endswith("_file") and isinstance(v, str)] + [
            p for k, v in node.items() if not k.endswith("_file") for p in files_read(v)
        ]
    if isinstance(node, list):
        return [p for item in node for p in files_read(item)]
    return []


def unmounted(path: str, secrets: list[str]) -> str | None:
    prefix = SECRETS_DIR + "/"
    if not path.startswith(prefix) or path[len(prefix) :].split("/")[0] not in secrets:
        return path
    return None


# --- Grafana's sidecar: ConfigMaps of the monitoring namespace only -----------------------------


def sidecar_problems(grafana: dict[str, Any], role: dict[str, Any], namespace: str) -> list[str]:
    """What lets the Grafana sidecars read beyond ConfigMaps of `namespace`."""
    problems = []
    for kind in ("dashboards", "datasources"):
        sidecar = grafana["sidecar"][kind]
        if sidecar.get("searchNamespace") != namespace:
            problems.append(f"{kind} searches {sidecar.get('searchNamespace')!r}")
        if sidecar.get("resource") != "configmap":
            problems.append(f"{kind} watches {sidecar.get('resource', 'both')!r}")
    rbac = grafana.get("rbac", {})
    if not rbac.get("namespaced") or rbac.get("useExistingRole") != role["metadata"]["name"]:
        problems.append("the chart's own ClusterRole or Role (configmaps and secrets) is used")
    for rule in role["rules"]:
        if set(rule["resources"]) != {"configmaps"} or set(rule["verbs"]) - {"get", "list", "watch"}:
            problems.append(f"the Role grants {rule}")
    return problems


def test_grafana_sidecar_reads_configmaps_of_its_namespace_only(stack: str) -> None:
    settings = stack_settings(stack)
    grafana = kube_prometheus_stack_values(settings)["grafana"]
    role = grafana_sidecar_role(settings)
    assert role["metadata"]["namespace"] == settings.monitoring_namespace
    assert sidecar_problems(grafana, role, settings.monitoring_namespace) == []


def test_grafana_sidecar_check_finds_cluster_wide_secret_access() -> None:
    settings = stack_settings("dev")
    grafana = copy.deepcopy(kube_prometheus_stack_values(settings)["grafana"])
    role = copy.deepcopy(grafana_sidecar_role(settings))
    grafana["sidecar"]["dashboards"]["searchNamespace"] = "ALL"
    grafana["sidecar"]["datasources"].pop("resource")
    grafana["rbac"] = {"namespaced": False}
    role["rules"][0]["resources"].append("secrets")
    assert len(sidecar_problems(grafana, role, settings.monitoring_namespace)) == 4


def test_grafana_sidecar_role_exists_before_the_release(run_stack: RunStack) -> None:
    run = run_monitoring(run_stack, "prod")
    (role,) = run.of_type("kubernetes:rbac.authorization.k8s.io/v1:Role")
    assert role.inputs["metadata"]["name"] == GRAFANA_SIDECAR_ROLE
    assert role.inputs["rules"] == [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "watch", "list"]}]


# --- NetworkPolicies ----------------------------------------------------------------------------


def _matches_peer(peer: dict[str, Any], end: Peer) -> bool:
    if "ipBlock" in peer:
        return bool(end.cidr or end.host_network)  # addresses outside the pod network
    if end.cidr or end.host_network:
        return False
    namespace_ok = peer["namespaceSelector"]["matchLabels"].get("kubernetes.io/metadata.name") == end.namespace
    wanted = peer.get("podSelector", {}).get("matchLabels", {})
    return namespace_ok and all(end.pod_labels.get(k) == v for k, v in wanted.items())


def _selects(policy: dict[str, Any], end: Peer) -> bool:
    wanted = policy["spec"]["podSelector"].get("matchLabels", {})
    return policy["metadata"]["namespace"] == end.namespace and all(end.pod_labels.get(k) == v for k, v in wanted.items())


def allowed(policies: list[dict[str, Any]], source: Peer, destination: Peer, protocol: str, port: int | str) -> bool:
    """Whether the policies let `source` open a connection to `destination` (both sides checked
    where a policy governs them; a namespace without policies is not isolated)."""

    def side(end: Peer, kind: str, other: Peer) -> bool:
        governing = [p for p in policies if not end.cidr and _selects(p, end) and kind.capitalize() in p["spec"]["policyTypes"]]
        if not governing:
            return True
        peers_key = "to" if kind == "egress" else "from"
        return any(
            any(_matches_peer(peer, other) for peer in rule.get(peers_key, []))
            and any(p["protocol"] == protocol and p["port"] == port for p in rule.get("ports", []))
            for policy in governing
            for rule in policy["spec"].get(kind, [])
        )

    return side(source, "egress", destination) and side(destination, "ingress", source)


def test_every_flow_of_the_stack_is_allowed(stack: str) -> None:
    settings = stack_settings(stack, {"remoteWrite": [{"name": "mimir", "url": "https://mimir.example.com/api/v1/push"}]})
    flows = topology(settings).network_flows
    policies = monitoring_network_policies(settings)
    assert {p["metadata"]["namespace"] for p in policies} == {"monitoring", "monitoring-node-exporter"}
    for namespace in ("monitoring", "monitoring-node-exporter"):
        deny = next(p for p in policies if (p["metadata"]["name"], p["metadata"]["namespace"]) == ("default-deny-all", namespace))
        assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    names = {f.name for f in flows}
    for needed in ("prometheus-node-exporter", "prometheus-kubelet", "prometheus-backend", "grafana-prometheus", "alertmanager-cluster"):
        assert needed in names
    for flow in flows:
        for protocol, port in flow.ports:
            assert allowed(policies, flow.source, flow.destination, protocol, port), f"{flow.name} {protocol}/{port}"


def test_flows_the_stack_does_not_need_are_denied() -> None:
    settings = stack_settings("prod")
    policies = monitoring_network_policies(settings)
    monitoring = settings.monitoring_namespace
    pushgateway = Peer(monitoring, dict(PUSHGATEWAY_POD_LABELS))
    grafana = Peer(monitoring, dict(GRAFANA_POD_LABELS))
    prometheus = Peer(monitoring, dict(PROMETHEUS_POD_LABELS))
    alertmanager = Peer(monitoring, dict(ALERTMANAGER_POD_LABELS))
    backend_pod = Peer(settings.backend_namespace, {"app": "ipa-backend"})
    backup_pod = Peer(settings.backup_namespace, {"app.kubernetes.io/name": "ipa-backup", "app.kubernetes.io/component": "backup"})
    other_backup_pod = Peer(
        settings.backup_namespace, {"app.kubernetes.io/name": "ipa-backup", "app.kubernetes.io/component": "wal-stream"}
    )
    # Pushgateway: only the backup namespace pushes, only Prometheus scrapes.
    assert allowed(policies, backup_pod, pushgateway, "TCP", 9091)
    assert allowed(policies, prometheus, pushgateway, "TCP", 9091)
    assert not allowed(policies, backend_pod, pushgateway, "TCP", 9091)
    assert not allowed(policies, other_backup_pod, pushgateway, "TCP", 9091)  # only the Jobs that push
    assert not allowed(policies, grafana, pushgateway, "TCP", 9091)
    # Nobody outside the stack reaches Prometheus, Alertmanager or Grafana.
    for target, port in ((prometheus, 9090), (alertmanager, 9093), (grafana, 3000)):
        assert not allowed(policies, backend_pod, target, "TCP", port)
    assert not allowed(policies, alertmanager, prometheus, "TCP", 9090)
    assert not allowed(policies, grafana, Peer(cidr="0.0.0.0/0"), "TCP", 80)
    # The check itself fails when a flow's policy is missing.
    without = [p for p in policies if p["metadata"]["name"] != "grafana-prometheus-ingress"]
    assert not allowed(without, grafana, prometheus, "TCP", 9090)


def test_network_policies_are_declared(run_stack: RunStack) -> None:
    settings = stack_settings("dev")
    run = run_stack("dev", program=lambda: NetworkPolicies("network-policies", NetworkPoliciesArgs.from_settings(settings)))
    declared = run.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
    assert len(declared) == len(monitoring_network_policies(settings)) > 30
    assert all(r.parent_type == "ipa-ops:monitoring:NetworkPolicies" for r in declared)


def test_exporters_reach_their_servers_by_namespace_or_address() -> None:
    assert server_peer("ipa-postgres.ipa.svc.cluster.local") == Peer(namespace="ipa")
    assert server_peer("ipa-db.postgres.database.azure.com") == Peer(cidr="0.0.0.0/0")


# --- exporter credentials from one Key Vault ------------------------------------------------------


def test_one_key_vault_feeds_both_namespaces(run_stack: RunStack) -> None:
    settings = stack_settings("prod")
    run = run_stack("prod")
    classes = {
        r.inputs["metadata"]["namespace"]: r.inputs for r in run.of_type("kubernetes:secrets-store.csi.x-k8s.io/v1:SecretProviderClass")
    }
    assert set(classes) == {settings.monitoring_namespace, settings.backup_namespace}
    identity = next(
        r for r in run.of_type("azure-native:managedidentity:UserAssignedIdentity") if "credentials" in r.inputs["resourceName"]
    )
    for spc in classes.values():
        assert spc["metadata"]["name"] == PROVIDER_CLASS
        params = spc["spec"]["parameters"]
        assert params["keyvaultName"] == "kv-ipa-prod" and params["usePodIdentity"] == "false"
        assert params["clientID"] == identity.outputs["clientId"]
        synced = {s["secretName"]: {d["key"] for d in s["data"]} for s in spc["spec"]["secretObjects"]}
        assert synced == {settings.postgres_credentials_secret: {"username", "password"}, settings.redis_credentials_secret: {"password"}}
        aliases = {d["objectName"] for s in spc["spec"]["secretObjects"] for d in s["data"]}
        objects = [yaml.safe_load(o) for o in yaml.safe_load(params["objects"])["array"]]
        assert {o["objectAlias"] for o in objects} == aliases
        assert {o["objectName"] for o in objects} == {
            "ipa-postgres-credentials-username",
            "ipa-postgres-credentials-password",
            "ipa-redis-credentials-password",
        }
    (role,) = [
        r for r in run.of_type("azure-native:authorization:RoleAssignment") if r.inputs["scope"] == settings.credentials_key_vault_id
    ]
    assert role.inputs["roleDefinitionId"].endswith("/4633458b-17de-408a-b874-0445c86b69e6")  # Key Vault Secrets User
    subjects = {r.inputs["subject"] for r in run.of_type("azure-native:managedidentity:FederatedIdentityCredential")}
    assert {
        "system:serviceaccount:monitoring:prometheus-postgres-exporter",
        "system:serviceaccount:ipa-backup:ipa-backup",
    } <= subjects


def test_without_a_key_vault_nothing_is_synced(run_stack: RunStack) -> None:
    run = run_stack("dev", {"credentialsKeyVaultId": ""})
    assert not run.of_type("kubernetes:secrets-store.csi.x-k8s.io/v1:SecretProviderClass")
    volumes, _ = credential_volumes(stack_settings("dev", {"credentialsKeyVaultId": ""}), (POSTGRES, REDIS))
    assert [v["name"] for v in volumes] == ["postgres-credentials", "redis-credentials"]


def test_pods_that_read_the_secrets_mount_the_key_vault_class(stack: str) -> None:
    """The CSI mount is what syncs the Secrets: the postgres exporter and the backup Jobs carry it."""
    settings = stack_settings(stack)
    exporter = postgres_exporter_values(settings)
    mounted = {m["name"] for m in exporter["extraVolumeMounts"]}
    csi = [v for v in exporter["extraVolumes"] if "csi" in v]
    assert [v["csi"]["volumeAttributes"]["secretProviderClass"] for v in csi] == [PROVIDER_CLASS]
    assert {v["name"] for v in exporter["extraVolumes"]} == mounted
    for component in (BACKUP, DRILL):
        pod = backup_pod(settings, component)
        assert any(v.get("csi", {}).get("volumeAttributes", {}).get("secretProviderClass") == PROVIDER_CLASS for v in pod["volumes"])


def test_prod_refuses_hand_made_credentials() -> None:
    message = refused({"credentialsKeyVaultId": ""}, "prod")
    assert "ipa-ops:credentialsKeyVaultId = ''" in message and "in prod, a Key Vault resource id" in message
    message = refused({"credentialsKeyVaultId": "kv-ipa-dev"})
    assert "ipa-ops:credentialsKeyVaultId = 'kv-ipa-dev'" in message and "Key Vault resource id" in message


# --- credentials as files ----------------------------------------------------------------------


def backup_pod(settings: Settings, component: str) -> dict[str, Any]:
    upstream = Upstream(
        image="acr.example/ipa-backup@sha256:" + "0" * 64, blob_account_url="https://a", container="c", pushgateway_url="http://p"
    )
    return pod_spec(BackupScheduleArgs.from_settings(settings), component, upstream)["spec"]


def secrets_in_env(containers: list[dict[str, Any]]) -> list[str]:
    """Environment variables that carry a secret's value (secretKeyRef) and are not user names."""
    return [
        f"{c['name']}:{e['name']}"
        for c in containers
        for e in c.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {}) and "USER" not in e["name"]
    ]


def file_source(spec: dict[str, Any], container: dict[str, Any], path: str) -> tuple[str, str] | None:
    """(Secret, key) that a pod mounts at `path` for `container`, else None."""
    for mount in container.get("volumeMounts", []):
        prefix = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(prefix):
            volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
            if "secret" in volume:
                key = path[len(prefix) :]
                items = volume["secret"].get("items")
                if items is None or any(i["path"] == key for i in items):
                    return volume["secret"]["secretName"], next((i["key"] for i in items or [] if i["path"] == key), key)
    return None


def test_backup_and_drill_read_passwords_from_files(stack: str) -> None:
    settings = stack_settings(stack)
    for component in (BACKUP, DRILL):
        spec = backup_pod(settings, component)
        (container,) = spec["containers"]
        assert secrets_in_env(spec["containers"]) == []
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert "PGPASSWORD" not in env and "REDISCLI_AUTH" not in env
        assert file_source(spec, container, env["PGPASSWORD_FILE"]) == (settings.postgres_credentials_secret, "password")
        if component == BACKUP:
            assert file_source(spec, container, env["REDIS_PASSWORD_FILE"]) == (settings.redis_credentials_secret, "password")
        else:
            assert "REDIS_PASSWORD_FILE" not in env  # the drill restores into its own redis-server
        # Readable by the pod's group only; the pod's fsGroup is the image's user.
        assert all(v["secret"]["defaultMode"] == 0o440 for v in spec["volumes"] if "secret" in v)
        assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsUser"] == 10001


def test_secret_env_check_finds_a_password_variable() -> None:
    spec = backup_pod(stack_settings("dev"), BACKUP)
    container = copy.deepcopy(spec["containers"][0])
    container["env"].append({"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": "x", "key": "password"}}})
    assert secrets_in_env([container]) == ["ipa-backup:PGPASSWORD"]
    assert file_source(spec, container, "/nowhere/password") is None


def test_grafana_reads_the_admin_password_from_a_file(stack: str) -> None:
    grafana = kube_prometheus_stack_values(stack_settings(stack))["grafana"]
    path = grafana["env"]["GF_SECURITY_ADMIN_PASSWORD__FILE"]
    (mount,) = [m for m in grafana["extraSecretMounts"] if path.startswith(m["mountPath"] + "/")]
    assert (mount["secretName"], path.rsplit("/", 1)[1]) == (GRAFANA_ADMIN_SECRET, "admin-password")
    assert mount["defaultMode"] == 0o440 and mount["readOnly"] is True
    # The sidecars make no reload calls, which would need the password in their environment.
    assert grafana["sidecar"]["dashboards"]["skipReload"] and grafana["sidecar"]["datasources"]["skipReload"]


# --- requests and limits -------------------------------------------------------------------------

Rendered = Callable[[str], Path]


def pods_of(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(object name, pod spec) of every workload in a chart render; the operator's Prometheus and
    Alertmanager carry their resources on the custom resource."""
    found = []
    for obj in objects:
        if obj.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            found.append((obj["metadata"]["name"], obj["spec"]["template"]["spec"]))
        elif obj.get("kind") in ("Prometheus", "Alertmanager"):
            found.append((obj["metadata"]["name"], {"containers": [{"name": obj["kind"], "resources": obj["spec"].get("resources")}]}))
    return found


def unbounded_containers(objects: list[dict[str, Any]], need_cpu_limit: bool = True) -> list[str]:
    """Containers without a CPU and memory request and a memory (and CPU) limit."""
    missing = []
    for name, spec in pods_of(objects):
        for container in spec.get("initContainers", []) + spec["containers"]:
            r = container.get("resources") or {}
            wanted = [("requests", "cpu"), ("requests", "memory"), ("limits", "memory")]
            if need_cpu_limit:
                wanted.append(("limits", "cpu"))
            if not all((r.get(kind) or {}).get(what) for kind, what in wanted):
                missing.append(f"{name}/{container['name']}")
    return missing


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_chart_container_has_requests_and_limits(stack: str, rendered: Rendered) -> None:
    renders = read_chart_renders(rendered(stack))
    assert set(renders) == {RELEASE_NAME, "prometheus-postgres-exporter", "prometheus-redis-exporter", "prometheus-pushgateway"}
    workloads = [name for objects in renders.values() for name, _ in pods_of(objects)]
    assert len(workloads) >= 10
    for release, objects in renders.items():
        # Prometheus sets no CPU limit (prometheusCpuRequest only): a throttled Prometheus misses evaluations.
        prometheus_only = [m for m in unbounded_containers(objects) if not m.startswith(RELEASE_NAME + "-prometheus/")]
        assert prometheus_only == [], release
        assert unbounded_containers(objects, need_cpu_limit=False) == [], release
    # The operator passes the config-reloader's resources on as flags to every reloader it adds.
    operator = next(o for o in renders[RELEASE_NAME] if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-operator"))
    args = operator["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--config-reloader-memory-limit=64Mi" in args and "--config-reloader-cpu-request=10m" in args


def test_unbounded_container_check_fails_on_a_bare_container() -> None:
    bare = {"kind": "Deployment", "metadata": {"name": "x"}, "spec": {"template": {"spec": {"containers": [{"name": "c"}]}}}}
    assert unbounded_containers([bare]) == ["x/c"]


def test_container_resources_setting() -> None:
    settings = stack_settings(
        "dev", {"containerResources": {"grafana": {"cpuRequest": "200m", "memoryRequest": "1Gi", "cpuLimit": "2", "memoryLimit": "2Gi"}}}
    )
    values = kube_prometheus_stack_values(settings)
    assert values["grafana"]["resources"] == {"requests": {"cpu": "200m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}}
    assert values["prometheus-node-exporter"]["resources"] == DEFAULT_RESOURCES["nodeExporter"].spec()  # the rest keep defaults
    message = refused(
        {"containerResources": {"grafana": {"cpuRequest": "2", "memoryRequest": "1Gi", "cpuLimit": "1", "memoryLimit": "2Gi"}}}
    )
    assert "ipa-ops:containerResources" in message and "requests at most the limits (bad 'grafana')" in message
    message = refused({"containerResources": {"grafanna": DEFAULT_RESOURCES["grafana"].spec()}})
    assert "ipa-ops:containerResources" in message
    message = refused(
        {"containerResources": {"grafana": {"cpuRequest": "lots", "memoryRequest": "1Gi", "cpuLimit": "1", "memoryLimit": "2Gi"}}}
    )
    assert "bad grafana.cpuRequest 'lots'" in message


# --- prod HA: disruption budgets, zones, replicas that fit the nodes -----------------------------


def test_prod_budgets_and_zone_spread(rendered: Rendered) -> None:
    objects = read_chart_renders(rendered("prod"))[RELEASE_NAME]
    budgets = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "PodDisruptionBudget"}
    assert budgets[f"{RELEASE_NAME}-prometheus"]["minAvailable"] == 1  # of 2
    assert budgets[f"{RELEASE_NAME}-alertmanager"]["minAvailable"] == 2  # of 3
    for kind, labels in (("Prometheus", PROMETHEUS_POD_LABELS), ("Alertmanager", ALERTMANAGER_POD_LABELS)):
        (resource,) = [o for o in objects if o["kind"] == kind]
        assert resource["spec"]["replicas"] > 1
        (spread,) = resource["spec"]["topologySpreadConstraints"]
        assert spread["topologyKey"] == "topology.kubernetes.io/zone" and spread["maxSkew"] == 1
        assert spread["labelSelector"]["matchLabels"] == labels
        # The budget selects the very pods it protects.
        budget = budgets[resource["metadata"]["name"]]
        assert budget["selector"]["matchLabels"] == labels


def test_dev_single_replicas_get_no_budget_or_spread(rendered: Rendered) -> None:
    objects = read_chart_renders(rendered("dev"))[RELEASE_NAME]
    assert not [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    for kind in ("Prometheus", "Alertmanager"):
        (resource,) = [o for o in objects if o["kind"] == kind]
        assert not resource["spec"].get("topologySpreadConstraints")


@pytest.mark.parametrize("key", ["alertmanagerReplicas", "prometheusReplicas"])
def test_replicas_must_fit_the_nodes(key: str) -> None:
    message = refused({key: 4, "clusterNodeCount": 3}, "prod")
    assert f"ipa-ops:{key} = 4 is invalid" in message and "at most clusterNodeCount (3)" in message
    assert stack_settings("prod", {key: 3, "clusterNodeCount": 3})  # one per node fits


# --- chart images pinned by digest in prod ---------------------------------------------------------

PINNED = re.compile(r"[^@\s]+:[^@:\s]+@sha256:[0-9a-f]{64}")


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_prod_runs_only_images_pinned_by_digest(stack: str, rendered: Rendered) -> None:
    renders = read_chart_renders(rendered(stack))
    images = image_references([o for objects in renders.values() for o in objects])
    assert set(images_by_name(images)) == set(CHART_IMAGE_NAMES) == set(CHART_IMAGES)
    unpinned = sorted(i for i in images if not PINNED.fullmatch(i))
    if stack == "prod":
        assert unpinned == []
    else:
        assert len(unpinned) == len(images)  # dev follows the charts' tags


def test_prod_refuses_tag_only_chart_images() -> None:
    message = refused({"chartImages": {}}, "prod")
    assert "ipa-ops:chartImages = {}" in message and "every chart image pinned by digest" in message and "missing: prometheus" in message
    pins = dict(stack_settings("prod").chart_images)
    pins["grafana"] = "13.2.0"
    message = refused({"chartImages": pins}, "prod")
    assert "<tag>@sha256:<64 hex> for each image (bad 'grafana': '13.2.0')" in message
    assert stack_settings("dev", {"chartImages": {}}).chart_images == {}


def test_pins_reach_each_chart_in_its_own_way() -> None:
    digest = "sha256:" + "ab" * 32
    pins = {name: f"v9@{digest}" for name in CHART_IMAGE_NAMES}
    settings = stack_settings("prod", {"chartImages": pins})
    kps = kube_prometheus_stack_values(settings)
    assert kps["prometheus"]["prometheusSpec"]["image"] == {"tag": "v9", "sha": "ab" * 32}
    assert kps["kube-state-metrics"]["image"]["sha"] == digest
    assert kps["prometheus-node-exporter"]["image"] == {"tag": "v9", "distroless": False, "digest": digest}
    assert kps["grafana"]["sidecar"]["image"] == {"tag": "v9", "sha": "ab" * 32}
    assert kps["grafana"]["sidecar"]["dashboards"]["label"] == "grafana_dashboard"  # merged, not replaced
    assert postgres_exporter_values(settings)["image"] == {"tag": f"v9@{digest}"}


def test_with_pins_rewrites_only_the_pin_block() -> None:
    text = (
        "config:\n  ipa-ops:environment: prod\n  ipa-ops:chartImages:\n    # old\n    grafana: 1@sha256:x\n"
        "  ipa-ops:other: 1\n  # --- generated by x\n  ipa-ops:z: 2\n"
    )
    new = with_pins(text, {"grafana": "2@sha256:y", "alertmanager": "3@sha256:z"})
    assert new == (
        "config:\n  ipa-ops:environment: prod\n  ipa-ops:other: 1\n  ipa-ops:chartImages:\n    alertmanager: 3@sha256:z\n"
        "    grafana: 2@sha256:y\n  # --- generated by x\n  ipa-ops:z: 2\n"
    )
    with pytest.raises(ValueError, match="no image for"):
        images_by_name({"quay.io/prometheus/prometheus:v1"})


def test_pin_script_resolves_the_charts_own_tags(tmp_path: Path) -> None:
    """scripts/pin-chart-images.sh with a registry client that answers a digest per reference
    (no registry is reachable here): it asks for the tags the charts render and writes valid pins."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    asked = tmp_path / "asked"
    crane = bin_dir / "crane"
    crane.write_text(f'#!/bin/sh\necho "$2" >>{asked}\nprintf "sha256:%s\\n" "$(printf %s "$2" | sha256sum | cut -c1-64)"\n')
    crane.chmod(0o755)
    stack = tmp_path / "Pulumi.prod.yaml"
    stack.write_text((REPO_ROOT / "Pulumi.prod.yaml").read_text())
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    result = subprocess.run(
        [str(REPO_ROOT / "scripts" / "pin-chart-images.sh"), str(stack)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    references = asked.read_text().split()
    assert "quay.io/prometheus/prometheus:v3.14.0-distroless" in references and len(references) == len(CHART_IMAGE_NAMES)
    config, _ = load_stack_config(stack)
    pins = parse_settings(config).chart_images
    assert set(pins) == set(CHART_IMAGE_NAMES) and "f" * 64 not in "".join(pins.values())
    assert "PLACEHOLDERS" not in stack.read_text()


# --- Grafana sign-in with Entra ID -----------------------------------------------------------------

ADMINS, VIEWERS = "aaaaaaaa-0000-4000-8000-000000000001", "bbbbbbbb-0000-4000-8000-000000000002"
SSO = {
    "grafanaEntraClientId": "11111111-2222-4333-8444-555555555555",
    "grafanaEntraTenantId": "00000000-0000-4000-8000-000000000002",
    "grafanaEntraGroupRoles": {ADMINS: "Admin", VIEWERS: "Viewer"},
    "grafanaIngressHost": "grafana.ipa.example.com",
    "grafanaExternalUrl": "https://grafana.ipa.example.com",
}


def test_without_sso_only_the_break_glass_admin_signs_in(stack: str) -> None:
    grafana = kube_prometheus_stack_values(stack_settings(stack))["grafana"]
    ini = grafana["grafana.ini"]
    assert "auth.azuread" not in ini and ini["auth.anonymous"] == {"enabled": False} and ini["users"]["allow_sign_up"] is False
    assert grafana["ingress"] == {"enabled": False}
    assert list(grafana["env"]) == ["GF_SECURITY_ADMIN_PASSWORD__FILE"]


def test_entra_sign_in_maps_groups_to_roles_and_keeps_the_break_glass_admin(run_stack: RunStack) -> None:
    settings = stack_settings("prod", SSO)
    grafana = kube_prometheus_stack_values(settings)["grafana"]
    ini = grafana["grafana.ini"]
    azuread = ini["auth.azuread"]
    assert azuread["enabled"] and azuread["client_id"] == SSO["grafanaEntraClientId"]
    assert azuread["token_url"] == "https://login.microsoftonline.com/00000000-0000-4000-8000-000000000002/oauth2/v2.0/token"
    assert azuread["allowed_organizations"] == SSO["grafanaEntraTenantId"]
    assert azuread["allowed_groups"].split() == [ADMINS, VIEWERS]
    assert azuread["org_mapping"].split() == [f"{ADMINS}:1:Admin", f"{VIEWERS}:1:Viewer"]
    assert azuread["role_attribute_strict"] is True and azuread["auto_login"] is True
    assert "client_secret" not in azuread  # read from the mounted Secret's file
    assert ini["auth.anonymous"] == {"enabled": False} and ini["auth.basic"] == {"enabled": False}
    assert ini["auth"] == {"disable_login_form": False}  # /login?disableAutoLogin for the break-glass admin
    assert ini["security"]["cookie_secure"] is True and ini["server"]["root_url"] == SSO["grafanaExternalUrl"]
    path = grafana["env"]["GF_AUTH_AZUREAD_CLIENT_SECRET__FILE"]
    (mount,) = [m for m in grafana["extraSecretMounts"] if path.startswith(m["mountPath"] + "/")]
    assert mount["secretName"] == "grafana-entra" and path.endswith("/client-secret")
    assert grafana["ingress"]["tls"] == [{"secretName": "grafana-tls", "hosts": ["grafana.ipa.example.com"]}]
    names = {f.name for f in topology(settings).network_flows}
    assert {"grafana-entra-id", "ingress-grafana"} <= names
    run = run_monitoring(run_stack, "prod", SSO)
    secrets = {r.inputs["metadata"]["name"]: r for r in run.of_type(SECRET)}
    assert secrets["grafana-entra"].inputs["stringData"] == {"client-secret": PLACEHOLDER_SECRETS["grafanaEntraClientSecret"]}
    assert secrets["grafana-entra"].masked_inputs["stringData"] == {"client-secret": "[secret]"}


def test_no_entra_secret_without_sso(run_stack: RunStack) -> None:
    run = run_monitoring(run_stack, "dev")
    assert "grafana-entra" not in {r.inputs["metadata"]["name"] for r in run.of_type(SECRET)}


@pytest.mark.parametrize(
    ("overrides", "key", "accepted"),
    [
        ({**SSO, "grafanaEntraTenantId": ""}, "grafanaEntraTenantId", "the tenant id of the app registration"),
        ({**SSO, "grafanaEntraClientSecret": ""}, "grafanaEntraClientSecret", "client secret"),
        ({**SSO, "grafanaEntraGroupRoles": {}}, "grafanaEntraGroupRoles", "at least one {groupId: role}"),
        ({**SSO, "grafanaEntraGroupRoles": {ADMINS: "Owner"}}, "grafanaEntraGroupRoles", "one of Viewer, Editor, Admin"),
        ({**SSO, "grafanaEntraGroupRoles": {"admins": "Admin"}}, "grafanaEntraGroupRoles", "GUIDs"),
        ({**SSO, "grafanaExternalUrl": "https://other.example.com"}, "grafanaExternalUrl", "https://grafana.ipa.example.com"),
        ({"grafanaEntraClientId": "not-a-guid"}, "grafanaEntraClientId", "a GUID"),
    ],
)
def test_sign_in_settings_refused(overrides: dict[str, Any], key: str, accepted: str) -> None:
    message = refused(overrides, "prod")
    assert f"ipa-ops:{key}" in message and accepted in message
