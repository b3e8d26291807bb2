"""Helm values of kube-prometheus-stack for AKS, built by a pure function from the settings.

Every key path set here exists in the chart's values.yaml (kube-prometheus-stack 88.5.3 and
its grafana 12.11.1 and kube-state-metrics 8.4.0 subcharts); tests/test_monitoring.py checks that
against a key list.
No secret value is ever placed in these values: Grafana's admin password and the
Alertmanager secrets are Kubernetes Secrets referenced by name.
"""

from __future__ import annotations

from typing import Any

from components.alertmanager_config import SMTP_SECRET, TEAMS_SECRET, alertmanager_config
from components.settings import RemoteWrite, Settings
from components.topology import RELEASE_LABELS, RELEASE_NAME, topology

CHART = "kube-prometheus-stack"
CHART_REPO = "https://prometheus-community.github.io/helm-charts"

GRAFANA_ADMIN_SECRET = "grafana-admin"
GRAFANA_ADMIN_USER_KEY = "admin-user"
GRAFANA_ADMIN_PASSWORD_KEY = "admin-password"
# Dashboard ConfigMaps (label grafana_dashboard="1") name their Grafana folder with this annotation.
GRAFANA_FOLDER_ANNOTATION = "grafana_folder"
GRAFANA_DATASOURCE_UID = "prometheus"

# AKS runs the control plane for us: controller manager, scheduler and etcd are not reachable
# from the cluster, and kube-proxy serves metrics on 127.0.0.1 only (and is absent with
# Azure CNI powered by Cilium). Scraping them would only produce TargetDown / *Down alerts.
AKS_DISABLED_COMPONENTS = ("kubeControllerManager", "kubeScheduler", "kubeEtcd", "kubeProxy")
AKS_DISABLED_DEFAULT_RULES = ("etcd", "kubeControllerManager", "kubeSchedulerAlerting", "kubeSchedulerRecording", "kubeProxy", "windows")


# kube_pod_labels carries no Kubernetes label unless allowed: the rules and dashboards find the
# ipa-backend pods by their label app=ipa-backend (docs/monitoring/metrics.md), exported as `label_app`.
KUBE_STATE_METRICS_LABELS_ALLOWLIST = ["pods=[app]"]


def node_exporter_namespace(settings: Settings) -> str:
    return topology(settings).node_exporter_namespace


def _volume_claim(storage_class: str, size: str) -> dict[str, Any]:
    return {
        "volumeClaimTemplate": {
            "spec": {
                "storageClassName": storage_class,
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": size}},
            }
        }
    }


def remote_write_spec(target: RemoteWrite) -> dict[str, Any]:
    """One Prometheus Operator RemoteWriteSpec: Azure Monitor workspace (managed identity) or Thanos/Mimir."""
    spec: dict[str, Any] = {"name": target.name, "url": target.url}
    if target.azure_ad_client_id:
        spec["azureAd"] = {"cloud": "AzurePublic", "managedIdentity": {"clientId": target.azure_ad_client_id}}
    if target.tenant:
        spec["headers"] = {"X-Scope-OrgID": target.tenant}
    return spec


def _selector() -> dict[str, Any]:
    return {"matchLabels": dict(RELEASE_LABELS)}


def _prometheus(settings: Settings) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": settings.prometheus_replicas,
        "retention": settings.prometheus_retention,
        "retentionSize": settings.prometheus_retention_size,
        "storageSpec": _volume_claim(settings.storage_class, settings.prometheus_storage_size),
        "resources": {
            "requests": {"cpu": settings.prometheus_cpu_request, "memory": settings.prometheus_memory_request},
            "limits": {"memory": settings.prometheus_memory_limit},
        },
        "externalLabels": {"cluster": settings.cluster_name, "environment": settings.environment},
        # Pick up this program's objects (RELEASE_LABELS) in every namespace.
        "ruleSelectorNilUsesHelmValues": False,
        "serviceMonitorSelectorNilUsesHelmValues": False,
        "podMonitorSelectorNilUsesHelmValues": False,
        "probeSelectorNilUsesHelmValues": False,
        "ruleSelector": _selector(),
        "serviceMonitorSelector": _selector(),
        "podMonitorSelector": _selector(),
        "probeSelector": _selector(),
        "ruleNamespaceSelector": {},
        "serviceMonitorNamespaceSelector": {},
        "podMonitorNamespaceSelector": {},
        "probeNamespaceSelector": {},
        "podAntiAffinity": "hard" if settings.prometheus_replicas > 1 else "soft",
        "remoteWrite": [remote_write_spec(t) for t in settings.remote_write],
    }
    return {"prometheusSpec": spec}


