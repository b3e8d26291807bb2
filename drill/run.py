"""`python -m drill`: the local disaster-recovery and alerting rehearsal (docs/operations/drill.md).

Its only input is a render of the dev stack (build/dev, drill.rendered). Order of events:
1. services (drill.services): PostgreSQL, Redis, Azurite, the Pushgateway, the Teams/SMTP/heartbeat
   stand-ins and the stand-in backend; the drill copies of the rendered rules, routes and scrape config;
2. recovery (drill.recovery): seed data, the writer and `ipa-backup backup` on the compressed
   schedule; with PITR on, `ipa-backup wal-stream` and a base backup (drill.pitr); `ipa-backup drill` once;
3. Alertmanager, Prometheus and the stand-in exporters; a quiet baseline (drill.alerting);
4. the recovery scenarios: disaster at a random moment, `ipa-backup restore`, verify, RPO and RTO;
   then the lost cluster (`pitr-restore --latest`, PITR RPO and RTO) and the accidental DELETE
   (`pitr-restore --to-time`);
5. alerting: faults on, every expected alert delivered to its channels, faults off, resolved;
   routing checked with amtool; the heartbeat's cadence, then Prometheus stopped and the beats
   stopping (drill.heartbeat);
6. stop everything, write build/drill/report.{json,md} and timeline.png (drill.report), print the table.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import Any

from devservices.process import REPO_ROOT, port_open
from drill import alerting, heartbeat, pitr, recovery, rendered, report, services
from drill.artifacts import ArtifactError
from drill.context import RunContext


def _phases(ctx: RunContext, stack: ExitStack, ports: list[int]) -> recovery.Backups | None:
    s = services.start_services(ctx, stack)
    ports += s.ports
    copies = services.prepare_monitoring(ctx, s, alerting.required_alerts(ctx.rendered.settings.pitr_enabled))
    backups = recovery.start_backups(ctx, stack, s)
    extra_scrape: list[dict[str, Any]] = []
    if backups is not None and backups.ready:
        recovery.start_pitr(ctx, stack, s, backups)
        recovery.tool_drill(ctx, backups)
        if backups.pitr is not None:
            extra_scrape = pitr.scrape_configs(ctx, backups.pitr)
            ports.append(backups.pitr.stream.port)
    mon: services.Monitoring | None = None
    if copies is not None:
        mon = services.start_monitoring(ctx, stack, s, copies, extra_scrape)
        ports += mon.ports
        alerting.severity_routing(ctx, mon)
        alerting.baseline(ctx, mon)
    if backups is not None:
        recovery.run_scenarios(ctx, s, backups)
    if mon is not None and backups is not None:
        alerting.rehearse(ctx, s, mon, backups)
        if backups.pitr is not None:
            pitr.resumed_from_slot(ctx, backups.pitr)
        alerting.routing_checks(ctx, s, mon)
    if mon is not None:
        hb = heartbeat.route(ctx, mon)
        if hb is not None:
            heartbeat.on_schedule(ctx, s, hb, since=ctx.started)
            heartbeat.stops_with_prometheus(ctx, s, mon, hb)
    return backups


def run(build_dir: Path, out_dir: Path, seed: int | None) -> int:
    seed = seed if seed is not None else secrets.randbelow(1_000_000)
    try:
        render = rendered.load(build_dir)
    except ArtifactError as exc:
        print(f"drill: {exc}", file=sys.stderr)
        return 2
    ctx = RunContext(render, out_dir, seed)
    ctx.report.rpo_target_seconds = render.settings.rpo_target_minutes * 60
    ctx.report.rto_target_seconds = render.settings.rto_target_minutes * 60
    ctx.say(f"drill seed {seed}; reading the rendered dev stack in {build_dir}")
    shutil.rmtree(ctx.work, ignore_errors=True)
    ctx.work.mkdir(parents=True)
    interrupted = False
    ports: list[int] = []
    backups: recovery.Backups | None = None
    with ExitStack() as stack:
        try:
            backups = _phases(ctx, stack, ports)
        except KeyboardInterrupt:
            interrupted = True
            ctx.report.check("drill ran to the end", False, "interrupted (Ctrl-C or SIGTERM)")
        except Exception as exc:  # noqa: BLE001 - every failure becomes a failed check in the report
            ctx.report.check("drill ran to the end", False, f"{type(exc).__name__}: {exc}")
        finally:
            ctx.say("stopping every process the drill started")
    still_open = [p for p in ports if port_open(p)]
    ctx.report.check(
        "every process stopped",
        not still_open,
        f"{len(ports)} loopback ports closed" if not still_open else f"still listening: {still_open}",
    )
    _finish(ctx, backups)
    if interrupted:
        return 130
    return 0 if ctx.report.passed else 1


def _finish(ctx: RunContext, backups: recovery.Backups | None) -> None:
    if backups is not None:
        ctx.timeline.tool_runs = backups.runs
        recovery.schedule_check(ctx, backups)
        ctx.timeline.writes = sorted((w for writer in backups.writers for w in writer.writes), key=lambda w: w[1])
        if backups.pitr is not None:
            ctx.timeline.wal_stream = list(backups.pitr.stream.spans)
            ctx.timeline.writes = sorted(
                [*ctx.timeline.writes, *((c.id, c.acked) for w in backups.pitr.writers for c in w.commits)], key=lambda w: w[1]
            )
            ctx.report.notes.append(pitr.RPO_NOTE.format(production=ctx.rendered.settings.wal_partial_upload_seconds))
    ctx.report.notes.append(f"random seed {ctx.seed} (rerun with `python -m drill --seed {ctx.seed}`)")
    ctx.report.notes.append(
        "Alert delivery and resolution times are measured with the compressed `for:` durations and route timers "
        "listed above; in production add the real `for:` (e.g. 5m for HighErrorRate) and group_wait (10s for critical, "
        "30s otherwise) or group_interval (5m) for resolved notifications."
    )
    ctx.report.notes.append("Everything ran on 127.0.0.1 of this machine; nothing here was verified on Azure or AKS.")
    ctx.report.run_seconds = time.time() - ctx.started
    json_path, md_path = report.write(ctx.report, ctx.timeline, ctx.out_dir)
    print(report.terminal(ctx.report), flush=True)
    print(f"\nreport: {json_path}  {md_path}  {ctx.out_dir / 'timeline.png'}", flush=True)


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
    return run(args.build_dir, args.out, args.seed)


if __name__ == "__main__":
    sys.exit(main())
