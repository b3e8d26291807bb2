"""Point-in-time recovery in the drill (docs/operations/drill.md#point-in-time-recovery).

`ipa-backup wal-stream` runs as the rendered Deployment runs it (its environment, its own spool
folder) and `ipa-backup base-backup` as its CronJob does; then two scenarios of `SCENARIOS`:

- `pitr_lost_cluster`: while a writer commits, the server (killed, data directory removed) and the
  stream (killed, spool lost) are gone at once; `pitr-restore --latest` into a fresh data directory,
  the image's PostgreSQL on it, on the same port; the PITR RPO (disaster - newest committed row
  restored) and RTO (disaster -> a commit on the restored server);
- `pitr_accidental_delete`: `DELETE FROM pitr_ticks` at T while commits go on, `pitr-restore
  --to-time` a second before T; exactly the rows committed before the target are back.

The stream's clock is not compressed: it uploads the segment in progress every
`PARTIAL_UPLOAD_SECONDS` instead of walPartialUploadSeconds, and the report maps the measured RPO
to production by adding the difference.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devservices.image import IN_IMAGE, IPA_BACKUP, image_path, image_workdir
from devservices.process import ManagedProcess, free_port
from drill import artifacts, workload
from drill.backups import BackupTool, ToolRun
from drill.context import RunContext
from drill.services import Services

PARTIAL_UPLOAD_SECONDS = 1  # the drill's WAL_PARTIAL_UPLOAD_SECONDS (production: walPartialUploadSeconds)
STREAM_UP_TIMEOUT = 60.0
CATCH_UP_TIMEOUT = 30.0
PARTIAL_SLACK = 64  # bytes: what wal-stream counts as covered at the end of a partial segment
WRITES_BEFORE = (3.0, 6.0)  # seconds of commits before a disaster or an accident (random within)
WRITES_AFTER_ACCIDENT = 2.0
TARGET_BEFORE_ACCIDENT = 1.0


def find_wal_stream(manifests: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The environment of the rendered Deployment whose container runs `ipa-backup wal-stream`."""
    for doc in manifests:
        if doc.get("kind") != "Deployment":
            continue
        container = doc["spec"]["template"]["spec"]["containers"][0]
        if (container.get("args") or [None])[-1] == "wal-stream":
            return list(container.get("env") or [])
    return None


