"""The names that tie the stack's files together, built once from the settings.

Every release name, label, selector, port, namespace, URL, dashboard uid and CronJob name that
more than one file needs lives here, as do the SLO windows and burn rates, in the spirit of
kube-prometheus's `values.common` and the mixins' `_config`. Components, rules, dashboards and
the Alertmanager config import these instead of retyping them, so a rename is one line here.
`make render` writes the `Topology` of a stack to build/<stack>/topology.json.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from components.settings import Settings

# The kube-prometheus-stack Helm release. The chart names its objects after the release
# (fullnameOverride), and its Prometheus selects rules, monitors and probes by this label.
RELEASE_NAME = "kube-prometheus-stack"
CHART = "kube-prometheus-stack"  # the chart's own name: some of its pod labels carry it
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
BACKUP_APP = "ipa-backup"  # app.kubernetes.io/name of the backup namespace's pods

# Pod labels of the stack's workloads: the selectors of the charts' own Services (the operator
# labels the Prometheus and Alertmanager pods it runs the same way). NetworkPolicies select by them.
POSTGRES_EXPORTER_RELEASE = "prometheus-postgres-exporter"  # chart name = release name = job label
REDIS_EXPORTER_RELEASE = "prometheus-redis-exporter"
PROMETHEUS_POD_LABELS = {"app.kubernetes.io/name": "prometheus", "operator.prometheus.io/name": f"{RELEASE_NAME}-prometheus"}
ALERTMANAGER_POD_LABELS = {"app.kubernetes.io/name": "alertmanager", "alertmanager": f"{RELEASE_NAME}-alertmanager"}
GRAFANA_POD_LABELS = {"app.kubernetes.io/name": "grafana", "app.kubernetes.io/instance": RELEASE_NAME}
OPERATOR_POD_LABELS = {"app": f"{CHART}-operator", "release": RELEASE_NAME}  # `app` from the chart's name, not the release's
ADMISSION_JOB_POD_LABELS = {"app.kubernetes.io/component": "prometheus-operator-webhook", "release": RELEASE_NAME}
KUBE_STATE_METRICS_POD_LABELS = {"app.kubernetes.io/name": "kube-state-metrics", "app.kubernetes.io/instance": RELEASE_NAME}
NODE_EXPORTER_POD_LABELS = {"app.kubernetes.io/name": "prometheus-node-exporter", "app.kubernetes.io/instance": RELEASE_NAME}
POSTGRES_EXPORTER_POD_LABELS = {
    "app.kubernetes.io/name": POSTGRES_EXPORTER_RELEASE,
    "app.kubernetes.io/instance": POSTGRES_EXPORTER_RELEASE,
}
REDIS_EXPORTER_POD_LABELS = {"app.kubernetes.io/name": REDIS_EXPORTER_RELEASE, "app.kubernetes.io/instance": REDIS_EXPORTER_RELEASE}
KUBE_DNS_NAMESPACE = "kube-system"
KUBE_DNS_POD_LABELS = {"k8s-app": "kube-dns"}
# Container ports (the charts' defaults).
PROMETHEUS_PORT = 9090
ALERTMANAGER_PORT = 9093
ALERTMANAGER_CLUSTER_PORT = 9094
CONFIG_RELOADER_PORT = 8080
GRAFANA_PORT = 3000
OPERATOR_PORT = 10250  # https: metrics and the admission webhook
KUBE_STATE_METRICS_PORT = 8080
NODE_EXPORTER_PORT = 9100
KUBELET_PORT = 10250
COREDNS_METRICS_PORT = 9153
POSTGRES_EXPORTER_PORT = 9187
REDIS_EXPORTER_PORT = 9121
# Addresses outside the pod network: the AKS API server (its address is Azure's, behind the
# `kubernetes` Service), the nodes (kubelet, host-network node-exporter) and Azure/internet endpoints.
ANYWHERE = "0.0.0.0/0"

# Alertmanager receiver of the always-firing Watchdog: the dead man's switch to an outside heartbeat service.
HEARTBEAT_RECEIVER = "heartbeat"

# CronJob name by component of the backup schedule.
BACKUP = "backup"
DRILL = "restore-drill"
BASE_BACKUP = "base-backup"
CRONJOB_NAMES = {BACKUP: "ipa-backup", DRILL: "ipa-restore-drill", BASE_BACKUP: "ipa-backup-base"}
# The Jobs BackupJobFailed watches: those of the backup CronJobs (`<cronjob>-<schedule time>`, or a manual
# `kubectl create job --from=cronjob/<cronjob> <cronjob>-manual-…`), not the drill's (RestoreDrillFailed).
# CronJob names are DNS labels, so they need no escaping in the regular expression.
BACKUP_JOBS_REGEX = "|".join(f"{CRONJOB_NAMES[c]}-.*" for c in (BACKUP, BASE_BACKUP))

# The WAL stream (point-in-time recovery): one Deployment, its spool volume, its replication slot on
# the server, and the port Prometheus scrapes (job label = the Deployment's name).
WAL_STREAM = "ipa-wal-stream"
WAL_STREAM_JOB = WAL_STREAM
WAL_STREAM_PVC = "ipa-wal-spool"
WAL_SLOT = "ipa_wal_stream"  # a replication slot name: lowercase letters, digits and underscores
WAL_METRICS_PORT_NAME = "metrics"
WAL_METRICS_PORT = 9188
# The labels of the stream's pods, as the backup namespace's other pods carry them (app.kubernetes.io/name ipa-backup).
WAL_STREAM_POD_LABELS = {"app.kubernetes.io/name": "ipa-backup", "app.kubernetes.io/component": "wal-stream"}

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
class Peer:
    """One end of a network flow: pods (a namespace, and labels; no labels = every pod of it), or an
    address block outside the pod network. `host_network` pods answer on their node's address."""

    namespace: str = ""
    pod_labels: dict[str, str] = field(default_factory=dict)
    cidr: str = ""
    host_network: bool = False


