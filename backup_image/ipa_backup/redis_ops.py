"""Redis: checks, `redis-cli --rdb -` stream, and restore of an RDB into a running server of another version.

A restore loads the RDB into a private redis-server (the image's), then copies each database into the
database of the same number on the target: with DUMP/RESTORE when the target runs the helper's
major.minor, else key by key with native commands, which every supported version (6.2 .. 8.x) reads.
Nothing on the target is written before every check passed; a non-empty database is replaced only
through an empty staging database and one atomic SWAPDB, so a failed restore leaves it as it was.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ipa_backup import log, proc
from ipa_backup.config import RedisTarget
from ipa_backup.errors import SourceError, TargetError

MIN_VERSION = (6, 2)
SCAN_COUNT = 1000  # keys per SCAN page
MAX_ELEMENTS = 10_000  # elements per command when a big collection is copied in pieces
NATIVE_TYPES = frozenset({"string", "hash", "list", "set", "zset", "stream"})
# The newest RDB format each release writes and reads (DUMP payloads carry it), newest first.
RDB_VERSIONS = (((7, 4), 12), ((7, 2), 11), ((7, 0), 10), ((0, 0), 9))
PROGRESS_SECONDS = 10.0


def _no_retry() -> Retry:
    # A pipeline sent again after a dropped connection would append list elements twice: fail instead.
    return Retry(NoBackoff(), 0)


def client(target: RedisTarget, db: int | None = None, raw: bool = False, timeout: float = 30) -> redis.Redis:
    conn = redis.Redis(
        host=target.host,
        port=target.port,
        db=target.db if db is None else db,
        username=target.username,
        password=target.password,
        ssl=target.tls,
        socket_timeout=timeout,
        socket_connect_timeout=10,
        retry=_no_retry(),
        protocol=2,
    )
    return _raw(conn) if raw else conn


def _raw(conn: redis.Redis) -> redis.Redis:
    """Replies as Redis sends them: scores as printed, stream fields in order and with repeats."""
    conn.response_callbacks.clear()
    return conn


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


def source_layout(target: RedisTarget) -> dict[str, Any]:
    """For the manifest: key count per database and the server's number of databases."""
    conn = client(target)
    try:
        counts = keyspace(conn)
        databases = _config_databases(_raw(client(target)))
    except redis.RedisError as exc:
        raise SourceError(f"reading the keyspace of Redis at {target.redacted()} failed: {exc}") from exc
    if databases is None:
        databases = max(counts, default=0) + 1
    return {"keyspace": {str(db): n for db, n in sorted(counts.items())}, "databases": databases}


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
    raise TargetError(
        f"no directory for the temporary redis-server's unix socket: TMPDIR ({tempfile.gettempdir()}) "
        f"is too long for a socket path (at most {SOCKET_PATH_MAX} bytes) and /tmp is not writable; "
        "set TMPDIR to a short writable directory"
    )


def manifest_layout(manifest: dict[str, Any]) -> dict[str, Any]:
    """targets.redis of a manifest ({} when absent)."""
    layout = (manifest.get("targets") or {}).get("redis")
    return layout if isinstance(layout, dict) else {}


def manifest_dbs(layout: dict[str, Any]) -> dict[int, int] | None:
    """The set's databases and key counts as recorded at backup time; None for sets from before it was recorded."""
    space = layout.get("keyspace")
    if not isinstance(space, dict):
        return None
    return {int(db): int(n) for db, n in space.items() if int(n) > 0}


def helper_databases(layout: dict[str, Any]) -> int:
    """`--databases` of the private redis-server: room for every database of the source."""
    recorded = manifest_dbs(layout) or {}
    return max(16, int(layout.get("databases") or 0), max(recorded, default=0) + 1)


