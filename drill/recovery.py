"""The recovery rehearsal: the writer and the backups on the compressed schedule, `ipa-backup drill`
once, then each recovery scenario in `SCENARIOS` (docs/operations/drill.md#the-recovery-rehearsal).

A scenario is a function `(ctx, services, backups) -> None` that reports its own checks: the
logical `full_restore`, then the point-in-time ones of drill.pitr.
"""

from __future__ import annotations

import itertools
import os
import shutil
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import redis

from devservices.image import IMAGE_UID, IPA_BACKUP, image_path, image_workdir, require_image
from devservices.process import ServiceError
from drill import artifacts, pitr, workload
from drill.backups import BackupSchedule, BackupTool, ToolRun
from drill.context import TOTAL_BUDGET_SECONDS, RunContext
from drill.pitr import Pitr
from drill.promql import TIME_SCALE
from drill.services import Services


@dataclass
class Backups:
    """What the backup part started; `stop()` ends all of it."""

    tool: BackupTool
    drill_tool: BackupTool
    schedule: BackupSchedule
    interval: float  # seconds between compressed backup runs
    pg: workload.PgConn
    rds: redis.Redis
    writers: list[workload.Writer] = field(default_factory=list)
    ready: bool = False  # a first backup succeeded: the scenarios can run
    pitr: Pitr | None = None  # the WAL stream and base backups (None: PITR off or not started)

    @property
    def runs(self) -> list[ToolRun]:
        return sorted([*self.tool.runs, *self.drill_tool.runs, *(self.pitr.runs if self.pitr else [])], key=lambda r: r.started)

    def stop(self) -> None:
        for writer in self.writers:
            writer.kill()
        self.schedule.stop()
        self.drill_tool.kill_all()


def tool_env(ctx: RunContext, s: Services, which: str, rendered_env: list[dict[str, Any]] | None, temp_dirs: list[Any]) -> dict[str, str]:
    """The environment of a rendered container running `ipa-backup` (None: the tool's variable names),
    translated to the loopback services."""
    settings = ctx.rendered.settings
    # The tool runs in the image's userland: its work folder lies there too.
    host_tmp = image_workdir(f"ipa-drill-{which}-")
    temp_dirs.append(host_tmp)
    tmp = image_path(host_tmp)
    # The CronJob mounts the passwords as Secret files: the drill writes the local ones where the image's user reads them.
    secret_dir = image_workdir(f"ipa-drill-{which}-secrets-")
    temp_dirs.append(secret_dir)
    secret_files = {}
    for name, value in (("PGPASSWORD_FILE", s.pg_env["PGPASSWORD"]), ("REDIS_PASSWORD_FILE", s.redis_password)):
        path = secret_dir / name.lower()
        path.write_text(value)
        path.chmod(0o400)
        os.chown(path, IMAGE_UID, IMAGE_UID)
        secret_files[name] = image_path(path)
    local = {
        **secret_files,
        "PGHOST": s.pg_env["PGHOST"],
        "PGPORT": s.pg_env["PGPORT"],
        "PGUSER": s.pg_env["PGUSER"],
        "PGPASSWORD": s.pg_env["PGPASSWORD"],
        "REDIS_URL": s.redis_url,
        "REDISCLI_AUTH": s.redis_password,
        "AZURE_STORAGE_CONNECTION_STRING": s.azurite_connection,
        "PUSHGATEWAY_URL": s.pushgateway_url,
        "BACKUP_WORK_DIR": tmp,
        "TMPDIR": tmp,
    }
    defaults = {"BACKUP_CONTAINER": settings.backup_container, "PGDATABASE": settings.postgres_database}
    if rendered_env is None:
        names: list[dict[str, Any]] = [{"name": n, "value": ""} for n in artifacts.TOOL_ENV]
        translated = artifacts.translate_env(names, local, defaults)
        translated.env.update(defaults)
    else:
        translated = artifacts.translate_env(rendered_env, local, defaults)
    for note in translated.notes:
        if note not in ctx.report.notes:
            ctx.report.notes.append(f"{which} env: {note}")
    return translated.env


