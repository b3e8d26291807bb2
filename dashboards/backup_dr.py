"""Backups and DR: is the newest backup within the RPO, do backup jobs succeed, and does the last
restore drill prove the RTO?"""

from __future__ import annotations

from typing import Any

from components.rules.groups import SLOT_RETENTION_NEAR_LIMIT
from components.settings import Settings
from components.topology import BACKUP_DASHBOARD, BACKUP_JOB, WAL_SLOT, WAL_STREAM_JOB, WAL_STREAM_PVC
from dashboards.common import (
    Board,
    Query,
    alert_annotation,
    bars,
    datasource_variable,
    floor_steps,
    graph,
    limit_steps,
    query_variable,
    single,
)

UID = BACKUP_DASHBOARD
ALERTS = ("BackupTooOld", "BackupJobFailed", "RestoreDrillFailed", "RestoreTooSlow")
PITR_ALERTS = ("WalStreamDown", "WalArchiveLagHigh", "BaseBackupTooOld", "WalSlotRetentionNearLimit")
PUSHED = f'job="{BACKUP_JOB}", target=~"$target"'
STREAM = f'job="{WAL_STREAM_JOB}"'
BASE = f'job="{BACKUP_JOB}"'


def build(settings: Settings) -> dict[str, Any]:
    rpo = settings.rpo_target_minutes * 60
    # BackupTooOld's limits per target: the RPO, and with PITR a day plus for PostgreSQL's daily dumps.
    by_limit: dict[int, list[str]] = {}
    for target, minutes in settings.backup_max_age_minutes.items():
        by_limit.setdefault(minutes, []).append(target)
    limits = sorted(by_limit)
    rto = settings.rto_target_minutes * 60
    drill_period = settings.restore_drill_period_days * 86400
    jobs = f'namespace="{settings.backup_namespace}"'
    board = Board(
        settings,
        UID,
        f"Backups of PostgreSQL and Redis against the RPO ({settings.rpo_target_minutes} min) and restore drills against the RTO "
        f"({settings.rto_target_minutes} min). Backup metrics are pushed to the Pushgateway by the backup jobs (job {BACKUP_JOB}).",
        [
            datasource_variable(),
            query_variable(
                "target",
                "Target",
                f'label_values(ipa_backup_size_bytes{{job="{BACKUP_JOB}"}}, target)',
                "What was backed up (postgres, redis).",
                multi=True,
            ),
        ],
        [alert_annotation("Backup and DR alerts", ALERTS + (PITR_ALERTS if settings.pitr_enabled else ()))],
    )

    board.row("Recovery point")
    for minutes in limits:  # one bar panel per limit: a bar gauge colours every bar by the same steps
        held = by_limit[minutes]
        board.add(
            bars(
                settings,
                "Newest backup age" + ("" if len(limits) == 1 else f": {', '.join(held)}"),
                f"How old the data of the newest successful backup of {' and '.join(held)} is; BackupTooOld fires above {minutes} min.",
                "s",
                Query(
                    f'max by (target) (ipa:backup_age_seconds{{target=~"$target", target=~"{"|".join(held)}"}})', "{{target}}", instant=True
                ),
                limit_steps(0.75 * minutes * 60, minutes * 60),
                ["BackupTooOld"],
                max_value=minutes * 60 * 1.5,
            ),
            8 // len(limits),
        )
    board.add(
        graph(
            settings,
            "Backup age vs RPO",
            "Age of the newest backup over time; the dashed lines are BackupTooOld's limits: "
            + "; ".join(f"{', '.join(by_limit[m])} {m} min" for m in limits)
            + ".",
            "s",
            [Query('max by (target) (ipa:backup_age_seconds{target=~"$target"})', "{{target}}")],
            limit_steps(limits[0] * 60 if len(limits) > 1 else None, limits[-1] * 60),
            ["BackupTooOld"],
        ),
        10,
    )
    board.add(
        single(
            settings,
            "Last successful backup",
            "When the newest successful backup of each target was taken.",
            "dateTimeFromNow",
            Query(f"max by (target) (ipa_backup_last_success_timestamp_seconds{{{PUSHED}}}) * 1000", "{{target}}", instant=True),
        ),
        6,
    )

    board.row("Backup runs")
    board.add(
        graph(
            settings,
            "Backup duration",
            f"How long the last backup of each target took; a Job is stopped after {settings.backup_deadline_minutes} min (dashed line).",
            "s",
            [Query(f"max by (target) (ipa_backup_duration_seconds{{{PUSHED}}})", "{{target}}")],
            limit_steps(None, settings.backup_deadline_minutes * 60),
        )
    )
    board.add(
        graph(
            settings,
            "Backup size",
            "Size of the last backup of each target; a sudden drop hints at a partial dump.",
            "bytes",
            [Query(f"max by (target) (ipa_backup_size_bytes{{{PUSHED}}})", "{{target}}")],
        )
    )
    board.add(
        single(
            settings,
            "Succeeded jobs",
            f"Backup and drill Jobs in namespace {settings.backup_namespace} that succeeded (kept by the CronJob history).",
            "short",
            Query(f"sum(kube_job_status_succeeded{{{jobs}}})"),
        ),
        6,
        4,
    )
    board.add(
        single(
            settings,
            "Failed jobs",
            f"Backup and drill Jobs in namespace {settings.backup_namespace} that failed; BackupJobFailed fires on any.",
            "short",
            Query(f'sum(kube_job_failed{{{jobs}, condition="true"}})'),
            limit_steps(None, 1),
            ["BackupJobFailed"],
        ),
        6,
        4,
    )
    board.add(
        single(
            settings,
            "Since last successful CronJob run",
            "Time since each CronJob last completed a Job successfully.",
            "s",
            Query(f"time() - max by (cronjob) (kube_cronjob_status_last_successful_time{{{jobs}}})", "{{cronjob}}"),
            limit_steps(0.75 * rpo, rpo),
        ),
        12,
        4,
    )
    board.add(
        bars(
            settings,
            "Failed pods by job",
            "Failed pods of each backup or drill Job; a Job fails after its retries are spent.",
            "short",
            Query(f"sum by (job_name) (kube_job_status_failed{{{jobs}}})", "{{job_name}}", instant=True),
            limit_steps(None, 1),
            ["BackupJobFailed"],
        ),
        24,
        6,
    )

    board.row("Restore drill")
    board.add(
        single(
            settings,
            "Last successful drill",
            "Time since the last restore drill succeeded; RestoreDrillFailed fires after "
            f"{settings.restore_drill_period_days} days plus one.",
            "s",
            Query(f'time() - max(ipa_restore_drill_last_success_timestamp_seconds{{job="{BACKUP_JOB}"}})'),
            limit_steps(drill_period, drill_period + 86400),
            ["RestoreDrillFailed"],
        ),
        8,
    )
    board.add(
        bars(
            settings,
            "Restore time vs RTO",
            "How long the last drill took to restore each target; RestoreTooSlow fires above half the RTO "
            f"({settings.rto_target_minutes / 2:g} min), red at the RTO.",
            "s",
            Query(f"max by (target) (ipa_restore_drill_duration_seconds{{{PUSHED}}})", "{{target}}", instant=True),
            limit_steps(rto / 2, rto),
            ["RestoreTooSlow"],
            max_value=rto,
        ),
        8,
    )
    board.add(
        single(
            settings,
            "RTO used by the last drill",
            "The longest restore of the last drill as a share of the RTO; the drill keeps half of the RTO as margin.",
            "percentunit",
            Query(f"max(ipa_restore_drill_duration_seconds{{{PUSHED}}}) / {rto}"),
            limit_steps(0.5, 1.0),
            ["RestoreTooSlow"],
        ),
        8,
    )
    board.add(
        graph(
            settings,
            "Restore time history",
            "Restore time of each drill, the logical restore per target and, with PITR, the recovery of the newest base "
            f"backup and its WAL; dashed lines at half the RTO and at the RTO ({settings.rto_target_minutes} min).",
            "s",
            [
                Query(f"max by (target) (ipa_restore_drill_duration_seconds{{{PUSHED}}})", "{{target}}"),
                Query(f"max(ipa_restore_drill_pitr_duration_seconds{{{PUSHED}}})", "postgres (PITR)"),
            ],
            limit_steps(rto / 2, rto),
            ["RestoreTooSlow"],
        ),
        24,
    )
    if settings.pitr_enabled:
        pitr_row(board, settings)
    return board.build()


