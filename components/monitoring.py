"""The monitoring stack on AKS: namespaces, kube-prometheus-stack, the Alertmanager and Grafana
secrets, the ipa-backend PodMonitor and the PostgreSQL/Redis exporters.

Specs come from pure functions (monitoring_values, monitoring_scrape, alertmanager_config);
this component only declares the resources. helm.v3.Release (not helm.v4.Chart) because the
chart's admission-webhook certificate job is a Helm hook and v4.Chart skips hooks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components.alertmanager_config import (
    HEARTBEAT_SECRET,
    HEARTBEAT_SECRET_KEY,
    SMTP_SECRET,
    SMTP_SECRET_KEY,
    TEAMS_SECRET,
    TEAMS_SECRET_KEY,
)
from components.monitoring_scrape import (
    POSTGRES_EXPORTER,
    REDIS_EXPORTER,
    backend_pod_monitor,
    postgres_exporter_values,
    redis_exporter_values,
)
from components.monitoring_values import (
    CHART_REPO,
    GRAFANA_ADMIN_PASSWORD_KEY,
    GRAFANA_ADMIN_SECRET,
    GRAFANA_ADMIN_USER_KEY,
    GRAFANA_ENTRA_SECRET,
    GRAFANA_ENTRA_SECRET_KEY,
    grafana_sidecar_role,
    kube_prometheus_stack_values,
    node_exporter_namespace,
)
from components.settings import Secret, Settings
from components.topology import CHART, GRAFANA_SERVICE, GRAFANA_SERVICE_PORT, RELEASE_NAME, topology

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


@dataclass(frozen=True)
class MonitoringStackArgs:
    """Namespaces, chart versions and Helm values (built by the pure functions of monitoring_values,
    monitoring_scrape and alertmanager_config), the two notification secrets and the stack outputs."""

    namespace: str
    node_exporter_namespace: str
    chart_version: str
    values: dict[str, Any]
    grafana_sidecar_role: dict[str, Any]
    backend_pod_monitor: dict[str, Any]
    postgres_exporter_chart_version: str
    postgres_exporter_values: dict[str, Any]
    redis_exporter_chart_version: str
    redis_exporter_values: dict[str, Any]
    teams_webhook_url: Secret
    smtp_password: Secret
    heartbeat_url: Secret
    grafana_entra_client_secret: Secret | None  # with Entra ID sign-in only
    outputs: dict[str, str]

    @classmethod
    def from_settings(cls, settings: Settings) -> MonitoringStackArgs:
        return cls(
            namespace=settings.monitoring_namespace,
            node_exporter_namespace=node_exporter_namespace(settings),
            chart_version=settings.kube_prometheus_stack_version,
            values=kube_prometheus_stack_values(settings),
            grafana_sidecar_role=grafana_sidecar_role(settings),
            backend_pod_monitor=backend_pod_monitor(settings),
            postgres_exporter_chart_version=settings.postgres_exporter_chart_version,
            postgres_exporter_values=postgres_exporter_values(settings),
            redis_exporter_chart_version=settings.redis_exporter_chart_version,
            redis_exporter_values=redis_exporter_values(settings),
            teams_webhook_url=settings.teams_webhook_url,
            smtp_password=settings.smtp_password,
            heartbeat_url=settings.heartbeat_url,
            grafana_entra_client_secret=settings.grafana_entra_client_secret if settings.grafana_entra_client_id else None,
            outputs=monitoring_outputs(settings),
        )


class MonitoringStack(pulumi.ComponentResource):
    """kube-prometheus-stack with its secrets, the backend scrape object and the exporters.
    `namespace_name` is the monitoring namespace the rules, dashboards and Pushgateway go to."""

    def __init__(self, name: str, args: MonitoringStackArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("ipa-ops:monitoring:MonitoringStack", name, None, opts)
        namespace = args.namespace
        child = pulumi.ResourceOptions(parent=self)

        self.namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=namespace, labels={**PART_OF, **pod_security_labels("restricted")}),
            opts=child,
        )
        # node-exporter reads the host (hostNetwork, hostPID, hostPath): only it runs privileged.
        self.node_exporter_namespace = k8s.core.v1.Namespace(
            f"{name}-node-exporter-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=args.node_exporter_namespace, labels={**PART_OF, **pod_security_labels("privileged")}),
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
            namespace,
            in_namespace,
        )
        self.teams_secret = self._secret(
            f"{name}-teams-webhook", TEAMS_SECRET, {TEAMS_SECRET_KEY: args.teams_webhook_url.output()}, namespace, in_namespace
        )
        self.smtp_secret = self._secret(
            f"{name}-smtp", SMTP_SECRET, {SMTP_SECRET_KEY: args.smtp_password.output()}, namespace, in_namespace
        )
        self.heartbeat_secret = self._secret(
            f"{name}-heartbeat", HEARTBEAT_SECRET, {HEARTBEAT_SECRET_KEY: args.heartbeat_url.output()}, namespace, in_namespace
        )
        secrets = [self.grafana_secret, self.teams_secret, self.smtp_secret, self.heartbeat_secret]
        if args.grafana_entra_client_secret is not None:
            secrets.append(
                self._secret(
                    f"{name}-grafana-entra",
                    GRAFANA_ENTRA_SECRET,
                    {GRAFANA_ENTRA_SECRET_KEY: args.grafana_entra_client_secret.output()},
                    namespace,
                    in_namespace,
                )
            )
        role = args.grafana_sidecar_role
        self.grafana_sidecar_role = k8s.rbac.v1.Role(
            f"{name}-grafana-sidecar-role", metadata=role["metadata"], rules=role["rules"], opts=in_namespace
        )

        self.release = k8s.helm.v3.Release(
            f"{name}-kube-prometheus-stack",
            k8s.helm.v3.ReleaseArgs(
                name=RELEASE_NAME,
                chart=CHART,
                version=args.chart_version,
                namespace=namespace,
                repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=CHART_REPO),
                values=args.values,
                timeout=HELM_TIMEOUT_SECONDS,
                cleanup_on_fail=True,
                max_history=10,
            ),
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[self.namespace, self.node_exporter_namespace, *secrets, self.grafana_sidecar_role],
            ),
        )
        # The Prometheus Operator CRDs come with the release; everything below needs them.
        after_release = pulumi.ResourceOptions(parent=self, depends_on=[self.release])

        pod_monitor = args.backend_pod_monitor
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
            args.postgres_exporter_chart_version,
            args.postgres_exporter_values,
            namespace,
            after_release,
        )
        self.redis_exporter = self._exporter(
            f"{name}-redis-exporter",
            REDIS_EXPORTER,
            args.redis_exporter_chart_version,
            args.redis_exporter_values,
            namespace,
            after_release,
        )
        self.namespace_name: pulumi.Output[str] = self.namespace.metadata.name
        self.outputs = args.outputs
        self.register_outputs(dict(self.outputs))

    def _secret(
        self, resource_name: str, secret_name: str, data: dict[str, Any], namespace: str, opts: pulumi.ResourceOptions
    ) -> k8s.core.v1.Secret:
        return k8s.core.v1.Secret(
            resource_name,
            metadata=k8s.meta.v1.ObjectMetaArgs(name=secret_name, namespace=namespace, labels=dict(PART_OF)),
            type="Opaque",
            string_data=data,
            opts=opts,
        )

    def _exporter(
        self, resource_name: str, chart: str, version: str, values: dict[str, Any], namespace: str, opts: pulumi.ResourceOptions
    ) -> k8s.helm.v3.Release:
        return k8s.helm.v3.Release(
            resource_name,
            k8s.helm.v3.ReleaseArgs(
                name=chart,
                chart=chart,
                version=version,
                namespace=namespace,
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
