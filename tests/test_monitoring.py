"""Mock and pure-function tests of the monitoring stack: the kube-prometheus-stack release
and its values, secrets kept out of values and manifests, the ipa-backend PodMonitor, the exporters,
the prod/dev differences and the key paths checked against the charts' values.yaml."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pulumi
import pytest

from components.alertmanager_config import HEARTBEAT_SECRET, SMTP_SECRET, TEAMS_SECRET, alertmanager_config
from components.monitoring import MonitoringStack, MonitoringStackArgs, monitoring_outputs
from components.monitoring_scrape import (
    POSTGRES_CREDENTIALS_DIR,
    POSTGRES_EXPORTER,
    REDIS_EXPORTER,
    postgres_exporter_values,
    redis_exporter_values,
)
from components.monitoring_values import (
    AKS_DISABLED_COMPONENTS,
    CHART_REPO,
    GRAFANA_ADMIN_SECRET,
    kube_prometheus_stack_values,
    node_exporter_namespace,
)
from components.pushgateway import PushgatewayArgs, pushgateway_values
from components.rules.groups import BACKEND_APP, backend_pods
from components.settings import Settings
from components.topology import GRAFANA_SERVICE, RELEASE_NAME
from offline.runner import Run
from offline.stackconfig import PLACEHOLDER_SECRETS
from tests.conftest import RunStack, stack_settings

RELEASE = "kubernetes:helm.sh/v3:Release"
SECRET = "kubernetes:core/v1:Secret"
NAMESPACE = "kubernetes:core/v1:Namespace"
POD_MONITOR = "kubernetes:monitoring.coreos.com/v1:PodMonitor"
RANDOM_PASSWORD = "random:index/randomPassword:RandomPassword"
COMPONENT = "ipa-ops:monitoring:MonitoringStack"
KEY_PATHS = Path(__file__).parent / "data" / "chart_value_paths.txt"


def run_monitoring(run_stack: RunStack, stack: str, overrides: dict[str, Any] | None = None) -> tuple[Run, Settings]:
    settings = stack_settings(stack, overrides)
    run = run_stack(stack, overrides, program=lambda: MonitoringStack("monitoring", MonitoringStackArgs.from_settings(settings)).export())
    return run, settings


def releases(run: Run) -> dict[str, Any]:
    return {r.inputs["name"]: r for r in run.of_type(RELEASE)}


# --- the release ------------------------------------------------------------------------------


def test_release_chart_version_name_namespace(stack: str, run_stack: RunStack) -> None:
    run, settings = run_monitoring(run_stack, stack)
    release = releases(run)[RELEASE_NAME]
    assert release.inputs["chart"] == "kube-prometheus-stack"
    assert release.inputs["version"] == settings.kube_prometheus_stack_version == "88.5.3"
    assert release.inputs["name"] == RELEASE_NAME  # explicit: the `release` label selectors use it
    assert release.inputs["namespace"] == settings.monitoring_namespace
    assert release.inputs["repositoryOpts"] == {"repo": "https://prometheus-community.github.io/helm-charts"}
    assert release.parent_type == COMPONENT
    assert release.inputs["values"] == kube_prometheus_stack_values(settings)


def test_namespaces_carry_pod_security_labels(stack: str, run_stack: RunStack) -> None:
    run, settings = run_monitoring(run_stack, stack)
    labels = {r.inputs["metadata"]["name"]: r.inputs["metadata"]["labels"] for r in run.of_type(NAMESPACE)}
    monitoring = labels[settings.monitoring_namespace]
    for mode in ("enforce", "audit", "warn"):
        assert monitoring[f"pod-security.kubernetes.io/{mode}"] == "restricted"
    # node-exporter needs the host's network and /proc: it alone runs in a privileged namespace.
    assert labels[node_exporter_namespace(settings)]["pod-security.kubernetes.io/enforce"] == "privileged"
    values = kube_prometheus_stack_values(settings)
    assert values["prometheus-node-exporter"]["namespaceOverride"] == node_exporter_namespace(settings)


def test_stack_outputs(stack: str, run_stack: RunStack) -> None:
    run, settings = run_monitoring(run_stack, stack)
    assert run.exports == monitoring_outputs(settings)
    assert run.exports["grafanaUrl"] == f"http://{GRAFANA_SERVICE}.monitoring.svc"
    assert f"port-forward svc/{GRAFANA_SERVICE} 3000:80" in run.exports["grafanaPortForward"]
    assert run.exports["monitoringNamespace"] == "monitoring"
    assert run.exports["kubePrometheusStackRelease"] == RELEASE_NAME


def test_namespace_output_is_where_the_rest_goes(run_stack: RunStack) -> None:
    """`namespace_name` is what __main__.py hands the rules, dashboards and Pushgateway."""
    overrides = {"monitoringNamespace": "observability"}
    settings = stack_settings("dev", overrides)

    def program() -> None:
        pulumi.export("namespace", MonitoringStack("monitoring", MonitoringStackArgs.from_settings(settings)).namespace_name)

    assert run_stack("dev", overrides, program=program).exports["namespace"] == "observability"


def test_main_program_wires_the_component(run_stack: RunStack) -> None:
    run = run_stack("dev")
    assert RELEASE_NAME in releases(run)
    assert run.exports["kubePrometheusStackRelease"] == RELEASE_NAME


# --- the values, key by key -------------------------------------------------------------------


def test_aks_control_plane_targets_disabled(stack: str) -> None:
    values = kube_prometheus_stack_values(stack_settings(stack))
    for component in ("kubeControllerManager", "kubeScheduler", "kubeEtcd", "kubeProxy"):
        assert values[component] == {"enabled": False}
    assert set(AKS_DISABLED_COMPONENTS) == {"kubeControllerManager", "kubeScheduler", "kubeEtcd", "kubeProxy"}
    rules = values["defaultRules"]["rules"]
    for group in ("etcd", "kubeControllerManager", "kubeSchedulerAlerting", "kubeSchedulerRecording", "kubeProxy"):
        assert rules[group] is False
    # What AKS does expose stays scraped.
    assert values["kubeApiServer"]["enabled"] and values["kubelet"]["enabled"] and values["coreDns"]["enabled"]


def test_prometheus_values(stack: str) -> None:
    settings = stack_settings(stack)
    spec = kube_prometheus_stack_values(settings)["prometheus"]["prometheusSpec"]
    assert spec["retention"] == settings.prometheus_retention
    assert spec["retentionSize"] == settings.prometheus_retention_size
    claim = spec["storageSpec"]["volumeClaimTemplate"]["spec"]
    assert claim["storageClassName"] == settings.storage_class
    assert claim["storageClassName"].startswith("managed-csi")
    assert claim["resources"]["requests"]["storage"] == settings.prometheus_storage_size
    assert claim["accessModes"] == ["ReadWriteOnce"]
    assert spec["resources"] == {
        "requests": {"cpu": settings.prometheus_cpu_request, "memory": settings.prometheus_memory_request},
        "limits": {"memory": settings.prometheus_memory_limit},
    }
    assert spec["replicas"] == settings.prometheus_replicas
    assert spec["externalLabels"] == {"cluster": settings.cluster_name, "environment": stack}
    for kind in ("rule", "serviceMonitor", "podMonitor", "probe"):
        assert spec[f"{kind}SelectorNilUsesHelmValues"] is False
        assert spec[f"{kind}Selector"] == {"matchLabels": {"release": RELEASE_NAME}}
        assert spec[f"{kind}NamespaceSelector"] == {}
    assert spec["remoteWrite"] == []


def test_kube_state_metrics_exports_the_backend_app_label(stack: str) -> None:
    """The rules and dashboards select the backend pods by kube_pod_labels' label_app (the contract's
    app=ipa-backend); kube-state-metrics exports that label only when the allowlist names it."""
    values = kube_prometheus_stack_values(stack_settings(stack))
    assert values["kube-state-metrics"]["metricLabelsAllowlist"] == ["pods=[app]"]
    assert f'label_app="{BACKEND_APP}"' in backend_pods("ipa") and BACKEND_APP == "ipa-backend"


def test_remote_write_targets() -> None:
    targets = [
        {
            "name": "azure-monitor",
            "url": "https://amw-ipa.westeurope-1.metrics.ingest.monitor.azure.com/dataCollectionRules/dcr-1/streams/Microsoft-PrometheusMetrics/api/v1/write?api-version=2023-04-24",
            "azureAdClientId": "11111111-2222-4333-8444-555555555555",
        },
        {"name": "mimir", "url": "https://mimir.example.com/api/v1/push", "tenant": "ipa-prod"},
    ]
    spec = kube_prometheus_stack_values(stack_settings("prod", {"remoteWrite": targets}))["prometheus"]["prometheusSpec"]
    azure, mimir = spec["remoteWrite"]
    assert azure["url"] == targets[0]["url"] and azure["name"] == "azure-monitor"
    assert azure["azureAd"] == {"cloud": "AzurePublic", "managedIdentity": {"clientId": "11111111-2222-4333-8444-555555555555"}}
    assert mimir == {"name": "mimir", "url": "https://mimir.example.com/api/v1/push", "headers": {"X-Scope-OrgID": "ipa-prod"}}


def test_alertmanager_values(stack: str) -> None:
    settings = stack_settings(stack)
    alertmanager = kube_prometheus_stack_values(settings)["alertmanager"]
    spec = alertmanager["alertmanagerSpec"]
    assert spec["replicas"] == settings.alertmanager_replicas
    claim = spec["storage"]["volumeClaimTemplate"]["spec"]
    assert claim["storageClassName"] == settings.storage_class
    assert claim["resources"]["requests"]["storage"] == settings.alertmanager_storage_size
    assert spec["secrets"] == [TEAMS_SECRET, SMTP_SECRET, HEARTBEAT_SECRET]
    assert alertmanager["config"] == alertmanager_config(settings)
    assert alertmanager["tplConfig"] is False  # the Go templates reach Alertmanager untouched by Helm


def test_grafana_values(stack: str) -> None:
    settings = stack_settings(stack)
    grafana = kube_prometheus_stack_values(settings)["grafana"]
    assert grafana["admin"] == {"existingSecret": GRAFANA_ADMIN_SECRET, "userKey": "admin-user", "passwordKey": "admin-password"}
    assert "adminPassword" not in grafana
    assert grafana["persistence"]["enabled"] is True
    assert grafana["persistence"]["storageClassName"] == settings.storage_class
    assert grafana["persistence"]["size"] == settings.grafana_storage_size
    dashboards = grafana["sidecar"]["dashboards"]
    assert (dashboards["enabled"], dashboards["label"], dashboards["labelValue"]) == (True, "grafana_dashboard", "1")
    assert dashboards["folderAnnotation"] == "grafana_folder"
    assert dashboards["provider"]["foldersFromFilesStructure"] is True
    assert grafana["grafana.ini"]["auth.anonymous"]["enabled"] is False
    datasource = grafana["sidecar"]["datasources"]
    assert datasource["enabled"] and datasource["defaultDatasourceEnabled"] and datasource["isDefaultDatasource"]
    assert datasource["uid"] == "prometheus"
    assert grafana["initChownData"]["enabled"] is False  # a root init container breaks the restricted level


def test_prod_and_dev_differ_where_they_should() -> None:
    dev, prod = (kube_prometheus_stack_values(stack_settings(s)) for s in ("dev", "prod"))
    dev_prom, prod_prom = dev["prometheus"]["prometheusSpec"], prod["prometheus"]["prometheusSpec"]
    assert (dev_prom["replicas"], prod_prom["replicas"]) == (1, 2)
    assert (dev["alertmanager"]["alertmanagerSpec"]["replicas"], prod["alertmanager"]["alertmanagerSpec"]["replicas"]) == (1, 3)
    assert (dev_prom["podAntiAffinity"], prod_prom["podAntiAffinity"]) == ("soft", "hard")
    assert prod["alertmanager"]["alertmanagerSpec"]["podAntiAffinity"] == "hard"
    assert (dev_prom["retention"], prod_prom["retention"]) == ("15d", "30d")
    assert dev_prom["storageSpec"] != prod_prom["storageSpec"]
    assert dev_prom["externalLabels"]["environment"] == "dev" and prod_prom["externalLabels"]["environment"] == "prod"
    dev_email = dev["alertmanager"]["config"]["receivers"][2]["email_configs"][0]["to"]
    prod_email = prod["alertmanager"]["config"]["receivers"][2]["email_configs"][0]["to"]
    assert dev_email == "ipa-oncall@ipa.example.com"
    assert prod_email == "ipa-oncall@ipa.example.com, platform-leads@ipa.example.com"


# --- secrets ------------------------------------------------------------------------------------


def secret_values(run: Run) -> list[str]:
    passwords = [r.outputs["result"] for r in run.of_type(RANDOM_PASSWORD)]
    assert passwords and all(len(p) >= 32 for p in passwords)
    return [*PLACEHOLDER_SECRETS.values(), *passwords]


def test_no_secret_value_in_helm_values_or_manifests(stack: str, run_stack: RunStack) -> None:
    run = run_stack(stack)  # the whole program: other components' releases and manifests too
    secrets = secret_values(run)
    for record in run.recorded:
        revealed = json.dumps(record.inputs)
        if record.type == RELEASE:
            for secret in secrets:
                assert secret not in revealed, f"a secret value is in the Helm values of {record.name}"
        elif record.type.startswith("kubernetes:") and record.type != SECRET:
            for secret in secrets:
                assert secret not in revealed, f"a secret value is in the manifest of {record.name}"
        masked = json.dumps(record.masked_inputs)
        for secret in secrets:
            assert secret not in masked, f"{record.name} shows a secret value unmasked"


def test_secrets_are_kubernetes_secrets_referenced_by_name(stack: str, run_stack: RunStack) -> None:
    run, settings = run_monitoring(run_stack, stack)
    password = run.one(RANDOM_PASSWORD).outputs["result"]
    secrets = {r.inputs["metadata"]["name"]: r for r in run.of_type(SECRET)}
    assert secrets[GRAFANA_ADMIN_SECRET].inputs["stringData"]["admin-password"] == password
    assert secrets[TEAMS_SECRET].inputs["stringData"] == {"url": PLACEHOLDER_SECRETS["teamsWebhookUrl"]}
    assert secrets[SMTP_SECRET].inputs["stringData"] == {"password": PLACEHOLDER_SECRETS["smtpPassword"]}
    for record in secrets.values():
        assert record.inputs["metadata"]["namespace"] == settings.monitoring_namespace
        assert set(record.masked_inputs["stringData"].values()) == {"[secret]"}
    values = releases(run)[RELEASE_NAME].inputs["values"]
    assert values["grafana"]["admin"]["existingSecret"] == GRAFANA_ADMIN_SECRET
    assert set(values["alertmanager"]["alertmanagerSpec"]["secrets"]) == {TEAMS_SECRET, SMTP_SECRET, HEARTBEAT_SECRET}


# --- scraping the backend -------------------------------------------------------------------


def test_backend_pod_monitor_shape(stack: str, run_stack: RunStack) -> None:
    run, settings = run_monitoring(run_stack, stack)
    monitor = run.one(POD_MONITOR).inputs
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["kind"] == "PodMonitor"
    assert monitor["metadata"]["namespace"] == settings.monitoring_namespace
    assert monitor["metadata"]["labels"]["release"] == RELEASE_NAME
    spec = monitor["spec"]
    assert spec["selector"] == {"matchLabels": {"app": "ipa-backend"}}
    assert spec["namespaceSelector"] == {"matchNames": [settings.backend_namespace]}
    assert spec["jobLabel"] == "app"
    (endpoint,) = spec["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    assert {"action": "replace", "targetLabel": "job", "replacement": "ipa-backend"} in endpoint["relabelings"]


def test_backend_port_path_and_namespace_come_from_settings(run_stack: RunStack) -> None:
    overrides = {"backendMetricsPort": "metrics", "backendMetricsPath": "/internal/metrics", "backendNamespace": "ipa-staging"}
    run, _ = run_monitoring(run_stack, "dev", overrides)
    spec = run.one(POD_MONITOR).inputs["spec"]
    assert spec["podMetricsEndpoints"][0]["port"] == "metrics"
    assert spec["podMetricsEndpoints"][0]["path"] == "/internal/metrics"
    assert spec["namespaceSelector"] == {"matchNames": ["ipa-staging"]}


# --- exporters ----------------------------------------------------------------------------------


def test_exporter_releases(stack: str, run_stack: RunStack) -> None:
    run, settings = run_monitoring(run_stack, stack)
    found = releases(run)
    for chart, version, values in (
        (POSTGRES_EXPORTER, settings.postgres_exporter_chart_version, postgres_exporter_values(settings)),
        (REDIS_EXPORTER, settings.redis_exporter_chart_version, redis_exporter_values(settings)),
    ):
        release = found[chart].inputs
        assert release["chart"] == chart
        assert release["version"] == version
        assert release["namespace"] == settings.monitoring_namespace
        assert release["repositoryOpts"] == {"repo": CHART_REPO}
        assert release["values"] == values
        assert release["values"]["serviceMonitor"]["enabled"] is True
        assert release["values"]["serviceMonitor"]["labels"] == {"release": RELEASE_NAME}
        assert release["values"]["securityContext"]["readOnlyRootFilesystem"] is True
        assert release["values"]["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert (settings.postgres_exporter_chart_version, settings.redis_exporter_chart_version) == ("8.2.0", "6.29.0")


def test_exporter_credentials_come_from_the_named_secrets() -> None:
    settings = stack_settings(
        "prod",
        {
            "postgresCredentialsSecret": "pg-monitor",
            "redisCredentialsSecret": "redis-monitor",
            "postgresHost": "ipa-prod.postgres.database.azure.com",
            "postgresSslMode": "verify-full",
        },
    )
    postgres = postgres_exporter_values(settings)
    volume, key_vault = postgres["extraVolumes"]  # prod syncs the Secret from its Key Vault
    assert key_vault["csi"]["driver"] == "secrets-store.csi.k8s.io"
    assert volume["secret"]["secretName"] == "pg-monitor"
    assert {item["key"] for item in volume["secret"]["items"]} == {"username", "password"}
    assert postgres["extraVolumeMounts"][0]["mountPath"] == POSTGRES_CREDENTIALS_DIR
    datasource = postgres["config"]["datasource"]
    assert datasource["userFile"] == f"{POSTGRES_CREDENTIALS_DIR}/username"
    assert datasource["passwordFile"] == f"{POSTGRES_CREDENTIALS_DIR}/password"
    assert "password" not in datasource and "user" not in datasource
    assert (datasource["host"], datasource["port"], datasource["sslmode"]) == (
        "ipa-prod.postgres.database.azure.com",
        "5432",
        "verify-full",
    )
    redis = redis_exporter_values(settings)
    assert redis["auth"] == {"enabled": True, "secret": {"name": "redis-monitor", "key": "password"}}
    assert redis["redisAddress"] == f"redis://{settings.redis_host}:6379"


# --- key paths against the charts' values.yaml ------------------------------------------------


def known_paths() -> dict[str, set[str]]:
    paths: dict[str, set[str]] = {}
    for line in KEY_PATHS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            chart, path, _source = line.split(" ")
            paths.setdefault(chart, set()).add(path)
    return paths


# Free-form subtrees: their content is Kubernetes objects or application config, not chart keys.
OPAQUE = {
    "config",
    "grafana.ini",
    "resources",
    "volumeClaimTemplate",
    "externalLabels",
    "ruleSelector",
    "serviceMonitorSelector",
    "podMonitorSelector",
    "probeSelector",
    "ruleNamespaceSelector",
    "serviceMonitorNamespaceSelector",
    "podMonitorNamespaceSelector",
    "probeNamespaceSelector",
    "securityContext",
    "podSecurityContext",
    "containerSecurityContext",
    "labels",
    "additionalLabels",
    "env",  # environment variables of the container, by name
}


def key_paths(values: dict[str, Any], prefix: str = "") -> list[str]:
    found = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        found.append(path)
        if isinstance(value, dict) and key not in OPAQUE:
            found += key_paths(value, path + ".")
    return found


@pytest.mark.parametrize("stack_name", ["dev", "prod"])
def test_values_keys_exist_in_charts(stack_name: str) -> None:
    settings = stack_settings(stack_name, {"remoteWrite": [{"name": "m", "url": "https://m.example.com/push", "tenant": "t"}]})
    known = known_paths()
    charts = {
        f"kube-prometheus-stack@{settings.kube_prometheus_stack_version}": kube_prometheus_stack_values(settings),
        f"prometheus-postgres-exporter@{settings.postgres_exporter_chart_version}": postgres_exporter_values(settings),
        f"prometheus-redis-exporter@{settings.redis_exporter_chart_version}": redis_exporter_values(settings),
        f"prometheus-pushgateway@{settings.pushgateway_chart_version}": pushgateway_values(
            PushgatewayArgs.from_settings(settings), settings.monitoring_namespace
        ),
    }
    for chart, values in charts.items():
        assert chart in known, f"no key list for {chart}: regenerate tests/data/chart_value_paths.txt for this version"
        unknown = [p for p in key_paths(values) if p not in known[chart]]
        assert not unknown, f"{chart}: keys not in the chart's values.yaml: {unknown}"


def test_key_check_catches_a_typo() -> None:
    known = known_paths()["kube-prometheus-stack@88.5.3"]
    assert "prometheus.prometheusSpec.retention" in known
    typo = {"prometheus": {"prometheusSpec": {"retension": "15d"}}}
    assert [p for p in key_paths(typo) if p not in known] == ["prometheus.prometheusSpec.retension"]


def test_key_check_covers_the_pushgateway_release() -> None:
    """A misspelt Pushgateway key is caught too, and its known list is the chart version the stack pins."""
    settings = stack_settings("dev")
    known = known_paths()[f"prometheus-pushgateway@{settings.pushgateway_chart_version}"]
    assert settings.pushgateway_chart_version == "3.8.0"
    assert {"persistentVolume.mountPath", "serviceMonitor.honorLabels", "extraArgs"} <= known
    typo = {"persistentVolume": {"mountpath": "/data"}}
    assert [p for p in key_paths(typo) if p not in known] == ["persistentVolume.mountpath"]


def test_alertmanager_config_sets_every_chart_default_key(stack: str) -> None:
    """Helm merges maps: a default key we leave out would reach the deployed config but not the render."""
    config = alertmanager_config(stack_settings(stack))
    defaults = known_paths()["kube-prometheus-stack@88.5.3:alertmanager.config-default"]
    assert {"route.receiver", "inhibit_rules", "templates"} <= defaults
    for path in defaults:
        node: Any = config
        for part in path.split("."):
            assert isinstance(node, dict) and part in node, f"alertmanager_config() does not set {path}"
            node = node[part]