@dataclass(frozen=True)
class Flow:
    """Traffic the stack needs: `source` may open connections to `destination` on `ports`
    ((protocol, port number or container port name)). NetworkPolicies allow exactly these."""

    name: str
    source: Peer
    destination: Peer
    ports: tuple[tuple[str, int | str], ...]
    why: str


def _tcp(*ports: int | str) -> tuple[tuple[str, int | str], ...]:
    return tuple(("TCP", p) for p in ports)


def server_peer(host: str) -> Peer:
    """A PostgreSQL/Redis server: in-cluster (<svc>.<namespace>.svc...) by namespace, else an outside address."""
    parts = host.split(".")
    if len(parts) >= 3 and parts[2] == "svc":
        return Peer(namespace=parts[1])
    return Peer(cidr=ANYWHERE)


def network_flows(settings: Settings, node_exporter_namespace: str) -> tuple[Flow, ...]:
    """Every connection the monitoring stack opens or accepts (docs/monitoring/network-policies.md)."""
    ns = settings.monitoring_namespace

    def pods(labels: dict[str, str], namespace: str = ns) -> Peer:
        return Peer(namespace=namespace, pod_labels=dict(labels))

    prometheus, alertmanager, grafana = pods(PROMETHEUS_POD_LABELS), pods(ALERTMANAGER_POD_LABELS), pods(GRAFANA_POD_LABELS)
    api_server, outside = Peer(cidr=ANYWHERE), Peer(cidr=ANYWHERE)
    smtp_port = int(settings.smtp_smarthost.rsplit(":", 1)[1])
    flows = [
        Flow("dns", Peer(namespace=ns), pods(KUBE_DNS_POD_LABELS, KUBE_DNS_NAMESPACE), (("UDP", 53), ("TCP", 53)), "name lookups"),
        Flow("prometheus-self", prometheus, prometheus, _tcp(PROMETHEUS_PORT, CONFIG_RELOADER_PORT), "self-scrape"),
        Flow(
            "prometheus-alertmanager",
            prometheus,
            alertmanager,
            _tcp(ALERTMANAGER_PORT, CONFIG_RELOADER_PORT),
            "alerts; scrape of Alertmanager and its config reloader",
        ),
        Flow("prometheus-grafana", prometheus, grafana, _tcp(GRAFANA_PORT), "scrape of Grafana"),
        Flow("prometheus-operator", prometheus, pods(OPERATOR_POD_LABELS), _tcp(OPERATOR_PORT), "scrape of the operator"),
        Flow("prometheus-kube-state-metrics", prometheus, pods(KUBE_STATE_METRICS_POD_LABELS), _tcp(KUBE_STATE_METRICS_PORT), "scrape"),
        Flow("prometheus-pushgateway", prometheus, pods(PUSHGATEWAY_POD_LABELS), _tcp(PUSHGATEWAY_PORT), "scrape (honorLabels)"),
        Flow("prometheus-postgres-exporter", prometheus, pods(POSTGRES_EXPORTER_POD_LABELS), _tcp(POSTGRES_EXPORTER_PORT), "scrape"),
        Flow("prometheus-redis-exporter", prometheus, pods(REDIS_EXPORTER_POD_LABELS), _tcp(REDIS_EXPORTER_PORT), "scrape"),
        Flow(
            "prometheus-node-exporter",
            prometheus,
            Peer(namespace=node_exporter_namespace, pod_labels=dict(NODE_EXPORTER_POD_LABELS), host_network=True),
            _tcp(NODE_EXPORTER_PORT),
            "scrape of node-exporter on each node's address",
        ),
        Flow("prometheus-kubelet", prometheus, outside, _tcp(KUBELET_PORT), "scrape of kubelet and cAdvisor on each node"),
        Flow("prometheus-api-server", prometheus, api_server, _tcp(443), "scrape of the API server; service discovery"),
        Flow("prometheus-coredns", prometheus, pods(KUBE_DNS_POD_LABELS, KUBE_DNS_NAMESPACE), _tcp(COREDNS_METRICS_PORT), "scrape"),
        Flow(
            "prometheus-backend",
            prometheus,
            pods({"app": BACKEND_APP}, settings.backend_namespace),
            _tcp(settings.backend_metrics_port),
            "scrape of ipa-backend (the PodMonitor)",
        ),
        Flow("grafana-prometheus", grafana, prometheus, _tcp(PROMETHEUS_PORT), "the Prometheus datasource"),
        Flow("grafana-alertmanager", grafana, alertmanager, _tcp(ALERTMANAGER_PORT), "the Alertmanager datasource"),
        Flow("grafana-api-server", grafana, api_server, _tcp(443), "the sidecars watch the dashboard and datasource ConfigMaps"),
        Flow(
            "alertmanager-cluster",
            alertmanager,
            alertmanager,
            (("TCP", ALERTMANAGER_CLUSTER_PORT), ("UDP", ALERTMANAGER_CLUSTER_PORT)),
            "gossip between replicas",
        ),
        Flow(
            "alertmanager-notifications",
            alertmanager,
            outside,
            _tcp(443, smtp_port),
            "Teams and heartbeat webhooks (HTTPS), the SMTP relay",
        ),
        Flow("operator-api-server", pods(OPERATOR_POD_LABELS), api_server, _tcp(443), "the operator reconciles its objects"),
        Flow("api-server-operator", outside, pods(OPERATOR_POD_LABELS), _tcp(OPERATOR_PORT), "the admission webhook"),
        Flow("kube-state-metrics-api-server", pods(KUBE_STATE_METRICS_POD_LABELS), api_server, _tcp(443), "lists and watches objects"),
        Flow("admission-jobs-api-server", pods(ADMISSION_JOB_POD_LABELS), api_server, _tcp(443), "the webhook certificate Jobs"),
        *(
            Flow(
                f"{component}-pushgateway",
                pods({"app.kubernetes.io/name": BACKUP_APP, "app.kubernetes.io/component": component}, settings.backup_namespace),
                pods(PUSHGATEWAY_POD_LABELS),
                _tcp(PUSHGATEWAY_PORT),
                f"the {component} Jobs push their results",
            )
            for component in (BACKUP, DRILL, *([BASE_BACKUP] if settings.pitr_enabled else []))
        ),
        Flow(
            "postgres-exporter-postgres",
            pods(POSTGRES_EXPORTER_POD_LABELS),
            server_peer(settings.postgres_host),
            _tcp(settings.postgres_port),
            "PostgreSQL metrics",
        ),
        Flow("redis-exporter-redis", pods(REDIS_EXPORTER_POD_LABELS), server_peer(settings.redis_host), _tcp(settings.redis_port), "Redis"),
    ]
    if settings.remote_write:
        flows.append(Flow("prometheus-remote-write", prometheus, outside, _tcp(443), "remote_write targets"))
    if settings.grafana_entra_client_id:
        flows.append(Flow("grafana-entra-id", grafana, outside, _tcp(443), "Entra ID sign-in: token and signing-key endpoints"))
    if settings.grafana_ingress_host:
        flows.append(
            Flow(
                "ingress-grafana", Peer(namespace=settings.grafana_ingress_namespace), grafana, _tcp(GRAFANA_PORT), "the Ingress controller"
            )
        )
    if settings.pitr_enabled:
        wal_stream = Peer(namespace=settings.backup_namespace, pod_labels=dict(WAL_STREAM_POD_LABELS))
        flows.append(
            Flow("prometheus-wal-stream", prometheus, wal_stream, _tcp(WAL_METRICS_PORT), "scrape of the WAL stream (its PodMonitor)")
        )
    return tuple(flows)


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
    wal_stream: str
    wal_stream_job: str
    wal_stream_pvc: str
    wal_slot: str
    wal_metrics_port_name: str
    wal_metrics_port: int
    dashboards: dict[str, str]
    runbook_base_url: str
    slo_period: str
    slo_windows: tuple[str, ...]
    page_burns: tuple[tuple[str, str, float], ...]
    ticket_burns: tuple[tuple[str, str, float], ...]
    network_flows: tuple[Flow, ...]

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
    # node-exporter needs hostNetwork/hostPID/hostPath, which the `restricted` Pod Security
    # level of the monitoring namespace forbids; it gets a namespace of its own.
    node_exporter_namespace = f"{namespace}-node-exporter"
    return Topology(
        monitoring_namespace=namespace,
        node_exporter_namespace=node_exporter_namespace,
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
        wal_stream=WAL_STREAM,
        wal_stream_job=WAL_STREAM_JOB,
        wal_stream_pvc=WAL_STREAM_PVC,
        wal_slot=WAL_SLOT,
        wal_metrics_port_name=WAL_METRICS_PORT_NAME,
        wal_metrics_port=WAL_METRICS_PORT,
        dashboards=dict(DASHBOARDS),
        runbook_base_url=settings.runbook_base_url,
        slo_period=SLO_PERIOD,
        slo_windows=SLO_WINDOWS,
        page_burns=PAGE_BURNS,
        ticket_burns=TICKET_BURNS,
        network_flows=network_flows(settings, node_exporter_namespace),
    )