def _alertmanager(settings: Settings) -> dict[str, Any]:
    return {
        "config": alertmanager_config(settings),
        # The config carries Alertmanager's Go templates; Helm must not run them through `tpl`.
        "tplConfig": False,
        "alertmanagerSpec": {
            "replicas": settings.alertmanager_replicas,
            "storage": _volume_claim(settings.storage_class, settings.alertmanager_storage_size),
            # Mounted at /etc/alertmanager/secrets/<name>/<key>; the config reads them as files.
            "secrets": [TEAMS_SECRET, SMTP_SECRET],
            "podAntiAffinity": "hard" if settings.alertmanager_replicas > 1 else "soft",
            "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
        },
    }


def _grafana(settings: Settings) -> dict[str, Any]:
    return {
        "admin": {
            "existingSecret": GRAFANA_ADMIN_SECRET,
            "userKey": GRAFANA_ADMIN_USER_KEY,
            "passwordKey": GRAFANA_ADMIN_PASSWORD_KEY,
        },
        # A StatefulSet, so a rolling update never waits for a ReadWriteOnce disk held by the old pod.
        "persistence": {
            "enabled": True,
            "type": "sts",
            "storageClassName": settings.storage_class,
            "accessModes": ["ReadWriteOnce"],
            "size": settings.grafana_storage_size,
        },
        # The chown init container runs as root (refused by the restricted Pod Security level);
        # fsGroup 472 already gives Grafana its volume.
        "initChownData": {"enabled": False},
        "testFramework": {"enabled": False},
        "grafana.ini": {
            "server": {"root_url": topology(settings).grafana_url},
            "auth.anonymous": {"enabled": False},
            "users": {"allow_sign_up": False},
            "analytics": {"check_for_updates": False, "reporting_enabled": False},
        },
        "sidecar": {
            "dashboards": {
                "enabled": True,
                "label": "grafana_dashboard",
                "labelValue": "1",
                "searchNamespace": "ALL",
                "folderAnnotation": GRAFANA_FOLDER_ANNOTATION,
                "provider": {"foldersFromFilesStructure": True, "allowUiUpdates": False},
            },
            "datasources": {
                "enabled": True,
                "defaultDatasourceEnabled": True,
                "isDefaultDatasource": True,
                "name": "Prometheus",
                "uid": GRAFANA_DATASOURCE_UID,
            },
        },
    }


def kube_prometheus_stack_values(settings: Settings) -> dict[str, Any]:
    """The complete values of the kube-prometheus-stack release."""
    values: dict[str, Any] = {
        "fullnameOverride": RELEASE_NAME,
        "defaultRules": {"rules": dict.fromkeys(AKS_DISABLED_DEFAULT_RULES, False)},
        "windowsMonitoring": {"enabled": False},
        "kubeApiServer": {"enabled": True},
        "kubelet": {"enabled": True},
        "coreDns": {"enabled": True},
        "kubeDns": {"enabled": False},
        "prometheus-node-exporter": {"namespaceOverride": node_exporter_namespace(settings)},
        "kube-state-metrics": {"metricLabelsAllowlist": list(KUBE_STATE_METRICS_LABELS_ALLOWLIST)},
        "prometheus": _prometheus(settings),
        "alertmanager": _alertmanager(settings),
        "grafana": _grafana(settings),
    }
    for component in AKS_DISABLED_COMPONENTS:
        values[component] = {"enabled": False}
    return values