@contextmanager
def loaded_rdb(rdb: Path, databases: int = 16) -> Iterator[redis.Redis]:
    """A private redis-server (unix socket only, no TCP) that has loaded `rdb`; client for db 0.

    An RDB with more databases than `databases` (a set from before the manifest recorded the count)
    makes redis-server exit at once; it is started again with room for more.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise TargetError("redis-server is not installed; the restore loads the RDB into a temporary local server")
    # The RDB stays on the work disk next to where it was written; only the socket needs a short path.
    work = Path(tempfile.mkdtemp(prefix="redis-", dir=rdb.parent))
    sock_dir = socket_dir()
    sock = sock_dir / "redis.sock"
    server: subprocess.Popen[bytes] | None = None
    try:
        shutil.move(str(rdb), work / "dump.rdb")
        while True:
            server = _start_helper(binary, work, sock, databases)
            tail = _wait_loaded(server, work, sock)
            if tail is None:
                break
            if "configured to handle more than" in tail and databases < 1 << 24:
                databases *= 16
                log.info("the RDB holds more databases than the temporary redis-server had; starting it again", databases=databases)
                continue
            raise TargetError(
                f"temporary redis-server could not load the RDB ({proc.describe_exit('redis-server', server.returncode)}): {tail}"
            )
        yield redis.Redis(unix_socket_path=str(sock), socket_timeout=300, retry=_no_retry(), protocol=2)
    finally:
        if server is not None:
            _stop(server)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(sock_dir, ignore_errors=True)


def _start_helper(binary: str, work: Path, sock: Path, databases: int) -> subprocess.Popen[bytes]:
    argv = [
        binary,
        "--port",
        "0",
        "--unixsocket",
        str(sock),
        "--unixsocketperm",
        "700",
        "--dir",
        str(work),
        "--dbfilename",
        "dump.rdb",
        "--save",
        "",
        "--appendonly",
        "no",
        "--databases",
        str(databases),
        "--daemonize",
        "no",
        "--logfile",
        str(work / "redis.log"),
    ]
    return proc.popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_loaded(server: subprocess.Popen[bytes], work: Path, sock: Path) -> str | None:
    """None once the RDB is loaded; the log's tail when redis-server exited instead."""
    conn = redis.Redis(unix_socket_path=str(sock), socket_timeout=60, retry=_no_retry(), protocol=2)
    deadline = time.monotonic() + 600
    try:
        while True:
            if server.poll() is not None:
                return (work / "redis.log").read_text(errors="replace")[-1500:]
            try:
                if conn.info("persistence").get("loading") == 0:
                    return None
            except (redis.ConnectionError, redis.BusyLoadingError, FileNotFoundError):
                pass
            if time.monotonic() > deadline:
                raise TargetError("temporary redis-server did not finish loading the RDB within 600s")
            time.sleep(0.05)
    finally:
        conn.close()


def _stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def keyspace(conn: redis.Redis) -> dict[int, int]:
    """Key count per database number, from INFO keyspace."""
    info = conn.info("keyspace")
    return {int(name[2:]): int(v["keys"]) for name, v in info.items() if name.startswith("db") and int(v["keys"])}


def database_count(conn: redis.Redis) -> int:
    """Number of databases of a server: CONFIG GET where allowed, else the highest SELECT it accepts."""
    raw = _raw(redis.Redis(connection_pool=conn.connection_pool))
    count = _config_databases(raw)
    if count is not None:
        return count
    good, bad = 0, 16  # SELECT accepts `good` (db 0 always exists); find the first index it refuses
    while _selectable(conn, bad):
        good, bad = bad, bad * 2
        if bad > 1 << 24:
            return bad
    while bad - good > 1:
        mid = (good + bad) // 2
        good, bad = (mid, bad) if _selectable(conn, mid) else (good, mid)
    return bad


def _config_databases(raw: redis.Redis) -> int | None:
    try:
        reply = raw.execute_command("CONFIG", "GET", "databases")
    except redis.ResponseError:
        return None  # CONFIG is disabled (Azure Cache for Redis) or not allowed to this user
    return int(reply[1]) if isinstance(reply, list) and len(reply) == 2 else None


def _selectable(conn: redis.Redis, db: int) -> bool:
    connection = conn.connection_pool.get_connection()
    try:
        connection.send_command("SELECT", db)
        connection.read_response()
        return True
    except redis.ResponseError:
        return False
    finally:
        connection.disconnect()  # it may now sit in another database
        conn.connection_pool.release(connection)


def version_of(text: str) -> tuple[int, int, int]:
    parts = [int(p) if p.isdigit() else 0 for p in [*text.split("."), "0", "0"][:3]]
    return parts[0], parts[1], parts[2]


def require_supported(text: str, where: str) -> tuple[int, int, int]:
    version = version_of(text)
    if version[:2] < MIN_VERSION:
        raise TargetError(
            f"Redis at {where} runs {text}; the restore supports Redis "
            f"{MIN_VERSION[0]}.{MIN_VERSION[1]} and newer: upgrade the target first"
        )
    return version


def rdb_version(version: tuple[int, int, int]) -> int:
    return next(n for since, n in RDB_VERSIONS if version[:2] >= since)


def _where(target: RedisTarget, db: int | None = None) -> str:
    return f"{target.host}:{target.port}" + ("" if db is None else f"/{db}")


def label(key: bytes) -> str:
    """How a key is named in logs and errors: key names can hold personal data, so only a hash prefix."""
    return "key sha256:" + hashlib.sha256(key).hexdigest()[:12]


