"""Stack settings: every `ipa-ops:*` key, read once, typed, defaulted and validated.

`Settings` is the only place that knows config keys. Each dataclass field is one key: the
key is the field name in camelCase, and `setting()` gives its default, description and
check. `parse_settings` is a pure function (used by tests and the offline render);
`load_settings` reads Pulumi's config and calls it. Invalid settings raise one
`SettingsError` that lists every bad key, its value and what is accepted, before any
resource is declared.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import typing
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from components.cron import CronError, parse_cron

PROJECT = "ipa-ops"
REQUIRED: Any = object()  # marker: the key has no default


class SettingsError(Exception):
    """One message naming each invalid key, its value and what is accepted."""


class Secret:
    """A secret string: its repr never shows the value. `.output()` wraps it for Pulumi."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def output(self) -> Any:
        import pulumi

        return pulumi.Output.secret(self._value)

    def __repr__(self) -> str:
        return "Secret('[secret]')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class TokenPrices:
    """USD per million tokens, by token type of `claude_tokens_total`."""

    input: float
    output: float
    cache_read: float
    cache_write: float

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RemoteWrite:
    """A Prometheus remote_write target (Azure Monitor workspace, Thanos receive or Mimir)."""

    name: str
    url: str
    # Azure Monitor: client id of the managed identity that may write to the workspace.
    azure_ad_client_id: str = ""
    # Thanos/Mimir: tenant header value, when the receiver is multi-tenant.
    tenant: str = ""


@dataclass(frozen=True)
class Resources:
    """Requests and limits of one container, as Kubernetes quantities."""

    cpu_request: str
    memory_request: str
    cpu_limit: str
    memory_limit: str

    def spec(self) -> dict[str, dict[str, str]]:
        return {
            "requests": {"cpu": self.cpu_request, "memory": self.memory_request},
            "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit},
        }


Check = Callable[[Any], str | None]  # returns "what is accepted" when the value is bad


def setting(default: Any, description: str, check: Check | None = None, secret: bool = False) -> Any:
    return dataclasses.field(metadata={"default": default, "description": description, "check": check, "secret": secret})


# --- checks: each returns None when fine, else the description of what is accepted -----------


def positive(value: float) -> str | None:
    return None if value > 0 else "a number greater than 0"


def at_least(low: float) -> Check:
    return lambda value: None if value >= low else f"a number >= {low:g}"


def open_ratio(value: float) -> str | None:
    return None if 0 < value < 1 else "a ratio strictly between 0 and 1, e.g. 0.05"


def one_of(*choices: str) -> Check:
    return lambda value: None if value in choices else "one of " + ", ".join(repr(c) for c in choices)


def matches(pattern: str, accepted: str) -> Check:
    compiled = re.compile(pattern)
    return lambda value: None if compiled.fullmatch(value) else accepted


def each(check: Check) -> Check:
    def run(values: tuple[Any, ...]) -> str | None:
        for value in values:
            problem = check(value)
            if problem:
                return f"a list whose every item is {problem} (bad item {value!r})"
        return None

    return run


def non_empty(check: Check) -> Check:
    def run(values: tuple[Any, ...]) -> str | None:
        return "a non-empty list" if not values else check(values)

    return run


