"""capacity.md (offline/capacity.py): the storage of the configured backup design, with and without
point-in-time recovery, from the schedules, retention, immutability and database size."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from offline.capacity import DUMP_RATIO, RDB_RATIO, capacity, capacity_markdown, runs_per_day, wal_days
from tests.conftest import stack_settings


@pytest.mark.parametrize(
    ("schedule", "per_day"),
    [("*/30 * * * *", 48), ("0 1 * * *", 1), ("0 */6 * * *", 4), ("5,35 * * * *", 48), ("0 3 * * 0", 52 / 366 * 1)],
)
def test_runs_per_day(schedule: str, per_day: float) -> None:
    assert runs_per_day(schedule) == pytest.approx(per_day, rel=0.02)


def test_prod_logical_only_keeps_every_frequent_set_for_the_immutability_period() -> None:
    settings = stack_settings("prod")
    line, redis = capacity(settings).logical_only.lines
    # 47 frequent sets a day kept 30 days (immutability), 6 daily of 7 kept 30 days, 12 weekly: about 1,448 sets.
    sets = 47 * 30 + 30 * 6 / 7 + 84 / 7
    assert line.kept_gb == pytest.approx(sets * settings.production_database_size_gb * DUMP_RATIO)
    assert 9.5e3 < line.kept_gb < 10.5e3  # "roughly 10 TB"
    assert redis.kept_gb == pytest.approx(sets * settings.production_redis_size_gb * RDB_RATIO)


def test_with_pitr_frequent_sets_hold_redis_only() -> None:
    """PostgreSQL's dumps shrink to the daily and weekly sets; Redis's RDB stays in every set (it carries Redis's RPO)."""
    settings = stack_settings("prod")
    c = capacity(settings)
    lines = {line.what.split(",")[0].split(" (")[0]: line for line in c.pitr.lines}
    logical = {line.what.split(",")[0].split(" (")[0]: line for line in c.logical_only.lines}
    daily_and_weekly = 30 * 6 / 7 + 84 / 7
    assert lines["logical sets"].kept_gb == pytest.approx(daily_and_weekly * settings.production_database_size_gb * DUMP_RATIO)
    assert lines["logical sets"].written_gb_per_30d == pytest.approx(30 * settings.production_database_size_gb * DUMP_RATIO)
    assert lines["Redis RDBs"] == logical["Redis RDBs"] and c.redis_gb == lines["Redis RDBs"].kept_gb
    bigger_redis = capacity(stack_settings("prod", {"productionRedisSizeGb": 4}))
    assert bigger_redis.redis_gb == pytest.approx(4 * c.redis_gb) and bigger_redis.ratio == pytest.approx(c.ratio)
    # Every run dumping PostgreSQL too (dev's choice) keeps as many dumps as without PITR.
    both = capacity(stack_settings("prod", {"pitrFrequentBackupTargets": ["postgres", "redis"]}))
    assert both.pitr.lines[0].kept_gb == pytest.approx(both.logical_only.lines[0].kept_gb)
    text = capacity_markdown(settings)
    assert "`pitrFrequentBackupTargets` = `redis`" in text and "productionRedisSizeGb" in text


def test_without_immutability_frequent_sets_go_after_their_own_retention() -> None:
    dev = capacity(stack_settings("dev", {"pitrEnabled": False})).logical_only.kept_gb
    prod_like = capacity(stack_settings("dev", {"pitrEnabled": False, "storageImmutabilityDays": 30})).logical_only.kept_gb
    assert dev < prod_like / 10  # 48 h of frequent sets instead of 30 days


def test_pitr_lines_follow_their_settings() -> None:
    base = capacity(stack_settings("prod"))
    lines = {line.what.split(",")[0].split(" (")[0]: line for line in base.pitr.lines}
    assert set(lines) == {"logical sets", "Redis RDBs", "base backups", "completed WAL segments", "partial-segment pieces"}
    more_wal = capacity(stack_settings("prod", {"walPerDayGb": 4, "maxSlotWalKeepSizeGb": 16}))
    more = {line.what.split(",")[0].split(" (")[0]: line for line in more_wal.pitr.lines}
    assert more["completed WAL segments"].kept_gb == pytest.approx(2 * lines["completed WAL segments"].kept_gb)
    assert more["base backups"].kept_gb == lines["base backups"].kept_gb
    # The pieces hold only the bytes added since the previous upload: at most the WAL once more, whatever
    # the interval (a whole segment per interval would have grown with 1/interval).
    assert base.partial_gb == pytest.approx(lines["completed WAL segments"].kept_gb)
    assert more_wal.partial_gb == pytest.approx(2 * base.partial_gb)
    slower = capacity(stack_settings("prod", {"walPartialUploadSeconds": 60}))
    assert slower.partial_gb == pytest.approx(base.partial_gb)
    bigger = capacity(stack_settings("prod", {"productionDatabaseSizeGb": 40}))
    assert bigger.logical_only.kept_gb - bigger.redis_gb == pytest.approx(2 * (base.logical_only.kept_gb - base.redis_gb))


def test_wal_is_kept_back_to_the_oldest_daily_base_backup() -> None:
    assert wal_days(stack_settings("prod")) == 31  # 30 days plus one daily gap
    assert wal_days(stack_settings("prod", {"storageImmutabilityDays": 60})) == 60


def test_prod_ratio_is_reported_against_the_goal() -> None:
    settings = stack_settings("prod")
    c = capacity(settings)
    # PostgreSQL's share: the Redis RDBs are the same in both designs.
    assert c.ratio == pytest.approx((c.pitr.kept_gb - c.redis_gb) / (c.logical_only.kept_gb - c.redis_gb))
    assert c.ratio_without_partials < c.ratio <= 0.1 < c.logical_only.kept_gb
    text = capacity_markdown(settings)
    assert f"**{c.ratio:.3f}**" in text and "goal at most 0.1: met" in text
    # Far more WAL a day than the prod estimate: the goal is reported missed.
    heavy = stack_settings("prod", {"walPerDayGb": 100, "maxSlotWalKeepSizeGb": 100})
    assert capacity(heavy).ratio > 0.1 and "goal at most 0.1: not met" in capacity_markdown(heavy)
    for key in ("productionDatabaseSizeGb", "walPerDayGb", "storageImmutabilityDays", "walPartialUploadSeconds", "34 %"):
        assert key in text


def test_render_writes_capacity_md(rendered: Callable[[str], Path], stack: str) -> None:
    written = (rendered(stack) / "capacity.md").read_text()
    assert written == capacity_markdown(stack_settings(stack))
    assert written.startswith(f"# Backup storage of the {stack} stack")