@dataclass
class Plan:
    """Where each of the set's databases goes, decided before anything on the target is written."""

    version: tuple[int, int, int]
    dbs: dict[int, int]  # the set's database -> its key count
    staging: dict[int, int] = field(default_factory=dict)  # non-empty target db -> empty db it is restored into first
    dump: bool = False  # the target runs the helper's major.minor: DUMP/RESTORE
    via_restore: frozenset[int] = frozenset()  # databases whose hashes carry field TTLs: their hashes go by RESTORE


def check_target(target: RedisTarget) -> tuple[int, int, int]:
    """Credentials, a supported version and a non-cluster server; returns the version. Reads only."""
    version = require_supported(check(target, error=TargetError), _where(target))
    try:
        cluster = client(target).info("cluster").get("cluster_enabled")
    except redis.RedisError as exc:
        raise TargetError(f"Redis at {_where(target)} failed: {exc}") from exc
    if cluster == 1:
        raise TargetError(
            f"Redis at {_where(target)} runs in cluster mode: the restore writes through one "
            "connection and keeps database numbers, which a cluster does not have; restore into a "
            "non-clustered Redis (or a cluster's single-shard endpoint) instead"
        )
    return version


def plan_target(target: RedisTarget, dbs: dict[int, int], force: bool) -> Plan:
    """Every refusal about the target that the set's database numbers decide; reads only (a SWAPDB of an empty
    database with itself proves the command is allowed)."""
    version = check_target(target)
    conn = client(target)
    try:
        count = database_count(conn)
        if dbs and max(dbs) >= count:
            raise TargetError(
                f"Redis at {_where(target)} has {count} databases, but the set holds database "
                f"{max(dbs)}: configure the target with `databases {max(dbs) + 1}` or more"
            )
        live = keyspace(conn)
        busy = [db for db in sorted(dbs) if live.get(db)]
        if busy and not force:
            db = busy[0]
            raise TargetError(
                f"Redis target {_where(target, db)} is not empty ({live[db]} keys); restore refuses to overwrite it without --force"
            )
        plan = Plan(version, dict(dbs))
        if busy:
            free = [db for db in range(count - 1, -1, -1) if db not in dbs and not live.get(db)]
            if len(free) < len(busy):
                raise TargetError(
                    f"--force into the non-empty database(s) {busy} of Redis at {_where(target)} needs as many empty "
                    f"databases to stage the restore in, but only {len(free)} of its {count} are empty and unused by "
                    "the set: empty one, raise `databases`, or flush the target yourself and restore without --force"
                )
            plan.staging = dict(zip(busy, free, strict=False))
            _probe_swapdb(target, free[0])
        return plan
    except redis.RedisError as exc:
        raise TargetError(f"Redis at {_where(target)} failed while checking its databases: {exc}") from exc


def _probe_swapdb(target: RedisTarget, empty_db: int) -> None:
    try:
        client(target).execute_command("SWAPDB", empty_db, empty_db)
    except redis.ResponseError as exc:
        raise TargetError(
            f"--force needs SWAPDB on Redis at {_where(target)}, which refused it ({exc}): a non-empty database is "
            "replaced only by swapping in a complete copy. Allow SWAPDB for this user (ACL +swapdb) or stop renaming "
            "it, or flush the target database yourself and restore without --force"
        ) from exc


def check_contents(helper: redis.Redis, target: RedisTarget, plan: Plan) -> None:
    """The last refusals, from the loaded data: types the target can't take, and room under its maxmemory."""
    helper_version = version_of(str(helper.info("server").get("redis_version", "0")))
    plan.dump = helper_version[:2] == plan.version[:2]
    # Hash field TTLs (Redis 7.4+) have no command older targets know; INFO counts those hashes per database.
    space = helper.info("keyspace")
    field_ttls = {db: int(space.get(f"db{db}", {}).get("subexpiry", 0)) for db in plan.dbs}
    plan.via_restore = frozenset(db for db, n in field_ttls.items() if n)
    if not plan.dump:
        _check_types(helper, target, plan, helper_version, field_ttls)
    helper_memory = helper.info("memory")
    need = int(helper_memory["used_memory"]) - int(helper_memory.get("used_memory_startup", 0))
    try:
        memory = client(target).info("memory")
    except redis.RedisError as exc:
        raise TargetError(f"Redis at {_where(target)} failed: {exc}") from exc
    used, limit = int(memory["used_memory"]), int(memory.get("maxmemory") or 0)
    if limit and used + need > limit:
        raise TargetError(
            f"Redis at {_where(target)} uses {used / 1e6:.0f} MB of its maxmemory {limit / 1e6:.0f} MB, and the set "
            f"needs about {need / 1e6:.0f} MB more (replaced data stays until the restored copy is swapped in): "
            "raise maxmemory or free memory first; nothing was written"
        )


