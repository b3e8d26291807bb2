"""Pure parts: tier choice, Redis URL parsing, settings errors, db mapping."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from ipa_backup import config
from ipa_backup.config import RedisTarget
from ipa_backup.errors import ConfigError
from ipa_backup.sets import choose_tier
from ipa_backup.storage import SetInfo


def _set(set_id: str, tier: str, complete: bool = True) -> SetInfo:
    info = SetInfo(set_id, tier, {"postgres.dump.zst": 10})
    if complete:
        info.files["manifest.json"] = 1
    return info


def test_tiers_first_of_week_then_first_of_day_then_frequent() -> None:
    monday = datetime(2026, 11, 23, 0, 30, tzinfo=UTC)
    assert choose_tier([], monday) == "weekly"
    weekly = _set("20261123T000000000Z-aaaaaa", "weekly")
    assert choose_tier([weekly], monday) == "frequent"  # the weekly set is also that day's daily one
    tuesday = datetime(2026, 11, 24, 0, 0, tzinfo=UTC)
    assert choose_tier([weekly], tuesday) == "daily"
    daily = _set("20261124T000000000Z-bbbbbb", "daily")
    assert choose_tier([daily, weekly], tuesday) == "frequent"
    next_monday = datetime(2026, 11, 30, 0, 0, tzinfo=UTC)
    assert choose_tier([daily, weekly], next_monday) == "weekly"


def test_an_incomplete_set_never_takes_a_tier_slot() -> None:
    failed = _set("20261123T000000000Z-aaaaaa", "weekly", complete=False)
    assert choose_tier([failed], datetime(2026, 11, 23, 1, 0, tzinfo=UTC)) == "weekly"


def test_set_time_from_id() -> None:
    assert _set("20261123T101112345Z-abcdef", "daily").started_at == datetime(2026, 11, 23, 10, 11, 12, 345000, tzinfo=UTC)


def test_redis_url_parsing() -> None:
    t = RedisTarget.parse("rediss://user:p%40ss%20w@cache.example:6380/3")
    assert (t.host, t.port, t.db, t.username, t.password, t.tls) == ("cache.example", 6380, 3, "user", "p@ss w", True)
    assert t.redacted() == "cache.example:6380/3"
    assert RedisTarget.parse("redis://localhost").db == 0
    with pytest.raises(ConfigError, match="must start with redis://"):
        RedisTarget.parse("http://x")


def test_redis_password_from_rediscli_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDISCLI_AUTH", "from-secret")
    assert RedisTarget.parse("redis://cache:6379/0").password == "from-secret"
    assert RedisTarget.parse("redis://:in-url@cache:6379/0").password == "in-url"
    monkeypatch.delenv("REDISCLI_AUTH")
    assert RedisTarget.parse("redis://cache:6379/0").password is None


def test_settings_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BACKUP_CONTAINER", "BACKUP_BLOB_ACCOUNT_URL", "AZURE_STORAGE_CONNECTION_STRING", "BACKUP_ZSTD_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="BACKUP_CONTAINER is not set"):
        config.load()
    monkeypatch.setenv("BACKUP_CONTAINER", "backups")
    with pytest.raises(ConfigError, match="neither BACKUP_BLOB_ACCOUNT_URL"):
        config.load()
    monkeypatch.setenv("BACKUP_BLOB_ACCOUNT_URL", "https://acct.blob.core.windows.net")
    monkeypatch.setenv("BACKUP_ZSTD_LEVEL", "42")
    with pytest.raises(ConfigError, match="BACKUP_ZSTD_LEVEL=42 is out of range"):
        config.load()
    monkeypatch.setenv("BACKUP_ZSTD_LEVEL", "3")
    assert config.load().compression_level == 3


def test_restore_session_options(monkeypatch: pytest.MonkeyPatch) -> None:
    from ipa_backup.pg import restore_options

    monkeypatch.delenv("RESTORE_PGOPTIONS", raising=False)
    monkeypatch.delenv("RESTORE_MAINTENANCE_WORK_MEM", raising=False)
    assert restore_options() == "-c synchronous_commit=off -c maintenance_work_mem=512MB"
    monkeypatch.setenv("RESTORE_MAINTENANCE_WORK_MEM", "1GB")
    assert restore_options().endswith("maintenance_work_mem=1024MB")
    for bad in ("4GB", "16MB", "lots", "512"):
        monkeypatch.setenv("RESTORE_MAINTENANCE_WORK_MEM", bad)
        with pytest.raises(ConfigError, match="RESTORE_MAINTENANCE_WORK_MEM"):
            restore_options()
    monkeypatch.setenv("RESTORE_PGOPTIONS", "-c work_mem=8MB")  # replaces the whole string
    assert restore_options() == "-c work_mem=8MB"
