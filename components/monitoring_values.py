"""Helm values of kube-prometheus-stack for AKS, built by a pure function from the settings.

Every key path set here exists in the chart's values.yaml (kube-prometheus-stack 88.5.3 and
its grafana 12.11.1 and kube-state-metrics 8.4.0 subcharts); tests/test_monitoring.py checks that
against a key list.
No secret value is ever placed in these values: Grafana's admin password and the
Alertmanager secrets are Kubernetes Secrets referenced by name.
"""

from __future__ import annotations

from typing import Any

from components.alertmanager_config import ALERTMANAGER_SECRETS, alertmanager_config
from components.chart_images import pinned
from components.settings import RemoteWrite, Settings
from components.topology import ALERTMANAGER_POD_LABELS, PROMETHEUS_POD_LABELS, RELEASE_LABELS, RELEASE_NAME, topology

CHART_REPO = "https://prometheus-community.github.io/helm-charts"

GRAFANA_ADMIN_SECRET = "grafana-admin"
GRAFANA_ADMIN_USER_KEY = "admin-user"
GRAFANA_ADMIN_PASSWORD_KEY = "admin-password"
# Dashboard ConfigMaps (label grafana_dashboard="1") name their Grafana folder with this annotation.
GRAFANA_FOLDER_ANNOTATION = "grafana_folder"
GRAFANA_DATASOURCE_UID = "prometheus"
# The sidecars' Role: ConfigMaps of the monitoring namespace, nothing else. The chart's own Role
# (and its default ClusterRole) would also grant every Secret, so the chart binds this one instead.
GRAFANA_SIDECAR_ROLE = "grafana-sidecar-configmaps"
# Grafana reads its secrets from files of mounted Secrets (GF_<SECTION>_<KEY>__FILE), not from env.
GRAFANA_SECRETS_DIR = "/etc/secrets"
GRAFANA_ENTRA_SECRET = "grafana-entra"
GRAFANA_ENTRA_SECRET_KEY = "client-secret"
ENTRA_LOGIN = "https://login.microsoftonline.com"
MAIN_ORG = 1  # Grafana's default organisation

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


ZONE_LABEL = "topology.kubernetes.io/zone"  # AKS sets it on every node of a zonal node pool


def zone_spread(replicas: int, pod_labels: dict[str, str]) -> list[dict[str, Any]]:
    """Replicas spread over availability zones (at most one more in any zone), so a zone outage
    leaves the others; nothing to spread for one replica."""
    if replicas < 2:
        return []
    return [
        {"maxSkew": 1, "topologyKey": ZONE_LABEL, "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": dict(pod_labels)}}
    ]


def disruption_budget(replicas: int) -> dict[str, Any]:
    """A node drain takes at most one replica at a time; one replica gets none (it would block every drain)."""
    return {"enabled": replicas > 1, "minAvailable": max(1, replicas - 1)}


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
        "topologySpreadConstraints": zone_spread(settings.prometheus_replicas, PROMETHEUS_POD_LABELS),
        "remoteWrite": [remote_write_spec(t) for t in settings.remote_write],
    }
    return {"prometheusSpec": spec, "podDisruptionBudget": disruption_budget(settings.prometheus_replicas)}


def _alertmanager(settings: Settings) -> dict[str, Any]:
    return {
        "config": alertmanager_config(settings),
        # The config carries Alertmanager's Go templates; Helm must not run them through `tpl`.
        "tplConfig": False,
        "podDisruptionBudget": disruption_budget(settings.alertmanager_replicas),
        "alertmanagerSpec": {
            "replicas": settings.alertmanager_replicas,
            "storage": _volume_claim(settings.storage_class, settings.alertmanager_storage_size),
            # Mounted at /etc/alertmanager/secrets/<name>/<key>; the config reads them as files.
            "secrets": list(ALERTMANAGER_SECRETS),
            "podAntiAffinity": "hard" if settings.alertmanager_replicas > 1 else "soft",
            "topologySpreadConstraints": zone_spread(settings.alertmanager_replicas, ALERTMANAGER_POD_LABELS),
            "resources": settings.resources("alertmanager"),
        },
    }


