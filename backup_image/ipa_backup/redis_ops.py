"""Redis: checks, `redis-cli --rdb -` stream, and restore into a running server with DUMP/RESTORE."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from ipa_backup import log, proc
from ipa_backup.config import RedisTarget
from ipa_backup.errors import SourceError, TargetError

BATCH = 500


def client(target: RedisTarget, db: int | None = None) -> redis.Redis:
    return redis.Redis(host=target.host, port=target.port, db=target.db if db is None else db,
                       username=target.username, password=target.password, ssl=target.tls,
                       socket_timeout=30, socket_connect_timeout=10)


def check(target: RedisTarget, error: type[SourceError] | type[TargetError] = SourceError) -> str:
    """Ping with the configured credentials; return the server version."""
    try:
        info = client(target).info("server")
    except redis.AuthenticationError as exc:
        raise error(f"Redis at {target.redacted()} rejected the credentials from REDIS_URL: {exc}") from exc
    except redis.ResponseError as exc:
        if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
            raise error(f"Redis at {target.redacted()} rejected the credentials from REDIS_URL: {exc}") from exc
        raise error(f"Redis at {target.redacted()} failed: {exc}") from exc
    except redis.RedisError as exc:
        raise error(f"Redis at {target.redacted()} is unreachable: {exc}") from exc
    return str(info.get("redis_version", "unknown"))


def dump_rdb(target: RedisTarget) -> Iterator[bytes]:
    """The server's RDB over the replication protocol; works against a remote server."""
    argv = [shutil.which("redis-cli") or "redis-cli", "-h", target.host, "-p", str(target.port), "--rdb", "-"]
    env: dict[str, str] = {}
    if target.password:
        env["REDISCLI_AUTH"] = target.password  # never -a: argv is visible to every process
    if target.username:
        argv += ["--user", target.username]
    if target.tls:
        argv.append("--tls")
    return proc.stream_stdout(argv, env, lambda msg: SourceError(f"redis-cli --rdb from {target.redacted()} failed: {msg}"))


SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes with the terminating NUL


def socket_dir() -> Path:
    """A private directory for a unix socket whose path fits sun_path: under TMPDIR when that is short
    enough, else under /tmp (a long TMPDIR or BACKUP_WORK_DIR would make redis-server fail to listen)."""
    for base in dict.fromkeys([tempfile.gettempdir(), "/tmp"]):
        if len(os.path.join(base, "ipa-r-xxxxxxxx", "redis.sock")) > SOCKET_PATH_MAX:
            continue
        try:
            return Path(tempfile.mkdtemp(prefix="ipa-r-", dir=base))
        except OSError:
            continue
    raise TargetError(f"no directory for the temporary redis-server's unix socket: TMPDIR ({tempfile.gettempdir()}) "
                      f"is too long for a socket path (at most {SOCKET_PATH_MAX} bytes) and /tmp is not writable; "
                      "set TMPDIR to a short writable directory")


@contextmanager
def loaded_rdb(rdb: Path) -> Iterator[redis.Redis]:
    """A private redis-server (unix socket only, no TCP) that has loaded `rdb`; client for db 0."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise TargetError("redis-server is not installed; the restore loads the RDB into a temporary local server")
    # The RDB stays on the work disk next to where it was written; only the socket needs a short path.
    work = Path(tempfile.mkdtemp(prefix="redis-", dir=rdb.parent))
    sock_dir = socket_dir()
    sock = sock_dir / "redis.sock"
    shutil.move(str(rdb), work / "dump.rdb")
    argv = [binary, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700", "--dir", str(work),
            "--dbfilename", "dump.rdb", "--save", "", "--appendonly", "no", "--databases", "16",
            "--daemonize", "no", "--logfile", str(work / "redis.log")]
    server = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        conn = redis.Redis(unix_socket_path=str(sock), socket_timeout=60)
        deadline = time.monotonic() + 600
        while True:
            if server.poll() is not None:
                tail = (work / "redis.log").read_text(errors="replace")[-1500:]
                raise TargetError(f"temporary redis-server could not load the RDB ({proc.describe_exit('redis-server', server.returncode)}): {tail}")
            try:
                if conn.info("persistence").get("loading") == 0:
                    break
            except (redis.ConnectionError, redis.BusyLoadingError, FileNotFoundError):
                pass
            if time.monotonic() > deadline:
                raise TargetError("temporary redis-server did not finish loading the RDB within 600s")
            time.sleep(0.05)
        yield conn
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(sock_dir, ignore_errors=True)


def keyspace(conn: redis.Redis) -> dict[int, int]:
    """Key count per database number, from INFO keyspace."""
    info = conn.info("keyspace")
    return {int(name[2:]): int(v["keys"]) for name, v in info.items() if name.startswith("db")}


def db_map(source_dbs: list[int], target: RedisTarget) -> dict[int, int]:
    """Source db -> target db: a single-db backup goes to REDIS_URL's db, several keep their numbers."""
    if len(source_dbs) == 1:
        return {source_dbs[0]: target.db}
    return {db: db for db in source_dbs}


def copy_keys(source_socket_client: redis.Redis, target: RedisTarget, force: bool) -> dict[int, int]:
    """DUMP each key (with its remaining TTL) from the loaded RDB and RESTORE ... REPLACE it into the target."""
    counts = keyspace(source_socket_client)
    mapping = db_map(sorted(counts), target)
    try:
        for dst in mapping.values():
            existing = client(target, dst).dbsize()
            if existing and not force:
                raise TargetError(
                    f"Redis target {target.host}:{target.port}/{dst} is not empty ({existing} keys); "
                    "restore refuses to overwrite it without --force"
                )
        copied: dict[int, int] = {}
        kwargs = source_socket_client.connection_pool.connection_kwargs
        for src, dst in mapping.items():
            source = redis.Redis(unix_socket_path=kwargs["path"], db=src, socket_timeout=60)
            dest = client(target, dst)
            if force:
                dest.flushdb()
            copied[dst] = 0
            cursor = 0
            while True:
                cursor, keys = source.scan(cursor=cursor, count=BATCH)
                if keys:
                    read = source.pipeline(transaction=False)
                    for key in keys:
                        read.pttl(key)
                        read.dump(key)
                    values = read.execute()
                    write = dest.pipeline(transaction=False)
                    for i, key in enumerate(keys):
                        ttl, payload = values[2 * i], values[2 * i + 1]
                        if payload is None or ttl == -2:
                            continue  # expired between SCAN and DUMP
                        write.restore(key, max(int(ttl), 0), payload, replace=True)
                        copied[dst] += 1
                    write.execute()
                if cursor == 0:
                    break
            log.info("redis database restored", source_db=src, target_db=dst, keys=copied[dst])
        return copied
    except redis.AuthenticationError as exc:
        raise TargetError(f"Redis target {target.redacted()} rejected the credentials: {exc}") from exc
    except redis.RedisError as exc:
        raise TargetError(f"restoring keys into Redis at {target.redacted()} failed: {exc}") from exc