def _check_types(
    helper: redis.Redis, target: RedisTarget, plan: Plan, helper_version: tuple[int, int, int], field_ttls: dict[int, int]
) -> None:
    """Keys that native commands can't rebuild on this target go by RESTORE, if the target reads the payload."""
    foreign: list[str] = []
    for db in sorted(plan.dbs):
        for kind, n in sorted(_survey(_helper_db(helper, db)).items()):
            if kind not in NATIVE_TYPES:
                foreign.append(f"{n} key(s) of type {kind} in db {db}")
        if field_ttls.get(db) and plan.version[:2] < (7, 4):
            foreign.append(f"{field_ttls[db]} hash(es) with field expirations in db {db}")
    readable, payload = rdb_version(plan.version), rdb_version(helper_version)
    if foreign and payload > readable:
        raise TargetError(
            f"Redis at {_where(target)} runs {'.'.join(map(str, plan.version))}, which cannot rebuild "
            f"{'; '.join(foreign)} with its own commands, nor read their DUMP payloads (RDB version {payload} from "
            f"Redis {helper_version[0]}.{helper_version[1]}; it reads up to {readable}). Nothing was written: restore "
            f"into Redis {helper_version[0]}.{helper_version[1]} or newer"
        )


def _helper_db(helper: redis.Redis, db: int) -> redis.Redis:
    path = helper.connection_pool.connection_kwargs["path"]
    return _raw(redis.Redis(unix_socket_path=path, db=db, socket_timeout=300, retry=_no_retry(), protocol=2))


def _survey(src: redis.Redis) -> Counter[str]:
    """Key count per type of one database."""
    kinds: Counter[str] = Counter()
    for keys in _scan(src):
        pipe = src.pipeline(transaction=False)
        for key in keys:
            pipe.execute_command("TYPE", key)
        for kind in pipe.execute():
            kinds[_text(kind)] += 1
    kinds.pop("none", None)
    return kinds


def _scan(conn: redis.Redis, count: int = SCAN_COUNT) -> Iterator[list[bytes]]:
    cursor: bytes | int = 0
    while True:
        cursor, keys = conn.execute_command("SCAN", cursor, "COUNT", count)
        if keys:
            yield keys
        if int(cursor) == 0:
            return


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def plan_restore(helper: redis.Redis, target: RedisTarget, force: bool) -> Plan:
    """Every check against the target, before anything is written to it (reads only)."""
    counts = keyspace(helper)
    plan = plan_target(target, counts, force)
    check_contents(helper, target, plan)
    log.info(
        "redis restore plan",
        target=_where(target),
        target_version=".".join(map(str, plan.version)),
        databases=sorted(counts),
        staging={str(k): v for k, v in plan.staging.items()},
        method="DUMP/RESTORE" if plan.dump else "native commands",
    )
    return plan


@dataclass
class Prepared:
    """Restored copies waiting to be put in place: empty databases written directly (their target had
    nothing) and staging databases. `commit` swaps the staged copies in with one transaction;
    `abandon`, before that, empties again only the databases this restore wrote."""

    target: RedisTarget
    plan: Plan
    keep_old: bool
    copied: dict[int, int] = field(default_factory=dict)  # keys per source database
    written: list[int] = field(default_factory=list)  # target databases written into; each was empty before
    swapped: bool = False

    def commit(self) -> None:
        if self.plan.staging:
            _swap(self.target, self.plan.staging, self)

    def abandon(self) -> None:
        # After the swap the staging databases hold the replaced data: never flush them then.
        with proc.shielded():
            discard(self.target, [db for db in self.written if not (self.swapped and db in self.plan.staging.values())])

    def finish(self) -> dict[int, int]:
        for db, old in self.plan.staging.items():
            if self.keep_old:
                log.warning("the data this restore replaced is kept", db=db, kept_in_db=old, target=_where(self.target))
                continue
            try:
                client(self.target, old).execute_command("FLUSHDB", "ASYNC")
            except redis.RedisError as exc:
                log.warning(
                    f"the replaced data of db {db} is left in db {old}: flushing it failed: {_first_line(exc)}", target=_where(self.target)
                )
        return self.copied


def prepare(helper: redis.Redis, target: RedisTarget, plan: Plan, keep_old: bool, batch_bytes: int) -> Prepared:
    """Copy every database of the helper into the same database number of the target, or into its
    staging database; the target's data is untouched until `commit`."""
    prepared = Prepared(target, plan, keep_old)
    try:
        for db in sorted(keyspace(helper)):
            dest = plan.staging.get(db, db)
            where = f"db {db} into {_where(target)}" + (f" (staged in db {dest})" if dest != db else "")
            dst = client(target, dest, raw=True, timeout=300)
            try:
                if int(dst.execute_command("DBSIZE")):
                    raise TargetError(
                        f"restoring Redis {where} failed: db {dest} received keys from another client "
                        "since the checks; nothing of it was changed"
                    )
                prepared.written.append(dest)
                copier = _Copier(_helper_db(helper, db), dst, plan, db, where, batch_bytes)
                copier.run()
                copier.verify()
            except redis.RedisError as exc:
                raise TargetError(f"restoring Redis {where} failed: {type(exc).__name__}: {_first_line(exc)}") from None
            prepared.copied[db] = copier.keys
            log.info(
                "redis database restored",
                db=db,
                staged_in=dest if dest != db else None,
                keys=copier.keys,
                bytes=copier.bytes,
                seconds=round(time.monotonic() - copier.started, 2),
            )
    except BaseException:
        prepared.abandon()
        raise
    return prepared


