"""Settings from the environment (the names the CronJobs set) plus tuning knobs: the one place that reads them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from ipa_backup.errors import ConfigError


@dataclass(frozen=True)
class RedisTarget:
    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    tls: bool

    @staticmethod
    def parse(url: str) -> RedisTarget:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ConfigError(f"REDIS_URL must start with redis:// or rediss://, got scheme {parts.scheme!r}")
        path = parts.path.lstrip("/")
        try:
            db = int(path) if path else 0
            port = parts.port or 6379
        except ValueError as exc:
            raise ConfigError(f"REDIS_URL has an invalid port or database number: {exc}") from exc
        return RedisTarget(
            host=parts.hostname or "localhost",
            port=port,
            db=db,
            username=unquote(parts.username) if parts.username else None,
            # The CronJob keeps the password out of the URL and sets REDISCLI_AUTH from a Secret.
            password=unquote(parts.password) if parts.password is not None else os.environ.get("REDISCLI_AUTH") or None,
            tls=parts.scheme == "rediss",
        )

    def redacted(self) -> str:
        return f"{self.host}:{self.port}/{self.db}"


def _int(name: str, default: int, low: int, high: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not an integer") from exc
    if not low <= value <= high:
        raise ConfigError(f"{name}={value} is out of range; accepted {low}..{high}")
    return value


def _float(name: str, default: float, low: float = 0.0, high: float = float("inf")) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not a number") from exc
    if not low <= value <= high:
        raise ConfigError(f"{name}={value:g} is out of range; accepted {low:g}..{high:g}")
    return value


def _first_set(*names: str) -> str:
    """The first of `names` that is set: a setting's current name, then the older name it replaced."""
    return next((n for n in names if os.environ.get(n)), names[0])


STORAGE_CONNECT_TIMEOUT = 10.0


def storage_backoff(retry: int) -> float:
    """Seconds slept before retry number `retry` (1-based) of a storage request: 1, 2, 4, 8, 8 ..."""
    return float(min(2 ** (retry - 1), 8))


@dataclass(frozen=True)
class Settings:
    container: str
    account_url: str | None
    connection_string: str | None
    pushgateway_url: str | None
    pg_database: str | None
    redis_url: str | None
    compression_level: int
    block_size: int
    upload_concurrency: int
    storage_timeout: float  # per attempt of a storage request: connect + send + wait for the answer
    storage_retries: int
    restore_jobs: int
    progress_interval: float
    command_timeout: float  # any one pg_dump, pg_dumpall, redis-cli or pg_restore run
    redis_batch_bytes: int = 32 << 20  # Redis restore: bytes of values read and written at a time

    @property
    def redis(self) -> RedisTarget | None:
        return RedisTarget.parse(self.redis_url) if self.redis_url else None

    @property
    def storage_connect_timeout(self) -> float:
        return min(STORAGE_CONNECT_TIMEOUT, self.storage_timeout)

    @property
    def storage_deadline(self) -> float:
        """Upper bound of one storage operation (a request with all its retries):
        timeout x (retries + 1) + the back-off slept between the attempts."""
        attempts = self.storage_retries + 1
        return self.storage_timeout * attempts + sum(storage_backoff(k) for k in range(1, attempts))


def load() -> Settings:
    container = os.environ.get("BACKUP_CONTAINER", "")
    if not container:
        raise ConfigError("BACKUP_CONTAINER is not set: name the blob container that holds the backup sets")
    account_url = os.environ.get("BACKUP_BLOB_ACCOUNT_URL") or None
    conn = os.environ.get("AZURE_STORAGE_CONNECTION_STRING") or None
    if not account_url and not conn:
        raise ConfigError(
            "neither BACKUP_BLOB_ACCOUNT_URL (workload identity) nor AZURE_STORAGE_CONNECTION_STRING is set"
        )
    redis_url = os.environ.get("REDIS_URL") or None
    if redis_url:
        RedisTarget.parse(redis_url)  # fail early on a malformed URL
    return Settings(
        container=container,
        account_url=account_url,
        connection_string=conn,
        pushgateway_url=os.environ.get("PUSHGATEWAY_URL") or None,
        pg_database=os.environ.get("PGDATABASE") or None,
        redis_url=redis_url,
        compression_level=_int("BACKUP_ZSTD_LEVEL", 1, 1, 19),
        block_size=_int("BACKUP_BLOCK_SIZE_MB", 8, 1, 100) * 1024 * 1024,
        upload_concurrency=_int("BACKUP_UPLOAD_CONCURRENCY", 4, 1, 32),
        storage_timeout=_float(_first_set("BACKUP_STORAGE_TIMEOUT_SECONDS", "BACKUP_UPLOAD_TIMEOUT_SECONDS"),
                               15.0, 1.0, 600.0),
        storage_retries=_int(_first_set("BACKUP_STORAGE_RETRIES", "BACKUP_UPLOAD_RETRIES"), 2, 0, 10),
        restore_jobs=_int("RESTORE_JOBS", max(1, os.cpu_count() or 1), 1, 64),
        progress_interval=_float("BACKUP_PROGRESS_SECONDS", 10.0),
        command_timeout=_float("BACKUP_COMMAND_TIMEOUT_SECONDS", 6 * 3600.0, 1.0),
        redis_batch_bytes=_int("RESTORE_REDIS_BATCH_MB", 32, 1, 1024) << 20,
    )
