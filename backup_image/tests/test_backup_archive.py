"""Data offsets patched into a real pg_dump custom archive written to a pipe (ipa_backup.archive).

The archives come from the image's own pg_dump of each major it carries, against a server of that
major (15: archive 1.14, 17: archive 1.16), and are restored with the image's pg_restore."""

from __future__ import annotations

import mmap
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import backup_testdata as data
import pytest
from conftest import PG_MAJORS
from ipa_backup import archive

from devservices.image import IN_IMAGE, image_path, image_workdir
from devservices.postgres import PostgresServer

pytestmark = pytest.mark.services


def _client(pg: PostgresServer, program: str) -> list[str]:
    """The image's `program` of the server's major."""
    return [str(IN_IMAGE), f"/usr/lib/postgresql/{pg.major}/bin/{program}"]


@pytest.fixture
def work() -> Iterator[Path]:
    """A folder inside the image rootfs that the image's user may write."""
    folder = image_workdir("archive-")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _toc(path: Path) -> archive.Toc:
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        return archive.read_toc(buf)


def _dump(pg: PostgresServer, database: str, out: Path, compress: str, to_pipe: bool) -> None:
    argv = [*_client(pg, "pg_dump"), "--format=custom", f"--compress={compress}"]
    env = {**os.environ, **pg.env(database)}
    if not to_pipe:
        subprocess.run([*argv, f"--file={image_path(out)}"], env=env, check=True)
        return
    with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE) as child, open(out, "wb") as handle:
        assert child.stdout is not None
        shutil.copyfileobj(child.stdout, handle)  # a pipe: pg_dump cannot seek back to fill in the offsets
    assert child.returncode == 0


def _listing(pg: PostgresServer, path: Path) -> list[str]:
    out = subprocess.run([*_client(pg, "pg_restore"), "-l", image_path(path)], capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if not line.startswith(";")]  # ";" lines: header, dump time


@pytest.fixture(scope="module", params=PG_MAJORS, ids=[f"pg{major}" for major in PG_MAJORS])
def pg_server(request: pytest.FixtureRequest) -> PostgresServer:  # this module's servers: every major
    server: PostgresServer = request.getfixturevalue(f"pg{request.param}")
    return server


@pytest.fixture(scope="module")
def source(pg_server: PostgresServer) -> str:
    name = "archive_source"
    pg_server.drop_database(name)
    pg_server.create_database(name)
    pg_server.psql(data.PG_SCHEMA, name)
    return name


@pytest.mark.parametrize("compress", ["0", "1"])  # 0: what ipa-backup dumps (find path); 1: gzip chunks (chunk walk)
def test_patched_pipe_archive_matches_the_file_archive(pg_server: PostgresServer, source: str, work: Path, compress: str) -> None:
    piped, direct = work / "piped.dump", work / "direct.dump"
    _dump(pg_server, source, piped, compress, to_pipe=True)
    _dump(pg_server, source, direct, compress, to_pipe=False)
    before, want = _toc(piped), _toc(direct)
    assert want.version[:2] in archive.SUPPORTED and want.compressed == (compress != "0")
    with_data = [e.dump_id for e in want.entries if e.offset_flag == archive.OFFSET_SET]
    assert len(with_data) == 5  # 4 tables and the large objects (a materialized view is refreshed, not dumped)
    assert {e.dump_id for e in before.entries if e.offset_flag == archive.OFFSET_NOT_SET} == set(with_data)

    assert archive.patch_offsets(piped) == len(with_data)

    after = _toc(piped)
    assert [(e.dump_id, e.offset_flag, e.offset) for e in after.entries] == [(e.dump_id, e.offset_flag, e.offset) for e in want.entries]
    # Only the offset fields changed: the data is byte for byte the file archive's.
    assert piped.read_bytes()[after.data_start :] == direct.read_bytes()[want.data_start :]
    assert _listing(pg_server, piped) == _listing(pg_server, direct)
    assert archive.patch_offsets(piped) == 0  # already set: left alone


def test_patched_archive_restores_with_two_jobs(pg_server: PostgresServer, source: str, work: Path) -> None:
    piped = work / "piped.dump"
    _dump(pg_server, source, piped, "0", to_pipe=True)
    assert archive.patch_offsets(piped) == 5
    target = "archive_restored"
    pg_server.drop_database(target)
    pg_server.create_database(target)
    result = subprocess.run(
        [*_client(pg_server, "pg_restore"), "--jobs=2", "--no-owner", "--exit-on-error", f"--dbname={target}", image_path(piped)],
        env={**os.environ, **pg_server.env(target)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert pg_server.psql(data.PG_FINGERPRINT, target) == pg_server.psql(data.PG_FINGERPRINT, source)


def test_broken_archives_are_refused(pg_server: PostgresServer, source: str, work: Path) -> None:
    piped = work / "piped.dump"
    _dump(pg_server, source, piped, "0", to_pipe=True)
    whole = piped.read_bytes()
    piped.write_bytes(whole[: len(whole) - 3000])  # cut inside the data
    with pytest.raises(archive.ArchiveFormatError, match="ends"):
        archive.patch_offsets(piped)
    piped.write_bytes(b"-- plain SQL, not an archive\n")
    with pytest.raises(archive.ArchiveFormatError, match="PGDMP"):
        archive.patch_offsets(piped)
    unknown = bytearray(whole)
    unknown[5:7] = bytes([1, 99])
    piped.write_bytes(bytes(unknown))
    with pytest.raises(archive.ArchiveFormatError, match=r"1\.99"):
        archive.patch_offsets(piped)
