"""`python -m drill`: the local disaster-recovery and alerting rehearsal (docs/operations/drill.md).

Order of events:
1. read the rendered dev stack (build/dev) and make the drill's copies (drill.artifacts);
2. start PostgreSQL, Redis, Azurite, the Pushgateway, the Teams/SMTP stand-ins, the stand-in
   backend and exporters; seed data, start the writer and `ipa-backup backup` on the compressed
   schedule; run `ipa-backup drill` once;
3. start Alertmanager and Prometheus (rules loaded) and check that nothing rehearsed fires;
4. recovery: disaster at a random moment, `ipa-backup restore`, verify, RPO and RTO;
5. alerting: faults on, every expected alert delivered to its channels, faults off, resolved;
6. stop everything, write build/drill/report.{json,md} and timeline.png, print the table.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import random
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import redis
import yaml

from components.settings import Settings, parse_settings
from components.topology import BACKEND_APP, BACKEND_JOB
from devservices.azurite import azurite
from devservices.image import IPA_BACKUP, image_path, image_workdir, require_image
from devservices.postgres import postgres
from devservices.process import REPO_ROOT, ServiceError, port_open
from devservices.prometheus import Alertmanager, Prometheus, alertmanager, prometheus, pushgateway
from devservices.redis import redis_server
from devservices.smtp_standin import SmtpStandin
from devservices.standin import StandinBackend
from devservices.teams_standin import TeamsStandin
from drill import artifacts, notifications, report, workload
from drill.backups import BackupSchedule, BackupTool, ToolRun
from offline.stackconfig import load_stack_config, stack_file

# The alerts the drill rehearses, with the fault it injects for each; REQUIRED_ALERTS adds the other
# names docs/monitoring/alerts.md says are relied on.
REHEARSED = {
    "HighErrorRate": "5xx burst",
    "HighResponseTime": "slow responses",
    "ClaudeAPIErrors": "Claude errors",
    "ExecutionFailureRateHigh": "failing executions",
    "BackupTooOld": "backups stop",
    "IpaBackendDown": "backend down",
}
REQUIRED_ALERTS = (*REHEARSED, "BackupJobFailed", "RestoreDrillFailed", "RestoreTooSlow", "ClaudeCostBudgetExceeded")
FAULT_VALUES: dict[str, tuple[str, float | bool]] = {
    "5xx burst": ("errors_5xx", 0.5),
    "slow responses": ("slow", 4.0),
    "Claude errors": ("claude_errors", 1.0),
    "failing executions": ("execution_failures", 0.8),
}
TOTAL_BUDGET_SECONDS = 14 * 60  # the limit is 15 minutes, with a margin for the report
DELIVERY_TIMEOUT = 150.0
RESOLVE_TIMEOUT = 120.0


def progress(started: float, message: str) -> None:
    print(f"[{time.time() - started:6.1f}s] {message}", flush=True)


@dataclass
class Stack:
    """The running services (filled as they start)."""

    pg_env: dict[str, str]
    psql: Path
    redis_url: str
    redis_password: str
    azurite_connection: str
    pushgateway: str
    teams: TeamsStandin
    smtp: SmtpStandin
    backend: StandinBackend
    ports: list[int]


class Drill:
    def __init__(self, build_dir: Path, out_dir: Path, seed: int | None) -> None:
        self.build_dir = build_dir
        self.out_dir = out_dir
        self.seed = seed if seed is not None else secrets.randbelow(1_000_000)
        self.rng = random.Random(self.seed)
        self.started = time.time()
        self.report = report.Report()
        self.timeline = report.Timeline(self.started)
        self.work = out_dir / "work"
        self.settings: Settings | None = None
        self.rules: artifacts.DrillRules | None = None
        self.am: artifacts.DrillAlertmanager | None = None
        self.tool: BackupTool | None = None
        self.schedule: BackupSchedule | None = None
        self.writers: list[workload.Writer] = []
        self.temp_dirs: list[Path] = []

    # --- helpers ---------------------------------------------------------------------------------

    def say(self, message: str) -> None:
        progress(self.started, message)

    def remaining(self) -> float:
        return TOTAL_BUDGET_SECONDS - (time.time() - self.started)

    def wait(self, cond: Callable[[], bool], timeout: float, step: float = 0.5) -> bool:
        deadline = time.monotonic() + max(0.0, min(timeout, self.remaining()))
        while time.monotonic() < deadline:
            if cond():
                return True
            time.sleep(step)
        return cond()

    # --- the whole run -----------------------------------------------------------------------------

    def run(self) -> int:
        interrupted = False
        ports: list[int] = []
        with ExitStack() as stack:
            try:
                ports = self._run(stack)
            except KeyboardInterrupt:
                interrupted = True
                self.report.check("drill ran to the end", False, "interrupted (Ctrl-C or SIGTERM)")
            except Exception as exc:  # noqa: BLE001 - every failure becomes a failed check in the report
                self.report.check("drill ran to the end", False, f"{type(exc).__name__}: {exc}")
            finally:
                self.say("stopping every process the drill started")
                for writer in self.writers:
                    writer.kill()
                if self.schedule is not None:
                    self.schedule.stop()
                for folder in self.temp_dirs:
                    shutil.rmtree(folder, ignore_errors=True)
        still_open = [p for p in ports if port_open(p)]
        self.report.check(
            "every process stopped",
            not still_open,
            f"{len(ports)} loopback ports closed" if not still_open else f"still listening: {still_open}",
        )
        self._finish()
        if interrupted:
            return 130
        return 0 if self.report.passed else 1

    def _run(self, stack: ExitStack) -> list[int]:
        self.say(f"drill seed {self.seed}; reading the rendered dev stack in {self.build_dir}")
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        self.settings = self._load_settings()
        self.report.rpo_target_seconds = self.settings.rpo_target_minutes * 60
        self.report.rto_target_seconds = self.settings.rto_target_minutes * 60
        rules_ok = self._load_rules()

        s = self._start_services(stack)
        ports = list(s.ports)
        am_ok = self._load_alertmanager(s) if rules_ok else False
        recovery_ready = self._start_backups(s)

        prom: Prometheus | None = None
        am_client: Alertmanager | None = None
        if rules_ok and am_ok:
            am_client, prom = self._start_monitoring(stack, s)
            ports += [am_client.port, prom.port]
            self._baseline(prom)
        if recovery_ready:
            self._recovery(s)
        if prom is not None and am_client is not None:
            self._alerting(s, prom, am_client)
        self._routing_checks(s)
        return ports

    # --- 1. artifacts --------------------------------------------------------------------------------

    def _load_settings(self) -> Settings:
        config, _secret_keys = load_stack_config(stack_file("dev"))
        return parse_settings(config)

    def _load_rules(self) -> bool:
        assert self.settings is not None
        path = self.build_dir / "prometheus" / "rules.yaml"
        try:
            if not path.is_file():
                raise artifacts.ArtifactError(f"{path} is missing: run `.venv/bin/python -m offline.render --stack dev`")
            self.rules = artifacts.compress_rules(yaml.safe_load(path.read_text()) or {}, self.settings.rpo_target_minutes * 60)
        except artifacts.ArtifactError as exc:
            self.report.check("rendered rules loaded", False, str(exc))
            return False
        missing = [a for a in REQUIRED_ALERTS if a not in self.rules.alerts]
        self.report.changes += self.rules.changes
        return self.report.check(
            "rendered rules loaded",
            not missing,
            f"{len(self.rules.content['groups'])} groups, {len(self.rules.alerts)} alerts"
            + (f"; required alerts missing: {', '.join(missing)}" if missing else "; every required alert present"),
        )

    def _load_alertmanager(self, s: Stack) -> bool:
        path = self.build_dir / "alertmanager" / "alertmanager.yaml"
        try:
            if not path.is_file():
                raise artifacts.ArtifactError(f"{path} is missing")
            self.am = artifacts.localize_alertmanager(
                yaml.safe_load(path.read_text()) or {},
                self.work / "secrets",
                s.teams.webhook_url("ipa-alerts"),
                s.smtp.password,
                s.smtp.smarthost,
            )
        except artifacts.ArtifactError as exc:
            self.report.check("rendered alertmanager.yaml loaded", False, str(exc))
            return False
        self.report.changes += self.am.changes
        if self.am.smtp_username:
            s.smtp.username = self.am.smtp_username
        routes = {
            sev: artifacts.route_receiver(self.am.content, {"alertname": "X", "severity": sev, "namespace": "ipa"})
            for sev in ("critical", "warning", "info")
        }
        channels = {sev: sorted(self.am.receivers.get(r, set())) for sev, r in routes.items()}
        ok = channels == {"critical": ["email", "teams"], "warning": ["teams"], "info": []}
        return self.report.check(
            "rendered alertmanager.yaml loaded",
            ok,
            "routing: "
            + "; ".join(f"{sev} -> {routes[sev]} ({'+'.join(channels[sev]) or 'nobody'})" for sev in routes)
            + ("" if ok else " (expected: critical -> Teams + e-mail, warning -> Teams, info -> nobody)"),
        )

    # --- 2. services -------------------------------------------------------------------------------

    def _start_services(self, stack: ExitStack) -> Stack:
        assert self.settings is not None
        self.say("starting PostgreSQL")
        pg = stack.enter_context(postgres())
        self.say("starting Redis (with a password, as in the cluster)")
        redis_password = secrets.token_urlsafe(16)
        rs = stack.enter_context(redis_server(password=redis_password))
        self.say("starting Azurite")
        az = stack.enter_context(azurite())
        self.say("starting the Pushgateway")
        pgw = stack.enter_context(pushgateway(self.work))
        self.say("starting the Teams and SMTP stand-ins and the stand-in backend")
        teams = stack.enter_context(TeamsStandin())
        smtp = stack.enter_context(SmtpStandin(self.settings.smtp_auth_username, secrets.token_urlsafe(16)))
        backend = stack.enter_context(
            StandinBackend(
                traffic_per_second=30,
                executions_per_second=6,
                claude_calls_per_second=1,
                seed=self.seed,
                max_runtime_seconds=TOTAL_BUDGET_SECONDS + 60,
            )
        )
        pg_env = pg.env(self.settings.postgres_database)
        self.report.check(
            "services started",
            True,
            f"PostgreSQL {pg.major} :{pg.port}, Redis :{rs.port}, Azurite :{az.port}, Pushgateway :{pgw.port}, "
            f"Teams :{teams.port}, SMTP :{smtp.port}, stand-in backend :{backend.port} (all 127.0.0.1)",
        )
        return Stack(
            pg_env,
            pg.bin_dir / "psql",
            f"redis://127.0.0.1:{rs.port}/0",
            redis_password,
            az.connection_string,
            pgw.url,
            teams,
            smtp,
            backend,
            [pg.port, rs.port, az.port, pgw.port, teams.port, smtp.port, backend.port],
        )

    def _tool_env(self, s: Stack, which: str, cron: artifacts.CronJobSpec | None) -> dict[str, str]:
        assert self.settings is not None
        # The tool runs in the image's userland: its work folder lies there too.
        host_tmp = image_workdir(f"ipa-drill-{which}-")
        self.temp_dirs.append(host_tmp)
        tmp = image_path(host_tmp)
        local = {
            "PGHOST": s.pg_env["PGHOST"],
            "PGPORT": s.pg_env["PGPORT"],
            "PGUSER": s.pg_env["PGUSER"],
            "PGPASSWORD": s.pg_env["PGPASSWORD"],
            "REDIS_URL": s.redis_url,
            "REDISCLI_AUTH": s.redis_password,
            "AZURE_STORAGE_CONNECTION_STRING": s.azurite_connection,
            "PUSHGATEWAY_URL": s.pushgateway,
            "BACKUP_WORK_DIR": tmp,
            "TMPDIR": tmp,
        }
        defaults = {"BACKUP_CONTAINER": self.settings.backup_container, "PGDATABASE": self.settings.postgres_database}
        if cron is None:
            tool_env: list[dict[str, Any]] = [{"name": n, "value": ""} for n in artifacts.TOOL_ENV]
            translated = artifacts.translate_env(tool_env, local, defaults)
            translated.env.update(defaults)
        else:
            translated = artifacts.translate_env(cron.env, local, defaults)
        for note in translated.notes:
            if note not in self.report.notes:
                self.report.notes.append(f"{which} env: {note}")
        return translated.env

    def _start_backups(self, s: Stack) -> bool:
        assert self.settings is not None
        cronjobs = artifacts.find_cronjobs(self.build_dir / "kubernetes")
        backup_cron, drill_cron = cronjobs.get("backup"), cronjobs.get("drill")
        interval = self.settings.backup_longest_gap_minutes * 60 / artifacts.TIME_SCALE
        if backup_cron is None:
            self.report.check(
                "backup CronJob rendered",
                False,
                f"no CronJob running `ipa-backup backup` in {self.build_dir / 'kubernetes'}; "
                "the drill uses the variable names of backup_image/README.md instead",
            )
        else:
            self.report.check(
                "backup CronJob rendered",
                True,
                f"{backup_cron.name}: schedule {backup_cron.schedule!r}, env {', '.join(backup_cron.env_names)}",
            )
            self.report.changes.append(
                f"backup CronJob: schedule {backup_cron.schedule!r} (longest gap {self.settings.backup_longest_gap_minutes} min) "
                f"compressed to every {interval:g}s; env values translated to the loopback services (names unchanged)"
            )
        try:
            env = self._tool_env(s, "backup", backup_cron)
            drill_env = self._tool_env(s, "drill", drill_cron) if drill_cron else dict(env)
        except artifacts.ArtifactError as exc:
            self.report.check("backup environment translated", False, str(exc))
            return False
        try:
            require_image()
        except ServiceError as exc:
            self.report.check("ipa-backup image rootfs", False, str(exc))
            return False
        deadline = backup_cron.deadline_seconds if backup_cron and backup_cron.deadline_seconds else 1200
        self.tool = BackupTool(IPA_BACKUP, env, self.work / "logs", timeout=max(60.0, deadline / artifacts.TIME_SCALE * 3))
        self.drill_tool = BackupTool(IPA_BACKUP, drill_env, self.work / "logs", timeout=300.0)

        self.say(f"seeding {workload.SEED_DOCUMENTS} documents and {workload.SEED_SESSIONS} sessions")
        pgc = workload.PgConn(s.psql, s.pg_env)
        rds = redis.Redis.from_url(s.redis_url, password=s.redis_password)
        self.pgc, self.rds = pgc, rds
        workload.seed(pgc, rds)
        writer = workload.Writer(pgc, rds, max_seconds=TOTAL_BUDGET_SECONDS).start()
        self.writers.append(writer)
        self.say(f"writer started; `ipa-backup backup` every {interval:g}s (the compressed {self.settings.backup_schedule!r})")
        self.schedule = BackupSchedule(self.tool, interval, max_seconds=TOTAL_BUDGET_SECONDS).start()
        self.interval = interval
        if not self.schedule.wait_for_backups(1, timeout=min(120.0, self.remaining())):
            last = self.tool.runs[-1] if self.tool.runs else None
            self.report.check("first backup", False, f"no successful `ipa-backup backup`: {last.output_tail if last else 'never ran'}")
            return False
        first = next(r for r in self.schedule.backups if r.ok)
        self.say(f"first backup done in {first.seconds:.1f}s (set {first.result and first.result.get('set_id')})")
        self.say("running `ipa-backup drill` once")
        drill_run = self.drill_tool.run("drill")
        durations = (drill_run.result or {}).get("durations") or {}
        restore_time = sum(float(durations.get(k, 0.0)) for k in ("download", "postgres", "redis"))
        self.report.drill_restore_seconds = restore_time if drill_run.ok else None
        self.report.check(
            "ipa-backup drill",
            drill_run.ok and bool((drill_run.result or {}).get("passed")),
            (
                f"set {drill_run.result.get('set_id')} restored into scratch targets in {restore_time:.1f}s "
                f"(download {durations.get('download', 0):.1f}s, postgres {durations.get('postgres', 0):.1f}s, "
                f"redis {durations.get('redis', 0):.1f}s); run took {drill_run.seconds:.1f}s"
                if drill_run.ok and drill_run.result
                else f"exit {drill_run.returncode}: {drill_run.output_tail}"
            ),
        )
        return True

    def _start_monitoring(self, stack: ExitStack, s: Stack) -> tuple[Alertmanager, Prometheus]:
        assert self.settings is not None and self.rules is not None and self.am is not None
        am_path = self.work / "alertmanager.yaml"
        am_path.write_text(yaml.safe_dump(self.am.content, sort_keys=False))
        rules_path = self.work / "rules.yaml"
        rules_path.write_text(yaml.safe_dump(self.rules.content, sort_keys=False))
        self.say("starting Alertmanager with the drill copy of alertmanager.yaml")
        am = stack.enter_context(alertmanager(self.work, am_path))
        scrape: list[dict[str, Any]] = [
            {
                "job_name": BACKEND_JOB,
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{s.backend.port}"],
                        "labels": {"namespace": self.settings.backend_namespace, "pod": f"{BACKEND_APP}-0", "container": BACKEND_APP},
                    }
                ],
            },
            {"job_name": "pushgateway", "honor_labels": True, "static_configs": [{"targets": [s.pushgateway.removeprefix("http://")]}]},
        ]
        scrape += self._exporters(stack)
        self.say("starting Prometheus with the drill copy of rules.yaml")
        prom = stack.enter_context(prometheus(self.work, scrape, rule_files=[rules_path], alertmanager_url=am.url))
        prom.wait_for_targets_up(count=len(scrape), timeout=60)
        bad = [
            f"{g['name']}/{r.get('name')}: {r.get('lastError')}" for g in prom.rule_groups() for r in g["rules"] if r.get("health") == "err"
        ]
        self.report.check(
            "Prometheus and Alertmanager running the drill copies",
            not bad,
            f"{len(scrape)} scrape jobs up, {sum(len(g['rules']) for g in prom.rule_groups())} rules loaded"
            + (f"; rule errors: {bad[:3]}" if bad else ""),
        )
        return am, prom

    def _exporters(self, stack: ExitStack) -> list[dict[str, Any]]:
        """The stand-in cluster exporters, so rules over kube-state-metrics etc. see a healthy cluster."""
        assert self.settings is not None
        try:
            from devservices.standin_exporters import StandinExporters
        except ImportError:
            self.report.notes.append("devservices.standin_exporters is missing: no exporter series in the drill")
            return []
        exporters = stack.enter_context(
            StandinExporters(
                namespace=self.settings.backend_namespace,
                backup_namespace=self.settings.backup_namespace,
                monitoring_namespace=self.settings.monitoring_namespace,
                database=self.settings.postgres_database,
                max_runtime_seconds=TOTAL_BUDGET_SECONDS + 60,
            )
        )
        return exporters.scrape_configs()

    def _baseline(self, prom: Prometheus) -> None:
        self.say("baseline: letting the rules evaluate before any fault")
        ok = self.wait(lambda: bool(prom.query("ipa:http_requests:rate5m")) and bool(prom.query("ipa:backup_age_seconds")), 30)
        time.sleep(8)  # longer than the longest compressed `for:` of the rehearsed alerts
        active = prom.alerts()
        firing = [a["labels"]["alertname"] for a in active if a["state"] == "firing"]
        pending = sorted({a["labels"]["alertname"] for a in active if a["state"] == "pending"})
        rehearsed = sorted({a for a in firing if a in REHEARSED})
        others = sorted(set(firing) - set(REHEARSED))
        self.report.check(
            "quiet baseline (no rehearsed alert firing before its fault)",
            ok and not rehearsed,
            ("recording rules produce data" if ok else "recording rules produced no data within 30s")
            + (f"; already firing: {', '.join(rehearsed)}" if rehearsed else "")
            + (f"; other firing alerts (not rehearsed): {', '.join(others)}" if others else "; nothing else firing")
            + (f"; pending: {', '.join(pending)}" if pending else ""),
        )

    # --- 4. recovery -------------------------------------------------------------------------------------

    def _recovery(self, s: Stack) -> None:
        assert self.schedule is not None and self.tool is not None
        self.say("recovery rehearsal: waiting for a second backup, then a disaster at a random moment")
        if not self.schedule.wait_for_backups(2, timeout=min(self.interval * 3, self.remaining())):
            self.report.check("backups on schedule", False, "no second successful backup")
            return
        delay = self.rng.uniform(0.0, self.interval)
        time.sleep(delay)
        # Not in the middle of a backup: a set whose dump predates the disaster but whose Redis
        # copy follows the FLUSHALL would be complete yet empty, which says nothing about restores.
        # Backups stop with the application (as failing CronJob runs would) until the restore is verified.
        waited = time.monotonic()
        self.schedule.pause(wait=True)
        delay += time.monotonic() - waited
        writer = self.writers[-1]
        writer.kill()
        disaster = time.time()
        workload.disaster(self.pgc, self.rds)
        self.timeline.disaster = disaster
        self.say(f"DISASTER {delay:.1f}s after the 2nd backup: database {self.pgc.env['PGDATABASE']!r} dropped, Redis flushed")
        gone = (
            self.pgc.run(f"SELECT count(*) FROM pg_database WHERE datname = '{self.pgc.env['PGDATABASE']}'", database="postgres").strip()
            == "0"
            and int(self.rds.dbsize()) == 0
        )
        self.report.check("disaster", gone, "database dropped and Redis empty" if gone else "data survived the disaster")
        self.say("running `ipa-backup restore` (newest complete set)")
        run = self.tool.run("restore")
        self.report.restore_seconds = run.seconds
        if not self.report.check(
            "ipa-backup restore",
            run.ok,
            f"set {run.result.get('set_id')} restored in {run.seconds:.1f}s"
            if run.ok and run.result
            else f"exit {run.returncode}: {run.output_tail}",
        ):
            self.schedule.resume()
            return
        self._verify_restore(run, disaster)
        before = sum(r.ok for r in self.schedule.backups)
        self.schedule.resume()
        ok = self.schedule.wait_for_backups(before + 1, timeout=min(60.0, self.remaining()))
        latest = self.schedule.backups[-1] if self.schedule.backups else None
        self.report.check(
            "backups resume after the restore",
            ok,
            f"backup of the restored data in {latest.seconds:.1f}s"
            if ok and latest
            else f"no successful backup after the restore: {latest.output_tail if latest else 'none ran'}",
        )

    def _verify_restore(self, run: ToolRun, disaster: float) -> None:
        assert self.settings is not None and self.schedule is not None
        state = workload.inspect(self.pgc, self.rds)
        captured = {}
        for backup in self.schedule.backups:
            if backup.ok and backup.result and backup.result.get("set_id") == (run.result or {}).get("set_id"):
                captured = {"set": backup.result.get("captured_at")}
        self.report.check(
            "restored PostgreSQL data",
            state.documents == workload.SEED_DOCUMENTS and state.pg_contiguous,
            f"{state.documents}/{workload.SEED_DOCUMENTS} documents; writes 1..{state.pg_max_seq} "
            f"({state.pg_writes} rows, {'no gaps' if state.pg_contiguous else 'GAPS'})",
        )
        self.report.check(
            "restored Redis data",
            state.sessions == workload.SEED_SESSIONS and state.redis_contiguous,
            f"{state.sessions}/{workload.SEED_SESSIONS} sessions; writes 1..{state.redis_max_seq} "
            f"({state.redis_writes} keys, {'no gaps' if state.redis_contiguous else 'GAPS'})",
        )
        # Every write acknowledged before the set's capture point must be back.
        acked = [t for w in self.writers for _seq, t in w.writes]
        set_id = (run.result or {}).get("set_id")
        source = next((b for b in self.schedule.backups if b.ok and b.result and b.result.get("set_id") == set_id), None)
        capture = source.started if source else None
        missing = sum(1 for t in acked if capture is not None and t < capture - 0.5) - min(state.redis_writes, state.pg_writes)
        self.report.check(
            "restored data reaches the backup's start",
            capture is not None and missing <= 0,
            f"set {set_id} ({captured.get('set') or 'capture time unknown'}); "
            + (
                "every write acknowledged before the backup started is restored"
                if missing <= 0
                else f"{missing} acknowledged writes missing"
            ),
        )
        # Verified restored service: the application can write and read again.
        seq = max(state.pg_max_seq, state.redis_max_seq)
        writer = workload.Writer(self.pgc, self.rds, max_seconds=max(10.0, self.remaining()), seq=seq).start()
        self.writers.append(writer)
        ok = self.wait(lambda: len(writer.writes) >= 1, 10, step=0.05)
        ok = ok and self.wait(
            lambda: self.pgc.run(f"SELECT count(*) FROM drill_writes WHERE seq > {seq}").strip() not in ("", "0"), 10, 0.05
        )
        verified = time.time()
        self.timeline.verified = verified
        self.report.check(
            "service restored",
            ok,
            "new writes reach PostgreSQL and Redis after the restore" if ok else f"writes after the restore fail: {writer.error}",
        )
        last_write = min(state.pg_last_write, state.redis_last_write)
        if last_write > 0:
            self.report.rpo_seconds = disaster - last_write
        self.report.rto_seconds = verified - disaster
        rpo, rto = self.report.rpo_seconds, self.report.rto_seconds
        bound = self.interval + max((b.seconds for b in self.schedule.backups if b.ok), default=0.0) + 2.0
        self.report.check(
            "RPO within target",
            rpo is not None and rpo <= self.report.rpo_target_seconds and rpo <= bound,
            f"{rpo:.1f}s (PostgreSQL {disaster - state.pg_last_write:.1f}s, Redis {disaster - state.redis_last_write:.1f}s); "
            f"target {self.report.rpo_target_seconds:.0f}s; bound of the compressed schedule {bound:.1f}s "
            f"(production bound: {self.settings.backup_longest_gap_minutes} min gap + {self.settings.backup_deadline_minutes} min deadline)"
            if rpo is not None
            else "the restored data holds no write",
        )
        self.report.check(
            "RTO within target",
            rto is not None and rto <= self.report.rto_target_seconds,
            f"{rto:.1f}s from the disaster to verified writes (restore {run.seconds:.1f}s); target {self.report.rto_target_seconds:.0f}s",
        )
        self.say(f"restored and verified: RPO {rpo if rpo is None else round(rpo, 1)}s, RTO {rto:.1f}s")

    # --- 5. alerting -------------------------------------------------------------------------------------

    def _notes(self, s: Stack) -> list[notifications.Notification]:
        known = list(self.rules.alerts) if self.rules else list(REQUIRED_ALERTS)
        return notifications.from_teams(s.teams.posts, known) + notifications.from_mail(s.smtp.messages, known)

    def _expected_channels(self, alertname: str) -> tuple[str, list[str], dict[str, bool]]:
        assert self.rules is not None and self.am is not None
        labels = {
            "alertname": alertname,
            "namespace": self.settings.backend_namespace if self.settings else "ipa",
            **{k: str(v) for k, v in (self.rules.alerts[alertname].get("labels") or {}).items()},
        }
        receiver = artifacts.route_receiver(self.am.content, labels)
        return receiver, sorted(self.am.receivers.get(receiver, set())), self.am.send_resolved.get(receiver, {})

    def _alerting(self, s: Stack, prom: Prometheus, am: Alertmanager) -> None:
        assert self.rules is not None and self.schedule is not None
        phases = [
            (
                "application faults and stopped backups",
                ["HighErrorRate", "HighResponseTime", "ClaudeAPIErrors", "ExecutionFailureRateHigh", "BackupTooOld"],
            ),
            ("backend down", ["IpaBackendDown"]),
        ]
        for title, names in phases:
            names = [n for n in names if n in self.rules.alerts]
            if not names or self.remaining() < 60:
                self.report.check(f"alerting phase: {title}", False, "skipped: " + ("no rules" if not names else "out of time"))
                continue
            self._phase(s, am, title, names)

    @contextmanager
    def _faults(self, s: Stack, names: list[str]) -> Iterator[dict[str, float]]:
        assert self.schedule is not None
        started: dict[str, float] = {}
        for name in names:
            fault = REHEARSED[name]
            now = time.time()
            if fault in FAULT_VALUES:
                s.backend.set_fault(*FAULT_VALUES[fault])
            elif fault == "backups stop":
                self.schedule.pause(wait=False)
            elif fault == "backend down":
                s.backend.set_fault("down", True)
            started[name] = now
        try:
            yield started
        finally:
            s.backend.clear_faults()
            self.schedule.resume()

    def _phase(self, s: Stack, am: Alertmanager, title: str, names: list[str]) -> None:
        assert self.am is not None and self.rules is not None
        expected = {n: self._expected_channels(n) for n in names}
        self.say(f"alerting: {title}: expecting " + ", ".join(f"{n} -> {'+'.join(expected[n][1])}" for n in names))
        receivers: dict[str, str] = {}

        def seen_receivers() -> None:
            with contextlib.suppress(Exception):
                for alert in am.alerts():
                    name = alert["labels"].get("alertname")
                    if name in expected and alert.get("receivers"):
                        receivers[name] = alert["receivers"][0]["name"]

        def delivered(name: str, status: str, after: float) -> dict[str, float]:
            hits = {}
            for channel in expected[name][1]:
                note = notifications.first(self._notes(s), name, channel, status, after)
                if note is not None:
                    hits[channel] = note.received_at
            return hits

        with self._faults(s, names) as started:
            fault_start = min(started.values())
            for name in names:
                self.timeline.faults.append((REHEARSED[name], started[name], None))

            def all_fired() -> bool:
                seen_receivers()
                return all(len(delivered(n, "firing", started[n])) == len(expected[n][1]) for n in names)

            self.wait(all_fired, DELIVERY_TIMEOUT, step=0.5)
            fired = {n: delivered(n, "firing", started[n]) for n in names}
            self.say(
                "  delivered: " + ", ".join(f"{n} {max(fired[n].values()) - started[n]:.1f}s" if fired[n] else f"{n} NOT" for n in names)
            )
        cleared = time.time()
        self.timeline.faults = [(f, a, cleared if b is None and a >= fault_start else b) for f, a, b in self.timeline.faults]

        def resolved_channels(name: str) -> list[str]:
            return [c for c in expected[name][1] if expected[name][2].get(c, False)]

        def all_resolved() -> bool:
            return all(len(delivered(n, "resolved", cleared)) >= len(resolved_channels(n)) for n in names)

        self.wait(all_resolved, RESOLVE_TIMEOUT, step=0.5)
        for name in names:
            receiver, channels, _ = expected[name]
            got = fired[name]
            complete = len(got) == len(channels) and bool(channels)
            after = max(got.values()) - started[name] if complete else None
            res = delivered(name, "resolved", cleared)
            want_res = resolved_channels(name)
            res_after = max(res.values()) - cleared if res and len(res) >= len(want_res) else None
            severity = str((self.rules.alerts[name].get("labels") or {}).get("severity", ""))
            actual = receivers.get(name, receiver)
            self.report.alerts.append(report.AlertResult(name, actual, channels, after, res_after, severity, REHEARSED[name]))
            self.report.check(
                f"alert {name} delivered",
                complete and actual == receiver,
                f"{severity} -> {actual} ({'+'.join(channels)}): "
                + (", ".join(f"{c} after {t - started[name]:.1f}s" for c, t in sorted(got.items())) or "nothing delivered")
                + (f"; missing on {', '.join(sorted(set(channels) - set(got)))}" if not complete else ""),
            )
            self.report.check(
                f"alert {name} resolved",
                res_after is not None,
                (", ".join(f"{c} after {t - cleared:.1f}s" for c, t in sorted(res.items())) or "no resolved notification")
                + f" (fault removed; expected on {'+'.join(want_res) or 'no channel'})",
            )

    def _routing_checks(self, s: Stack) -> None:
        if self.rules is None or self.am is None:
            return
        notes = self._notes(s)
        self.timeline.notifications = notes
        severity = {n: str((r.get("labels") or {}).get("severity", "")) for n, r in self.rules.alerts.items()}
        wrong = []
        for note in notes:
            for name in note.alertnames:
                _receiver, channels, _ = self._expected_channels(name)
                if note.channel not in channels:
                    wrong.append(f"{name} ({severity.get(name)}) on {note.channel}")
        self.report.check(
            "routing: every notification on its severity's channels",
            bool(notes) and not wrong,
            f"{len(notes)} notifications ({sum(n.channel == 'teams' for n in notes)} Teams, "
            f"{sum(n.channel == 'email' for n in notes)} e-mail)"
            + (f"; wrong channel: {', '.join(sorted(set(wrong)))}" if wrong else "; warnings never e-mailed"),
        )
        mails = s.smtp.messages
        logins_ok = bool(mails) and all(m.login == s.smtp.username for m in mails) and not s.smtp.failed_logins
        self.report.check(
            "e-mail authenticated with the secret file's password",
            logins_ok,
            f"{len(mails)} mails as {s.smtp.username}; failed logins {len(s.smtp.failed_logins)}",
        )
        unparsed = [n.title for n in notes if n.status == "unknown" or not n.alertnames]
        self.report.check(
            "every notification names its alert and status",
            not unparsed,
            "all notifications parsed" if not unparsed else f"unreadable: {unparsed[:3]}",
        )

    # --- 6. outputs ----------------------------------------------------------------------------------------

    def _finish(self) -> None:
        if self.tool is not None:
            runs = list(self.tool.runs) + (list(self.drill_tool.runs) if hasattr(self, "drill_tool") else [])
            self.timeline.tool_runs = sorted(runs, key=lambda r: r.started)
            ok = [r.seconds for r in runs if r.command == "backup" and r.ok]
            self.report.backup_seconds = sum(ok) / len(ok) if ok else None
            self._schedule_check(runs)
        self.timeline.writes = sorted((w for writer in self.writers for w in writer.writes), key=lambda w: w[1])
        self.report.notes.append(f"random seed {self.seed} (rerun with `python -m drill --seed {self.seed}`)")
        self.report.notes.append(
            "Alert delivery and resolution times are measured with the compressed `for:` durations and route timers "
            "listed above; in production add the real `for:` (e.g. 5m for HighErrorRate) and group_wait (10s for critical, "
            "30s otherwise) or group_interval (5m) for resolved notifications."
        )
        self.report.notes.append("Everything ran on 127.0.0.1 of this machine; nothing here was verified on Azure or AKS.")
        self.report.run_seconds = time.time() - self.started
        json_path, md_path = report.write(self.report, self.timeline, self.out_dir)
        print(report.terminal(self.report), flush=True)
        print(f"\nreport: {json_path}  {md_path}  {self.out_dir / 'timeline.png'}", flush=True)

    def _schedule_check(self, runs: list[ToolRun]) -> None:
        backups = [r for r in runs if r.command == "backup"]
        if not backups:
            return
        disaster = self.timeline.disaster
        # A backup running across the disaster may fail: the database vanished under it.
        failed = [r for r in backups if not r.ok and not (disaster and r.started <= disaster <= r.finished + 1)]
        gaps = [b.started - a.started for a, b in itertools.pairwise(backups)]
        self.report.check(
            "backups on schedule",
            not failed and sum(r.ok for r in backups) >= 2,
            f"{sum(r.ok for r in backups)} successful backups every ~{self.interval:g}s "
            f"(mean {sum(r.seconds for r in backups if r.ok) / max(1, sum(r.ok for r in backups)):.1f}s each"
            + (f", longest gap {max(gaps):.1f}s incl. pauses" if gaps else "")
            + ")"
            + (f"; failed: {failed[0].output_tail}" if failed else ""),
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drill", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build-dir", type=Path, default=REPO_ROOT / "build" / "dev", help="rendered dev stack (default build/dev)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "build" / "drill", help="report folder (default build/drill)")
    parser.add_argument("--seed", type=int, help="random seed of the disaster moment and the traffic")
    args = parser.parse_args(argv)

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return Drill(args.build_dir, args.out, args.seed).run()


if __name__ == "__main__":
    sys.exit(main())
