"""The drill's copies of the rendered dev stack artifacts (pure functions, tested without services).

The drill runs the exact rules, routes and templates `pulumi up` would deploy, with these
local changes only, each listed in the report:

- rules: time compressed by `TIME_SCALE` (one drill second stands for one production minute):
  every `for:`/`keep_firing_for:`, every range window, subquery step and offset is divided by it
  (range windows never below `MIN_RANGE_SECONDS`, so `rate()` still sees several scrapes), every
  group evaluates every second, and BackupTooOld's RPO threshold is divided by it;
- alertmanager.yaml: every secret `*_file` path points at a local file (Teams stand-in URL,
  SMTP password), e-mail goes to the local SMTP stand-in without STARTTLS, and `group_wait` /
  `group_interval` are shortened; receivers, matchers, grouping and templates stay as rendered;
- backup CronJob env: the same variable names, values translated to the loopback services.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TIME_SCALE = 60.0
IMAGE_ENTRYPOINT = "ipa-backup"  # what the backup image runs (behind tini) when a container sets no `command`
MIN_RANGE_SECONDS = 5.0
MIN_FOR_SECONDS = 1.0
DRILL_GROUP_WAIT = "1s"
DRILL_GROUP_INTERVAL = "5s"
DRILL_RULE_INTERVAL = "1s"

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 31536000.0}
_DURATION = re.compile(r"^(?:\d+(?:ms|s|m|h|d|w|y))+$")
_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
# PromQL string literals: never rewritten (a regex like "[0-9]" is not a range).
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_RANGE = re.compile(r"\[\s*([0-9a-z]+)\s*(?::\s*([0-9a-z]*)\s*)?\]")
_OFFSET = re.compile(r"\boffset\s+(-?)([0-9a-z]+)")


class ArtifactError(RuntimeError):
    """A rendered artifact is missing or has a shape the drill cannot run."""


def parse_duration(text: str) -> float:
    """Seconds of a Prometheus duration such as `5m`, `1h30m`, `250ms`."""
    text = text.strip()
    if not _DURATION.match(text):
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * _UNITS[u] for n, u in _PART.findall(text))


def format_duration(seconds: float) -> str:
    """The shortest exact Prometheus duration (whole milliseconds)."""
    ms = max(1, round(seconds * 1000))
    if ms % 1000:
        return f"{ms}ms"
    s = ms // 1000
    for unit, size in (("h", 3600), ("m", 60)):
        if s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"


def _scaled(text: str, scale: float, floor: float) -> str:
    return format_duration(max(floor, parse_duration(text) / scale))


def _outside_strings(expr: str, fn: Callable[[str], str]) -> str:
    """`expr` with `fn` applied to every part that is not a quoted string (label values stay as they are)."""
    out, last = [], 0
    for match in _STRINGS.finditer(expr):
        out.append(fn(expr[last : match.start()]))
        out.append(match.group(0))
        last = match.end()
    out.append(fn(expr[last:]))
    return "".join(out)


def compress_expr(expr: str, scale: float = TIME_SCALE, min_range: float = MIN_RANGE_SECONDS) -> str:
    """`expr` with range windows, subquery steps and offsets divided by `scale`."""

    def ranges(code: str) -> str:
        def one(m: re.Match[str]) -> str:
            window, step = m.group(1), m.group(2)
            if not _DURATION.match(window) or (step and not _DURATION.match(step)):
                return m.group(0)
            new = _scaled(window, scale, min_range)
            if step is None:
                return f"[{new}]"
            return f"[{new}:{_scaled(step, scale, 1.0) if step else ''}]"

        code = _RANGE.sub(one, code)
        return _OFFSET.sub(
            lambda m: f"offset {m.group(1)}{_scaled(m.group(2), scale, 1.0)}" if _DURATION.match(m.group(2)) else m.group(0), code
        )

    return _outside_strings(expr, ranges)


def replace_number(expr: str, old: float, new: float) -> tuple[str, int]:
    """Replace a numeric literal equal to `old` (outside strings); returns (expr, count)."""
    count = 0

    def fix(code: str) -> str:
        nonlocal count

        def one(m: re.Match[str]) -> str:
            nonlocal count
            if float(m.group(0)) == old:
                count += 1
                return f"{new:g}"
            return m.group(0)

        return re.sub(r"(?<![\w.\[])\d+(?:\.\d+)?(?:e[+-]?\d+)?(?![\w.])", one, code)

    result = _outside_strings(expr, fix)
    return result, count


@dataclass
class DrillRules:
    content: dict[str, Any]
    alerts: dict[str, dict[str, Any]]  # alertname -> the (compressed) rule
    changes: list[str] = field(default_factory=list)


def compress_rules(rules: Mapping[str, Any], rpo_seconds: float, scale: float = TIME_SCALE) -> DrillRules:
    """The drill copy of a rendered rule file (see the module docstring)."""
    content = copy.deepcopy(dict(rules))
    groups = content.get("groups") or []
    if not groups:
        raise ArtifactError("prometheus/rules.yaml has no rule groups")
    alerts: dict[str, dict[str, Any]] = {}
    fors, windows = 0, 0
    rpo_replaced = 0
    for group in groups:
        group["interval"] = DRILL_RULE_INTERVAL
        for rule in group.get("rules") or []:
            new_expr = compress_expr(str(rule["expr"]), scale)
            windows += new_expr != rule["expr"]
            rule["expr"] = new_expr
            for key in ("for", "keep_firing_for"):
                if key in rule:
                    rule[key] = _scaled(str(rule[key]), scale, MIN_FOR_SECONDS)
                    fors += 1
            if rule.get("alert") == "BackupTooOld":
                rule["expr"], rpo_replaced = replace_number(rule["expr"], rpo_seconds, rpo_seconds / scale)
            if "alert" in rule:
                alerts[str(rule["alert"])] = rule
    changes = [
        f"rules: time compressed {scale:g}x (one drill second = {scale:g} production seconds): "
        f"{fors} `for:` durations and the range windows of {windows} expressions divided by {scale:g} "
        f"(windows at least {MIN_RANGE_SECONDS:g}s); every group evaluated every {DRILL_RULE_INTERVAL}",
    ]
    if "BackupTooOld" in alerts:
        if rpo_replaced == 0:
            raise ArtifactError(f"BackupTooOld does not compare with the RPO ({rpo_seconds:g}s): {alerts['BackupTooOld']['expr']}")
        changes.append(f"rules: BackupTooOld threshold {rpo_seconds:g}s (RPO) -> {rpo_seconds / scale:g}s, the compressed RPO")
    return DrillRules(content, alerts, changes)


# --- Alertmanager ------------------------------------------------------------------------------

SECRET_KINDS = {
    "webhook_url_file": "teams",
    "auth_password_file": "smtp_password",
    "smtp_auth_password_file": "smtp_password",
}


@dataclass
class DrillAlertmanager:
    content: dict[str, Any]
    secret_files: dict[str, Path]  # rendered path -> local file
    receivers: dict[str, set[str]]  # receiver -> channels ("teams", "email")
    send_resolved: dict[str, dict[str, bool]]  # receiver -> channel -> send_resolved
    smtp_username: str | None
    changes: list[str] = field(default_factory=list)


def localize_alertmanager(
    config: Mapping[str, Any], secrets_dir: Path, teams_url: str, smtp_password: str, smarthost: str
) -> DrillAlertmanager:
    """The drill copy of a rendered alertmanager.yaml; writes the secret files into `secrets_dir`."""
    content = copy.deepcopy(dict(config))
    secrets_dir.mkdir(parents=True, exist_ok=True)
    values = {"teams": teams_url, "smtp_password": smtp_password}
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
        channels: set[str] = set()
        resolved: dict[str, bool] = {}
        for cfg in receiver.get("msteamsv2_configs") or []:
            channels.add("teams")
            resolved["teams"] = bool(cfg.get("send_resolved", True))
        for cfg in receiver.get("email_configs") or []:
            channels.add("email")
            resolved["email"] = bool(cfg.get("send_resolved", False))
            cfg["smarthost"] = smarthost
            cfg["require_tls"] = False
            smtp_username = cfg.get("auth_username", glob.get("smtp_auth_username"))
        unsupported = {k for k in receiver if k.endswith("_configs")} - {"msteamsv2_configs", "email_configs"}
        if unsupported:
            raise ArtifactError(f"receiver {name} uses {sorted(unsupported)}; the drill has stand-ins for Teams and e-mail only")
        receivers[name] = channels
        send_resolved[name] = resolved
    if "smtp_smarthost" in glob:
        glob["smtp_smarthost"] = smarthost
    if "smtp_require_tls" in glob or any("email" in c for c in receivers.values()):
        glob["smtp_require_tls"] = False
    if files:
        changes.append(
            "alertmanager: secret files " + ", ".join(sorted(files)) + " replaced by local files "
            "(Teams stand-in URL, generated SMTP password)"
        )
    if any("email" in c for c in receivers.values()):
        changes.append(f"alertmanager: e-mail smarthost -> local SMTP stand-in {smarthost}, require_tls false (no STARTTLS on loopback)")

    def shorten(route: dict[str, Any]) -> None:
        for key, value in (("group_wait", DRILL_GROUP_WAIT), ("group_interval", DRILL_GROUP_INTERVAL)):
            if key in route or route is content.get("route"):
                route[key] = value
        for child in route.get("routes") or []:
            shorten(child)

    shorten(content.setdefault("route", {}))
    changes.append(
        f"alertmanager: group_wait -> {DRILL_GROUP_WAIT}, group_interval -> {DRILL_GROUP_INTERVAL} on every route "
        "(receivers, matchers, group_by, repeat_interval, inhibit rules and templates unchanged)"
    )
    if content.get("templates"):
        raise ArtifactError(f"alertmanager.yaml references template files; the drill expects inline templates: {content['templates']}")
    return DrillAlertmanager(content, files, receivers, send_resolved, smtp_username, changes)


def route_receiver(config: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    """The receiver Alertmanager's routing tree picks for `labels` (first matching child, no `continue`)."""
    route = config["route"]
    receiver = str(route["receiver"])
    while True:
        for child in route.get("routes") or []:
            if all(_matches(m, labels) for m in child.get("matchers") or []) and all(
                labels.get(k) == v for k, v in (child.get("match") or {}).items()
            ):
                route = child
                receiver = str(child.get("receiver", receiver))
                break
        else:
            return receiver