def pitr_row(board: Board, settings: Settings) -> None:
    """The WAL stream (the RPO with PITR), the base backups, and the server's slot retention."""
    budget = settings.wal_lag_budget_seconds
    base_limit = settings.base_backup_max_age_minutes * 60
    slot_limit = settings.max_slot_wal_keep_size_gb * 2**30
    board.row("Point-in-time recovery")
    board.add(
        single(
            settings,
            "WAL stream",
            "1 while pg_receivewal streams through the replication slot and its uploads succeed; WalStreamDown fires after 2 min at 0 "
            "or without metrics.",
            "short",
            Query(f"max(ipa_wal_stream_up{{{STREAM}}})", instant=True),
            floor_steps(1),
            ["WalStreamDown"],
        ),
        4,
    )
    board.add(
        graph(
            settings,
            "WAL archive lag",
            f"Age of the oldest WAL the server flushed that is not yet in blob storage: what losing the cluster now would lose. "
            f"WalArchiveLagHigh fires above {budget} s (dashed); with the {settings.wal_partial_upload_seconds} s partial upload "
            f"interval the RPO stays within {settings.pitr_rpo_bound_seconds} s.",
            "s",
            [Query(f"max(ipa_wal_stream_lag_seconds{{{STREAM}}})", "lag")],
            limit_steps(None, budget),
            ["WalArchiveLagHigh"],
        ),
        10,
    )
    board.add(
        graph(
            settings,
            "WAL not yet archived and archive throughput",
            "Bytes between the server's WAL position and what blob storage holds, and the rate at which the archive advances.",
            "bytes",
            [
                Query(f"max(ipa_wal_stream_lag_bytes{{{STREAM}}})", "not archived (bytes)"),
                Query(f"max(rate(ipa_wal_stream_uploaded_lsn{{{STREAM}}}[$__rate_interval]))", "archived per second"),
            ],
        ),
        10,
    )
    board.add(
        single(
            settings,
            "Last WAL upload",
            "When the stream last uploaded a segment or the segment in progress; a quiet database uploads nothing new.",
            "dateTimeFromNow",
            Query(f"max(ipa_wal_last_upload_timestamp_seconds{{{STREAM}}}) * 1000", instant=True),
        ),
        6,
    )
    board.add(
        single(
            settings,
            "Newest base backup age",
            f"Since the point the newest verified base backup is consistent at; BaseBackupTooOld fires above "
            f"{settings.base_backup_max_age_minutes} min (schedule gap plus deadline).",
            "s",
            Query(f"time() - max(ipa_base_backup_last_success_timestamp_seconds{{{BASE}}})", instant=True),
            limit_steps(base_limit * 0.9, base_limit),
            ["BaseBackupTooOld"],
        ),
        6,
    )
    board.add(
        graph(
            settings,
            "Base backup size",
            "Stored (compressed) size of the newest base backup; it grows with the database.",
            "bytes",
            [Query(f"max(ipa_base_backup_size_bytes{{{BASE}}})", "size")],
        ),
        8,
    )
    board.add(
        single(
            settings,
            "Base backup duration",
            f"How long the newest base backup run took; a Job stops after {settings.base_backup_deadline_minutes} min.",
            "s",
            Query(f"max(ipa_base_backup_duration_seconds{{{BASE}}})", instant=True),
            limit_steps(settings.base_backup_deadline_minutes * 45, settings.base_backup_deadline_minutes * 60),
        ),
        4,
    )
    board.add(
        graph(
            settings,
            "Replication slot retention",
            f"WAL each slot may still retain before the server invalidates it (max_slot_wal_keep_size = "
            f"{settings.max_slot_wal_keep_size_gb} GB); WalSlotRetentionNearLimit fires below "
            f"{(1 - SLOT_RETENTION_NEAR_LIMIT) * 100:g} % of it (dashed). The stream's slot is {WAL_SLOT}.",
            "bytes",
            [
                Query("min by (slot_name) (pg_replication_slot_safe_wal_size_bytes)", "{{slot_name}} safe"),
                Query("max by (slot_name) (pg_replication_slot_slot_is_active)", "{{slot_name}} active"),
                Query("max by (slot_name, wal_status) (pg_replication_slot_wal_status)", "{{slot_name}} {{wal_status}}"),
            ],
            floor_steps((1 - SLOT_RETENTION_NEAR_LIMIT) * slot_limit),
            ["WalSlotRetentionNearLimit"],
        ),
        12,
    )
    spool = f'namespace="{settings.backup_namespace}", persistentvolumeclaim="{WAL_STREAM_PVC}"'
    board.add(
        graph(
            settings,
            "WAL spool volume",
            f"Used share of the stream's spool volume ({settings.wal_stream_storage_size}): WAL received but not yet uploaded.",
            "percentunit",
            [Query(f"max(kubelet_volume_stats_used_bytes{{{spool}}} / kubelet_volume_stats_capacity_bytes{{{spool}}})", "used")],
            limit_steps(0.75, 0.9),
            max_value=1,
        ),
        12,
    )