def metrics_of(port: int) -> dict[str, float]:
    """The `ipa_wal_*` samples wal-stream serves ({} when it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as answer:
            text = answer.read().decode()
    except OSError:
        return {}
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name.startswith("ipa_wal_"):
            with contextlib.suppress(ValueError):
                found[name] = float(value)
    return found


class WalStream:
    """`ipa-backup wal-stream` in the image rootfs, as the Deployment runs it; one process at a time.

    Each `start(fresh=True)` gets a new spool folder (a new volume); `start()` keeps the last one, so
    the receiver resumes from the spool and its slot."""

    def __init__(self, env: dict[str, str], port: int, log_dir: Path, temp_dirs: list[Path]) -> None:
        self.env = env
        self.port = port
        self.log_dir = log_dir
        self.temp_dirs = temp_dirs
        self.spool: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.spans: list[tuple[float, float | None]] = []  # (started, ended) of each process

    def start(self, fresh: bool = False) -> None:
        if self.spool is None or fresh:
            self.spool = image_workdir("ipa-drill-wal-spool-")
            self.temp_dirs.append(self.spool)
        env = {
            **self.env,
            "WAL_SPOOL_DIR": image_path(self.spool),
            "METRICS_PORT": str(self.port),
            "WAL_PARTIAL_UPLOAD_SECONDS": str(PARTIAL_UPLOAD_SECONDS),
        }
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"ipa-backup-wal-stream-{time.time():.3f}.log", "wb") as log:
            # Its own session: pg_receivewal is in the same process group, which kill() ends at once.
            self.process = subprocess.Popen(
                [*IPA_BACKUP, "wal-stream"],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **env},
                start_new_session=True,
            )
        self.spans.append((time.time(), None))

    def metrics(self) -> dict[str, float]:
        return metrics_of(self.port)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def up(self) -> bool:
        return self.running and self.metrics().get("ipa_wal_stream_up") == 1

    def covers(self, lsn: int) -> bool:
        """Blob storage holds the WAL up to `lsn` (wal-stream's own gauge, as for its lag)."""
        m = self.metrics()
        return m.get("ipa_wal_stream_up") == 1 and m.get("ipa_wal_stream_uploaded_lsn", 0) >= lsn - PARTIAL_SLACK

    def _ended(self) -> None:
        if self.spans and self.spans[-1][1] is None:
            self.spans[-1] = (self.spans[-1][0], time.time())
        self.process = None

    def kill(self) -> None:
        """SIGKILL to the tool and its pg_receivewal: what they had not uploaded is lost, as with a lost node."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self._ended()

    def stop(self) -> None:
        """SIGTERM, as Kubernetes stops the pod: the tool stops pg_receivewal and uploads what it wrote."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=60)
        with contextlib.suppress(ProcessLookupError):  # anything left of its group
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        self._ended()


class RestoredServer:
    """The image's PostgreSQL on a restored data directory, on the drill server's port, as the image's user."""

    def __init__(self, pgdata_host: Path, major: int, port: int, log_dir: Path, temp_dirs: list[Path]) -> None:
        self.pgdata_host = pgdata_host
        self.major = major
        self.port = port
        self.log_dir = log_dir
        self.temp_dirs = temp_dirs
        self.process: ManagedProcess | None = None

    def start(self, pg_isready: Path) -> None:
        sock = image_workdir("ipa-drill-pgsock-")
        self.temp_dirs.append(sock)
        # The settings devservices.postgres gives the drill's first server (the rest is the restored postgresql.conf).
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": image_path(sock),
            "max_connections": "100",
            "logging_collector": "off",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "dynamic_shared_memory_type": "mmap",
        }
        argv = [str(IN_IMAGE), f"/usr/lib/postgresql/{self.major}/bin/postgres", "-D", image_path(self.pgdata_host)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        self.process = ManagedProcess("postgres (restored)", argv, self.log_dir / f"postgres-restored-{time.time():.3f}.log").start()

        def ready() -> bool:
            probe = subprocess.run([str(pg_isready), "-h", "127.0.0.1", "-p", str(self.port), "-q"], timeout=5, check=False)
            return probe.returncode == 0

        self.process.wait_until(ready, 60, what="accepting connections on the restored data")

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster, which is the process itself: scripts/in-image.sh execs)."""
        if self.process is None:
            return
        if self.process.proc is not None and self.process.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.proc.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.proc.wait(timeout=60)
        self.process.stop()
        self.process = None


@dataclass
class Pitr:
    """What the PITR part started; `stop()` ends all of it."""

    tool: BackupTool  # base-backup and pitr-restore
    stream: WalStream
    pg: workload.PgConn
    pg_isready: Path
    major: int
    port: int
    log_dir: Path
    kill_original: Callable[[], None]  # the drill's first server, killed and its data directory removed
    server: RestoredServer | None = None
    writers: list[workload.CommitWriter] = field(default_factory=list)
    temp_dirs: list[Path] = field(default_factory=list)

    @property
    def runs(self) -> list[ToolRun]:
        return list(self.tool.runs)

    def stop(self) -> None:
        for writer in self.writers:
            writer.stop()
        self.tool.kill_all()
        self.stream.stop()
        if self.server is not None:
            self.server.stop()
        for folder in self.temp_dirs:
            shutil.rmtree(folder, ignore_errors=True)

    def stop_server(self) -> None:
        """The server the application uses now: the drill's first one (killed) or a restored one (fast shutdown)."""
        if self.server is None:
            self.kill_original()
        else:
            self.server.stop()
            shutil.rmtree(self.server.pgdata_host.parent, ignore_errors=True)
            self.server = None

    def new_pgdata(self) -> Path:
        """A fresh data directory's path (its parent exists and belongs to the image's user)."""
        parent = image_workdir("ipa-drill-pgdata-")
        self.temp_dirs.append(parent)
        return parent / "data"

    def flush_lsn(self) -> int:
        return int(self.pg.run("SELECT pg_current_wal_flush_lsn() - '0/0'").strip())


def _kill_server(s: Services) -> None:
    """The drill's first PostgreSQL: its whole process group killed (a lost node), its data directory removed."""
    proc = s.pg.process.proc
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    s.pg.process.stop()
    shutil.rmtree(s.pg.data_dir, ignore_errors=True)