EMAIL = matches(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+",
    "an e-mail address like ops@example.com",
)
HTTPS_URL = matches(r"https://[^\s/$.?#][^\s]*", "an https:// URL")
DNS_HOST = matches(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", "a Kubernetes name (RFC 1123 subdomain, lowercase)")
DNS_LABEL = matches(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", "a Kubernetes name (RFC 1123 label, lowercase)")
QUANTITY = matches(r"[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?", "a Kubernetes quantity like 500m, 2Gi")
PROM_DURATION = matches(r"([0-9]+(ms|s|m|h|d|w|y))+", "a Prometheus duration like 15d or 12h")
PROM_SIZE = matches(r"[0-9]+(B|KB|MB|GB|TB|PB|EB)", "a Prometheus size like 40GB")
CHART_VERSION = matches(r"[0-9]+\.[0-9]+\.[0-9]+", "a pinned chart version like 1.2.3")
SUBNET_ID = matches(
    r"/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Network/virtualNetworks/[^/]+/subnets/[^/]+",
    "an Azure subnet resource id (/subscriptions/.../virtualNetworks/<vnet>/subnets/<subnet>)",
)
KEY_VAULT_ID = matches(
    r"/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.KeyVault/vaults/[A-Za-z0-9-]{3,24}",
    "a Key Vault resource id (/subscriptions/.../providers/Microsoft.KeyVault/vaults/<name>), or empty",
)
GUID = matches(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", "a GUID like 00000000-0000-4000-8000-000000000000"
)
HOST_NAME = matches(r"([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]{2,63}", "a DNS host name like grafana.ipa.example.com")
GRAFANA_ROLES = ("Viewer", "Editor", "Admin")


def optional(check: Check) -> Check:
    return lambda value: None if value == "" else check(value)


def group_roles(value: Mapping[str, str]) -> str | None:
    for group, role in value.items():
        if GUID(group):
            return f"Entra group object ids (GUIDs) as keys (bad key {group!r})"
        if role not in GRAFANA_ROLES:
            return f"a Grafana role per group, one of {', '.join(GRAFANA_ROLES)} (bad role {role!r} of {group})"
    return None


HOST_PORT = matches(r"[A-Za-z0-9.-]+:[0-9]{1,5}", "host:port, e.g. smtp.office365.com:587")
IMAGE_REF = matches(
    r"([a-z0-9.-]+(:[0-9]+)?/)?[a-z0-9._/-]+(:[A-Za-z0-9._-]+)?(@sha256:[a-f0-9]{64})?",
    "an image reference like registry/name:tag@sha256:<64 hex>, or empty to build it",
)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BACKUP_TARGETS = ("postgres", "redis")  # what a logical backup set holds (the tool's `target` label)


def frequent_targets(value: tuple[str, ...]) -> str | None:
    """Redis must be in every run: it has no WAL stream to carry its RPO."""
    ok = "redis" in value and set(value) <= set(BACKUP_TARGETS) and len(set(value)) == len(value)
    return None if ok else "a list holding 'redis' and optionally 'postgres', each once"


def cron(value: str) -> str | None:
    try:
        parse_cron(value).longest_gap_minutes()  # also refuses schedules that never run
    except CronError as err:
        return f"a 5-field cron expression (minute hour day-of-month month day-of-week), e.g. '*/30 * * * *' ({err})"
    return None


def duration_seconds(value: str) -> float:
    """Seconds of a Prometheus duration (checked by PROM_DURATION first)."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    return sum(float(n) * units[u] for n, u in re.findall(r"([0-9]+)(ms|s|m|h|d|w|y)", value))


def heartbeat_period(value: str) -> str | None:
    accepted = "a Prometheus duration from 1m to 1h, e.g. 5m"
    if PROM_DURATION(value):
        return accepted
    return None if 60 <= duration_seconds(value) <= 3600 else accepted


def time_zone(value: str) -> str | None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return "an IANA time zone name like Etc/UTC or Europe/Berlin"
    return None


def bucket(value: float) -> str | None:
    return (
        None
        if value in LATENCY_BUCKETS
        else "one of the recommended histogram bucket bounds " + ", ".join(f"{b:g}" for b in LATENCY_BUCKETS)
    )


def storage_account_name(value: str) -> str | None:
    return None if re.fullmatch(r"[a-z0-9]{3,24}", value) else "3-24 lowercase letters and digits"


def pricing_table(value: Mapping[str, TokenPrices]) -> str | None:
    for model, prices in value.items():
        if not re.fullmatch(r"[A-Za-z0-9._:-]+", model):
            return f"model names of letters, digits, '.', '_', ':' or '-' (bad model {model!r})"
        if any(p < 0 for p in prices.as_dict().values()):
            return f"prices >= 0 USD per million tokens (bad model {model!r})"
    return None


def prices_non_negative(value: TokenPrices) -> str | None:
    return None if all(p >= 0 for p in value.as_dict().values()) else "prices >= 0 USD per million tokens"


def _resources(cpu_request: str, memory_request: str, cpu_limit: str, memory_limit: str) -> Resources:
    return Resources(cpu_request, memory_request, cpu_limit, memory_limit)


# Every container the charts run besides Prometheus (which has settings of its own).
DEFAULT_RESOURCES = {
    "grafana": _resources("100m", "256Mi", "1", "512Mi"),
    "grafanaSidecar": _resources("10m", "64Mi", "200m", "128Mi"),  # the dashboard sidecar and the datasource init container
    "prometheusOperator": _resources("50m", "128Mi", "500m", "256Mi"),
    "configReloader": _resources("10m", "32Mi", "100m", "64Mi"),  # next to Prometheus and Alertmanager
    "admissionWebhookJobs": _resources("10m", "32Mi", "100m", "64Mi"),
    "kubeStateMetrics": _resources("20m", "128Mi", "500m", "256Mi"),
    "nodeExporter": _resources("20m", "32Mi", "250m", "64Mi"),
    "alertmanager": _resources("50m", "128Mi", "500m", "256Mi"),
    "postgresExporter": _resources("20m", "32Mi", "200m", "128Mi"),
    "redisExporter": _resources("20m", "32Mi", "200m", "128Mi"),
    "pushgateway": _resources("20m", "32Mi", "200m", "128Mi"),
}


# The charts' images, each pinned as `<tag>@sha256:<digest>` by components/chart_images.py.
CHART_IMAGE_NAMES = (
    "prometheus",
    "alertmanager",
    "prometheusOperator",
    "configReloader",
    "admissionWebhookCertgen",
    "grafana",
    "grafanaSidecar",
    "kubeStateMetrics",
    "nodeExporter",
    "postgresExporter",
    "redisExporter",
    "pushgateway",
)
PINNED_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}@sha256:[a-f0-9]{64}")


def image_pins(value: Mapping[str, str]) -> str | None:
    for name, reference in value.items():
        if name not in CHART_IMAGE_NAMES:
            return f"image names among {', '.join(CHART_IMAGE_NAMES)} (bad name {name!r})"
        if not PINNED_TAG.fullmatch(reference):
            return f"<tag>@sha256:<64 hex> for each image (bad {name!r}: {reference!r})"
    return None


def resources_table(value: Mapping[str, Resources]) -> str | None:
    for name, r in value.items():
        if name not in DEFAULT_RESOURCES:
            return f"container names among {', '.join(DEFAULT_RESOURCES)} (bad name {name!r})"
        for field_name, quantity in dataclasses.asdict(r).items():
            if QUANTITY(quantity):
                return f"Kubernetes quantities like 100m or 256Mi (bad {name}.{config_key(field_name)} {quantity!r})"
        if _quantity_bytes(r.cpu_request) > _quantity_bytes(r.cpu_limit) or _quantity_bytes(r.memory_request) > _quantity_bytes(
            r.memory_limit
        ):
            return f"requests at most the limits (bad {name!r})"
    return None


DEFAULT_PRICING = {
    "claude-opus-4-5": TokenPrices(input=5.0, output=25.0, cache_read=0.5, cache_write=6.25),
    "claude-sonnet-4-5": TokenPrices(input=3.0, output=15.0, cache_read=0.3, cache_write=3.75),
    "claude-haiku-4-5": TokenPrices(input=1.0, output=5.0, cache_read=0.1, cache_write=1.25),
}
# Unknown models are priced like the most expensive one, so spend is never under-estimated.
DEFAULT_UNKNOWN_MODEL_PRICES = TokenPrices(input=15.0, output=75.0, cache_read=1.5, cache_write=18.75)


@dataclass(frozen=True)
class Settings:
    # --- the stack ---------------------------------------------------------------------------
    environment: str = setting(REQUIRED, "Environment of the stack: dev or prod.", one_of("dev", "prod"))
    cluster_name: str = setting(REQUIRED, "AKS cluster name; Prometheus external label `cluster`.", DNS_LABEL)
    location: str = setting(
        "westeurope", "Azure region of the backup resources.", matches(r"[a-z0-9]+", "an Azure region name like westeurope")
    )

    # --- monitoring stack ----------------------------------------------------------------------
    monitoring_namespace: str = setting("monitoring", "Namespace of kube-prometheus-stack, exporters and the Pushgateway.", DNS_LABEL)
    backend_namespace: str = setting("ipa", "Namespace of the ipa-backend pods.", DNS_LABEL)
    backend_metrics_port: str = setting(
        "http",
        "Name of the container port serving ipa-backend metrics.",
        matches(r"[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?", "a container port name (IANA_SVC_NAME, max 15 chars)"),
    )
    backend_metrics_path: str = setting(
        "/metrics", "HTTP path of ipa-backend metrics.", matches(r"/[A-Za-z0-9/._-]*", "an absolute URL path like /metrics")
    )
    kube_prometheus_stack_version: str = setting("88.5.3", "Pinned kube-prometheus-stack chart version.", CHART_VERSION)
    postgres_exporter_chart_version: str = setting("8.2.0", "Pinned prometheus-postgres-exporter chart version.", CHART_VERSION)
    redis_exporter_chart_version: str = setting("6.29.0", "Pinned prometheus-redis-exporter chart version.", CHART_VERSION)
    pushgateway_chart_version: str = setting("3.8.0", "Pinned prometheus-pushgateway chart version.", CHART_VERSION)
    storage_class: str = setting(
        "managed-csi", "StorageClass of Prometheus, Alertmanager, Grafana and Pushgateway volumes (AKS managed CSI).", DNS_LABEL
    )
    prometheus_replicas: int = setting(1, "Prometheus replicas.", positive)
    prometheus_retention: str = setting("15d", "Prometheus time-based retention.", PROM_DURATION)
    prometheus_retention_size: str = setting("40GB", "Prometheus size-based retention; must fit in the volume.", PROM_SIZE)
    prometheus_storage_size: str = setting("50Gi", "Prometheus volume size.", QUANTITY)
    prometheus_cpu_request: str = setting("500m", "Prometheus CPU request.", QUANTITY)
    prometheus_memory_request: str = setting("2Gi", "Prometheus memory request.", QUANTITY)
    prometheus_memory_limit: str = setting("4Gi", "Prometheus memory limit.", QUANTITY)
    remote_write: tuple[RemoteWrite, ...] = setting(
        (), "Optional Prometheus remote_write targets: [{name, url, azureAdClientId?, tenant?}]."
    )
    alertmanager_replicas: int = setting(1, "Alertmanager replicas.", positive)
    cluster_node_count: int = setting(
        3,
        "Nodes the monitoring pods can run on. Prometheus and Alertmanager replicas > 1 need one node each "
        "(required anti-affinity by hostname).",
        positive,
    )
    chart_images: dict[str, str] = setting(
        {},
        "The charts' images pinned by digest: {name: '<tag>@sha256:<64 hex>'}; scripts/pin-chart-images.sh writes them. "
        "Prod requires every image.",
        image_pins,
    )
    container_resources: dict[str, Resources] = setting(
        DEFAULT_RESOURCES,
        "Requests and limits of the charts' other containers: {name: {cpuRequest, memoryRequest, cpuLimit, memoryLimit}}; "
        "names left out keep their defaults.",
        resources_table,
    )
    alertmanager_storage_size: str = setting("2Gi", "Alertmanager volume size.", QUANTITY)
    grafana_storage_size: str = setting("10Gi", "Grafana volume size.", QUANTITY)
    grafana_entra_client_id: str = setting(
        "",
        "Grafana sign-in with Microsoft Entra ID: client (application) id of the app registration; empty keeps the "
        "break-glass admin login only (docs/monitoring/grafana-sign-in.md).",
        optional(GUID),
    )
    grafana_entra_tenant_id: str = setting(
        "", "Entra tenant id of the app registration; required with grafanaEntraClientId.", optional(GUID)
    )
    grafana_entra_group_roles: dict[str, str] = setting(
        {},
        "Grafana role by Entra group object id: {groupId: Viewer|Editor|Admin}. Only members of these groups may sign in.",
        group_roles,
    )
    grafana_entra_client_secret: Secret = setting(
        Secret(""), "Client secret of the Grafana app registration; required with grafanaEntraClientId. Secret.", secret=True
    )
    grafana_ingress_host: str = setting(
        "", "Host name of an Ingress in front of Grafana (HTTPS only); empty: no Ingress, kubectl port-forward.", optional(HOST_NAME)
    )
    grafana_ingress_class: str = setting(
        "webapprouting.kubernetes.azure.com", "IngressClass of the Grafana Ingress (AKS app routing).", DNS_HOST
    )
    grafana_ingress_tls_secret: str = setting(
        "grafana-tls",
        "TLS Secret (tls.crt, tls.key) of the Grafana Ingress in the monitoring namespace, e.g. from cert-manager.",
        DNS_LABEL,
    )
    grafana_ingress_namespace: str = setting(
        "app-routing-system", "Namespace of the ingress controller pods, the only ones let through to Grafana.", DNS_LABEL
    )
    grafana_external_url: str = setting(
        "", "Grafana URL for links in alerts; empty means the in-cluster URL.", lambda v: None if v == "" else HTTPS_URL(v)
    )
    runbook_base_url: str = setting(
        "https://github.com/ipa-platform/ipa-ops/blob/main/docs/runbooks", "Base URL of docs/runbooks for alert runbook links.", HTTPS_URL
    )

    # --- the platform's state stores -----------------------------------------------------------
    postgres_host: str = setting("ipa-postgres.ipa.svc.cluster.local", "PostgreSQL host name.", matches(r"[A-Za-z0-9.-]+", "a host name"))
    postgres_port: int = setting(5432, "PostgreSQL port.", lambda v: None if 0 < v < 65536 else "a TCP port 1-65535")
    postgres_database: str = setting(
        "ipa", "PostgreSQL database that is backed up.", matches(r"[A-Za-z_][A-Za-z0-9_$-]{0,62}", "a PostgreSQL database name")
    )
    postgres_ssl_mode: str = setting(
        "require",
        "sslmode of every PostgreSQL connection: exporter, backup and drill (Azure Database for PostgreSQL needs TLS).",
        one_of("disable", "require", "verify-ca", "verify-full"),
    )
    postgres_credentials_secret: str = setting(
        "ipa-postgres-credentials", "Existing Secret (keys `username`, `password`) for PostgreSQL.", DNS_LABEL
    )
    redis_host: str = setting("ipa-redis-master.ipa.svc.cluster.local", "Redis host name.", matches(r"[A-Za-z0-9.-]+", "a host name"))
    redis_port: int = setting(6379, "Redis port.", lambda v: None if 0 < v < 65536 else "a TCP port 1-65535")
    redis_credentials_secret: str = setting("ipa-redis-credentials", "Existing Secret (key `password`) for Redis.", DNS_LABEL)
    credentials_key_vault_id: str = setting(
        "",
        "Key Vault holding the PostgreSQL and Redis credentials as secrets `<Secret name>-<key>`; the Secrets Store CSI driver "
        "syncs them into both Secrets above, in the monitoring and backup namespaces. Empty: create the Secrets by hand "
        "in both namespaces. Prod requires it.",
        lambda v: None if v == "" else KEY_VAULT_ID(v),
    )

    # --- alert routing ---------------------------------------------------------------------------
    alert_email_to: tuple[str, ...] = setting(REQUIRED, "E-mail recipients of critical alerts.", non_empty(each(EMAIL)))
    alert_email_from: str = setting("alertmanager@ipa.example.com", "Sender address of alert e-mail.", EMAIL)
    smtp_smarthost: str = setting("smtp.office365.com:587", "SMTP relay host:port.", HOST_PORT)
    smtp_auth_username: str = setting("alertmanager@ipa.example.com", "SMTP user name.", matches(r"\S+", "a non-empty user name"))
    smtp_require_tls: bool = setting(True, "Require STARTTLS to the SMTP relay.")
    teams_webhook_url: Secret = setting(
        REQUIRED, "Teams Workflows (Power Automate) webhook URL. Secret.", lambda v: HTTPS_URL(v.reveal()), secret=True
    )
    smtp_password: Secret = setting(
        REQUIRED, "SMTP password. Secret.", lambda v: None if v.reveal() else "a non-empty password", secret=True
    )
    heartbeat_url: Secret = setting(
        REQUIRED,
        "Dead man's switch: webhook URL of an outside heartbeat service that pages when the always-firing Watchdog stops arriving. Secret.",
        lambda v: HTTPS_URL(v.reveal()),
        secret=True,
    )
    heartbeat_interval: str = setting(
        "5m", "How often Alertmanager sends the Watchdog heartbeat (repeat_interval), 1m to 1h.", heartbeat_period
    )

    # --- alert thresholds and objectives ---------------------------------------------------------
    error_rate_threshold: float = setting(0.05, "HighErrorRate: 5xx share of requests.", open_ratio)
    min_request_rate: float = setting(0.1, "Requests per second below which ratio alerts stay quiet.", at_least(0))
    latency_p95_threshold_seconds: float = setting(2.0, "HighResponseTime: p95 latency in seconds.", positive)
    claude_error_rate_threshold: float = setting(0.1, "ClaudeAPIErrors: Claude API errors per second.", positive)
    claude_rate_limited_ratio_threshold: float = setting(0.2, "Share of Claude calls rate-limited before a warning.", open_ratio)
    claude_latency_p95_threshold_seconds: float = setting(30.0, "Claude API p95 latency in seconds before a warning.", positive)
    execution_failure_ratio_threshold: float = setting(
        0.1, "ExecutionFailureRateHigh: share of failed or timed-out executions.", open_ratio
    )
    min_execution_rate: float = setting(0.01, "Executions per second below which the failure-ratio alert stays quiet.", at_least(0))
    execution_concurrency_limit: int = setting(20, "Executions the backend runs at once; saturation alerts at 90 %.", positive)
    execution_stuck_minutes: int = setting(30, "Executions in progress with no completion for this long are stuck.", positive)
    availability_slo: float = setting(0.995, "Availability objective of ipa-backend (share of non-5xx requests).", open_ratio)
    latency_slo: float = setting(0.99, "Share of requests faster than latencySloThresholdSeconds.", open_ratio)
    latency_slo_threshold_seconds: float = setting(1.0, "Latency objective bound; a histogram bucket bound.", bucket)
    claude_daily_budget_usd: float = setting(100.0, "ClaudeCostBudgetExceeded: estimated Claude spend per 24h, USD.", positive)
    claude_pricing: dict[str, TokenPrices] = setting(
        DEFAULT_PRICING, "USD per million tokens per model: {model: {input, output, cacheRead, cacheWrite}}.", pricing_table
    )
    claude_default_pricing: TokenPrices = setting(
        DEFAULT_UNKNOWN_MODEL_PRICES, "USD per million tokens for models missing from claudePricing.", prices_non_negative
    )
    restore_drill_period_days: int = setting(
        7, "A restore drill must succeed at least this often (RestoreDrillFailed adds a day).", positive
    )

    # --- backups (targets, schedule and retention first) --------------------------------------------
    rpo_target_minutes: int = setting(60, "Recovery point objective, minutes.", positive)
    rto_target_minutes: int = setting(240, "Recovery time objective, minutes.", positive)
    backup_schedule: str = setting("*/30 * * * *", "Cron schedule of the backup CronJob (5 fields).", cron)
    backup_retention_days: int = setting(30, "Days daily backup sets are kept (the DR plan requires >= 30).", at_least(30))
    backup_deadline_minutes: int = setting(20, "activeDeadlineSeconds of a backup Job, in minutes; counts against the RPO.", positive)
    backup_time_zone: str = setting("Etc/UTC", "timeZone of the CronJobs.", time_zone)
    backup_frequent_retention_hours: int = setting(48, "Hours frequent (every run) backup sets are kept.", at_least(48))
    backup_weekly_retention_weeks: int = setting(12, "Weeks weekly backup sets are kept.", at_least(12))
    drill_schedule: str = setting("0 3 * * 0", "Cron schedule of the restore-drill CronJob.", cron)
    backup_namespace: str = setting("ipa-backup", "Namespace of the backup and drill CronJobs.", DNS_LABEL)
    backup_service_account: str = setting(
        "ipa-backup", "ServiceAccount of the backup pods (federated with the managed identity).", DNS_LABEL
    )
    backup_image: str = setting(
        "",
        "Prebuilt backup image reference; empty builds backup_image/ and pushes it. Prod requires a digest.",
        lambda v: None if v == "" else IMAGE_REF(v),
    )
    container_registry: str = setting(
        "ipaopsacr", "Azure Container Registry name the image is pushed to.", matches(r"[A-Za-z0-9]{5,50}", "5-50 letters and digits")
    )
    production_database_size_gb: float = setting(20.0, "Size of the production database, GB, for the RTO estimate.", positive)
    production_redis_size_gb: float = setting(
        1.0, "Size of the production Redis data set (its RDB file), GB, for capacity.md: every logical set holds one.", positive
    )

    # --- point-in-time recovery of PostgreSQL (WAL stream and base backups) -------------------------
    pitr_enabled: bool = setting(
        True, "Stream PostgreSQL's WAL and take daily base backups (point-in-time recovery); the stream then carries the RPO."
    )
    pitr_frequent_backup_targets: tuple[str, ...] = setting(
        ("redis",),
        "Targets every logical backup run takes while pitrEnabled (BACKUP_FREQUENT_TARGETS); the first set of each UTC day "
        "and ISO week takes both. Redis has no stream, so it is always one.",
        frequent_targets,
    )
    base_backup_schedule: str = setting(
        "0 1 * * *", "Cron schedule of the base backup CronJob; runs at least daily (first of an ISO week is weekly).", cron
    )
    base_backup_deadline_minutes: int = setting(180, "activeDeadlineSeconds of a base backup Job, in minutes.", positive)
    wal_partial_upload_seconds: int = setting(
        15,
        "Seconds between uploads of the WAL segment being written, so a quiet database still meets the RPO.",
        lambda v: None if 1 <= v <= 300 else "a whole number of seconds 1-300",
    )
    wal_lag_budget_seconds: int = setting(
        45, "WalArchiveLagHigh: WAL not yet uploaded for this long; plus walPartialUploadSeconds it bounds the RPO.", positive
    )
    wal_stream_storage_size: str = setting("20Gi", "Volume of the WAL stream's spool (WAL received, not yet uploaded).", QUANTITY)
    wal_per_day_gb: float = setting(2.0, "WAL the server writes per day, GB uncompressed, for capacity.md.", positive)
    max_slot_wal_keep_size_gb: int = setting(
        16, "The server's max_slot_wal_keep_size in GB (set it on the server); the slot retention alert compares against it.", positive
    )

    # --- backup storage on Azure -------------------------------------------------------------------
    existing_resource_group: str = setting(
        "",
        "Existing resource group to use; empty creates one.",
        lambda v: None if v == "" else matches(r"[-\w._()]{1,90}", "an Azure resource group name")(v),
    )
    storage_account_name: str = setting(REQUIRED, "Name of the backup storage account.", storage_account_name)
    storage_redundancy: str = setting(
        "Standard_ZRS",
        "Storage SKU. Prod requires geo-zone redundancy.",
        one_of("Standard_LRS", "Standard_ZRS", "Standard_GRS", "Standard_RAGRS", "Standard_GZRS", "Standard_RAGZRS"),
    )
    backup_container: str = setting(
        "ipa-backups",
        "Private blob container of the backup sets.",
        matches(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]", "a container name: 3-63 lowercase letters, digits and single hyphens"),
    )
    aks_subnet_ids: tuple[str, ...] = setting((), "AKS subnet resource ids allowed through the storage firewall.", each(SUBNET_ID))
    aks_oidc_issuer_url: str = setting(REQUIRED, "OIDC issuer URL of the AKS cluster (workload identity).", HTTPS_URL)
    blob_soft_delete_days: int = setting(
        14, "Days deleted blobs and containers stay recoverable.", lambda v: None if 1 <= v <= 365 else "a whole number of days 1-365"
    )
    storage_immutability_days: int = setting(
        0, "Version-level immutability period, days; 0 disables. Prod requires >= backupRetentionDays.", at_least(0)
    )
    storage_delete_lock: bool = setting(False, "CanNotDelete lock on the storage account (prod requires it).")

    # --- derived values -----------------------------------------------------------------------------
    @property
    def is_prod(self) -> bool:
        return self.environment == "prod"

    def resources(self, name: str) -> dict[str, dict[str, str]]:
        """Requests and limits of one container of DEFAULT_RESOURCES: the setting, else its default."""
        return self.container_resources.get(name, DEFAULT_RESOURCES[name]).spec()

    @property
    def backup_longest_gap_minutes(self) -> int:
        return parse_cron(self.backup_schedule).longest_gap_minutes()

    @property
    def frequent_backup_targets(self) -> tuple[str, ...]:
        """What every logical backup run takes; the first set of a UTC day or ISO week takes both. Without
        PITR both, always: the logical sets then carry PostgreSQL's RPO as well."""
        return tuple(t for t in BACKUP_TARGETS if t in self.pitr_frequent_backup_targets) if self.pitr_enabled else BACKUP_TARGETS

    @property
    def daily_backup_max_age_minutes(self) -> int:
        """Longest age of the newest daily set: a day, plus the schedule's longest gap (the first run of a
        UTC day may come that late after midnight), plus the deadline of that run."""
        return 1440 + self.backup_longest_gap_minutes + self.backup_deadline_minutes

    @property
    def backup_max_age_minutes(self) -> dict[str, int]:
        """Per target, the age past which its newest logical set is late (BackupTooOld): the RPO for a
        target every run takes; for PostgreSQL dumped daily only (the WAL stream carries its RPO, guarded
        by WalStreamDown and WalArchiveLagHigh), the daily gap plus deadline."""
        frequent = self.frequent_backup_targets
        return {t: self.rpo_target_minutes if t in frequent else self.daily_backup_max_age_minutes for t in BACKUP_TARGETS}

    @property
    def wal_retention_days(self) -> int:
        """WAL is kept back to the oldest daily base backup: the daily retention plus one base backup gap."""
        return self.backup_retention_days - (-parse_cron(self.base_backup_schedule).longest_gap_minutes() // 1440)

    @property
    def base_backup_max_age_minutes(self) -> int:
        """Age past which the newest base backup is late (BaseBackupTooOld)."""
        return parse_cron(self.base_backup_schedule).longest_gap_minutes() + self.base_backup_deadline_minutes

    @property
    def pitr_rpo_bound_seconds(self) -> int:
        """The most committed data a lost cluster loses with the WAL stream on: the partial segment's
        upload interval plus the lag WalArchiveLagHigh tolerates."""
        return self.wal_partial_upload_seconds + self.wal_lag_budget_seconds


def config_key(field_name: str) -> str:
    """rpo_target_minutes -> rpoTargetMinutes"""
    head, *rest = field_name.split("_")
    return head + "".join(word.capitalize() for word in rest)


FIELDS = {config_key(f.name): f for f in dataclasses.fields(Settings)}
SECRET_KEYS = frozenset(key for key, f in FIELDS.items() if f.metadata["secret"])
_HINTS = typing.get_type_hints(Settings)


def _camel_object(raw: Mapping[str, Any], cls: type, where: str) -> Any:
    """Builds a small dataclass from a camelCase JSON object, refusing unknown keys."""
    names = {config_key(f.name): f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ValueError(f"unknown field(s) {unknown} in {where}; accepted: {sorted(names)}")
    return cls(**{names[k]: v for k, v in raw.items()})


def _convert(raw: Any, hint: Any) -> Any:
    """Turns one raw config value (a string from the CLI, or YAML data) into the field's type."""
    if hint is Secret:
        return Secret(str(raw))
    if hint is bool:
        if isinstance(raw, bool):
            return raw
        if str(raw).lower() in ("true", "false"):
            return str(raw).lower() == "true"
        raise ValueError("true or false")
    if hint is int:
        if isinstance(raw, bool) or not re.fullmatch(r"-?[0-9]+", str(raw).strip()):
            raise ValueError("a whole number")
        return int(str(raw).strip())
    if hint is float:
        try:
            if isinstance(raw, bool):
                raise ValueError
            return float(str(raw).strip())
        except ValueError:
            raise ValueError("a number") from None
    if hint is str:
        if not isinstance(raw, str):
            raise ValueError("a string")
        return raw
    structured = json.loads(raw) if isinstance(raw, str) else raw
    origin = typing.get_origin(hint)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        if not isinstance(structured, list):
            raise ValueError("a list")
        if item is str:
            if not all(isinstance(v, str) for v in structured):
                raise ValueError("a list of strings")
            return tuple(structured)
        return tuple(_camel_object(v, item, "a list item") for v in structured)
    if origin is dict:
        item = typing.get_args(hint)[1]
        if item is str:
            if not isinstance(structured, dict) or not all(isinstance(v, str) for v in structured.values()):
                raise ValueError("an object {name: '<tag>@sha256:<64 hex>'}")
            return dict(structured)
        if item is Resources:
            if not isinstance(structured, dict):
                raise ValueError("an object {name: {cpuRequest, memoryRequest, cpuLimit, memoryLimit}}")
            return {k: _camel_object(v, Resources, f"container {k!r}") for k, v in structured.items()}
        if not isinstance(structured, dict):
            raise ValueError("an object {model: {input, output, cacheRead, cacheWrite}}")
        return {k: _camel_object(v, TokenPrices, f"model {k!r}") for k, v in structured.items()}
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(structured, dict):
            raise ValueError("an object {input, output, cacheRead, cacheWrite}")
        return _camel_object(structured, hint, "the object")
    raise TypeError(f"no converter for {hint}")  # a programming error, not a user error


def _show(raw: Any, secret: bool) -> str:
    if secret:
        return "'[secret]'"
    return json.dumps(raw) if not isinstance(raw, str) else repr(raw)


def _cross_checks(s: Settings) -> list[tuple[str, Any, str]]:
    """Rules that involve several keys. Each problem: (key, value, what is accepted)."""
    problems: list[tuple[str, Any, str]] = []
    gap = s.backup_longest_gap_minutes
    if gap + s.backup_deadline_minutes > s.rpo_target_minutes:
        problems.append(
            (
                "backupSchedule",
                s.backup_schedule,
                f"a schedule whose longest gap between runs ({gap} min) plus backupDeadlineMinutes "
                f"({s.backup_deadline_minutes} min) is at most rpoTargetMinutes ({s.rpo_target_minutes} min)",
            )
        )
    if s.pitr_enabled:
        problems += _pitr_checks(s)
    drill_gap_days = parse_cron(s.drill_schedule).longest_gap_minutes() / 1440
    if drill_gap_days > s.restore_drill_period_days:
        problems.append(
            (
                "drillSchedule",
                s.drill_schedule,
                f"a schedule that runs at least every restoreDrillPeriodDays ({s.restore_drill_period_days} days); "
                f"its longest gap is {drill_gap_days:g} days",
            )
        )
    if s.backup_deadline_minutes * 2 > s.rto_target_minutes:
        problems.append(("backupDeadlineMinutes", s.backup_deadline_minutes, "at most half of rtoTargetMinutes"))
    if s.storage_immutability_days and s.storage_immutability_days < s.backup_retention_days:
        problems.append(
            (
                "storageImmutabilityDays",
                s.storage_immutability_days,
                f"0 (off) or at least backupRetentionDays ({s.backup_retention_days})",
            )
        )
    if _size_bytes(s.prometheus_retention_size) > 0.9 * _quantity_bytes(s.prometheus_storage_size):
        problems.append(
            (
                "prometheusRetentionSize",
                s.prometheus_retention_size,
                f"at most 90 % of prometheusStorageSize ({s.prometheus_storage_size}), leaving room for the WAL",
            )
        )
    problems += _sign_in_checks(s)
    for key, replicas in (("alertmanagerReplicas", s.alertmanager_replicas), ("prometheusReplicas", s.prometheus_replicas)):
        if replicas > 1 and s.cluster_node_count < replicas:
            problems.append(
                (
                    key,
                    replicas,
                    f"at most clusterNodeCount ({s.cluster_node_count}): each replica needs a node of its own "
                    "(required anti-affinity by hostname)",
                )
            )
    if s.is_prod:
        if s.storage_redundancy not in ("Standard_GZRS", "Standard_RAGZRS"):
            problems.append(("storageRedundancy", s.storage_redundancy, "in prod, 'Standard_RAGZRS' or 'Standard_GZRS'"))
        if s.storage_immutability_days == 0:
            problems.append(("storageImmutabilityDays", 0, f"in prod, at least backupRetentionDays ({s.backup_retention_days})"))
        if not s.storage_delete_lock:
            problems.append(("storageDeleteLock", False, "in prod, true"))
        if not s.credentials_key_vault_id:
            problems.append(
                ("credentialsKeyVaultId", "", "in prod, a Key Vault resource id: the state stores' credentials come from one place")
            )
        unpinned = [name for name in CHART_IMAGE_NAMES if name not in s.chart_images]
        if unpinned:
            problems.append(
                (
                    "chartImages",
                    {k: s.chart_images[k] for k in sorted(s.chart_images)},
                    "in prod, every chart image pinned by digest (<tag>@sha256:<64 hex>, scripts/pin-chart-images.sh); "
                    "missing: " + ", ".join(unpinned),
                )
            )
        if s.backup_image and "@sha256:" not in s.backup_image:
            problems.append(("backupImage", s.backup_image, "in prod, an image pinned by digest (…@sha256:<64 hex>) or empty to build it"))
    return problems


def _pitr_checks(s: Settings) -> list[tuple[str, Any, str]]:
    """With the WAL stream on, PostgreSQL's RPO is its upload interval plus lag budget (backupSchedule
    keeps its own check: it carries Redis's RPO, and PostgreSQL's again when PITR is turned off)."""
    problems: list[tuple[str, Any, str]] = []
    rpo_seconds = s.rpo_target_minutes * 60
    if s.pitr_rpo_bound_seconds > rpo_seconds:
        problems.append(
            (
                "walLagBudgetSeconds",
                s.wal_lag_budget_seconds,
                f"at most rpoTargetMinutes ({rpo_seconds} s) minus walPartialUploadSeconds ({s.wal_partial_upload_seconds} s): "
                "with pitrEnabled the RPO is the partial upload interval plus the lag budget",
            )
        )
    base_gap = parse_cron(s.base_backup_schedule).longest_gap_minutes()
    if base_gap > 1440:
        problems.append(
            ("baseBackupSchedule", s.base_backup_schedule, f"a schedule that runs at least daily; its longest gap is {base_gap} min")
        )
    if s.base_backup_deadline_minutes >= base_gap:
        problems.append(
            (
                "baseBackupDeadlineMinutes",
                s.base_backup_deadline_minutes,
                f"less than the longest gap of baseBackupSchedule ({base_gap} min)",
            )
        )
    if s.max_slot_wal_keep_size_gb < s.wal_per_day_gb:
        problems.append(
            (
                "maxSlotWalKeepSizeGb",
                s.max_slot_wal_keep_size_gb,
                f"at least walPerDayGb ({s.wal_per_day_gb:g}), so the slot survives a day without the stream",
            )
        )
    if _quantity_bytes(s.wal_stream_storage_size) < 2**30:
        problems.append(("walStreamStorageSize", s.wal_stream_storage_size, "at least 1Gi (64 WAL segments)"))
    return problems


def _sign_in_checks(s: Settings) -> list[tuple[str, Any, str]]:
    """Entra ID sign-in needs its tenant, secret, groups and an external HTTPS URL; an Ingress serves that URL."""
    problems: list[tuple[str, Any, str]] = []
    if s.grafana_entra_client_id:
        if not s.grafana_entra_tenant_id:
            problems.append(("grafanaEntraTenantId", "", "the tenant id of the app registration, with grafanaEntraClientId set"))
        if not s.grafana_entra_client_secret.reveal():
            problems.append(
                (
                    "grafanaEntraClientSecret",
                    "",
                    "the app registration's client secret (pulumi config set --secret), with grafanaEntraClientId set",
                )
            )
        if not s.grafana_entra_group_roles:
            problems.append(
                ("grafanaEntraGroupRoles", {}, "at least one {groupId: role} with grafanaEntraClientId set: nobody else may sign in")
            )
        if not s.grafana_external_url:
            problems.append(
                ("grafanaExternalUrl", "", "the https:// URL users open, with grafanaEntraClientId set (the app's redirect URI)")
            )
    if s.grafana_ingress_host and s.grafana_external_url.rstrip("/") != f"https://{s.grafana_ingress_host}":
        problems.append(
            ("grafanaExternalUrl", s.grafana_external_url, f"https://{s.grafana_ingress_host}, the URL of the Ingress (grafanaIngressHost)")
        )
    return problems


_UNITS = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "m": 1e-3,
}
_PROM_UNITS = {"B": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30, "TB": 2**40, "PB": 2**50, "EB": 2**60}


def _quantity_bytes(quantity: str) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", quantity).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def _size_bytes(size: str) -> float:
    number, unit = re.fullmatch(r"([0-9]+)([A-Z]+)", size).groups()  # type: ignore[union-attr]
    return float(number) * _PROM_UNITS[unit]


def parse_settings(raw: Mapping[str, Any]) -> Settings:
    """Builds Settings from `{"ipa-ops:key": value}`; values as the CLI passes them (strings) or YAML data.

    Raises SettingsError with every problem when anything is invalid.
    """
    problems: list[str] = []
    prefix = PROJECT + ":"
    values: dict[str, Any] = {}
    for full_key in sorted(raw):
        if full_key.startswith(prefix) and full_key[len(prefix) :] not in FIELDS:
            key = full_key[len(prefix) :]
            close = [k for k in FIELDS if _similar(k, key)]
            hint = f"; did you mean {close[0]}?" if close else ""
            problems.append(f"{full_key}: unknown setting{hint} (accepted keys: see the README's settings table)")
    for key, f in FIELDS.items():
        full_key = prefix + key
        secret = bool(f.metadata["secret"])
        if full_key in raw and raw[full_key] is not None:
            value = raw[full_key]
            try:
                converted = _convert(value, _HINTS[f.name])
            except (ValueError, json.JSONDecodeError, TypeError) as err:
                accepted = str(err) if not isinstance(err, json.JSONDecodeError) else "valid JSON/YAML data"
                problems.append(f"{full_key} = {_show(value, secret)} is invalid: expected {accepted}")
                continue
        elif f.metadata["default"] is REQUIRED:
            how = f"pulumi config set --secret {key} <value>" if secret else "set it in Pulumi.<stack>.yaml"
            problems.append(f"{full_key} is required but not set ({how}): {f.metadata['description']}")
            continue
        else:
            converted = f.metadata["default"]
        check = f.metadata["check"]
        problem = check(converted) if check else None
        if problem:
            problems.append(f"{full_key} = {_show(raw.get(full_key, converted), secret)} is invalid: expected {problem}")
            continue
        values[f.name] = converted
    if not problems:
        settings = Settings(**values)
        problems += [
            f"{prefix}{key} = {_show(value, False)} is invalid: expected {accepted}" for key, value, accepted in _cross_checks(settings)
        ]
        if not problems:
            return settings
    raise SettingsError("invalid stack settings:\n  " + "\n  ".join(problems))


def _similar(a: str, b: str) -> bool:
    """A typo detector for unknown keys: nearly the same letters in nearly the same order."""
    return difflib.SequenceMatcher(None, a.lower(), b.lower()).ratio() >= 0.85


def load_settings() -> Settings:
    """Reads every `ipa-ops:*` key from Pulumi's config. The only reader of Pulumi config."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    keys = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    config = pulumi.Config(PROJECT)
    prefix = PROJECT + ":"
    raw = {key: config.get(key[len(prefix) :]) for key in keys if key.startswith(prefix)}
    try:
        return parse_settings(raw)
    except SettingsError as err:
        # RunError makes the Pulumi CLI print the message without a Python traceback.
        raise pulumi.RunError(str(err)) from None


def defaults_for_schema() -> dict[str, dict[str, Any]]:
    """The project-level config schema of Pulumi.yaml (`make generate` writes it there)."""
    schema: dict[str, dict[str, Any]] = {}
    for key, f in FIELDS.items():
        hint = _HINTS[f.name]
        kind = {int: "integer", bool: "boolean", str: "string", float: None, Secret: "string"}.get(hint)
        if typing.get_origin(hint) is tuple and typing.get_args(hint)[0] is str:
            kind = "array"
        if kind is None:
            continue  # floats and objects: the schema can't express them; Settings applies the default
        entry: dict[str, Any] = {"type": kind, "description": f.metadata["description"]}
        if kind == "array":
            entry["items"] = {"type": "string"}
        default = f.metadata["default"]
        if default is not REQUIRED and not f.metadata["secret"]:
            entry["default"] = list(default) if isinstance(default, tuple) else default
        schema[key] = entry
    return schema


__all__ = [
    "FIELDS",
    "PROJECT",
    "SECRET_KEYS",
    "RemoteWrite",
    "Resources",
    "Secret",
    "Settings",
    "SettingsError",
    "TokenPrices",
    "config_key",
    "defaults_for_schema",
    "load_settings",
    "parse_settings",
]
