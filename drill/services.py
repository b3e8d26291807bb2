"""The services a drill runs on loopback: the stores, the stand-ins, then Prometheus and Alertmanager
with the drill's copies of the rendered rules and routes (drill.artifacts)."""

from __future__ import annotations

import secrets
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devservices.azurite import azurite
from devservices.heartbeat_standin import HeartbeatStandin
from devservices.postgres import PostgresServer, postgres
from devservices.prometheus import Alertmanager, Prometheus, alertmanager, prometheus, pushgateway
from devservices.redis import redis_server
from devservices.smtp_standin import SmtpStandin
from devservices.standin import StandinBackend
from devservices.standin_exporters import StandinExporters
from devservices.teams_standin import TeamsStandin
from drill import artifacts, promql
from drill.context import TOTAL_BUDGET_SECONDS, RunContext

# Prometheus sends a firing alert every resend delay (at most every evaluation) with endsAt
# = send time + 4 x max(resend delay, evaluation interval); Alertmanager resolves it at endsAt when
# no newer send arrives (rules/alerting.go: "allow for two Eval or Alertmanager send failures").
RESEND_DELAY = "1s"
ALERT_VALIDITY_FACTOR = 4


@dataclass(frozen=True)
class Services:
    pg: PostgresServer  # the drill's first server (the PITR scenarios replace it with restored ones on its port)
    pg_env: dict[str, str]
    psql: Path
    redis_url: str
    redis_password: str
    azurite_connection: str
    pushgateway_url: str
    pushgateway_address: str
    teams: TeamsStandin
    smtp: SmtpStandin
    heartbeat: HeartbeatStandin
    backend: StandinBackend
    ports: list[int]


def start_services(ctx: RunContext, stack: ExitStack) -> Services:
    settings = ctx.rendered.settings
    ctx.say("starting PostgreSQL")
    pg = stack.enter_context(postgres())
    ctx.say("starting Redis (with a password, as in the cluster)")
    redis_password = secrets.token_urlsafe(16)
    rs = stack.enter_context(redis_server(password=redis_password))
    ctx.say("starting Azurite")
    az = stack.enter_context(azurite())
    ctx.say("starting the Pushgateway")
    pgw = stack.enter_context(pushgateway(ctx.work))
    ctx.say("starting the Teams, SMTP and heartbeat stand-ins and the stand-in backend")
    teams = stack.enter_context(TeamsStandin())
    smtp = stack.enter_context(SmtpStandin(settings.smtp_auth_username, secrets.token_urlsafe(16)))
    heartbeat = stack.enter_context(HeartbeatStandin())
    backend = stack.enter_context(
        StandinBackend(
            traffic_per_second=30,
            executions_per_second=6,
            claude_calls_per_second=1,
            seed=ctx.seed,
            max_runtime_seconds=TOTAL_BUDGET_SECONDS + 60,
        )
    )
    ctx.report.check(
        "services started",
        True,
        f"PostgreSQL {pg.major} :{pg.port}, Redis :{rs.port}, Azurite :{az.port}, Pushgateway :{pgw.port}, "
        f"Teams :{teams.port}, SMTP :{smtp.port}, heartbeat :{heartbeat.port}, stand-in backend :{backend.port} (all 127.0.0.1)",
    )
    return Services(
        pg=pg,
        pg_env=pg.env(settings.postgres_database),
        psql=pg.bin_dir / "psql",
        redis_url=f"redis://127.0.0.1:{rs.port}/0",
        redis_password=redis_password,
        azurite_connection=az.connection_string,
        pushgateway_url=pgw.url,
        pushgateway_address=pgw.address,
        teams=teams,
        smtp=smtp,
        heartbeat=heartbeat,
        backend=backend,
        ports=[pg.port, rs.port, az.port, pgw.port, teams.port, smtp.port, heartbeat.port, backend.port],
    )


# --- the drill's copies of the rules and the Alertmanager configuration ----------------------------------


@dataclass(frozen=True)
class MonitoringCopies:
    rules: promql.DrillRules
    am: artifacts.DrillAlertmanager
    scrape: list[dict[str, Any]]


