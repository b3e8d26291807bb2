"""Command line: backup, list, verify, restore, drill; wal-stream, base-backup, pitr-restore."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from ipa_backup import __version__, basebackup, config, log, metrics, pitr, pitr_drill, proc, wal
from ipa_backup.errors import BackupError, IntegrityError, Interrupted
from ipa_backup.restore import drill, restore_set
from ipa_backup.sets import fetch_verified, read_manifest, require_targets, take_backup
from ipa_backup.storage import BlobStore


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ipa-backup",
        description="Backup sets of PostgreSQL and Redis in Azure Blob Storage: backup, list, verify, restore, drill. "
        "Configured by environment (see backup_image/README.md).",
    )
    parser.add_argument("--version", action="version", version=f"ipa-backup {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("backup", help="take one backup set of PostgreSQL and Redis and upload it")
    listing = sub.add_parser("list", help="list sets, newest first, complete or not")
    listing.add_argument("--json", action="store_true", help="one JSON array instead of a table")
    verify = sub.add_parser("verify", help="check a set's checksums against its manifest")
    verify.add_argument("set", nargs="?", help="set id (default: the newest complete set holding both targets, or --only's)")
    verify.add_argument("--only", choices=config.TARGETS, help="default to the newest complete set holding this target")
    restore = sub.add_parser("restore", help="restore a set (default: the newest complete one holding what is restored)")
    restore.add_argument("set", nargs="?", help="set id (default: the newest complete set holding both targets, or --only's)")
    restore.add_argument("--force", action="store_true", help="overwrite non-empty targets")
    restore.add_argument("--pg-database", help="target database (default: PGDATABASE)")
    restore.add_argument("--redis-url", help="target Redis (default: REDIS_URL)")
    restore.add_argument("--only", choices=["postgres", "redis"], help="restore one target only")
    restore.add_argument(
        "--with-globals", action="store_true", help="PostgreSQL: first create the roles of the set that the server lacks (a new server)"
    )
    restore.add_argument(
        "--no-owner",
        action="store_true",
        help="PostgreSQL: give every object to the restoring user (a server where it may not act as the owners)",
    )
    restore.add_argument(
        "--keep-old",
        action="store_true",
        help="with --force: keep the replaced data (PostgreSQL: as <db>__ipa_old_<id>; Redis: in the "
        "staging database the log names) instead of dropping it",
    )
    sub.add_parser("drill", help="restore the newest complete set into scratch targets and check it")
    sub.add_parser("wal-stream", help="stream the WAL through a replication slot into blob storage (runs until SIGTERM)")
    sub.add_parser("base-backup", help="take a physical base backup with pg_basebackup, verify it and upload it")
    pitr_restore = sub.add_parser("pitr-restore", help="recover a data directory to a point in time from a base backup and the WAL")
    when = pitr_restore.add_mutually_exclusive_group(required=True)
    when.add_argument("--to-time", metavar="RFC3339", help="recover up to this time, e.g. 2026-05-04T13:45:10Z")
    when.add_argument("--latest", action="store_true", help="recover everything the WAL archive holds")
    pitr_restore.add_argument("--pgdata", required=True, help="the data directory to create (or, with --force, replace)")
    pitr_restore.add_argument("--force", action="store_true", help="replace a non-empty data directory, keeping the old one beside it")
    return parser


def _age(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _run(args: argparse.Namespace) -> int:
    settings = config.load()
    proc.set_command_timeout(settings.command_timeout)
    if args.command == "backup":
        info, manifest, results, postponed = take_backup(settings)
        print(
            json.dumps(
                {
                    "set_id": info.set_id,
                    "tier": info.tier,
                    "targets": list(manifest["targets"]),
                    "captured_at": manifest["captured_at"],
                    "files": manifest["files"],
                }
            )
        )
        if settings.pushgateway_url:
            metrics.push_backup(settings.pushgateway_url, results)
        if postponed is not None:  # Redis is stored and pushed; PostgreSQL's failure still fails the run
            raise postponed
        return 0
    if args.command == "wal-stream":
        wal.stream(settings)
        return 0
    if args.command == "base-backup":
        base, base_manifest = basebackup.take(settings)
        print(json.dumps({k: base_manifest[k] for k in ("backup_id", "tier", "consistent_at", "start_lsn", "end_lsn", "files")}))
        if settings.pushgateway_url:
            metrics.push_base_backup(
                settings.pushgateway_url, base_manifest["consistent_at_epoch"], base_manifest["duration_seconds"], base.size
            )
        return 0
    if args.command == "pitr-restore":
        target = None if args.latest else pitr.parse_target(args.to_time)
        print(json.dumps(pitr.restore(settings, target, Path(args.pgdata), args.force)))
        return 0
    store = BlobStore(settings)
    if args.command == "list":
        now = datetime.now(UTC)
        rows: list[dict[str, Any]] = [
            {
                "set_id": s.set_id,
                "tier": s.tier,
                "complete": s.complete,
                "targets": list(s.targets),
                "size": s.size,
                "age_seconds": round((now - s.started_at).total_seconds()),
            }
            for s in store.list_sets()
        ]
        if args.json:
            print(json.dumps(rows))
        else:
            print(f"{'SET':<24} {'TIER':<9} {'STATUS':<11} {'TARGETS':<15} {'AGE':>7} {'SIZE':>12}")
            for r in rows:
                status = "complete" if r["complete"] else "INCOMPLETE"
                held = ",".join(r["targets"]) or "-"
                print(f"{r['set_id']:<24} {r['tier']:<9} {status:<11} {held:<15} {_age(r['age_seconds']):>7} {r['size']:>12}")
        return 0
    if args.command == "verify":
        needs = (args.only,) if args.only else config.TARGETS
        info = store.find_set(args.set, needs)
        manifest = read_manifest(store, info)
        require_targets(info, manifest, needs)
        manifest, _ = fetch_verified(store, info, None, decompress=False, manifest=manifest)
        print(json.dumps({"set_id": info.set_id, "verified": True, "files": len(manifest["files"])}))
        return 0
    if args.command == "restore":
        result = restore_set(
            settings,
            args.set,
            args.force,
            args.pg_database,
            args.redis_url,
            args.only,
            no_owner=args.no_owner,
            with_globals=args.with_globals,
            keep_old=args.keep_old,
        )
        print(json.dumps(result))
        return 0
    report = drill(settings)
    pitr_seconds = pitr_drill.add_to(settings, report)
    print(json.dumps(report))
    if not report["passed"]:
        raise IntegrityError(
            f"restore drill of set {report['set_id']} failed: "
            + "; ".join(c["name"] + ": " + c["detail"] for c in report["checks"] if not c["passed"])
        )
    if settings.pushgateway_url:
        metrics.push_drill(settings.pushgateway_url, time.time(), {t: report["durations"][t] for t in ("postgres", "redis")}, pitr_seconds)
    return 0


class _StopOnSignal:
    """SIGTERM (Kubernetes at activeDeadlineSeconds, or when the pod is deleted) and SIGINT stop the run.

    The handler first ends the child processes (SIGTERM, so pg_dump and pg_restore cancel their
    queries; SIGKILL after a grace period), then raises Interrupted in the main thread: the run unwinds
    through its `finally` blocks, which remove the work dir and never write a manifest. Without a
    handler Python ignores SIGTERM when it runs as PID 1 (the image runs it under tini, which forwards
    the signal). A second signal while stopping changes nothing. A clean-up that undoes part of a
    restore runs `proc.shielded()`: a signal then waits for it to end.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: int | None = None
        self.ended: list[str] = []
        self.active = True  # raise only while the run is under way, never in the error reporting after it
        self.previous = {sig: signal.signal(sig, self.handle) for sig in self.SIGNALS}

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            return
        self.received = signum
        if not proc.defer_if_shielded(lambda: self.stop(signum)):  # a clean-up under way finishes first
            self.stop(signum)

    def stop(self, signum: int) -> None:
        self.ended = proc.end_children()
        if self.active:
            raise Interrupted(signum)

    def uninstall(self) -> None:
        for sig, previous in self.previous.items():
            signal.signal(sig, previous)


