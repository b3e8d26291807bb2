"""Settings from the environment (the names the CronJobs set) plus tuning knobs: the one place that reads them."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
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
    def parse(url: str, name: str = "REDIS_URL") -> RedisTarget:
        """`name`: the setting the URL came from, for the messages."""
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ConfigError(f"{name} must start with redis:// or rediss://, got scheme {parts.scheme!r}")
        path = parts.path.lstrip("/")
        try:
            db = int(path) if path else 0
            port = parts.port or 6379
        except ValueError as exc:
            raise ConfigError(f"{name} has an invalid port or database number: {exc}") from exc
        return RedisTarget(
            host=parts.hostname or "localhost",
            port=port,
            db=db,
            username=unquote(parts.username) if parts.username else None,
            # The CronJobs keep the password out of the URL: a mounted Secret file (REDIS_PASSWORD_FILE),
            # or REDISCLI_AUTH.
            password=unquote(parts.password)
            if parts.password is not None
            else _secret_file("REDIS_PASSWORD_FILE") or os.environ.get("REDISCLI_AUTH") or None,
            tls=parts.scheme == "rediss",
        )

    def redacted(self) -> str:
        return f"{self.host}:{self.port}/{self.db}"


def _secret_file(name: str) -> str | None:
    """The secret in the file variable `name` names (a mounted Kubernetes Secret), without a final newline."""
    path = os.environ.get(name)
    if not path:
        return None
    try:
        secret = Path(path).read_text().removesuffix("\n")
    except OSError as exc:
        raise ConfigError(f"{name}={path!r} cannot be read: {exc.strerror}") from exc
    if not secret:
        raise ConfigError(f"{name}={path!r} is empty; accepted: a file holding the password")
    return secret


def _pgpass_line(password: str) -> str:
    r"""A ~/.pgpass line matching every server, port, database and user; `\` and `:` escaped."""
    return "*:*:*:*:" + password.replace("\\", "\\\\").replace(":", "\\:") + "\n"


def _use_password_file() -> None:
    """PGPASSWORD_FILE: a file holding only the password (a mounted Secret). libpq reads passwords
    from PGPASSFILE only when that file is private to its owner (0600), which a Secret volume never
    is for a non-root user, so the password goes into a private pgpass file that every libpq
    client this process runs is pointed at, and is removed at exit."""
    password = _secret_file("PGPASSWORD_FILE")
    if password is None:
        return
    folder = tempfile.mkdtemp(prefix="ipa-backup-libpq-")  # 0700
    atexit.register(shutil.rmtree, folder, True)
    path = Path(folder) / "pgpass"
    path.touch(mode=0o600)
    path.write_text(_pgpass_line(password))
    os.environ["PGPASSFILE"] = str(path)


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


def _flag(name: str) -> bool:
    raw = os.environ.get(name) or "0"
    if raw not in ("0", "1"):
        raise ConfigError(f"{name}={raw!r} is not a flag; accepted 1 (yes) or 0 (no)")
    return raw == "1"


def _first_set(*names: str) -> str:
    """The first of `names` that is set: a setting's current name, then the older name it replaced."""
    return next((n for n in names if os.environ.get(n)), names[0])


STORAGE_CONNECT_TIMEOUT = 10.0
PG_CLIENTS_ROOT = "/usr/lib/postgresql"  # Debian's layout: one <major>/bin per PostgreSQL client
DRILL_SUFFIX = "_restore_drill"
WAL_SLOT = "ipa_wal_stream"
WAL_SPOOL_DIR = "/var/lib/ipa-wal"
SLOT_RE = re.compile(r"^[a-z0-9_]{1,63}$")  # what PostgreSQL accepts as a replication slot name
MEMORY_RE = re.compile(r"^(\d+)(MB|GB)$")
TARGETS = ("postgres", "redis")  # what a backup set may hold; the first set of a UTC day or ISO week holds both


def _frequent_targets() -> tuple[str, ...]:
    """BACKUP_FREQUENT_TARGETS: the targets a frequent set takes (comma-separated; default both). With
    PostgreSQL's WAL streamed, `redis` alone: its logical dumps are then the daily and weekly copies only.
    Redis is always one: it has no other recovery point."""
    raw = os.environ.get("BACKUP_FREQUENT_TARGETS") or ",".join(TARGETS)
    names = [n.strip() for n in raw.split(",")]
    if "redis" not in names or not all(n in TARGETS for n in names) or len(set(names)) != len(names):
        raise ConfigError(f"BACKUP_FREQUENT_TARGETS={raw!r} is not accepted; accepted: redis or postgres,redis")
    return tuple(t for t in TARGETS if t in names)


def _restore_pg_options() -> str:
    """PGOPTIONS of the restore's sessions (only they, not the server, get these settings).

    synchronous_commit=off: a restore that crashes is rerun from the verified set anyway, so
    waiting for each commit's WAL flush buys nothing. maintenance_work_mem: index builds sort in
    memory instead of in temporary files; RESTORE_MAINTENANCE_WORK_MEM (64MB..2GB, default
    512MB) bounds it, and pg_restore --jobs N can run N builds at once. RESTORE_PGOPTIONS
    replaces the whole string.
    """
    explicit = os.environ.get("RESTORE_PGOPTIONS")
    if explicit is not None:
        return explicit
    raw = os.environ.get("RESTORE_MAINTENANCE_WORK_MEM") or "512MB"
    match = MEMORY_RE.match(raw)
    megabytes = int(match.group(1)) * (1024 if match.group(2) == "GB" else 1) if match else 0
    if not 64 <= megabytes <= 2048:
        raise ConfigError(f"RESTORE_MAINTENANCE_WORK_MEM={raw!r} must be 64MB..2GB, written like 512MB or 1GB")
    return f"-c synchronous_commit=off -c maintenance_work_mem={megabytes}MB"


def libpq_where(database: str | None = None) -> str:
    """host:port/database of the libpq environment, for messages. libpq's own variables stay libpq's
    (the client programs read them); this reads them when a message is written, so it names what
    those programs were given."""
    e = os.environ
    return f"{e.get('PGHOST', 'localhost')}:{e.get('PGPORT', '5432')}/{database or e.get('PGDATABASE', '')}"


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
    pg_clients_root: Path  # one <major>/bin per PostgreSQL client
    pg_bin_dir: Path | None  # one client directory to use whatever the server's version
    restore_pg_options: str  # PGOPTIONS of the restore's sessions
    work_dir: str | None  # restore staging; None: the system's temporary directory
    drill_pg_database: str | None  # the drill's scratch database; None: derived from pg_database
    drill_redis_url: str | None  # the drill's Redis; None: a private redis-server
    drill_keep: bool  # keep the drill's scratch database afterwards
    redis_batch_bytes: int = 32 << 20  # Redis restore: bytes of values read and written at a time
    wal_slot: str = WAL_SLOT  # the physical replication slot of wal-stream
    wal_spool_dir: Path = Path(WAL_SPOOL_DIR)  # pg_receivewal's directory (a PVC)
    wal_partial_upload_seconds: float = 15.0  # how often the segment in progress is uploaded when it changed
    metrics_port: int = 9188  # wal-stream's /metrics
    base_backup_fast_checkpoint: bool = False  # pg_basebackup --checkpoint=fast instead of spread
    frequent_targets: tuple[str, ...] = TARGETS  # what a frequent set holds (daily and weekly sets hold every target)

    @property
    def redis(self) -> RedisTarget | None:
        return RedisTarget.parse(self.redis_url) if self.redis_url else None

    @property
    def drill_database(self) -> str | None:
        """The drill's scratch database: dropped and recreated by every drill."""
        if self.drill_pg_database:
            return self.drill_pg_database
        return f"{self.pg_database}{DRILL_SUFFIX}" if self.pg_database else None

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
        raise ConfigError("neither BACKUP_BLOB_ACCOUNT_URL (workload identity) nor AZURE_STORAGE_CONNECTION_STRING is set")
    redis_url = os.environ.get("REDIS_URL") or None
    if redis_url:
        RedisTarget.parse(redis_url)  # fail early on a malformed URL
    drill_redis_url = os.environ.get("DRILL_REDIS_URL") or None
    if drill_redis_url:
        RedisTarget.parse(drill_redis_url, "DRILL_REDIS_URL")
    drill_pg_database = os.environ.get("DRILL_PGDATABASE") or None
    if drill_pg_database and not drill_pg_database.endswith(DRILL_SUFFIX):
        # The drill drops and recreates its scratch database: never one an application may use.
        raise ConfigError(
            f"DRILL_PGDATABASE={drill_pg_database!r} must end with {DRILL_SUFFIX!r}: the drill drops and recreates that database"
        )
    bin_dir = os.environ.get("PG_BIN_DIR") or None
    _use_password_file()
    wal_slot = os.environ.get("WAL_SLOT") or WAL_SLOT
    if not SLOT_RE.match(wal_slot):
        raise ConfigError(f"WAL_SLOT={wal_slot!r} is not a replication slot name; accepted: 1-63 of a-z, 0-9 and _")
    checkpoint = os.environ.get("BASE_BACKUP_CHECKPOINT") or "spread"
    if checkpoint not in ("spread", "fast"):
        raise ConfigError(f"BASE_BACKUP_CHECKPOINT={checkpoint!r} is not accepted; accepted: spread or fast")
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
        storage_timeout=_float(_first_set("BACKUP_STORAGE_TIMEOUT_SECONDS", "BACKUP_UPLOAD_TIMEOUT_SECONDS"), 15.0, 1.0, 600.0),
        storage_retries=_int(_first_set("BACKUP_STORAGE_RETRIES", "BACKUP_UPLOAD_RETRIES"), 2, 0, 10),
        restore_jobs=_int("RESTORE_JOBS", max(1, os.cpu_count() or 1), 1, 64),
        progress_interval=_float("BACKUP_PROGRESS_SECONDS", 10.0),
        command_timeout=_float("BACKUP_COMMAND_TIMEOUT_SECONDS", 6 * 3600.0, 1.0),
        pg_clients_root=Path(os.environ.get("PG_CLIENTS_ROOT") or PG_CLIENTS_ROOT),
        pg_bin_dir=Path(bin_dir) if bin_dir else None,
        restore_pg_options=_restore_pg_options(),
        work_dir=os.environ.get("BACKUP_WORK_DIR") or None,
        drill_pg_database=drill_pg_database,
        drill_redis_url=drill_redis_url,
        drill_keep=_flag("DRILL_KEEP"),
        redis_batch_bytes=_int("RESTORE_REDIS_BATCH_MB", 32, 1, 1024) << 20,
        wal_slot=wal_slot,
        wal_spool_dir=Path(os.environ.get("WAL_SPOOL_DIR") or WAL_SPOOL_DIR),
        wal_partial_upload_seconds=_float("WAL_PARTIAL_UPLOAD_SECONDS", 15.0, 1.0, 3600.0),
        metrics_port=_int("METRICS_PORT", 9188, 1, 65535),
        base_backup_fast_checkpoint=checkpoint == "fast",
        frequent_targets=_frequent_targets(),
    )
