"""`build/<stack>/capacity.md`: how much the backup design stores and writes, with and without
point-in-time recovery, from the stack's schedules, retention, immutability and database size.

A pure function of the settings (`capacity(settings)` for the numbers, `capacity_markdown` for the
document); `make render` writes it. Every assumption the numbers rest on is a constant below and is
printed in the document.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from components.backup_storage import BackupStorageArgs, effective_retention_days
from components.cron import parse_cron
from components.settings import Settings

GB = 1e9
# Stored size of a logical set per byte of database: `make bench`'s multi-table database, 1.23 GB
# stored as 419 MB by ipa-backup (zstd level 1; docs/operations/backup-tool.md).
DUMP_RATIO = 0.34
# An RDB is already compressed (LZF): counted at its own size.
RDB_RATIO = 1.0
# Assumed until the bench measures them: a zstd-compressed physical base backup (it also carries the
# index pages and free space a dump leaves out) and zstd-compressed WAL (full-page images included).
BASE_RATIO = 0.5
WAL_RATIO = 0.5
SEGMENT_BYTES = 16 * 2**20  # PostgreSQL's default WAL segment size
WEEK = 7
YEAR_START = dt.date(2024, 1, 1)  # a leap year: runs per day averaged over 366 days


def runs_per_day(schedule: str) -> float:
    """Average runs per day of a cron schedule over a whole year."""
    cron = parse_cron(schedule)
    per_run_day = len(cron.hours) * len(cron.minutes)
    days = sum(cron.runs_on(YEAR_START + dt.timedelta(days=n)) for n in range(366))
    return per_run_day * days / 366


@dataclass(frozen=True)
class Line:
    """One kind of stored data: steady-state GB kept, GB written per 30 days, how many objects kept."""

    what: str
    kept_gb: float
    written_gb_per_30d: float
    detail: str


@dataclass(frozen=True)
class Design:
    name: str
    lines: tuple[Line, ...]
    soft_deleted_gb: float  # deletions stay recoverable (and billed) for blobSoftDeleteDays

    @property
    def kept_gb(self) -> float:
        return sum(line.kept_gb for line in self.lines)

    @property
    def written_gb_per_30d(self) -> float:
        return sum(line.written_gb_per_30d for line in self.lines)

    @property
    def billed_gb(self) -> float:
        return self.kept_gb + self.soft_deleted_gb


@dataclass(frozen=True)
class Capacity:
    logical_only: Design
    pitr: Design
    partial_gb: float  # the pieces of segments in progress within pitr.kept_gb
    redis_gb: float  # the Redis RDBs, the same in both designs

    @property
    def ratio(self) -> float:
        """PostgreSQL's data kept, with PITR over logical only: the designs differ only there."""
        return (self.pitr.kept_gb - self.redis_gb) / (self.logical_only.kept_gb - self.redis_gb)

    @property
    def ratio_without_partials(self) -> float:
        return (self.pitr.kept_gb - self.redis_gb - self.partial_gb) / (self.logical_only.kept_gb - self.redis_gb)


def _tier_days(settings: Settings) -> dict[str, int]:
    """Days each tier stays in storage: its retention, never less than the immutability period."""
    return effective_retention_days(BackupStorageArgs.from_settings(settings))


def _sets_kept(settings: Settings, tiers: tuple[str, ...]) -> tuple[dict[str, float], float]:
    """The tool's tiers on backupSchedule: the first set of an ISO week is weekly, the first of a UTC day
    daily, the rest frequent. Returns the sets kept of `tiers`, and how many of them are written a day."""
    days = _tier_days(settings)
    per_day = runs_per_day(settings.backup_schedule)
    first_of_day = min(1.0, per_day)
    sets = {
        "weekly": days["weekly"] / WEEK,
        "daily": days["daily"] * first_of_day * (WEEK - 1) / WEEK,
        "frequent": days["frequent"] * max(0.0, per_day - first_of_day),
    }
    return {t: sets[t] for t in tiers}, (per_day if "frequent" in tiers else first_of_day)


def _set_line(settings: Settings, what: str, tiers: tuple[str, ...], size: float) -> Line:
    days = _tier_days(settings)
    sets, per_day = _sets_kept(settings, tiers)
    detail = ", ".join(f"{n:.0f} {tier} ({days[tier]} d)" for tier, n in sets.items() if n)
    return Line(f"{what}, `{settings.backup_schedule}`", sum(sets.values()) * size, per_day * 30 * size, f"{detail}; {size:.1f} GB each")