def start(ctx: RunContext, stack: ExitStack, s: Services, tool_env: Callable[[str, list[dict[str, Any]]], dict[str, str]]) -> Pitr | None:
    """Start the WAL stream and take the first base backup (None: PITR is off in the render, or they failed).

    `tool_env(which, env_list)`: the translated environment of a rendered container. What it starts
    is stopped when `stack` closes."""
    settings = ctx.rendered.settings
    if not settings.pitr_enabled:
        ctx.report.notes.append("pitrEnabled is false in the render: no WAL stream, base backup or PITR scenario")
        return None
    stream_env = find_wal_stream(ctx.rendered.manifests)
    base_cron = artifacts.find_cronjobs(ctx.rendered.manifests).get("base-backup")
    if not ctx.report.check(
        "WAL stream Deployment and base backup CronJob rendered",
        stream_env is not None and base_cron is not None,
        f"wal-stream env {', '.join(e['name'] for e in stream_env or [])}; base backup CronJob "
        + (f"{base_cron.name} ({base_cron.schedule!r})" if base_cron else "missing"),
    ):
        return None
    assert stream_env is not None and base_cron is not None
    try:
        base_env = {**tool_env("base-backup", base_cron.env), "BASE_BACKUP_CHECKPOINT": "fast"}
        wal_env = tool_env("wal-stream", stream_env)
    except artifacts.ArtifactError as exc:
        ctx.report.check("WAL stream environment translated", False, str(exc))
        return None
    ctx.report.changes.append(
        f"WAL stream Deployment: env as rendered (translated like the CronJobs'), WAL_SPOOL_DIR a fresh folder per stream (its volume), "
        f"METRICS_PORT a free port, WAL_PARTIAL_UPLOAD_SECONDS {settings.wal_partial_upload_seconds} -> {PARTIAL_UPLOAD_SECONDS} "
        "(the stream's clock is not compressed otherwise)"
    )
    ctx.report.changes.append(
        "base backup CronJob: BASE_BACKUP_CHECKPOINT=fast (spread, the rendered default, waits for the server's next checkpoint)"
    )
    log_dir = ctx.work / "logs"
    temp_dirs: list[Path] = []
    stream = WalStream(wal_env, free_port(), log_dir, temp_dirs)
    rig = Pitr(
        BackupTool(IPA_BACKUP, base_env, log_dir, timeout=300.0),
        stream,
        workload.PgConn(s.psql, s.pg_env),
        s.psql.parent / "pg_isready",
        s.pg.major,
        s.pg.port,
        log_dir,
        lambda: _kill_server(s),
        temp_dirs=temp_dirs,
    )
    stack.callback(rig.stop)
    ctx.say(f"starting `ipa-backup wal-stream` (partial segment uploaded every {PARTIAL_UPLOAD_SECONDS}s, metrics :{stream.port})")
    stream.start(fresh=True)
    up = ctx.wait_for(lambda: stream.up() or not stream.running, STREAM_UP_TIMEOUT) and stream.running
    if not ctx.report.check(
        "WAL stream up",
        up,
        f"pg_receivewal through slot {wal_env.get('WAL_SLOT', ctx.rendered.topology['wal_slot'])}, ipa_wal_stream_up 1"
        if up
        else f"ipa_wal_stream_up not 1 within {STREAM_UP_TIMEOUT:g}s (log in {log_dir})",
    ):
        return None
    return rig if _base_backup(ctx, rig) else None


def _base_backup(ctx: RunContext, rig: Pitr) -> bool:
    ctx.say("running `ipa-backup base-backup`")
    run = rig.tool.run("base-backup")
    result = run.result or {}
    size = sum(int(f.get("size", 0)) for f in result.get("files") or [] if isinstance(f, dict))
    return ctx.report.check(
        "base backup",
        run.ok,
        f"{result.get('tier')}/{result.get('backup_id')} ({size / 1e6:.1f} MB compressed) in {run.seconds:.1f}s, "
        f"verified with pg_verifybackup; WAL {result.get('start_lsn')}..{result.get('end_lsn')}"
        if run.ok
        else f"exit {run.returncode}: {run.output_tail}",
    )


def _restore(ctx: RunContext, rig: Pitr, *args: str) -> tuple[ToolRun, Path | None]:
    """`pitr-restore ARGS --pgdata <fresh>`, then the image's server started on the result."""
    pgdata = rig.new_pgdata()
    run = rig.tool.run("pitr-restore", *args, "--pgdata", image_path(pgdata))
    if not run.ok:
        return run, None
    server = RestoredServer(pgdata, rig.major, rig.port, rig.log_dir, rig.temp_dirs)
    rig.server = server
    server.start(rig.pg_isready)
    return run, pgdata