def restore_loaded(helper: redis.Redis, target: RedisTarget, force: bool, keep_old: bool, batch_bytes: int) -> dict[int, int]:
    """Plan, copy and put in place at once (a restore of Redis alone, or the drill's); returns keys per database."""
    prepared = prepare(helper, target, plan_restore(helper, target, force), keep_old, batch_bytes)
    try:
        prepared.commit()
    except BaseException:
        prepared.abandon()
        raise
    return prepared.finish()


def _swap(target: RedisTarget, staging: dict[int, int], prepared: Prepared) -> None:
    """Every restored copy takes its database's place in one transaction."""
    pipe = client(target).pipeline(transaction=True)
    for db, stage in staging.items():
        pipe.execute_command("SWAPDB", db, stage)
    try:
        pipe.execute()
        prepared.swapped = True
    except redis.ConnectionError as exc:
        # The reply was lost: the swap may have happened. Keep every database as it is now.
        prepared.swapped = True
        raise TargetError(
            f"swapping the restored copies into place on Redis at {_where(target)}: no reply "
            f"({_first_line(exc)}); check which of the databases {staging} hold the restored data"
        ) from exc
    except redis.RedisError as exc:
        raise TargetError(f"swapping the restored copies into place on Redis at {_where(target)} failed: {_first_line(exc)}") from exc
    log.info("restored copies swapped in", target=_where(target), swapped={str(k): v for k, v in staging.items()})


def discard(target: RedisTarget, written: Sequence[int], why: str = "partial restore discarded") -> None:
    """Empty again the databases a restore wrote into (they were empty before): after a failure, or a drill."""
    for db in written:
        try:
            client(target, db).execute_command("FLUSHDB", "ASYNC")
            log.info(why, db=db, target=_where(target))
        except redis.RedisError as exc:
            log.error(
                f"db {db} of Redis at {_where(target)} holds a partial restore and flushing it failed ({exc}): "
                "run FLUSHDB on that database",
                db=db,
            )


@dataclass
class _Item:
    key: bytes
    kind: str
    expire_at: int  # absolute ms, 0 = none
    size: int


