"""A real redis-server from this machine's Debian package, on a free 127.0.0.1 port.

Usage::

    with redis_server(password="s3cret") as rs:
        rs.url            # redis://:s3cret@127.0.0.1:<port>/0  (REDIS_URL)
        rs.cli("SET", "k", "v")

Persistence is off (no RDB/AOF files); data lives only while the server runs. `major` picks a
Redis major: this machine's package when it is that major, else Debian 13's Redis 8 in
build/servers-rootfs (scripts/servers-rootfs.sh), run with chroot.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from devservices.process import ManagedProcess, ServiceError, free_port, require_binary
from devservices.rootfs import SERVERS_HINT, servers_rootfs

INSTALL_HINT = "run `bash scripts/setup/services.sh` (installs Debian's redis-server and redis-tools)"


@dataclass
class RedisServer:
    host: str
    port: int
    password: str | None
    version: str
    process: ManagedProcess = field(repr=False)

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    def url_for(self, db: int = 0, password: str | None = None) -> str:
        pw = self.password if password is None else password
        auth = f":{quote(pw, safe='')}@" if pw else ""
        return f"redis://{auth}{self.host}:{self.port}/{db}"

    @property
    def url(self) -> str:
        """REDIS_URL of database 0."""
        return self.url_for(0)

    def cli(self, *args: str, db: int = 0, timeout: float = 30.0) -> str:
        """Run one redis-cli command (password through REDISCLI_AUTH, never argv); return stdout."""
        env = {**os.environ}
        if self.password:
            env["REDISCLI_AUTH"] = self.password
        result = subprocess.run(
            [require_binary("redis-cli", INSTALL_HINT), "-h", self.host, "-p", str(self.port), "-n", str(db), *args],
            capture_output=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        out = result.stdout.decode(errors="replace")
        if result.returncode != 0 or out.startswith("ERR") or out.startswith("NOAUTH"):
            raise ServiceError(f"redis-cli {args[0] if args else ''} failed: {out}{result.stderr.decode(errors='replace')}")
        return out


def server_version(argv: list[str]) -> str:
    """`redis-server --version` -> "7.0.15"."""
    out = subprocess.run([*argv, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    match = re.search(r"v=(\d+\.\d+\.\d+)", out)
    if not match:
        raise ServiceError(f"cannot tell the version of {' '.join(argv)}: {out!r}")
    return match.group(1)


@contextmanager
def redis_server(password: str | None = None, base_dir: Path | None = None, major: int | None = None) -> Iterator[RedisServer]:
    """Start redis-server (with `requirepass` when a password is given); stop it on exit."""
    command = [require_binary("redis-server", INSTALL_HINT)]
    version = server_version(command)
    root: Path | None = None
    if major is not None and int(version.split(".")[0]) != major:
        root = servers_rootfs()
        command = ["chroot", str(root), "redis-server"]
        version = server_version(command)
        if int(version.split(".")[0]) != major:
            raise ServiceError(f"no Redis {major} on this machine nor in {root} (it has {version}): {SERVERS_HINT}")
        base_dir = root / "tmp"
    tmp = Path(tempfile.mkdtemp(prefix="devservices-redis-", dir=base_dir))
    seen = Path("/") / tmp.relative_to(root) if root is not None else tmp
    port = free_port()
    conf = tmp / "redis.conf"
    lines = [
        "bind 127.0.0.1",
        f"port {port}",
        f"dir {seen}",
        'save ""',
        "appendonly no",
        "protected-mode yes",
        "daemonize no",
        "databases 16",
        # Serve `redis-cli --rdb` (a replica sync) at once instead of waiting 5 s for more replicas.
        "repl-diskless-sync-delay 0",
    ]
    if password:
        escaped = password.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'requirepass "{escaped}"')
    conf.write_text("\n".join(lines) + "\n")
    os.chmod(conf, 0o600)
    proc = ManagedProcess("redis-server", [*command, str(seen / "redis.conf")], tmp / "redis.log", cwd=tmp).start()
    try:
        proc.wait_for_port(port, timeout=30)
        yield RedisServer("127.0.0.1", port, password, version, proc)
    finally:
        proc.stop()
        shutil.rmtree(tmp, ignore_errors=True)