def grafana_sidecar_role(settings: Settings) -> dict[str, Any]:
    """The Role the Grafana sidecars run with: read ConfigMaps of the monitoring namespace only."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": GRAFANA_SIDECAR_ROLE, "namespace": settings.monitoring_namespace},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "watch", "list"]}],
    }


def _sidecar_scope(settings: Settings) -> dict[str, Any]:
    # Dashboards and the datasource are ConfigMaps in the monitoring namespace (docs/monitoring/dashboards.md).
    # No reload calls: they would need the admin password in the sidecars' environment. Grafana
    # rescans the dashboard files itself, and the datasource is written before Grafana starts.
    return {"searchNamespace": settings.monitoring_namespace, "resource": "configmap", "skipReload": True}


def grafana_secret_file(secret: str, key: str) -> str:
    """Where Grafana finds key `key` of Secret `secret` (listed in `extraSecretMounts`)."""
    return f"{GRAFANA_SECRETS_DIR}/{secret}/{key}"


def _secret_mount(secret: str) -> dict[str, Any]:
    # 0440 and the chart's fsGroup 472: only Grafana's group reads it.
    return {"name": secret, "secretName": secret, "mountPath": f"{GRAFANA_SECRETS_DIR}/{secret}", "readOnly": True, "defaultMode": 0o440}


def grafana_sign_in(settings: Settings) -> dict[str, Any]:
    """grafana.ini sections for Entra ID sign-in (empty without grafanaEntraClientId).

    Users are sent to Entra ID (auto_login); only members of the mapped groups get in, each with
    the role of its group (org_mapping; role_attribute_strict refuses the rest). The login form
    stays behind /login?disableAutoLogin for the break-glass admin; HTTP basic auth is off.
    """
    if not settings.grafana_entra_client_id:
        return {}
    tenant = settings.grafana_entra_tenant_id
    groups = sorted(settings.grafana_entra_group_roles)
    return {
        "auth.azuread": {
            "enabled": True,
            "name": "Microsoft Entra ID",
            "client_authentication": "client_secret_post",
            "client_id": settings.grafana_entra_client_id,
            "scopes": "openid email profile",
            "auth_url": f"{ENTRA_LOGIN}/{tenant}/oauth2/v2.0/authorize",
            "token_url": f"{ENTRA_LOGIN}/{tenant}/oauth2/v2.0/token",
            "allowed_organizations": tenant,
            "allowed_groups": " ".join(groups),
            "org_mapping": " ".join(f"{g}:{MAIN_ORG}:{settings.grafana_entra_group_roles[g]}" for g in groups),
            "role_attribute_strict": True,
            "skip_org_role_sync": False,
            "allow_sign_up": True,
            "auto_login": True,
            "use_pkce": True,
            "use_refresh_token": True,
        },
        "auth.basic": {"enabled": False},
        "auth": {"disable_login_form": False},  # the break-glass admin's way in
    }


def grafana_ingress(settings: Settings) -> dict[str, Any]:
    """The chart's Ingress, HTTPS only, when grafanaIngressHost is set."""
    host = settings.grafana_ingress_host
    if not host:
        return {"enabled": False}
    return {
        "enabled": True,
        "ingressClassName": settings.grafana_ingress_class,
        "hosts": [host],
        "path": "/",
        "pathType": "Prefix",
        "tls": [{"secretName": settings.grafana_ingress_tls_secret, "hosts": [host]}],
    }


def _grafana(settings: Settings) -> dict[str, Any]:
    return {
        # A Role in the monitoring namespace, bound to the one above: no ClusterRole, no Secret access.
        "rbac": {"namespaced": True, "useExistingRole": GRAFANA_SIDECAR_ROLE},
        "admin": {
            "existingSecret": GRAFANA_ADMIN_SECRET,
            "userKey": GRAFANA_ADMIN_USER_KEY,
            "passwordKey": GRAFANA_ADMIN_PASSWORD_KEY,
        },
        # The break-glass admin's password as a file; the chart then sets no password variable.
        "env": {
            "GF_SECURITY_ADMIN_PASSWORD__FILE": grafana_secret_file(GRAFANA_ADMIN_SECRET, GRAFANA_ADMIN_PASSWORD_KEY),
            **(
                {"GF_AUTH_AZUREAD_CLIENT_SECRET__FILE": grafana_secret_file(GRAFANA_ENTRA_SECRET, GRAFANA_ENTRA_SECRET_KEY)}
                if settings.grafana_entra_client_id
                else {}
            ),
        },
        "extraSecretMounts": [_secret_mount(GRAFANA_ADMIN_SECRET)]
        + ([_secret_mount(GRAFANA_ENTRA_SECRET)] if settings.grafana_entra_client_id else []),
        "ingress": grafana_ingress(settings),
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
        "resources": settings.resources("grafana"),
        "testFramework": {"enabled": False},
        "grafana.ini": {
            "server": {"root_url": topology(settings).grafana_url},
            "auth.anonymous": {"enabled": False},
            **grafana_sign_in(settings),
            # Session cookies only over HTTPS once Grafana has an https:// URL.
            "security": {"cookie_secure": settings.grafana_external_url.startswith("https://")},
            "users": {"allow_sign_up": False},
            "analytics": {"check_for_updates": False, "reporting_enabled": False},
        },
        "sidecar": {
            "resources": settings.resources("grafanaSidecar"),
            "dashboards": {
                "enabled": True,
                "label": "grafana_dashboard",
                "labelValue": "1",
                **_sidecar_scope(settings),
                "folderAnnotation": GRAFANA_FOLDER_ANNOTATION,
                "provider": {"foldersFromFilesStructure": True, "allowUiUpdates": False},
            },
            "datasources": {
                "enabled": True,
                "defaultDatasourceEnabled": True,
                "isDefaultDatasource": True,
                "name": "Prometheus",
                "uid": GRAFANA_DATASOURCE_UID,
                **_sidecar_scope(settings),
                # Written once by an init container before Grafana starts; a change rolls the pod.
                "initDatasources": True,
                "watchMethod": "LIST",
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
        "prometheus-node-exporter": {
            "namespaceOverride": node_exporter_namespace(settings),
            "resources": settings.resources("nodeExporter"),
            # It reads the host's /proc and /sys through read-only mounts: no capability, no escalation. Its
            # namespace stays privileged only for hostNetwork/hostPID and the host paths.
            "containerSecurityContext": {
                "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            },
        },
        "kube-state-metrics": {
            "metricLabelsAllowlist": list(KUBE_STATE_METRICS_LABELS_ALLOWLIST),
            "resources": settings.resources("kubeStateMetrics"),
        },
        "prometheusOperator": {
            "resources": settings.resources("prometheusOperator"),
            # The operator passes these to the config-reloader containers it adds to Prometheus and Alertmanager.
            "prometheusConfigReloader": {"resources": settings.resources("configReloader")},
            "admissionWebhooks": {"patch": {"resources": settings.resources("admissionWebhookJobs")}},
        },
        "prometheus": _prometheus(settings),
        "alertmanager": _alertmanager(settings),
        "grafana": _grafana(settings),
    }
    for component in AKS_DISABLED_COMPONENTS:
        values[component] = {"enabled": False}
    return pinned(settings.chart_images, RELEASE_NAME, values)
