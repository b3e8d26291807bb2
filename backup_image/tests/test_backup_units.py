"""Pure parts: tier choice, Redis URL parsing, settings errors, db mapping."""

from __future__ import annotations

import ast
import os
import re
from datetime import UTC, datetime
from pathlib import Path

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


PACKAGE = Path(config.__file__).parent
README = PACKAGE.parent / "README.md"
ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]+$")


@pytest.fixture
def storage_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The least environment config.load() accepts, and none of the settings these tests vary."""
    for name in names_config_reads():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BACKUP_CONTAINER", "backups")
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "UseDevelopmentStorage=true")
    return monkeypatch


def test_restore_session_options(storage_env: pytest.MonkeyPatch) -> None:
    assert config.load().restore_pg_options == "-c synchronous_commit=off -c maintenance_work_mem=512MB"
    storage_env.setenv("RESTORE_MAINTENANCE_WORK_MEM", "1GB")
    assert config.load().restore_pg_options.endswith("maintenance_work_mem=1024MB")
    for bad in ("4GB", "16MB", "lots", "512"):
        storage_env.setenv("RESTORE_MAINTENANCE_WORK_MEM", bad)
        with pytest.raises(ConfigError, match=f"RESTORE_MAINTENANCE_WORK_MEM='{bad}' must be 64MB..2GB"):
            config.load()
    storage_env.setenv("RESTORE_PGOPTIONS", "-c work_mem=8MB")  # replaces the whole string
    assert config.load().restore_pg_options == "-c work_mem=8MB"


def test_client_work_and_drill_settings(storage_env: pytest.MonkeyPatch) -> None:
    settings = config.load()
    assert (settings.pg_clients_root, settings.pg_bin_dir, settings.work_dir) == (Path("/usr/lib/postgresql"), None, None)
    assert (settings.drill_database, settings.drill_redis_url, settings.drill_keep) == (None, None, False)
    storage_env.setenv("PGDATABASE", "app")
    storage_env.setenv("PG_CLIENTS_ROOT", "/opt/pg")
    storage_env.setenv("PG_BIN_DIR", "/opt/pg/16/bin")
    storage_env.setenv("BACKUP_WORK_DIR", "/work")
    storage_env.setenv("DRILL_KEEP", "1")
    settings = config.load()
    assert (settings.pg_clients_root, settings.pg_bin_dir, settings.work_dir) == (Path("/opt/pg"), Path("/opt/pg/16/bin"), "/work")
    assert (settings.drill_database, settings.drill_keep) == ("app_restore_drill", True)
    storage_env.setenv("DRILL_PGDATABASE", "scratch_restore_drill")
    assert config.load().drill_database == "scratch_restore_drill"
    for name, value, message in (
        ("DRILL_PGDATABASE", "app", "DRILL_PGDATABASE='app' must end with '_restore_drill'"),
        ("DRILL_KEEP", "yes", "DRILL_KEEP='yes' is not a flag; accepted 1 (yes) or 0 (no)"),
        ("DRILL_REDIS_URL", "http://x", "DRILL_REDIS_URL must start with redis:// or rediss://"),
    ):
        with storage_env.context() as env:
            env.setenv(name, value)
            with pytest.raises(ConfigError, match=re.escape(message)):
                config.load()


def names_config_reads() -> set[str]:
    """The environment variables config.py names: every all-capitals string it passes to a call
    (os.environ.get and its own readers: _int, _float, _flag, _first_set)."""
    tree = ast.parse((PACKAGE / "config.py").read_text())
    return {
        arg.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        for arg in node.args
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and ENV_NAME.match(arg.value)
    }


def names_readme_lists() -> set[str]:
    """The variables in the first column of README.md's environment table."""
    section = README.read_text().split("## Environment", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    return {name for cell in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", cell)}


def test_the_readme_lists_exactly_the_variables_config_reads() -> None:
    config_names, readme_names = names_config_reads(), names_readme_lists()
    assert "BACKUP_CONTAINER" in config_names and "DRILL_KEEP" in config_names  # the scan finds them
    assert readme_names - config_names == set(), "README.md lists variables config.py does not read"
    assert config_names - readme_names == set(), "config.py reads variables README.md does not list"


def test_only_config_reads_the_environment() -> None:
    for module in sorted(PACKAGE.glob("*.py")):
        if module.name != "config.py":
            text = module.read_text()
            assert not re.search(r"os\.environ\.get|os\.environ\[|os\.getenv", text), f"{module.name} reads the environment"


def test_redis_password_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-file\n")  # a trailing newline, as `kubectl create secret --from-file` keeps it
    monkeypatch.setenv("REDISCLI_AUTH", "from-env")
    monkeypatch.setenv("REDIS_PASSWORD_FILE", str(secret))
    assert RedisTarget.parse("redis://cache:6379/0").password == "from-file"
    assert RedisTarget.parse("redis://:in-url@cache:6379/0").password == "in-url"
    secret.write_text("")
    with pytest.raises(ConfigError, match=r"REDIS_PASSWORD_FILE=.* is empty"):
        RedisTarget.parse("redis://cache:6379/0")
    monkeypatch.setenv("REDIS_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"REDIS_PASSWORD_FILE=.* cannot be read"):
        RedisTarget.parse("redis://cache:6379/0")


def test_postgres_password_file_becomes_a_private_pgpass(storage_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """libpq ignores a PGPASSFILE its group may read (a Secret file under fsGroup is 0440): the tool
    hands libpq a private copy, escaped in pgpass syntax."""
    secret = tmp_path / "password"
    secret.write_text("p:ss\\word\n")
    secret.chmod(0o440)
    storage_env.delenv("PGPASSFILE", raising=False)
    storage_env.setenv("PGPASSWORD_FILE", str(secret))
    config.load()
    pgpass = Path(os.environ["PGPASSFILE"])
    assert pgpass.read_text() == "*:*:*:*:p\\:ss\\\\word\n"
    assert pgpass.stat().st_mode & 0o777 == 0o600 and pgpass.parent.stat().st_mode & 0o777 == 0o700
    storage_env.setenv("PGPASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"PGPASSWORD_FILE=.* cannot be read"):
        config.load()
