"""Backups and DR: is the newest backup within the RPO, do backup jobs succeed, and does the last
restore drill prove the RTO?"""

from __future__ import annotations

from typing import Any

from components.settings import Settings
from components.topology import BACKUP_DASHBOARD, BACKUP_JOB
from dashboards.common import (
    Board,
    Query,
    alert_annotation,
    bars,
    datasource_variable,
    graph,
    limit_steps,
    query_variable,
    single,
)

UID = BACKUP_DASHBOARD
ALERTS = ("BackupTooOld", "BackupJobFailed", "RestoreDrillFailed", "RestoreTooSlow")
PUSHED = f'job="{BACKUP_JOB}", target=~"$target"'


def build(settings: Settings) -> dict[str, Any]:
    rpo = settings.rpo_target_minutes * 60
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
        [alert_annotation("Backup and DR alerts", ALERTS)],
    )

    board.row("Recovery point")
    board.add(
        bars(
            settings,
            "Newest backup age",
            "How old the data of the newest successful backup is, per target; BackupTooOld fires above the RPO "
            f"({settings.rpo_target_minutes} min).",
            "s",
            Query('max by (target) (ipa:backup_age_seconds{target=~"$target"})', "{{target}}", instant=True),
            limit_steps(0.75 * rpo, rpo),
            ["BackupTooOld"],
            max_value=rpo * 1.5,
        ),
        8,
    )
    board.add(
        graph(
            settings,
            "Backup age vs RPO",
            f"Age of the newest backup over time; the dashed line is the RPO ({settings.rpo_target_minutes} min).",
            "s",
            [Query('max by (target) (ipa:backup_age_seconds{target=~"$target"})', "{{target}}")],
            limit_steps(None, rpo),
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
            f"Restore time of each drill; dashed lines at half the RTO and at the RTO ({settings.rto_target_minutes} min).",
            "s",
            [Query(f"max by (target) (ipa_restore_drill_duration_seconds{{{PUSHED}}})", "{{target}}")],
            limit_steps(rto / 2, rto),
            ["RestoreTooSlow"],
        ),
        24,
    )
    return board.build()
