"""The drill's copies of the rendered dev stack (pure functions, tested without services).

The drill runs the rules, routes, templates, scrape settings and CronJob environment `pulumi up`
would deploy, read from the render (docs/operations/render.md), with these local changes only,
each listed in the report:

- rules: time compressed on the syntax tree (drill.promql); the chart's Watchdog rule added when
  the render's monitoring chart values keep the chart's `general` rules;
- alertmanager.yaml: every secret `*_file` path points at a local file (Teams stand-in URL,
  heartbeat stand-in URL, SMTP password), e-mail goes to the local SMTP stand-in without STARTTLS,
  `group_wait` / `group_interval` are shortened and the heartbeat route's `repeat_interval` is
  compressed; receivers, matchers, grouping and templates stay as rendered;
- the backend's scrape config: built from the rendered PodMonitor, its target the stand-in backend;
- backup CronJob env: the same variable names, values translated to the loopback services.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from drill.promql import TIME_SCALE, format_duration, parse_duration

IMAGE_ENTRYPOINT = "ipa-backup"  # what the backup image runs (behind tini) when a container sets no `command`
DRILL_GROUP_WAIT = "1s"
DRILL_GROUP_INTERVAL = "5s"
MIN_SCRAPE_SECONDS = 1.0
WATCHDOG = "Watchdog"
# The monitoring chart's Watchdog (its `general` default rules): always firing, the heartbeat's source.
# The render holds only the stack's own PrometheusRules; the chart brings this one in the cluster.
CHART_WATCHDOG_RULE: dict[str, Any] = {
    "alert": WATCHDOG,
    "expr": "vector(1)",
    "labels": {"severity": "none"},
    "annotations": {
        "summary": "An alert that should always be firing to certify that Alertmanager is working properly.",
    },
}


class ArtifactError(RuntimeError):
    """A rendered artifact is missing or has a shape the drill cannot run."""


# --- rules ---------------------------------------------------------------------------------------


def chart_general_rules_enabled(kps_values: Mapping[str, Any]) -> bool:
    """Whether the rendered values of the monitoring chart keep the chart's `general` rules (Watchdog)."""
    default_rules = kps_values.get("defaultRules") or {}
    return default_rules.get("create", True) is not False and (default_rules.get("rules") or {}).get("general", True) is not False