def prepare_monitoring(ctx: RunContext, s: Services, required_alerts: tuple[str, ...]) -> MonitoringCopies | None:
    """The drill copies of the rendered rules, alertmanager.yaml and backend scrape config (None: a check failed)."""
    r = ctx.rendered
    try:
        rules_content, watchdog_changes = artifacts.with_watchdog(r.rules, r.kps_values)
        rules = promql.compress_rules(rules_content, {"BackupTooOld": r.settings.rpo_target_minutes * 60.0})
    except (artifacts.ArtifactError, promql.CompressionError) as exc:
        ctx.report.check("rendered rules loaded", False, str(exc))
        return None
    ctx.report.changes += rules.changes + watchdog_changes
    missing = [a for a in required_alerts if a not in rules.alerts]
    if not ctx.report.check(
        "rendered rules loaded",
        not missing,
        f"{len(rules.content['groups'])} groups, {len(rules.alerts)} alerts"
        + (f"; required alerts missing: {', '.join(missing)}" if missing else "; every required alert present"),
    ):
        return None
    try:
        am = artifacts.localize_alertmanager(
            r.alertmanager,
            ctx.work / "secrets",
            artifacts.LocalEndpoints(s.teams.webhook_url("ipa-alerts"), s.heartbeat.webhook_url(), s.smtp.password, s.smtp.smarthost),
        )
        monitor = artifacts.find_pod_monitor(r.manifests, str(r.topology["backend_app"]))
        scrape, scrape_changes = artifacts.scrape_config_from_pod_monitor(monitor, f"127.0.0.1:{s.backend.port}")
    except artifacts.ArtifactError as exc:
        ctx.report.check("rendered alertmanager.yaml and PodMonitor loaded", False, str(exc))
        return None
    ctx.report.changes += am.changes + scrape_changes
    if am.smtp_username:
        s.smtp.username = am.smtp_username
    return MonitoringCopies(rules, am, scrape)


@dataclass
class Monitoring:
    """Prometheus and Alertmanager running the drill copies."""

    copies: MonitoringCopies
    prometheus: Prometheus
    alertmanager: Alertmanager
    alert_expiry_seconds: float  # how long Alertmanager keeps a firing alert Prometheus no longer sends
    prometheus_stopped_at: float | None = None
    ports: list[int] = field(default_factory=list)

    def stop_prometheus(self) -> float:
        """Stop Prometheus now (its context exit later does nothing more); the moment it was gone."""
        self.prometheus.process.stop()
        self.prometheus_stopped_at = time.time()
        return self.prometheus_stopped_at


def _pushgateway_scrape(ctx: RunContext, s: Services) -> dict[str, Any]:
    """The Pushgateway job as the chart's ServiceMonitor scrapes it (honorLabels from the rendered values)."""
    values_path = ctx.rendered.build_dir / "helm" / f"{ctx.rendered.topology['pushgateway_release']}.values.yaml"
    values = yaml.safe_load(values_path.read_text()) if values_path.is_file() else {}
    honor = bool(((values or {}).get("serviceMonitor") or {}).get("honorLabels", False))
    return {
        "job_name": str(ctx.rendered.topology["pushgateway_release"]),
        "honor_labels": honor,
        "static_configs": [{"targets": [s.pushgateway_address]}],
    }


def start_monitoring(
    ctx: RunContext, stack: ExitStack, s: Services, copies: MonitoringCopies, extra_scrape: list[dict[str, Any]] | None = None
) -> Monitoring:
    settings, topology = ctx.rendered.settings, ctx.rendered.topology
    am_path = ctx.work / "alertmanager.yaml"
    am_path.write_text(yaml.safe_dump(copies.am.content, sort_keys=False))
    rules_path = ctx.work / "rules.yaml"
    rules_path.write_text(yaml.safe_dump(copies.rules.content, sort_keys=False))
    ctx.say("starting Alertmanager with the drill copy of alertmanager.yaml")
    am = stack.enter_context(alertmanager(ctx.work, am_path))
    exporters = stack.enter_context(
        StandinExporters(
            namespace=settings.backend_namespace,
            backup_namespace=settings.backup_namespace,
            monitoring_namespace=settings.monitoring_namespace,
            database=settings.postgres_database,
            backend_app=str(topology["backend_app"]),
            cronjob_names=dict(topology["cronjob_names"]),
            max_runtime_seconds=TOTAL_BUDGET_SECONDS + 60,
            wal_stream=False,  # the drill runs the real stream (drill/pitr.py), whose stop WalStreamDown must see
        )
    )
    scrape = [*copies.scrape, _pushgateway_scrape(ctx, s), *exporters.scrape_configs(), *(extra_scrape or [])]
    ctx.say("starting Prometheus with the drill copy of rules.yaml")
    prom = stack.enter_context(
        prometheus(
            ctx.work,
            scrape,
            rule_files=[rules_path],
            alertmanager_url=am.url,
            evaluation_interval=promql.DRILL_RULE_INTERVAL,
            resend_delay=RESEND_DELAY,
        )
    )
    prom.wait_for_targets_up(count=len(scrape), timeout=60)
    groups = prom.rule_groups()
    bad = [f"{g['name']}/{r.get('name')}: {r.get('lastError')}" for g in groups for r in g["rules"] if r.get("health") == "err"]
    ctx.report.check(
        "Prometheus and Alertmanager running the drill copies",
        not bad,
        f"{len(scrape)} scrape jobs up (the backend's from PodMonitor {copies.scrape[0]['job_name']}), "
        f"{sum(len(g['rules']) for g in groups)} rules loaded" + (f"; rule errors: {bad[:3]}" if bad else ""),
    )
    expiry = ALERT_VALIDITY_FACTOR * max(promql.parse_duration(RESEND_DELAY), promql.parse_duration(promql.DRILL_RULE_INTERVAL))
    return Monitoring(copies, prom, am, expiry, ports=[am.port, prom.port, exporters.port])
