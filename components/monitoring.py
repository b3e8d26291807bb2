"""The monitoring stack on AKS: namespaces, kube-prometheus-stack, the Alertmanager and Grafana
secrets, the ipa-backend PodMonitor and the PostgreSQL/Redis exporters.

Specs come from pure functions (monitoring_values, monitoring_scrape, alertmanager_config);
this component only declares the resources. helm.v3.Release (not helm.v4.Chart) because the
chart's admission-webhook certificate job is a Helm hook and v4.Chart skips hooks.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components.alertmanager_config import SMTP_SECRET, SMTP_SECRET_KEY, TEAMS_SECRET, TEAMS_SECRET_KEY
from components.monitoring_scrape import (
    POSTGRES_EXPORTER,
    REDIS_EXPORTER,
    backend_pod_monitor,
    postgres_exporter_values,
    redis_exporter_values,
)
from components.monitoring_values import (
    CHART,
    CHART_REPO,
    GRAFANA_ADMIN_PASSWORD_KEY,
    GRAFANA_ADMIN_SECRET,
    GRAFANA_ADMIN_USER_KEY,
    kube_prometheus_stack_values,
    node_exporter_namespace,
)
from components.settings import Settings
from components.topology import GRAFANA_SERVICE, GRAFANA_SERVICE_PORT, RELEASE_NAME, topology

PART_OF = {"app.kubernetes.io/part-of": "ipa-ops", "app.kubernetes.io/managed-by": "pulumi"}
HELM_TIMEOUT_SECONDS = 900


def pod_security_labels(level: str) -> dict[str, str]:
    """Pod Security admission labels enforcing, auditing and warning at one level."""
    return {f"pod-security.kubernetes.io/{mode}": level for mode in ("enforce", "audit", "warn")}


def monitoring_outputs(settings: Settings) -> dict[str, str]:
    """The stack outputs of this component (pure, for tests and the README)."""
    namespace = settings.monitoring_namespace
    return {
        "grafanaUrl": topology(settings).grafana_internal_url,
        "grafanaPortForward": f"kubectl -n {namespace} port-forward svc/{GRAFANA_SERVICE} 3000:{GRAFANA_SERVICE_PORT}"
        " # then open http://localhost:3000",
        "monitoringNamespace": namespace,
        "kubePrometheusStackRelease": RELEASE_NAME,
    }


class MonitoringStack(pulumi.ComponentResource):
    """kube-prometheus-stack with its secrets, the backend scrape object and the exporters."""

    def __init__(self, name: str, settings: Settings, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("ipa-ops:monitoring:MonitoringStack", name, None, opts)
        self.settings = settings
        namespace = settings.monitoring_namespace
        child = pulumi.ResourceOptions(parent=self)

        self.namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=namespace, labels={**PART_OF, **pod_security_labels("restricted")}),
            opts=child,
        )
        # node-exporter reads the host (hostNetwork, hostPID, hostPath): only it runs privileged.
        self.node_exporter_namespace = k8s.core.v1.Namespace(
            f"{name}-node-exporter-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=node_exporter_namespace(settings), labels={**PART_OF, **pod_security_labels("privileged")}
            ),
            opts=child,
        )
        in_namespace = pulumi.ResourceOptions(parent=self, depends_on=[self.namespace])

        self.grafana_password = random.RandomPassword(f"{name}-grafana-admin-password", length=32, special=False, opts=child)
        self.grafana_secret = self._secret(
            f"{name}-grafana-admin",
            GRAFANA_ADMIN_SECRET,
            {
                GRAFANA_ADMIN_USER_KEY: pulumi.Output.from_input("admin"),
                GRAFANA_ADMIN_PASSWORD_KEY: pulumi.Output.secret(self.grafana_password.result),
            },
            in_namespace,
        )
        self.teams_secret = self._secret(
            f"{name}-teams-webhook", TEAMS_SECRET, {TEAMS_SECRET_KEY: settings.teams_webhook_url.output()}, in_namespace
        )
        self.smtp_secret = self._secret(f"{name}-smtp", SMTP_SECRET, {SMTP_SECRET_KEY: settings.smtp_password.output()}, in_namespace)

        self.release = k8s.helm.v3.Release(
            f"{name}-kube-prometheus-stack",
            k8s.helm.v3.ReleaseArgs(
                name=RELEASE_NAME,
                chart=CHART,
                version=settings.kube_prometheus_stack_version,
                namespace=namespace,
                repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=CHART_REPO),
                values=kube_prometheus_stack_values(settings),
                timeout=HELM_TIMEOUT_SECONDS,
                cleanup_on_fail=True,
                max_history=10,
            ),
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[self.namespace, self.node_exporter_namespace, self.grafana_secret, self.teams_secret, self.smtp_secret],
            ),
        )
        # The Prometheus Operator CRDs come with the release; everything below needs them.
        after_release = pulumi.ResourceOptions(parent=self, depends_on=[self.release])

        pod_monitor = backend_pod_monitor(settings)
        self.backend_pod_monitor = k8s.apiextensions.CustomResource(
            f"{name}-ipa-backend-podmonitor",
            api_version=pod_monitor["apiVersion"],
            kind=pod_monitor["kind"],
            metadata=k8s.meta.v1.ObjectMetaArgs(name="ipa-backend", namespace=namespace, labels=pod_monitor["metadata"]["labels"]),
            spec=pod_monitor["spec"],
            opts=after_release,
        )
        self.postgres_exporter = self._exporter(
            f"{name}-postgres-exporter",
            POSTGRES_EXPORTER,
            settings.postgres_exporter_chart_version,
            postgres_exporter_values(settings),
            after_release,
        )
        self.redis_exporter = self._exporter(
            f"{name}-redis-exporter",
            REDIS_EXPORTER,
            settings.redis_exporter_chart_version,
            redis_exporter_values(settings),
            after_release,
        )
        self.outputs = monitoring_outputs(settings)
        self.register_outputs(dict(self.outputs))

    def _secret(self, resource_name: str, secret_name: str, data: dict[str, Any], opts: pulumi.ResourceOptions) -> k8s.core.v1.Secret:
        return k8s.core.v1.Secret(
            resource_name,
            metadata=k8s.meta.v1.ObjectMetaArgs(name=secret_name, namespace=self.settings.monitoring_namespace, labels=dict(PART_OF)),
            type="Opaque",
            string_data=data,
            opts=opts,
        )

    def _exporter(
        self, resource_name: str, chart: str, version: str, values: dict[str, Any], opts: pulumi.ResourceOptions
    ) -> k8s.helm.v3.Release:
        return k8s.helm.v3.Release(
            resource_name,
            k8s.helm.v3.ReleaseArgs(
                name=chart,
                chart=chart,
                version=version,
                namespace=self.settings.monitoring_namespace,
                repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=CHART_REPO),
                values=values,
                timeout=HELM_TIMEOUT_SECONDS,
                cleanup_on_fail=True,
                max_history=10,
            ),
            opts=opts,
        )

    def export(self) -> None:
        """Publishes this component's stack outputs (called from __main__.py)."""
        for key, value in self.outputs.items():
            pulumi.export(key, value)