def start_backups(ctx: RunContext, stack: ExitStack, s: Services) -> Backups | None:
    """Seed, start the writer and the compressed backup schedule, run `ipa-backup drill` once (None: cannot).

    What it starts is stopped when `stack` closes."""
    settings = ctx.rendered.settings
    cronjobs = artifacts.find_cronjobs(ctx.rendered.manifests)
    backup_cron, drill_cron = cronjobs.get("backup"), cronjobs.get("drill")
    interval = settings.backup_longest_gap_minutes * 60 / TIME_SCALE
    kubernetes = ctx.rendered.build_dir / "kubernetes"
    if backup_cron is None:
        ctx.report.check(
            "backup CronJob rendered",
            False,
            f"no CronJob running `ipa-backup backup` in {kubernetes}; the drill uses the variable names of backup_image/README.md instead",
        )
    else:
        ctx.report.check(
            "backup CronJob rendered",
            True,
            f"{backup_cron.name}: schedule {backup_cron.schedule!r}, env {', '.join(backup_cron.env_names)}",
        )
        ctx.report.changes.append(
            f"backup CronJob: schedule {backup_cron.schedule!r} (longest gap {settings.backup_longest_gap_minutes} min) "
            f"compressed to every {interval:g}s; env values translated to the loopback services (names unchanged)"
        )
    temp_dirs: list[Any] = []

    def remove_temp_dirs() -> None:
        for folder in temp_dirs:
            shutil.rmtree(folder, ignore_errors=True)

    stack.callback(remove_temp_dirs)
    try:
        env = tool_env(ctx, s, "backup", backup_cron.env if backup_cron else None, temp_dirs)
        drill_env = tool_env(ctx, s, "drill", drill_cron.env, temp_dirs) if drill_cron else dict(env)
    except artifacts.ArtifactError as exc:
        ctx.report.check("backup environment translated", False, str(exc))
        return None
    try:
        require_image()
    except ServiceError as exc:
        ctx.report.check("ipa-backup image rootfs", False, str(exc))
        return None
    deadline = backup_cron.deadline_seconds if backup_cron and backup_cron.deadline_seconds else 1200
    tool = BackupTool(IPA_BACKUP, env, ctx.work / "logs", timeout=max(60.0, deadline / TIME_SCALE * 3))
    drill_tool = BackupTool(IPA_BACKUP, drill_env, ctx.work / "logs", timeout=300.0)

    ctx.say(f"seeding {workload.SEED_DOCUMENTS} documents and {workload.SEED_SESSIONS} sessions")
    pg = workload.PgConn(s.psql, s.pg_env)
    rds = redis.Redis.from_url(s.redis_url, password=s.redis_password)
    workload.seed(pg, rds)
    writer = workload.Writer(pg, rds, max_seconds=TOTAL_BUDGET_SECONDS).start()
    ctx.say(f"writer started; `ipa-backup backup` every {interval:g}s (the compressed {settings.backup_schedule!r})")
    schedule = BackupSchedule(tool, interval, max_seconds=TOTAL_BUDGET_SECONDS).start()
    backups = Backups(tool, drill_tool, schedule, interval, pg, rds, [writer])
    stack.callback(backups.stop)
    if not schedule.wait_for_backups(1, timeout=min(120.0, ctx.remaining())):
        last = tool.runs[-1] if tool.runs else None
        ctx.report.check(
            "first backup", False, f"no successful `ipa-backup backup` within 120s: {last.output_tail if last else 'never ran'}"
        )
        return backups
    backups.ready = True
    first = next(r for r in schedule.backups if r.ok)
    ctx.say(f"first backup done in {first.seconds:.1f}s (set {first.result and first.result.get('set_id')})")
    return backups


