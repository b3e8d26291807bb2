"""A real PostgreSQL server from this machine's Debian packages, on a free 127.0.0.1 port.

Usage::

    with postgres() as pg:                 # initdb + postgres in a private temp dir
        env = pg.env()                     # PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE
        pg.psql("CREATE TABLE t (id int)")
        pg.create_database("scratch")

`major` picks a server major: this machine's Debian packages when they have it, else Debian 13's
PostgreSQL 17 in build/servers-rootfs (scripts/servers-rootfs.sh), run with chroot. Either way
`pg.bin_dir` holds client programs this machine can run (psql, pg_isready, pgbench).

The superuser is `pg.user` with password `pg.password` (scram-sha-256 over TCP). When run as
root the server runs as the `postgres` system user (Debian's package creates it), because
PostgreSQL refuses to run as root. `fast=True` (the default) turns off fsync for test speed;
pass `fast=False` for benchmarks. `settings` adds or overrides server settings (`-c key=value`).
`base_dir` (default: the system temp dir) must be traversable by the `postgres` user when run as
root. Everything is removed on exit.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from devservices.process import ManagedProcess, ServiceError, free_port
from devservices.rootfs import SERVERS_HINT, servers_rootfs

INSTALL_HINT = "run `bash scripts/setup/services.sh` (installs Debian's postgresql)"


def pg_bin_dir(major: int | None = None, root: Path = Path("/")) -> Path:
    """The newest (or the given major's) <root>/usr/lib/postgresql/<major>/bin that has initdb and postgres."""
    found = []
    for path in glob.glob(f"{root}/usr/lib/postgresql/*/bin"):
        ver = Path(path).parent.name
        if ver.isdigit() and Path(path, "initdb").exists() and Path(path, "postgres").exists():
            found.append((int(ver), Path(path)))
    if major is not None:
        found = [f for f in found if f[0] == major]
    if not found:
        raise ServiceError(f"PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: {INSTALL_HINT}")
    return max(found)[1]


@dataclass
class PostgresServer:
    host: str
    port: int
    user: str
    password: str
    database: str
    bin_dir: Path
    data_dir: Path
    major: int
    process: ManagedProcess = field(repr=False)

    def env(self, database: str | None = None) -> dict[str, str]:
        """libpq environment for a client of this server (what the backup CronJob sets)."""
        return {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGPASSWORD": self.password,
            "PGDATABASE": database or self.database,
        }

    def psql(self, sql: str, database: str | None = None, timeout: float = 120.0) -> str:
        """Run SQL with psql (ON_ERROR_STOP); return unaligned, tuples-only output."""
        result = subprocess.run(
            [str(self.bin_dir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f", "-"],
            input=sql.encode(),
            capture_output=True,
            env={**os.environ, **self.env(database)},
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise ServiceError(f"psql failed ({result.returncode}): {result.stderr.decode(errors='replace')}")
        return result.stdout.decode()

    def create_database(self, name: str) -> None:
        self.psql(f'CREATE DATABASE "{name}"')

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _run_as(root: Path | None) -> tuple[list[str], int, int]:
    """Command prefix, uid and gid to run the server with (never root)."""
    if root is not None:
        if os.geteuid() != 0:
            raise ServiceError(f"a server from {root} runs with chroot, which needs root")
        entry = next((line.split(":") for line in (root / "etc/passwd").read_text().splitlines() if line.startswith("postgres:")), None)
        if entry is None:
            raise ServiceError(f"{root} has no `postgres` user: {SERVERS_HINT}")
        return ["chroot", str(root), "runuser", "-u", "postgres", "--"], int(entry[2]), int(entry[3])
    if os.geteuid() != 0:
        return [], os.getuid(), os.getgid()
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError as exc:
        raise ServiceError(f"running as root but there is no `postgres` user: {INSTALL_HINT}") from exc
    runuser = shutil.which("runuser")
    if runuser is None:
        raise ServiceError("running as root but `runuser` (util-linux) is missing")
    return [runuser, "-u", "postgres", "--"], pw.pw_uid, pw.pw_gid


def _server_location(major: int | None) -> tuple[Path | None, Path]:
    """(rootfs or None, server bin dir as the server sees it) for the wanted major."""
    try:
        return None, pg_bin_dir(major)
    except ServiceError:
        if major is None:
            raise
    root = servers_rootfs()
    try:
        inside = pg_bin_dir(major, root)
    except ServiceError as exc:
        raise ServiceError(f"no PostgreSQL {major} on this machine nor in {root}: {SERVERS_HINT}") from exc
    return root, Path("/") / inside.relative_to(root)


@contextmanager
def postgres(
    *,
    user: str = "postgres",
    password: str = "devservices-pg-password",
    database: str = "postgres",
    major: int | None = None,
    fast: bool = True,
    settings: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
    start_timeout: float = 60.0,
) -> Iterator[PostgresServer]:
    """Start a fresh PostgreSQL cluster; yield a PostgresServer; stop and delete it on exit."""
    root, server_bin = _server_location(major)
    bin_dir = pg_bin_dir() if root is not None else server_bin  # clients this machine runs
    prefix, uid, gid = _run_as(root)
    if root is not None:
        base_dir = root / "tmp"
    tmp = Path(tempfile.mkdtemp(prefix="devservices-pg-", dir=base_dir))

    def seen(path: Path) -> Path:
        """A path as the server sees it."""
        return Path("/") / path.relative_to(root) if root is not None else path

    os.chmod(tmp, 0o755)
    data_dir = tmp / "data"
    sock_dir = tmp / "sock"
    sock_dir.mkdir()
    pwfile = tmp / "pwfile"
    pwfile.write_text(password + "\n")
    for path in (pwfile, sock_dir):
        os.chown(path, uid, gid)
    os.chown(tmp, uid, gid)
    port = free_port()
    proc: ManagedProcess | None = None
    try:
        init = subprocess.run(
            [
                *prefix,
                str(server_bin / "initdb"),
                "-D",
                str(seen(data_dir)),
                "-U",
                user,
                f"--pwfile={seen(pwfile)}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ],
            capture_output=True,
            cwd=tmp,
            timeout=120,
            check=False,
        )
        if init.returncode != 0:
            raise ServiceError(f"initdb failed: {init.stdout.decode(errors='replace')}{init.stderr.decode(errors='replace')}")
        conf = {
            "listen_addresses": "127.0.0.1",
            "port": str(port),
            "unix_socket_directories": str(seen(sock_dir)),
            "max_connections": "100",
            "logging_collector": "off",
        }
        if fast:
            conf.update({"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"})
        conf.update(settings or {})
        argv = [*prefix, str(server_bin / "postgres"), "-D", str(seen(data_dir))]
        for key, value in conf.items():
            argv += ["-c", f"{key}={value}"]
        proc = ManagedProcess("postgres", argv, tmp / "postgres.log", cwd=tmp).start()
        server = PostgresServer("127.0.0.1", port, user, password, database, bin_dir, data_dir, int(server_bin.parent.name), proc)

        def ready() -> bool:
            probe = subprocess.run([str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-q"], timeout=5, check=False)
            return probe.returncode == 0

        proc.wait_until(ready, start_timeout, what="accepting connections")
        yield server
    finally:
        if proc is not None:
            _fast_shutdown(data_dir)
            proc.stop(grace=30)
        shutil.rmtree(tmp, ignore_errors=True)


def _fast_shutdown(data_dir: Path) -> None:
    """SIGINT to the postmaster = fast shutdown (SIGTERM would wait for every client)."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, signal.SIGINT)
    except (OSError, ValueError, IndexError):
        pass
