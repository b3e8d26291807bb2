"""The names that tie the stack's files together, built once from the settings.

Every release name, label, selector, port, namespace, URL, dashboard uid and CronJob name that
more than one file needs lives here, as do the SLO windows and burn rates, in the spirit of
kube-prometheus's `values.common` and the mixins' `_config`. Components, rules, dashboards and
the Alertmanager config import these instead of retyping them, so a rename is one line here.
`make render` writes the `Topology` of a stack to build/<stack>/topology.json.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from components.settings import Settings

# The kube-prometheus-stack Helm release. The chart names its objects after the release
# (fullnameOverride), and its Prometheus selects rules, monitors and probes by this label.
RELEASE_NAME = "kube-prometheus-stack"
RELEASE_LABELS = {"release": RELEASE_NAME}
GRAFANA_SERVICE = f"{RELEASE_NAME}-grafana"
GRAFANA_SERVICE_PORT = 80  # the grafana chart's service.port default

PUSHGATEWAY_RELEASE = "prometheus-pushgateway"  # contains the chart name, so it is also the Service name
PUSHGATEWAY_PORT = 9091
PUSHGATEWAY_POD_LABELS = {"app.kubernetes.io/name": "prometheus-pushgateway", "app.kubernetes.io/instance": PUSHGATEWAY_RELEASE}

# The backend pods carry the label app=ipa-backend; the PodMonitor pins their job label to the same name.
BACKEND_APP = "ipa-backend"
BACKEND_JOB = "ipa-backend"
BACKUP_JOB = "ipa-backup"  # the job label of what the backup and drill Jobs push

# CronJob name by component of the backup schedule.
BACKUP = "backup"
DRILL = "restore-drill"
CRONJOB_NAMES = {BACKUP: "ipa-backup", DRILL: "ipa-restore-drill"}

# Dashboard uid -> title: alerts and dashboards link to each other with these.
API_DASHBOARD = "api-performance"
EXECUTIONS_DASHBOARD = "execution-stats"
CLAUDE_DASHBOARD = "claude-usage"
SYSTEM_DASHBOARD = "system-resources"
BACKUP_DASHBOARD = "backup-dr"
DASHBOARDS = {
    API_DASHBOARD: "IPA / API Performance",
    EXECUTIONS_DASHBOARD: "IPA / Execution Stats",
    CLAUDE_DASHBOARD: "IPA / Claude Usage",
    SYSTEM_DASHBOARD: "IPA / System Resources",
    BACKUP_DASHBOARD: "IPA / Backups and DR",
}

# SLOs are computed over a rolling 30 days; the burn rates below are relative to that period.
SLO_PERIOD = "30d"
SLO_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
# Multi-window multi-burn-rate pairs (Google SRE Workbook, ch. 5): (long, short, burn rate).
PAGE_BURNS = (("1h", "5m", 14.4), ("6h", "30m", 6.0))
TICKET_BURNS = (("1d", "2h", 3.0), ("3d", "6h", 1.0))


@dataclass(frozen=True)
class Topology:
    """Everything above plus what the settings decide (namespaces, URLs), for one stack."""

    monitoring_namespace: str
    node_exporter_namespace: str
    backend_namespace: str
    backup_namespace: str
    release_name: str
    release_labels: dict[str, str]
    grafana_service: str
    grafana_service_port: int
    grafana_internal_url: str
    grafana_url: str
    pushgateway_release: str
    pushgateway_port: int
    pushgateway_pod_labels: dict[str, str]
    pushgateway_url: str
    backend_app: str
    backend_job: str
    backup_job: str
    cronjob_names: dict[str, str]
    dashboards: dict[str, str]
    runbook_base_url: str
    slo_period: str
    slo_windows: tuple[str, ...]
    page_burns: tuple[tuple[str, str, float], ...]
    ticket_burns: tuple[tuple[str, str, float], ...]

    def runbook_url(self, alert: str) -> str:
        # A base URL with or without a trailing "/" gives the same link.
        return f"{self.runbook_base_url.rstrip('/')}/{alert}.md"

    def dashboard_url(self, uid: str) -> str:
        return f"{self.grafana_url}/d/{uid}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def grafana_internal_url(monitoring_namespace: str) -> str:
    return f"http://{GRAFANA_SERVICE}.{monitoring_namespace}.svc"


def pushgateway_url(monitoring_namespace: str) -> str:
    return f"http://{PUSHGATEWAY_RELEASE}.{monitoring_namespace}.svc:{PUSHGATEWAY_PORT}"


def topology(settings: Settings) -> Topology:
    namespace = settings.monitoring_namespace
    internal = grafana_internal_url(namespace)
    return Topology(
        monitoring_namespace=namespace,
        # node-exporter needs hostNetwork/hostPID/hostPath, which the `restricted` Pod Security
        # level of the monitoring namespace forbids; it gets a namespace of its own.
        node_exporter_namespace=f"{namespace}-node-exporter",
        backend_namespace=settings.backend_namespace,
        backup_namespace=settings.backup_namespace,
        release_name=RELEASE_NAME,
        release_labels=dict(RELEASE_LABELS),
        grafana_service=GRAFANA_SERVICE,
        grafana_service_port=GRAFANA_SERVICE_PORT,
        grafana_internal_url=internal,
        # Links use the external URL when there is one.
        grafana_url=settings.grafana_external_url.rstrip("/") or internal,
        pushgateway_release=PUSHGATEWAY_RELEASE,
        pushgateway_port=PUSHGATEWAY_PORT,
        pushgateway_pod_labels=dict(PUSHGATEWAY_POD_LABELS),
        pushgateway_url=pushgateway_url(namespace),
        backend_app=BACKEND_APP,
        backend_job=BACKEND_JOB,
        backup_job=BACKUP_JOB,
        cronjob_names=dict(CRONJOB_NAMES),
        dashboards=dict(DASHBOARDS),
        runbook_base_url=settings.runbook_base_url,
        slo_period=SLO_PERIOD,
        slo_windows=SLO_WINDOWS,
        page_burns=PAGE_BURNS,
        ticket_burns=TICKET_BURNS,
    )