def start_pitr(ctx: RunContext, stack: ExitStack, s: Services, b: Backups) -> None:
    """The WAL stream and a first base backup (drill.pitr), when the render has PITR on."""
    temp_dirs: list[Any] = []

    def remove_temp_dirs() -> None:
        for folder in temp_dirs:
            shutil.rmtree(folder, ignore_errors=True)

    stack.callback(remove_temp_dirs)
    b.pitr = pitr.start(ctx, stack, s, lambda which, env: tool_env(ctx, s, which, env, temp_dirs))


def tool_drill(ctx: RunContext, b: Backups) -> None:
    """`ipa-backup drill` once, as its CronJob runs it (with PITR on, after the first base backup)."""
    ctx.say("running `ipa-backup drill` once")
    drill_tool = b.drill_tool
    drill_run = drill_tool.run("drill")
    durations = (drill_run.result or {}).get("durations") or {}
    restore_time = sum(float(durations.get(k, 0.0)) for k in ("download", "postgres", "redis"))
    ctx.report.drill_restore_seconds = restore_time if drill_run.ok else None
    ctx.report.check(
        "ipa-backup drill",
        drill_run.ok and bool((drill_run.result or {}).get("passed")),
        (
            f"set {drill_run.result.get('set_id')} restored into scratch targets in {restore_time:.1f}s "
            f"(download {durations.get('download', 0):.1f}s, postgres {durations.get('postgres', 0):.1f}s, "
            f"redis {durations.get('redis', 0):.1f}s); run took {drill_run.seconds:.1f}s" + _pitr_part(drill_run.result)
            if drill_run.ok and drill_run.result
            else f"exit {drill_run.returncode}: {drill_run.output_tail}"
        ),
    )
    if b.pitr is not None and drill_run.ok:
        ctx.report.check(
            "ipa-backup drill rehearses PITR",
            bool((drill_run.result or {}).get("pitr")),
            "the drill CronJob's run restored the newest base backup and the WAL (detail above)"
            if (drill_run.result or {}).get("pitr")
            else "a base backup is in the container, yet the drill reported no point-in-time part",
        )


def _pitr_part(result: dict[str, Any]) -> str:
    """The point-in-time part of `ipa-backup drill`'s output, for the check's detail."""
    part = result.get("pitr")
    if not isinstance(part, dict):
        return ""
    counts = next((c["detail"] for c in part.get("checks", []) if c.get("name") == "pitr row counts"), "")
    return f"; PITR: pitr-restore --latest until the server answered {part.get('duration_seconds')}s, {counts}"


# --- scenarios ---------------------------------------------------------------------------------------------


def full_restore(ctx: RunContext, s: Services, b: Backups) -> None:
    """Disaster at a random moment after the second backup (database dropped, Redis flushed), then
    `ipa-backup restore` of the newest complete set, verification, RPO and RTO."""
    ctx.say("recovery rehearsal: waiting for a second backup, then a disaster at a random moment")
    if not b.schedule.wait_for_backups(2, timeout=min(b.interval * 3, ctx.remaining())):
        ctx.report.check("second backup", False, f"no second successful backup within {b.interval * 3:g}s")
        return
    delay = ctx.rng.uniform(0.0, b.interval)
    # The disaster moment is the experiment's random variable, not a wait for a condition.
    time.sleep(delay)
    # Not in the middle of a backup: a set whose dump predates the disaster but whose Redis
    # copy follows the FLUSHALL would be complete yet empty, which says nothing about restores.
    # Backups stop with the application (as failing CronJob runs would) until the restore is verified.
    waited = time.monotonic()
    b.schedule.pause(wait=True)
    delay += time.monotonic() - waited
    b.writers[-1].kill()
    disaster = time.time()
    workload.disaster(b.pg, b.rds)
    ctx.timeline.disaster = disaster
    database = b.pg.env["PGDATABASE"]
    ctx.say(f"DISASTER {delay:.1f}s after the 2nd backup: database {database!r} dropped, Redis flushed")
    gone = (
        b.pg.run(f"SELECT count(*) FROM pg_database WHERE datname = '{database}'", database="postgres").strip() == "0"
        and int(b.rds.dbsize()) == 0
    )
    ctx.report.check("disaster", gone, "database dropped and Redis empty" if gone else "data survived the disaster")
    ctx.say("running `ipa-backup restore` (newest complete set)")
    run = b.tool.run("restore")
    ctx.report.restore_seconds = run.seconds
    if not ctx.report.check(
        "ipa-backup restore",
        run.ok,
        f"set {run.result.get('set_id')} restored in {run.seconds:.1f}s"
        if run.ok and run.result
        else f"exit {run.returncode}: {run.output_tail}",
    ):
        b.schedule.resume()
        return
    _verify_restore(ctx, b, run, disaster)
    before = sum(r.ok for r in b.schedule.backups)
    b.schedule.resume()
    ok = b.schedule.wait_for_backups(before + 1, timeout=min(60.0, ctx.remaining()))
    latest = b.schedule.backups[-1] if b.schedule.backups else None
    ctx.report.check(
        "backups resume after the restore",
        ok,
        f"backup of the restored data in {latest.seconds:.1f}s"
        if ok and latest
        else f"no successful backup within 60s of the restore: {latest.output_tail if latest else 'none ran'}",
    )