class _Copier:
    """One database of the helper into one database of the target, in batches bounded by bytes."""

    def __init__(self, src: redis.Redis, dst: redis.Redis, plan: Plan, db: int, where: str, budget: int) -> None:
        self.src, self.dst, self.plan, self.db, self.where, self.budget = src, dst, plan, db, where, budget
        self.keys = 0
        self.bytes = 0
        self.expiries = array("q")  # absolute expiry of each key written with one: keys may expire during the copy
        self.started = time.monotonic()
        self.reported = self.started

    def run(self) -> None:
        for keys in _scan(self.src):
            for batch in batches(self._describe(keys), self.budget):
                self._write(batch)
            if time.monotonic() - self.reported > PROGRESS_SECONDS:
                self.reported = time.monotonic()
                log.info("redis restore progress", db=self.db, keys=self.keys, bytes=self.bytes)

    def _describe(self, keys: list[bytes]) -> list[_Item]:
        pipe = self.src.pipeline(transaction=False)
        for key in keys:
            pipe.execute_command("TYPE", key)
            pipe.execute_command("PEXPIRETIME", key)
            pipe.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0")
        replies = pipe.execute()
        items = []
        for i, key in enumerate(keys):
            kind, expire_at, size = _text(replies[3 * i]), int(replies[3 * i + 1]), replies[3 * i + 2]
            if kind == "none" or expire_at == -2:
                continue  # expired since SCAN listed it
            items.append(_Item(key, kind, max(expire_at, 0), int(size or 0)))
        return items

    def _by_restore(self, item: _Item) -> bool:
        if item.kind not in NATIVE_TYPES or (item.kind == "hash" and self.db in self.plan.via_restore):
            return True
        # The same version takes DUMP payloads exactly; a key too big for one batch is copied in pieces instead.
        return self.plan.dump and item.size <= self.budget

    def _write(self, batch: list[_Item]) -> None:
        restore = [i for i in batch if self._by_restore(i)]
        whole = [i for i in batch if not self._by_restore(i) and i.kind != "stream" and i.size <= self.budget]
        pieces = [i for i in batch if not self._by_restore(i) and (i.kind == "stream" or i.size > self.budget)]
        if restore:
            self._restore(restore)
        if whole:
            self._rebuild(whole)
        for item in pieces:
            self._rebuild_in_pieces(item)

    def _written(self, item: _Item) -> None:
        self.keys += 1
        self.bytes += item.size
        if item.expire_at:
            self.expiries.append(item.expire_at)

    def _run(self, pipe: Any, owners: list[_Item]) -> None:
        """Execute a pipeline of writes; an error names the database and the key's hash, never its value."""
        try:
            replies = pipe.execute(raise_on_error=False)
        except redis.RedisError as exc:
            raise TargetError(f"restoring Redis {self.where} failed: {type(exc).__name__}: {_first_line(exc)}") from None
        for reply, item in zip(replies, owners, strict=True):
            if isinstance(reply, Exception):
                raise TargetError(
                    f"restoring Redis {self.where} failed at {label(item.key)} (type {item.kind}): "
                    f"{type(reply).__name__}: {_first_line(reply)}"
                ) from None

    def _read(self, pipe: Any) -> list[Any]:
        try:
            return list(pipe.execute())
        except redis.RedisError as exc:
            raise TargetError(f"reading db {self.db} of the temporary redis-server failed: {_first_line(exc)}") from None

    def _restore(self, items: list[_Item]) -> None:
        read = self.src.pipeline(transaction=False)
        for item in items:
            read.execute_command("DUMP", item.key)
        write = self.dst.pipeline(transaction=False)
        owners = []
        for item, payload in zip(items, self._read(read), strict=True):
            if payload is None:
                continue  # expired since it was listed
            ttl = [item.expire_at, payload, "REPLACE", "ABSTTL"] if item.expire_at else [0, payload, "REPLACE"]
            write.execute_command("RESTORE", item.key, *ttl)
            owners.append(item)
            self._written(item)
        self._run(write, owners)

    def _rebuild(self, items: list[_Item]) -> None:
        """Small keys, each read whole and written with one command."""
        read = self.src.pipeline(transaction=False)
        for item in items:
            read.execute_command(*_read_whole(item.kind, item.key))
        write = self.dst.pipeline(transaction=False)
        owners: list[_Item] = []
        for item, value in zip(items, self._read(read), strict=True):
            if value is None or (item.kind != "string" and not value):
                continue  # expired since it was listed (a string may be empty, a collection never is)
            command = _create(item.kind, item.key, value)
            for args in (("DEL", item.key), command):
                write.execute_command(*args)
                owners.append(item)
            if item.expire_at:
                write.execute_command("PEXPIREAT", item.key, item.expire_at)
                owners.append(item)
            self._written(item)
        self._run(write, owners)

    def _rebuild_in_pieces(self, item: _Item) -> None:
        """A big key (or any stream) read and written in pieces, so memory holds one piece at a time."""
        self._one(item, ("DEL", item.key))
        if item.kind == "stream":
            if not self._stream(item):
                return
        elif sum(1 for _ in self._pieces(item)) == 0:
            return  # expired since it was listed
        if item.expire_at:
            self._one(item, ("PEXPIREAT", item.key, item.expire_at))  # last: the key never expires half-built
        self._written(item)

    def _one(self, item: _Item, *commands: Sequence[Any]) -> None:
        pipe = self.dst.pipeline(transaction=False)
        for args in commands:
            pipe.execute_command(*args)
        self._run(pipe, [item] * len(commands))

    def _pieces(self, item: _Item) -> Iterator[None]:
        """Copy a string or collection piece by piece; yields once per piece written."""
        src, key, kind = self.src, item.key, item.kind
        if kind == "string":
            step = max(1 << 20, min(self.budget, 8 << 20))
            size, offset = int(src.execute_command("STRLEN", key)), 0
            while offset < size:
                chunk = src.execute_command("GETRANGE", key, offset, offset + step - 1)
                self._one(item, ("SET" if offset == 0 else "APPEND", key, chunk))
                offset += len(chunk)
                yield
            return
        length = int(src.execute_command(_LENGTH[kind], key))
        count = max(1, min(MAX_ELEMENTS, self.budget // max(1, item.size // max(1, length))))
        if kind == "list":
            for start in range(0, length, count):
                values = src.execute_command("LRANGE", key, start, start + count - 1)
                if values:
                    self._one(item, ("RPUSH", key, *values))
                    yield
            return
        cursor: bytes | int = 0
        while True:
            cursor, values = src.execute_command(_SCAN_COMMAND[kind], key, cursor, "COUNT", count)
            if values:
                self._one(item, _create(kind, key, values))
                yield
            if int(cursor) == 0:
                return

    def _stream(self, item: _Item) -> bool:
        """Entries, then the stream's ids, its consumer groups, their consumers and pending entries."""
        src, key = self.src, item.key
        try:
            info = _pairs(src.execute_command("XINFO", "STREAM", key))
        except redis.ResponseError:
            return False  # expired since it was listed
        length = int(info.get("length", 0))
        count = max(1, min(MAX_ELEMENTS, self.budget // max(1, item.size // max(1, length))))
        start: bytes | str = "-"
        while True:
            entries = src.execute_command("XRANGE", key, start, "+", "COUNT", count)
            if not entries:
                break
            self._one(item, *[("XADD", key, entry_id, *fields) for entry_id, fields in entries])
            start = b"(" + entries[-1][0]
        if not length:  # an empty stream exists only through a consumer group made with MKSTREAM
            group = "ipa-backup-" + os.urandom(6).hex()
            self._one(item, ("XGROUP", "CREATE", key, group, "$", "MKSTREAM"), ("XGROUP", "DESTROY", key, group))
        setid: list[Any] = ["XSETID", key, info["last-generated-id"]]
        if self.plan.version >= (7, 0, 0) and "entries-added" in info:
            setid += ["ENTRIESADDED", info["entries-added"], "MAXDELETEDID", info["max-deleted-entry-id"]]
        self._one(item, setid)
        for group in src.execute_command("XINFO", "GROUPS", key):
            self._group(item, _pairs(group))
        return True

    def _group(self, item: _Item, group: dict[str, Any]) -> None:
        src, key, name = self.src, item.key, group["name"]
        create: list[Any] = ["XGROUP", "CREATE", key, name, group["last-delivered-id"]]
        if self.plan.version >= (7, 0, 0) and group.get("entries-read") is not None:
            create += ["ENTRIESREAD", group["entries-read"]]
        consumers = [_pairs(c)["name"] for c in src.execute_command("XINFO", "CONSUMERS", key, name)]
        self._one(item, create, *[("XGROUP", "CREATECONSUMER", key, name, c) for c in consumers])
        start: bytes | str = "-"
        while True:
            pending = src.execute_command("XPENDING", key, name, start, "+", MAX_ELEMENTS)
            if not pending:
                return
            # FORCE JUSTID puts each entry in the consumer's pending list as it was, without delivering it.
            self._one(
                item,
                *[
                    ("XCLAIM", key, name, consumer, 0, entry_id, "IDLE", idle, "RETRYCOUNT", deliveries, "FORCE", "JUSTID")
                    for entry_id, consumer, idle, deliveries in pending
                ],
            )
            start = b"(" + pending[-1][0]

    def verify(self) -> None:
        """The target database holds as many keys as the helper's, give or take keys that expired meanwhile."""
        have, want = int(self.dst.execute_command("DBSIZE")), int(self.src.execute_command("DBSIZE"))
        now = time.time() * 1000 + 1000
        expired = sum(1 for at in self.expiries if at <= now)
        if abs(have - want) > expired:
            raise TargetError(
                f"restoring Redis {self.where} failed: the target database holds {have} keys after the copy, the backup {want}"
            )


def _read_whole(kind: str, key: bytes) -> tuple[Any, ...]:
    return {
        "string": ("GET", key),
        "hash": ("HGETALL", key),
        "list": ("LRANGE", key, 0, -1),
        "set": ("SMEMBERS", key),
        "zset": ("ZRANGE", key, 0, -1, "WITHSCORES"),
    }[kind]


_LENGTH = {"hash": "HLEN", "list": "LLEN", "set": "SCARD", "zset": "ZCARD"}
_SCAN_COMMAND = {"hash": "HSCAN", "set": "SSCAN", "zset": "ZSCAN"}


def _create(kind: str, key: bytes, value: Any) -> tuple[Any, ...]:
    """The command that writes a value read by GET/HGETALL/LRANGE/SMEMBERS/ZRANGE WITHSCORES or a *SCAN piece."""
    if kind == "string":
        return ("SET", key, value)
    if kind == "hash":
        return ("HSET", key, *value)
    if kind == "list":
        return ("RPUSH", key, *value)
    if kind == "set":
        return ("SADD", key, *value)
    # zset: member, score pairs -> ZADD score member (the score as Redis printed it: the same double)
    return ("ZADD", key, *[v for i in range(0, len(value), 2) for v in (value[i + 1], value[i])])


def _pairs(flat: Sequence[Any]) -> dict[str, Any]:
    return {_text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}


def _first_line(exc: BaseException) -> str:
    """The error's first line without what a server may quote from the command: Redis repeats the
    arguments of an unknown or refused command ("... with args beginning with: 'key' 'value'")."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text.split(", with args beginning with", 1)[0].split(" with args beginning with", 1)[0][:300]


def batches(items: Iterable[_Item], budget: int) -> Iterator[list[_Item]]:
    """Consecutive items whose sizes add up to at most `budget`; a bigger item forms a batch of its own."""
    batch: list[_Item] = []
    total = 0
    for item in items:
        if batch and total + item.size > budget:
            yield batch
            batch, total = [], 0
        batch.append(item)
        total += item.size
    if batch:
        yield batch


# The drill's content check.

SAMPLE_KEYS = 200


def drill_checks(helper: redis.Redis, target: RedisTarget, dbs: Sequence[int]) -> list[dict[str, Any]]:
    """Key counts per database, and type and value of a sample of keys, between the loaded RDB and the restore."""
    got = {db: int(client(target, db).dbsize()) for db in dbs}
    want = {db: int(_helper_db(helper, db).execute_command("DBSIZE")) for db in dbs}
    compared, problems = sample_mismatches(helper, target, dbs)
    return [
        {"name": "redis key counts", "passed": got == want, "detail": f"restored {got}, backup has {want}"},
        {
            "name": "redis content sample",
            "passed": not problems,
            "detail": "; ".join(problems[:20]) or f"type and value of {compared} sampled keys in {len(dbs)} database(s) match",
        },
    ]


def sample_mismatches(helper: redis.Redis, target: RedisTarget, dbs: Iterable[int], per_db: int = SAMPLE_KEYS) -> tuple[int, list[str]]:
    """Compare type and a value fingerprint of the first `per_db` keys of each database; (keys compared, problems)."""
    compared, problems = 0, []
    for db in dbs:
        src = _helper_db(helper, db)
        dst = client(target, db, raw=True, timeout=300)
        keys = next(_scan(src, per_db), [])[:per_db]
        for key in keys:
            want = fingerprint(src, key)
            if want is None:
                continue  # expired meanwhile
            compared += 1
            got = fingerprint(dst, key)
            if got != want:
                what = "missing" if got is None else f"{got[0]} differs" if got[0] == want[0] else f"{got[0]} instead of {want[0]}"
                problems.append(f"db {db} {label(key)}: {what}")
    return compared, problems


def fingerprint(conn: redis.Redis, key: bytes) -> tuple[str, bool, str] | None:
    """(type, has a TTL, digest of the value), read in pieces; None for a missing key. Unordered types hash
    each element and add the hashes, so the order in which a server returns them does not matter; zset
    scores are compared as doubles (Redis 7.0 and 7.2+ print them differently)."""
    kind = _text(conn.execute_command("TYPE", key))
    if kind == "none":
        return None
    ordered = hashlib.sha256()
    unordered = 0

    def add(*parts: bytes) -> None:
        nonlocal unordered
        element = hashlib.sha256(b"".join(len(p).to_bytes(8, "big") + p for p in parts)).digest()
        if kind in ("hash", "set"):
            unordered = (unordered + int.from_bytes(element, "big")) % (1 << 256)
        else:
            ordered.update(element)

    if kind == "string":
        offset = 0
        while chunk := conn.execute_command("GETRANGE", key, offset, offset + (1 << 20) - 1):
            ordered.update(chunk)
            offset += len(chunk)
    elif kind in ("hash", "set"):
        cursor: bytes | int = 0
        while True:
            cursor, values = conn.execute_command(_SCAN_COMMAND[kind], key, cursor, "COUNT", 1000)
            step = 2 if kind == "hash" else 1
            for i in range(0, len(values), step):
                add(*values[i : i + step])
            if int(cursor) == 0:
                break
    elif kind in ("list", "zset"):
        for start in range(0, int(conn.execute_command(_LENGTH[kind], key)), 1000):
            if kind == "list":
                for value in conn.execute_command("LRANGE", key, start, start + 999):
                    add(value)
            else:
                values = conn.execute_command("ZRANGE", key, start, start + 999, "WITHSCORES")
                for i in range(0, len(values), 2):
                    add(values[i], repr(float(values[i + 1])).encode())
    elif kind == "stream":
        first: bytes | str = "-"
        while entries := conn.execute_command("XRANGE", key, first, "+", "COUNT", 1000):
            for entry_id, fields in entries:
                add(entry_id, *fields)
            first = b"(" + entries[-1][0]
        for group in conn.execute_command("XINFO", "GROUPS", key):
            g = _pairs(group)
            add(g["name"], g["last-delivered-id"], str(g["pending"]).encode())
    # Other types (modules, vector sets) have no portable reading: their type is compared, not their value.
    digest = ordered.hexdigest() + f"{unordered:064x}"
    return kind, int(conn.execute_command("PTTL", key)) > 0, digest