def _stopped(command: str, signum: int, ended: list[str], detail: str | None = None) -> int:
    """Log the signal that stopped the run; its exit code, 128 + the signal number."""
    ended = ended + proc.end_children()  # and anything started while the run unwound
    name = signal.Signals(signum).name
    log.error(
        f"stopped by {name}: child processes ended, work dir removed; a backup set being written stays incomplete (no manifest)",
        command=command,
        signal=name,
        exit_code=128 + signum,
        error="Interrupted",
        ended=ended or None,
        detail=detail,
    )
    return 128 + signum


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    log.setup()
    started = time.monotonic()
    stopper = _StopOnSignal()
    try:
        try:
            code = _run(args)
        finally:
            stopper.active = False
    except Interrupted as exc:
        return _stopped(args.command, exc.signum, stopper.ended)
    except BackupError as exc:
        if stopper.received is not None:  # a clean-up on the way out failed after the signal
            return _stopped(args.command, stopper.received, stopper.ended, str(exc))
        log.error(str(exc), command=args.command, exit_code=exc.exit_code, error=type(exc).__name__)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - last resort: still a clear message and a non-zero exit
        if stopper.received is not None:
            return _stopped(args.command, stopper.received, stopper.ended, str(exc))
        log.error(f"unexpected failure: {exc}", command=args.command, exit_code=1, traceback=traceback.format_exc())
        return 1
    finally:
        stopper.uninstall()
    if stopper.received is not None:
        log.warning(f"{signal.Signals(stopper.received).name} arrived after the {args.command} had finished", command=args.command)
    log.info(f"{args.command} finished", command=args.command, seconds=round(time.monotonic() - started, 2))
    return code


if __name__ == "__main__":
    sys.exit(main())