def _verify_restore(ctx: RunContext, b: Backups, run: ToolRun, disaster: float) -> None:
    settings, report = ctx.rendered.settings, ctx.report
    state = workload.inspect(b.pg, b.rds)
    set_id = (run.result or {}).get("set_id")
    source = next((x for x in b.schedule.backups if x.ok and x.result and x.result.get("set_id") == set_id), None)
    report.check(
        "restored PostgreSQL data",
        state.documents == workload.SEED_DOCUMENTS and state.pg_contiguous,
        f"{state.documents}/{workload.SEED_DOCUMENTS} documents; writes 1..{state.pg_max_seq} "
        f"({state.pg_writes} rows, {'no gaps' if state.pg_contiguous else 'GAPS'})",
    )
    report.check(
        "restored Redis data",
        state.sessions == workload.SEED_SESSIONS and state.redis_contiguous,
        f"{state.sessions}/{workload.SEED_SESSIONS} sessions; writes 1..{state.redis_max_seq} "
        f"({state.redis_writes} keys, {'no gaps' if state.redis_contiguous else 'GAPS'})",
    )
    # Every write acknowledged before the set's capture point must be back.
    acked = [t for w in b.writers for _seq, t in w.writes]
    capture = source.started if source else None
    missing = sum(1 for t in acked if capture is not None and t < capture - 0.5) - min(state.redis_writes, state.pg_writes)
    captured_at = source.result.get("captured_at") if source and source.result else None
    report.check(
        "restored data reaches the backup's start",
        capture is not None and missing <= 0,
        f"set {set_id} ({captured_at or 'capture time unknown'}); "
        + ("every write acknowledged before the backup started is restored" if missing <= 0 else f"{missing} acknowledged writes missing"),
    )
    # Verified restored service: the application can write and read again.
    seq = max(state.pg_max_seq, state.redis_max_seq)
    writer = workload.Writer(b.pg, b.rds, max_seconds=max(10.0, ctx.remaining()), seq=seq).start()
    b.writers.append(writer)
    ok = ctx.wait_for(lambda: len(writer.writes) >= 1, 10, step=0.05) and ctx.wait_for(
        lambda: b.pg.run(f"SELECT count(*) FROM drill_writes WHERE seq > {seq}").strip() not in ("", "0"), 10, 0.05
    )
    verified = time.time()
    ctx.timeline.verified = verified
    report.check(
        "service restored",
        ok,
        "new writes reach PostgreSQL and Redis after the restore" if ok else f"no write after the restore within 10s: {writer.error}",
    )
    last_write = min(state.pg_last_write, state.redis_last_write)
    if last_write > 0:
        report.rpo_seconds = disaster - last_write
    report.rto_seconds = verified - disaster
    rpo, rto = report.rpo_seconds, report.rto_seconds
    bound = b.interval + max((x.seconds for x in b.schedule.backups if x.ok), default=0.0) + 2.0
    report.check(
        "RPO within target",
        rpo is not None and rpo <= report.rpo_target_seconds and rpo <= bound,
        f"{rpo:.1f}s (PostgreSQL {disaster - state.pg_last_write:.1f}s, Redis {disaster - state.redis_last_write:.1f}s); "
        f"target {report.rpo_target_seconds:.0f}s; bound of the compressed schedule {bound:.1f}s "
        f"(production bound: {settings.backup_longest_gap_minutes} min gap + {settings.backup_deadline_minutes} min deadline)"
        if rpo is not None
        else "the restored data holds no write",
    )
    report.check(
        "RTO within target",
        rto is not None and rto <= report.rto_target_seconds,
        f"{rto:.1f}s from the disaster to verified writes (restore {run.seconds:.1f}s); target {report.rto_target_seconds:.0f}s",
    )
    ctx.say(f"restored and verified: RPO {rpo if rpo is None else round(rpo, 1)}s, RTO {rto:.1f}s")