def logical_sets(settings: Settings, every_run: bool) -> Line:
    """PostgreSQL's dumps: in every set, or (`every_run` False: PITR with Redis-only frequent sets) in the
    daily and weekly sets only."""
    tiers = ("weekly", "daily", "frequent") if every_run else ("weekly", "daily")
    what = "logical sets (PostgreSQL dumps)" if every_run else "logical sets (PostgreSQL dumps, daily and weekly sets only)"
    return _set_line(settings, what, tiers, settings.production_database_size_gb * DUMP_RATIO)


def redis_rdbs(settings: Settings) -> Line:
    """Redis has no stream: every set holds its RDB, in both designs."""
    return _set_line(settings, "Redis RDBs (every set)", ("weekly", "daily", "frequent"), settings.production_redis_size_gb * RDB_RATIO)


def base_backups(settings: Settings) -> Line:
    """First base backup of an ISO week in the weekly tier, every other one daily."""
    days = _tier_days(settings)
    per_day = runs_per_day(settings.base_backup_schedule)
    weekly = days["weekly"] / WEEK
    daily = days["daily"] * max(0.0, per_day - 1 / WEEK)
    size = settings.production_database_size_gb * BASE_RATIO
    return Line(
        f"base backups, `{settings.base_backup_schedule}`",
        (weekly + daily) * size,
        per_day * 30 * size,
        f"{weekly:.0f} weekly ({days['weekly']} d), {daily:.0f} daily ({days['daily']} d); {size:.1f} GB each",
    )


def wal_days(settings: Settings) -> int:
    """The WAL back to the oldest daily base backup (daily retention plus one base backup gap), and
    never less than the immutability period: what the lifecycle rule of `wal/` keeps."""
    return max(settings.wal_retention_days, settings.storage_immutability_days)


def wal_segments(settings: Settings) -> Line:
    per_day = settings.wal_per_day_gb * WAL_RATIO
    keep = wal_days(settings)
    return Line("completed WAL segments", per_day * keep, per_day * 30, f"{keep} d of {settings.wal_per_day_gb:g} GB/day raw")


def wal_partials(settings: Settings) -> Line:
    """The segment in progress is uploaded every walPartialUploadSeconds while it changes, as a piece holding
    only the bytes written since the previous upload: a new blob each time, never a replaced one. So each
    WAL byte is stored at most once more, compressed like the segments (a segment completed within one
    interval has no pieces). The pieces of a completed segment are kept like the WAL: immutability refuses
    their deletion and the lifecycle rule of `wal/` removes them. An upper bound."""
    per_day = settings.wal_per_day_gb * WAL_RATIO
    keep = wal_days(settings)
    uploads = 86400 / settings.wal_partial_upload_seconds
    return Line(
        f"partial-segment pieces (every {settings.wal_partial_upload_seconds} s)",
        per_day * keep,
        per_day * 30,
        f"at most the WAL once more: up to {uploads:.0f} pieces/day, {per_day:.1f} GB/day, kept {keep} d",
    )


def _soft_deleted(settings: Settings, lines: tuple[Line, ...]) -> float:
    # In steady state as much is deleted per day as is written.
    return sum(line.written_gb_per_30d for line in lines) / 30 * settings.blob_soft_delete_days


def capacity(settings: Settings) -> Capacity:
    redis = redis_rdbs(settings)
    logical = (logical_sets(settings, every_run=True), redis)
    partial = wal_partials(settings)
    dumps = logical_sets(settings, every_run="postgres" in settings.pitr_frequent_backup_targets)
    pitr = (dumps, redis, base_backups(settings), wal_segments(settings), partial)
    return Capacity(
        logical_only=Design("logical sets only", logical, _soft_deleted(settings, logical)),
        pitr=Design("with point-in-time recovery", pitr, _soft_deleted(settings, pitr)),
        partial_gb=partial.kept_gb,
        redis_gb=redis.kept_gb,
    )


def _gb(value: float) -> str:
    return f"{value / 1000:,.2f} TB" if value >= 1000 else f"{value:,.1f} GB"


def _table(design: Design) -> list[str]:
    rows = ["| data | kept (steady state) | written per 30 days | what is kept |", "|---|---|---|---|"]
    rows += [f"| {line.what} | {_gb(line.kept_gb)} | {_gb(line.written_gb_per_30d)} | {line.detail} |" for line in design.lines]
    rows.append(f"| **total** | **{_gb(design.kept_gb)}** | **{_gb(design.written_gb_per_30d)}** | |")
    rows.append(f"| soft-deleted, still billed | {_gb(design.soft_deleted_gb)} | | deletions kept recoverable |")
    return rows