def with_watchdog(rules: Mapping[str, Any], kps_values: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The rendered rules plus the chart's Watchdog when the cluster would have it and the render does not."""
    content = copy.deepcopy(dict(rules))
    names = {r.get("alert") for g in content.get("groups") or [] for r in g.get("rules") or []}
    if WATCHDOG in names or not chart_general_rules_enabled(kps_values):
        return content, []
    content.setdefault("groups", []).append({"name": "general.rules", "rules": [copy.deepcopy(CHART_WATCHDOG_RULE)]})
    return content, [
        "rules: the monitoring chart's Watchdog (`vector(1)`, severity none) added: the rendered values keep the chart's "
        "`general` rules, which the render's rules.yaml (the stack's own PrometheusRules) does not hold"
    ]


# --- the backend's scrape config ------------------------------------------------------------------

_ENDPOINT_KEYS = {"port", "path", "interval", "scrapeTimeout", "honorLabels", "scheme", "relabelings", "metricRelabelings"}
_RELABEL_KEYS = {
    "sourceLabels": "source_labels",
    "separator": "separator",
    "targetLabel": "target_label",
    "regex": "regex",
    "modulus": "modulus",
    "replacement": "replacement",
    "action": "action",
}


def _relabel(rules: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    out = []
    for rule in rules:
        unknown = set(rule) - set(_RELABEL_KEYS)
        if unknown:
            raise ArtifactError(f"{where}: relabeling field(s) {sorted(unknown)} the drill does not translate")
        out.append({_RELABEL_KEYS[k]: v for k, v in rule.items()})
    return out


def find_pod_monitor(manifests: list[dict[str, Any]], app: str) -> dict[str, Any]:
    """The rendered PodMonitor that selects the pods labelled app=`app`."""
    found = [
        m
        for m in manifests
        if m.get("kind") == "PodMonitor" and ((m.get("spec") or {}).get("selector") or {}).get("matchLabels", {}).get("app") == app
    ]
    if len(found) != 1:
        raise ArtifactError(f"expected one PodMonitor selecting app={app} in kubernetes/, found {len(found)}")
    return found[0]


def scrape_config_from_pod_monitor(
    monitor: Mapping[str, Any], target: str, scale: float = TIME_SCALE
) -> tuple[list[dict[str, Any]], list[str]]:
    """Prometheus scrape configs for `target` (the stand-in backend), one per endpoint of the PodMonitor.

    The labels are those the Prometheus Operator gives a pod target: namespace (the first of
    `namespaceSelector.matchNames`), pod, container, endpoint (the port name), and job from the pod
    label `jobLabel` names; the endpoint's own relabelings then apply as rendered.
    """
    spec = monitor["spec"]
    name = monitor["metadata"]["name"]
    pod_labels = dict((spec.get("selector") or {}).get("matchLabels") or {})
    namespaces = (spec.get("namespaceSelector") or {}).get("matchNames") or []
    if not namespaces or not pod_labels:
        raise ArtifactError(f"PodMonitor {name}: the drill needs namespaceSelector.matchNames and selector.matchLabels")
    app = str(pod_labels.get("app", next(iter(pod_labels.values()))))
    job = str(pod_labels.get(spec["jobLabel"], app)) if spec.get("jobLabel") else f"{monitor['metadata'].get('namespace')}/{name}"
    configs: list[dict[str, Any]] = []
    changes: list[str] = []
    for index, endpoint in enumerate(spec.get("podMetricsEndpoints") or []):
        where = f"PodMonitor {name} endpoint {index}"
        unknown = set(endpoint) - _ENDPOINT_KEYS
        if unknown:
            raise ArtifactError(f"{where}: field(s) {sorted(unknown)} the drill cannot stand in for")
        rendered_interval = str(endpoint.get("interval", "30s"))
        interval = format_duration(max(MIN_SCRAPE_SECONDS, parse_duration(rendered_interval) / scale))
        config: dict[str, Any] = {
            "job_name": f"podMonitor/{monitor['metadata'].get('namespace')}/{name}/{index}",
            "scrape_interval": interval,
            "metrics_path": endpoint.get("path", "/metrics"),
            "scheme": endpoint.get("scheme", "http"),
            "honor_labels": bool(endpoint.get("honorLabels", False)),
            "static_configs": [
                {
                    "targets": [target],
                    "labels": {
                        "job": job,
                        "namespace": str(namespaces[0]),
                        "pod": f"{app}-0",
                        "container": app,
                        "endpoint": str(endpoint.get("port", "")),
                    },
                }
            ],
        }
        if endpoint.get("relabelings"):
            config["relabel_configs"] = _relabel(endpoint["relabelings"], where)
        if endpoint.get("metricRelabelings"):
            config["metric_relabel_configs"] = _relabel(endpoint["metricRelabelings"], where)
        configs.append(config)
        changes.append(
            f"scrape: {where} (port {endpoint.get('port')}, path {config['metrics_path']}) -> the stand-in backend {target}, "
            f"interval {rendered_interval} -> {interval}, relabelings as rendered"
        )
    if not configs:
        raise ArtifactError(f"PodMonitor {name} has no podMetricsEndpoints")
    return configs, changes


# --- Alertmanager ------------------------------------------------------------------------------

SECRET_KINDS = {
    "webhook_url_file": "teams",
    "url_file": "heartbeat",
    "auth_password_file": "smtp_password",
    "smtp_auth_password_file": "smtp_password",
}
CHANNEL_OF = {"msteamsv2_configs": "teams", "email_configs": "email", "webhook_configs": "heartbeat"}
# Alertmanager's defaults of send_resolved per integration.
RESOLVED_DEFAULT = {"msteamsv2_configs": True, "email_configs": False, "webhook_configs": True}


@dataclass(frozen=True)
class LocalEndpoints:
    """Where the drill's stand-ins listen."""

    teams_url: str
    heartbeat_url: str
    smtp_password: str
    smarthost: str


# Alertmanager's defaults of the route timers.
ALERTMANAGER_TIMER_DEFAULTS = {"group_wait": "30s", "group_interval": "5m", "repeat_interval": "4h"}


@dataclass(frozen=True)
class HeartbeatRoute:
    """The route of the always-firing Watchdog to the webhook receiver (seconds)."""

    receiver: str
    repeat_interval: float  # as rendered
    group_interval: float
    drill_repeat_interval: float  # in the drill's copy
    drill_group_interval: float
    send_resolved: bool

    @property
    def longest_gap(self) -> float:
        """Alertmanager re-sends at a flush (every group_interval) once repeat_interval has passed since the last send."""
        return self.repeat_interval + self.group_interval

    @property
    def drill_longest_gap(self) -> float:
        return self.drill_repeat_interval + self.drill_group_interval


@dataclass
class DrillAlertmanager:
    content: dict[str, Any]
    secret_files: dict[str, Path]  # rendered path -> local file
    receivers: dict[str, set[str]]  # receiver -> channels ("teams", "email", "heartbeat")
    send_resolved: dict[str, dict[str, bool]]  # receiver -> channel -> send_resolved
    smtp_username: str | None
    heartbeat: HeartbeatRoute | None = None
    changes: list[str] = field(default_factory=list)


def _route_timer(route: Mapping[str, Any], parents: list[Mapping[str, Any]], key: str, default: str) -> str:
    for node in [route, *reversed(parents)]:
        if key in node:
            return str(node[key])
    return default


def _heartbeat_routes(route: dict[str, Any], receivers: Mapping[str, set[str]], parents: list[dict[str, Any]]) -> list[Any]:
    """(route, parents) of every route whose receiver sends to the heartbeat channel."""
    found: list[Any] = []
    if "heartbeat" in receivers.get(str(route.get("receiver", "")), set()):
        found.append((route, parents))
    for child in route.get("routes") or []:
        found += _heartbeat_routes(child, receivers, [*parents, route])
    return found


def localize_alertmanager(
    config: Mapping[str, Any], secrets_dir: Path, local: LocalEndpoints, scale: float = TIME_SCALE
) -> DrillAlertmanager:
    """The drill copy of a rendered alertmanager.yaml; writes the secret files into `secrets_dir`."""
    content = copy.deepcopy(dict(config))
    secrets_dir.mkdir(parents=True, exist_ok=True)
    values = {"teams": local.teams_url, "heartbeat": local.heartbeat_url, "smtp_password": local.smtp_password}
    files: dict[str, Path] = {}
    changes: list[str] = []
    smtp_username: str | None = None

    def local_file(key: str, rendered: str) -> str:
        kind = SECRET_KINDS.get(key)
        if kind is None:
            raise ArtifactError(f"alertmanager.yaml has a secret file the drill cannot stand in for: {key}: {rendered}")
        if rendered not in files:
            path = secrets_dir / f"{len(files)}-{kind}"
            path.write_text(values[kind])
            path.chmod(0o600)
            files[rendered] = path
        return str(files[rendered])

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in list(node):
                if key.endswith("_file") and isinstance(node[key], str):
                    node[key] = local_file(key, node[key])
                else:
                    walk(node[key])
        elif isinstance(node, list):
            for item in node:
                walk(item)

    glob = content.setdefault("global", {})
    walk(glob)
    receivers: dict[str, set[str]] = {}
    send_resolved: dict[str, dict[str, bool]] = {}
    for receiver in content.get("receivers") or []:
        walk(receiver)
        name = str(receiver["name"])
        unsupported = {k for k in receiver if k.endswith("_configs")} - set(CHANNEL_OF)
        if unsupported:
            raise ArtifactError(f"receiver {name} uses {sorted(unsupported)}; the drill has stand-ins for Teams, e-mail and webhooks")
        channels: set[str] = set()
        resolved: dict[str, bool] = {}
        for kind, channel in CHANNEL_OF.items():
            for cfg in receiver.get(kind) or []:
                channels.add(channel)
                resolved[channel] = bool(cfg.get("send_resolved", RESOLVED_DEFAULT[kind]))
                if kind == "email_configs":
                    cfg["smarthost"] = local.smarthost
                    cfg["require_tls"] = False
                    smtp_username = cfg.get("auth_username", glob.get("smtp_auth_username"))
                if kind == "webhook_configs" and "url" in cfg:
                    cfg["url"] = local.heartbeat_url
        receivers[name] = channels
        send_resolved[name] = resolved
    if "smtp_smarthost" in glob:
        glob["smtp_smarthost"] = local.smarthost
    if "smtp_require_tls" in glob or any("email" in c for c in receivers.values()):
        glob["smtp_require_tls"] = False
    if files:
        changes.append(
            "alertmanager: secret files " + ", ".join(sorted(files)) + " replaced by local files (stand-in URLs, generated SMTP password)"
        )
    if any("email" in c for c in receivers.values()):
        changes.append(
            f"alertmanager: e-mail smarthost -> local SMTP stand-in {local.smarthost}, require_tls false (no STARTTLS on loopback)"
        )

    root = content.setdefault("route", {})
    found = _heartbeat_routes(root, receivers, [])
    if len(found) > 1:
        raise ArtifactError(f"{len(found)} routes lead to webhook receivers; the drill expects one heartbeat route")
    # The heartbeat route's timers as rendered (inherited ones included), before they change below.
    rendered_timers = (
        {key: parse_duration(_route_timer(found[0][0], found[0][1], key, default)) for key, default in ALERTMANAGER_TIMER_DEFAULTS.items()}
        if found
        else {}
    )

    def shorten(route: dict[str, Any]) -> None:
        for key, value in (("group_wait", DRILL_GROUP_WAIT), ("group_interval", DRILL_GROUP_INTERVAL)):
            if key in route or route is root:
                route[key] = value
        for child in route.get("routes") or []:
            shorten(child)

    shorten(root)
    changes.append(
        f"alertmanager: group_wait -> {DRILL_GROUP_WAIT}, group_interval -> {DRILL_GROUP_INTERVAL} on every route but the heartbeat's "
        "(receivers, matchers, group_by, inhibit rules and templates unchanged)"
    )
    heartbeat: HeartbeatRoute | None = None
    if found:
        # The heartbeat's cadence is what the drill measures: its timers are compressed like the rules' durations.
        route = found[0][0]
        drill_timers = {key: value / scale for key, value in rendered_timers.items()}
        for key, value in drill_timers.items():
            route[key] = format_duration(value) if value > 0 else "0s"
        name = str(route["receiver"])
        heartbeat = HeartbeatRoute(
            receiver=name,
            repeat_interval=rendered_timers["repeat_interval"],
            group_interval=rendered_timers["group_interval"],
            drill_repeat_interval=drill_timers["repeat_interval"],
            drill_group_interval=drill_timers["group_interval"],
            send_resolved=send_resolved[name].get("heartbeat", True),
        )
        changes.append(
            f"alertmanager: heartbeat route ({name}) compressed {scale:g}x: "
            + ", ".join(
                f"{key} {format_duration(rendered_timers[key]) if rendered_timers[key] else '0s'} -> {route[key]}" for key in drill_timers
            )
            + "; other routes keep their repeat_interval"
        )
    if content.get("templates"):
        raise ArtifactError(f"alertmanager.yaml references template files; the drill expects inline templates: {content['templates']}")
    return DrillAlertmanager(content, files, receivers, send_resolved, smtp_username, heartbeat, changes)


def load_manifests(kubernetes_dir: Path) -> list[dict[str, Any]]:
    """Every object of the rendered kubernetes/ folder."""
    return [doc for path in sorted(kubernetes_dir.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if isinstance(doc, dict)]


# --- the backup CronJob ------------------------------------------------------------------------


@dataclass
class CronJobSpec:
    name: str
    schedule: str
    command: list[str]
    env_names: list[str]
    env: list[dict[str, Any]]
    deadline_seconds: int | None


def find_cronjobs(manifests: list[dict[str, Any]]) -> dict[str, CronJobSpec]:
    """CronJobs of the rendered manifests whose container runs `ipa-backup`, by subcommand (backup, drill)."""
    found: dict[str, CronJobSpec] = {}
    for doc in manifests:
        if doc.get("kind") != "CronJob":
            continue
        job = doc["spec"]["jobTemplate"]["spec"]
        container = job["template"]["spec"]["containers"][0]
        # Without `command` the image's entry point runs: tini, then ipa-backup.
        command = [*(container.get("command") or [IMAGE_ENTRYPOINT]), *(container.get("args") or [])]
        if "ipa-backup" not in command[0]:
            continue
        env = list(container.get("env") or [])
        found[command[-1]] = CronJobSpec(
            name=doc["metadata"]["name"],
            schedule=doc["spec"]["schedule"],
            command=command,
            env_names=[e["name"] for e in env],
            env=env,
            deadline_seconds=job.get("activeDeadlineSeconds"),
        )
    return found


# The tool's variables (backup_image/README.md), for when no CronJob was rendered.
TOOL_ENV = [
    "PGHOST",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGDATABASE",
    "REDIS_URL",
    "BACKUP_CONTAINER",
    "BACKUP_BLOB_ACCOUNT_URL",
    "PUSHGATEWAY_URL",
]


@dataclass
class LocalEnv:
    env: dict[str, str]
    notes: list[str]


def translate_env(cron_env: list[dict[str, Any]], local: Mapping[str, str], defaults: Mapping[str, str]) -> LocalEnv:
    """The CronJob's environment with each value translated to the loopback services.

    `local` maps names to local values (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGPASSWORD_FILE, REDIS_URL,
    REDISCLI_AUTH, REDIS_PASSWORD_FILE, AZURE_STORAGE_CONNECTION_STRING, PUSHGATEWAY_URL, BACKUP_WORK_DIR, TMPDIR).
    Other literals (BACKUP_CONTAINER, PGDATABASE, ...) are kept as rendered; a secret reference
    without a local value is an error. `defaults` fills names the CronJob does not set.
    """
    env: dict[str, str] = {}
    notes: list[str] = []
    for item in cron_env:
        name = str(item["name"])
        if name == "BACKUP_BLOB_ACCOUNT_URL":
            env["AZURE_STORAGE_CONNECTION_STRING"] = local["AZURE_STORAGE_CONNECTION_STRING"]
            notes.append("BACKUP_BLOB_ACCOUNT_URL (workload identity) -> AZURE_STORAGE_CONNECTION_STRING of Azurite")
        elif name == "PGSSLMODE":
            env[name] = "disable"
            notes.append(f"PGSSLMODE {item.get('value')} -> disable (the local PostgreSQL has no TLS)")
        elif name in local:
            env[name] = local[name]
            if name.endswith("_FILE") and "value" in item:
                notes.append(f"{name} {item['value']} (a mounted Secret) -> a local file holding the local password")
        elif "value" in item:
            env[name] = str(item["value"])
        else:
            raise ArtifactError(f"the CronJob sets {name} from {item.get('valueFrom')}; the drill has no local value for it")
    for name, value in defaults.items():
        env.setdefault(name, value)
    return LocalEnv(env, notes)