_MATCHER = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"?(.*?)"?\s*$')


def _matches(matcher: str, labels: Mapping[str, str]) -> bool:
    m = _MATCHER.match(matcher)
    if not m:
        raise ArtifactError(f"cannot read matcher {matcher!r}")
    name, op, value = m.groups()
    have = labels.get(name, "")
    if op == "=":
        return have == value
    if op == "!=":
        return have != value
    hit = re.fullmatch(value, have) is not None
    return hit if op == "=~" else not hit


# --- the backup CronJob ------------------------------------------------------------------------


@dataclass
class CronJobSpec:
    name: str
    schedule: str
    command: list[str]
    env_names: list[str]
    env: list[dict[str, Any]]
    deadline_seconds: int | None


def find_cronjobs(kubernetes_dir: Path) -> dict[str, CronJobSpec]:
    """CronJobs of the rendered manifests whose container runs `ipa-backup`, by subcommand (backup, drill)."""
    found: dict[str, CronJobSpec] = {}
    for path in sorted(kubernetes_dir.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict) or doc.get("kind") != "CronJob":
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

    `local` maps names to local values (PGHOST, PGPORT, PGUSER, PGPASSWORD, REDIS_URL,
    REDISCLI_AUTH, AZURE_STORAGE_CONNECTION_STRING, PUSHGATEWAY_URL, BACKUP_WORK_DIR, TMPDIR).
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
        elif "value" in item:
            env[name] = str(item["value"])
        else:
            raise ArtifactError(f"the CronJob sets {name} from {item.get('valueFrom')}; the drill has no local value for it")
    for name, value in defaults.items():
        env.setdefault(name, value)
    return LocalEnv(env, notes)