PitrScenario = Callable[[RunContext, Services, Pitr, Callable[[], None], Callable[[], None]], None]


def _pitr_scenario(ctx: RunContext, s: Services, b: Backups, scenario: PitrScenario, name: str) -> None:
    if b.pitr is None:
        if ctx.rendered.settings.pitr_enabled:
            ctx.report.check(name, False, "skipped: the WAL stream or the first base backup failed")
        return
    # Backups stop with the application, as in full_restore, until the restore is verified.
    scenario(ctx, s, b.pitr, lambda: b.schedule.pause(wait=True), b.schedule.resume)


def pitr_lost_cluster(ctx: RunContext, s: Services, b: Backups) -> None:
    """Server and WAL stream lost while commits go on; `pitr-restore --latest`; PITR RPO and RTO."""
    _pitr_scenario(ctx, s, b, pitr.lost_cluster, "PITR lost cluster")


def pitr_accidental_delete(ctx: RunContext, s: Services, b: Backups) -> None:
    """`DELETE FROM pitr_ticks` at T while commits go on; `pitr-restore --to-time` a second before T."""
    _pitr_scenario(ctx, s, b, pitr.accidental_delete, "PITR accidental DELETE")


Scenario = Callable[[RunContext, Services, Backups], None]
# The recovery scenarios, in the order they run; each reports its own checks.
SCENARIOS: list[Scenario] = [full_restore, pitr_lost_cluster, pitr_accidental_delete]


def run_scenarios(ctx: RunContext, s: Services, b: Backups) -> None:
    if not b.ready:
        return
    for scenario in SCENARIOS:
        if ctx.remaining() < 120:
            ctx.report.check(f"recovery scenario {scenario.__name__}", False, "skipped: out of time")
            continue
        scenario(ctx, s, b)


def schedule_check(ctx: RunContext, b: Backups) -> None:
    """Backups ran on the compressed schedule and (but for one crossing the disaster) succeeded."""
    backups = [r for r in b.tool.runs if r.command == "backup"]
    ok = [r.seconds for r in backups if r.ok]
    ctx.report.backup_seconds = sum(ok) / len(ok) if ok else None
    if not backups:
        return
    disaster = ctx.timeline.disaster
    # A backup running across the disaster may fail: the database vanished under it.
    failed = [r for r in backups if not r.ok and not (disaster and r.started <= disaster <= r.finished + 1)]
    gaps = [y.started - x.started for x, y in itertools.pairwise(backups)]
    ctx.report.check(
        "backups on schedule",
        not failed and len(ok) >= 2,
        f"{len(ok)} successful backups every ~{b.interval:g}s (mean {sum(ok) / max(1, len(ok)):.1f}s each"
        + (f", longest gap {max(gaps):.1f}s incl. pauses" if gaps else "")
        + ")"
        + (f"; failed: {failed[0].output_tail}" if failed else ""),
    )