def _restart_stream(ctx: RunContext, rig: Pitr, name: str) -> bool:
    """A new stream (a new volume) against the restored server, as after a restore in production."""
    rig.stream.start(fresh=True)
    up = ctx.wait_for(lambda: rig.stream.up() or not rig.stream.running, STREAM_UP_TIMEOUT) and rig.stream.running
    return ctx.report.check(
        name,
        up,
        "a new wal-stream with an empty spool streams the restored server's new timeline through a new slot"
        if up
        else f"ipa_wal_stream_up not 1 within {STREAM_UP_TIMEOUT:g}s after the restore",
    )


def _commits(ctx: RunContext, rig: Pitr) -> workload.CommitWriter:
    writer = workload.CommitWriter(rig.pg, max_seconds=max(30.0, ctx.remaining())).start()
    rig.writers.append(writer)
    return writer


def _fmt_time(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def production_rpo(measured: float, partial_seconds: float) -> float:
    """The lost-cluster RPO with the production partial upload interval: what the drill measured (time
    since the last partial upload + upload delay) plus the longer interval a disaster can fall into."""
    return measured + max(0.0, partial_seconds - PARTIAL_UPLOAD_SECONDS)


def lost_cluster_verdict(acked: list[workload.Commit], rows: list[tuple[int, float]]) -> tuple[float, list[int]]:
    """(newest restored commit's time, 0 if none; acknowledged commits before it that are missing)."""
    restored = {i for i, _ in rows}
    last = max((at for _i, at in rows), default=0.0)
    return last, [c.id for c in acked if c.at <= last and c.id not in restored]


def target_between_commits(commits: list[workload.Commit], wanted: float) -> float | None:
    """A recovery target at or just before `wanted`, in the gap between one commit's acknowledgement and
    the next row's `at`, so that every commit lies clearly before or after it (None: no commit on either side)."""
    earlier = [c for c in commits if c.acked <= wanted]
    later = [c for c in commits if c.at > earlier[-1].acked] if earlier else []
    if not earlier or not later:
        return None
    return (earlier[-1].acked + later[0].at) / 2


def delete_verdict(before: set[int], commits: list[workload.Commit], target: float, rows: set[int]) -> tuple[bool, str]:
    """Exactly the rows committed before `target` (those that existed before the writer, and its
    commits acknowledged before it) are restored, and none of the writer's later ones."""
    expected = before | {c.id for c in commits if c.acked <= target}
    after = {c.id for c in commits if c.at > target}
    missing, extra, unknown = expected - rows, rows & after, rows - expected - after
    if not missing and not extra and not unknown:
        return True, (
            f"{len(rows)} rows restored = {len(before)} from before the writer + {len(expected) - len(before)} committed before the "
            f"target; the {len(after)} committed after it absent"
        )
    return False, (
        f"missing {sorted(missing)[:10]} ({len(missing)}), restored though committed after the target {sorted(extra)[:10]} "
        f"({len(extra)}), unknown {sorted(unknown)[:10]}"
    )


# --- scenarios ---------------------------------------------------------------------------------------


def lost_cluster(ctx: RunContext, s: Services, rig: Pitr, pause: Callable[[], None], resume: Callable[[], None]) -> None:
    settings, report = ctx.rendered.settings, ctx.report
    ctx.say("PITR: a writer commits; then the server and the WAL stream are lost at once")
    if not ctx.wait_for(rig.stream.up, 30):
        report.check("PITR lost cluster", False, "the WAL stream is not up")
        return
    writer = _commits(ctx, rig)
    # The disaster moment is the experiment's random variable, not a wait for a condition.
    time.sleep(ctx.rng.uniform(*WRITES_BEFORE))
    pause()
    disaster = time.time()
    rig.stream.kill()
    rig.stop_server()
    ctx.timeline.pitr_disaster = disaster
    writer.stop()
    acked = [c for c in writer.commits if c.acked <= disaster]
    ctx.say(f"PITR DISASTER: server killed and its data directory removed, WAL stream killed ({len(acked)} commits acknowledged)")
    run, pgdata = _restore(ctx, rig, "--latest")
    result = run.result or {}
    report.pitr_restore_seconds = run.seconds
    if not report.check(
        "PITR restore --latest",
        run.ok and pgdata is not None,
        f"base backup {result.get('base_backup')}, {result.get('wal_objects')} WAL objects, "
        f"phases {result.get('seconds')}; the image's PostgreSQL {rig.major} serves it on :{rig.port}"
        if run.ok
        else f"exit {run.returncode}: {run.output_tail}",
    ):
        resume()
        return
    rows = workload.pitr_rows(rig.pg)
    documents = int(rig.pg.run("SELECT count(*) FROM documents").strip())
    last, holes = lost_cluster_verdict(acked, rows)  # the writer created the table: every row is one of its commits
    restored = {i for i, _ in rows}
    report.check(
        "PITR restored data",
        documents == workload.SEED_DOCUMENTS and not holes and last > 0,
        f"{documents}/{workload.SEED_DOCUMENTS} documents; {sum(c.id in restored for c in acked)}/{len(acked)} acknowledged commits, "
        + ("no commit before the newest restored one missing" if not holes else f"{len(holes)} earlier commits MISSING"),
    )
    verifier = _commits(ctx, rig)
    ok = ctx.wait_for(lambda: len(verifier.commits) >= 1, 15, step=0.05)
    verified = time.time()
    ctx.timeline.pitr_verified = verified
    report.check(
        "PITR service restored",
        ok,
        "commits reach the restored server" if ok else f"no commit on the restored server within 15s: {verifier.error}",
    )
    rpo = disaster - last if last > 0 else None
    rto = verified - disaster
    report.pitr_rpo_seconds, report.pitr_rto_seconds = rpo, rto
    prod = production_rpo(rpo, settings.wal_partial_upload_seconds) if rpo is not None else None
    goal = min(settings.pitr_rpo_bound_seconds, report.rpo_target_seconds)
    report.check(
        "PITR RPO (lost cluster) within 60 s in production terms",
        prod is not None and rpo is not None and rpo <= PARTIAL_UPLOAD_SECONDS + settings.wal_lag_budget_seconds and prod <= goal,
        f"drill {rpo:.2f}s with the partial segment uploaded every {PARTIAL_UPLOAD_SECONDS}s; production at most "
        f"{prod:.1f}s = {rpo:.2f}s + ({settings.wal_partial_upload_seconds}s - {PARTIAL_UPLOAD_SECONDS}s) "
        f"(walPartialUploadSeconds {settings.wal_partial_upload_seconds}); goal {goal:.0f}s (walPartialUploadSeconds + walLagBudgetSeconds)"
        if rpo is not None and prod is not None
        else "no commit of the writer was restored",
    )
    report.check(
        "PITR RTO within target",
        rto <= report.rto_target_seconds,
        f"{rto:.1f}s from the disaster to a commit on the restored server (pitr-restore {run.seconds:.1f}s); "
        f"target {report.rto_target_seconds:.0f}s",
    )
    ctx.say(
        f"PITR restored and verified: RPO {'-' if rpo is None else f'{rpo:.2f}'}s "
        f"(production <= {'-' if prod is None else f'{prod:.1f}'}s), RTO {rto:.1f}s"
    )
    verifier.stop()
    if _restart_stream(ctx, rig, "WAL stream restarted after the PITR restore"):
        _base_backup(ctx, rig)
    resume()


def accidental_delete(ctx: RunContext, s: Services, rig: Pitr, pause: Callable[[], None], resume: Callable[[], None]) -> None:
    report = ctx.report
    table = workload.PITR_TABLE
    if rig.server is None or not ctx.wait_for(rig.stream.up, 30):
        report.check("PITR accidental DELETE", False, "needs the restored server of the lost-cluster scenario and a running WAL stream")
        return
    before = {i for i, _ in workload.pitr_rows(rig.pg)}
    writer = _commits(ctx, rig)
    time.sleep(ctx.rng.uniform(*WRITES_BEFORE))  # the accident's moment: the experiment's random variable
    accident = time.time()
    deleted = rig.pg.run(f"WITH gone AS (DELETE FROM {table} RETURNING 1) SELECT count(*) FROM gone").strip()
    ctx.timeline.accident = accident
    ctx.say(f"PITR ACCIDENT: DELETE FROM {table} at {_fmt_time(accident)} ({deleted} rows) while commits go on")
    ctx.wait_for(lambda: bool(writer.commits) and writer.commits[-1].acked > accident + WRITES_AFTER_ACCIDENT, 10)
    target = target_between_commits(writer.commits, accident - TARGET_BEFORE_ACCIDENT)
    if target is None:
        report.check("PITR accidental DELETE", False, "the writer committed nothing around the target")
        writer.stop()
        return
    lsn = rig.flush_lsn()
    caught_up = ctx.wait_for(lambda: rig.stream.covers(lsn), CATCH_UP_TIMEOUT)
    writer.stop()
    pause()
    # The DR plan's order: the application and the stream stop, the restore Job runs, then both start again.
    rig.stream.stop()
    rig.stop_server()
    restore_started = time.time()
    run, pgdata = _restore(ctx, rig, "--to-time", _fmt_time(target))
    result = run.result or {}
    if not report.check(
        "PITR restore --to-time before the accidental DELETE",
        caught_up and run.ok and pgdata is not None,
        ("" if caught_up else f"the stream did not upload the WAL past the DELETE within {CATCH_UP_TIMEOUT:g}s; ")
        + (
            f"--to-time {_fmt_time(target)} ({accident - target:.2f}s before the DELETE): base backup {result.get('base_backup')}, "
            f"{result.get('wal_objects')} WAL objects, last transaction replayed {result.get('last_transaction_at')}, "
            f"restore {run.seconds:.1f}s"
            if run.ok
            else f"exit {run.returncode}: {run.output_tail}"
        ),
    ):
        resume()
        return
    ok, detail = delete_verdict(before, writer.commits, target, {i for i, _ in workload.pitr_rows(rig.pg)})
    report.check(
        "PITR accidental DELETE: every row committed before the target back, none after",
        ok,
        detail + (f" (the {deleted}-row DELETE and {sum(c.acked > accident for c in writer.commits)} commits after it)" if ok else ""),
    )
    report.check(
        "PITR accidental DELETE: service back",
        ctx.wait_for(lambda: bool(rig.pg.run("SELECT 1").strip()), 10),
        f"{time.time() - restore_started:.1f}s from the restore's start to the restored server answering",
    )
    _restart_stream(ctx, rig, "WAL stream restarted after the accidental-delete restore")
    resume()


RPO_NOTE = (
    "PITR RPO: the WAL stream's clock is not compressed; the drill uploads the segment in progress every "
    f"{PARTIAL_UPLOAD_SECONDS} s instead of walPartialUploadSeconds ({{production}} s). A lost cluster loses the commits since the "
    "last partial upload plus the upload's delay, so the production figure is the measured RPO plus the difference of the intervals "
    "(the worst case: the disaster just before the next upload). The PITR RTO is a database of ~50,000 rows on this machine."
)


def wal_stream_scrape(manifests: list[dict[str, Any]], name: str, target: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Prometheus' job for the stream at `target`, from the rendered PodMonitor `name` (its relabelings give the job label)."""
    monitors = [m for m in manifests if m.get("kind") == "PodMonitor" and m["metadata"]["name"] == name]
    if len(monitors) != 1:
        raise artifacts.ArtifactError(f"expected one PodMonitor {name} in kubernetes/, found {len(monitors)}")
    configs, changes = artifacts.scrape_config_from_pod_monitor(monitors[0], target)
    return configs, [c.replace("the stand-in backend", "the drill's wal-stream") for c in changes]


def scrape_configs(ctx: RunContext, rig: Pitr) -> list[dict[str, Any]]:
    try:
        name = str(ctx.rendered.topology["wal_stream"])
        configs, changes = wal_stream_scrape(ctx.rendered.manifests, name, f"127.0.0.1:{rig.stream.port}")
    except artifacts.ArtifactError as exc:
        ctx.report.check("WAL stream PodMonitor rendered", False, str(exc))
        return []
    ctx.report.changes += changes
    return configs


def resumed_from_slot(ctx: RunContext, rig: Pitr) -> None:
    """After the WalStreamDown rehearsal stopped it, the stream resumed from its spool and slot and caught up."""
    lsn = rig.flush_lsn()
    ok = ctx.wait_for(lambda: rig.stream.covers(lsn), CATCH_UP_TIMEOUT)
    m = rig.stream.metrics()
    ctx.report.check(
        "WAL stream resumes from its slot after a stop",
        ok,
        f"restarted on the same spool; storage covers the server's WAL position {lsn >> 32:X}/{lsn & 0xFFFFFFFF:X} "
        f"(lag {m.get('ipa_wal_stream_lag_bytes', 0):.0f} bytes, {m.get('ipa_wal_stream_lag_seconds', 0):.1f}s)"
        if ok
        else f"storage did not reach the server's WAL position within {CATCH_UP_TIMEOUT:g}s: {m}",
    )