def _percent(ratio: float) -> str:
    return f"{ratio * 100:g} %"


def capacity_markdown(settings: Settings) -> str:
    c = capacity(settings)
    days = _tier_days(settings)
    configured = c.pitr.name if settings.pitr_enabled else c.logical_only.name
    goal = "met" if c.ratio <= 0.1 else "not met"
    lines = [
        f"# Backup storage of the {settings.environment} stack",
        "",
        f"Written by `make render` (offline/capacity.py) from the stack's settings. Configured: **{configured}** "
        f"(`pitrEnabled` = {str(settings.pitr_enabled).lower()}). Both designs are shown for comparison.",
        "",
        "## Storage with and without point-in-time recovery",
        "",
        "| design | kept (steady state) | written per 30 days | billed incl. soft-deleted |",
        "|---|---|---|---|",
        *(f"| {d.name} | {_gb(d.kept_gb)} | {_gb(d.written_gb_per_30d)} | {_gb(d.billed_gb)} |" for d in (c.logical_only, c.pitr)),
        "",
        f"Ratio of PostgreSQL's data kept, with PITR over logical only (the Redis RDBs, {_gb(c.redis_gb)} in both designs, "
        f"left out): **{c.ratio:.3f}** (goal at most 0.1: {goal}). "
        f"Without the pieces of the segment in progress it would be {c.ratio_without_partials:.3f}.",
        "",
        f"### Logical sets only (`backupSchedule` = `{settings.backup_schedule}`)",
        "",
        *_table(c.logical_only),
        "",
        "### With point-in-time recovery (`pitrFrequentBackupTargets` = "
        f"`{', '.join(settings.pitr_frequent_backup_targets)}`; the first set of a UTC day or ISO week holds both)",
        "",
        *_table(c.pitr),
        "",
        "## Assumptions",
        "",
        f"- Database: `productionDatabaseSizeGb` = {settings.production_database_size_gb:g} GB; Redis: `productionRedisSizeGb` = "
        f"{settings.production_redis_size_gb:g} GB (its RDB); WAL: `walPerDayGb` = {settings.wal_per_day_gb:g} GB a day, uncompressed.",
        f"- A PostgreSQL dump stores {_percent(DUMP_RATIO)} of the database, measured by `make bench` (multi-table database, "
        f"docs/operations/backup-tool.md); an RDB, already compressed, is counted at {_percent(RDB_RATIO)} of its size. Redis has "
        "no WAL stream: every logical set holds its RDB in both designs, since each run on `backupSchedule` carries Redis's RPO.",
        f"- Assumed until measured: a base backup stores {_percent(BASE_RATIO)} of the database and WAL compresses to "
        f"{_percent(WAL_RATIO)} of its size.",
        f"- Days kept per tier (retention, never less than `storageImmutabilityDays` = {settings.storage_immutability_days}): "
        + ", ".join(f"{tier} {n}" for tier, n in days.items())
        + f". WAL: {wal_days(settings)} days (the daily retention plus one base backup gap). Base backups use the daily and "
        "weekly tiers' retention; the lifecycle rules must cover their `base/` and `wal/` prefixes too.",
        "- Tiers as the tool assigns them: the first set of an ISO week is weekly, the first of a UTC day daily, the rest frequent.",
        f"- The segment in progress ({SEGMENT_BYTES // 2**20} MiB) is uploaded every `walPartialUploadSeconds` = "
        f"{settings.wal_partial_upload_seconds} s while it changes, as a piece holding only the bytes written since the previous "
        "upload (a new blob, never a replaced one), so the pieces hold each WAL byte at most once more, compressed like the WAL, "
        "and are kept as long as the WAL (immutability refuses their deletion; the lifecycle rule removes them). Upper bound: "
        "a segment completed within one interval has no pieces.",
        f"- Soft delete keeps deletions for `blobSoftDeleteDays` = {settings.blob_soft_delete_days} days; in steady state as much "
        "is deleted per day as is written.",
        f"- Storage redundancy `{settings.storage_redundancy}`, Hot tier; prices are not applied (they depend on the region and "
        "the agreement): multiply the GB by the account's price per GB-month, and the written volume by the write-operation price.",
        "",
    ]
    return "\n".join(lines)
