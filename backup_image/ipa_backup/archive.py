"""Data offsets for a pg_dump custom-format archive that was written to a pipe.

pg_dump writes the table of contents (TOC) before the data. When its output is a pipe it cannot
seek back afterwards to fill in where each table's data starts, so every data entry says "offset
not set" and each `pg_restore --jobs` worker has to read through the archive to find its table.
After the restore has written the verified archive to a local file, `patch_offsets` walks the data
blocks once and writes their positions into the TOC in place: the offset fields have a fixed
width, so nothing moves. The archive's bytes other than those fields are unchanged.

Layout (src/bin/pg_dump/pg_backup_archiver.c and pg_backup_custom.c, archive versions 1.14 to
1.16, written by pg_dump 12 to 17):
- an int is a sign byte and `int_size` little-endian magnitude bytes; a string is an int length
  (-1 for NULL) and that many bytes;
- header: "PGDMP", version major/minor/revision bytes, int size, offset size, format byte, the
  compression (an int before 1.15, an algorithm byte from 1.15), seven ints of creation time, and
  three strings (database name, server version, pg_dump version);
- TOC: an int count, then per entry its fields and, last, the data offset: a flag byte
  (1 not set, 2 set, 3 no data) and `off_size` little-endian bytes;
- data: per entry with data, a block type byte (1 table data, 3 large objects), the dump id, then
  length-prefixed chunks ending with a zero length (large-object blocks: per object its oid and
  chunks, ending with oid 0).
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import zstandard

MAGIC = b"PGDMP"
FORMAT_CUSTOM = 1
OFFSET_NOT_SET, OFFSET_SET, OFFSET_NO_DATA = 1, 2, 3
BLOCK_DATA, BLOCK_BLOBS = 1, 3
SUPPORTED = ((1, 14), (1, 15), (1, 16))  # pg_dump 12-15, 16, 17


class ArchiveFormatError(Exception):
    """The file is not a custom-format archive this module understands."""


class ArchiveEndsEarlyError(ArchiveFormatError):
    """The bytes end before the part being read does (a cut file, or only the beginning of one)."""


@dataclass(frozen=True)
class TocEntry:
    dump_id: int
    offset_flag: int
    offset_pos: int  # file position of the flag byte
    offset: int
    desc: str = ""  # "TABLE", "TABLE DATA", "ACL", "POLICY", "DATABASE", ...
    tag: str = ""
    namespace: str = ""
    owner: str = ""
    defn: str = ""  # the SQL that creates the object
    copy_stmt: str = ""  # "COPY schema.table (col, ...) FROM stdin;" of a TABLE DATA entry


@dataclass(frozen=True)
class Toc:
    version: tuple[int, int, int]
    int_size: int
    off_size: int
    compressed: bool
    entries: list[TocEntry]
    data_start: int
    database: str = ""
    server_version: str = ""  # of the server the dump was taken from
    dump_version: str = ""  # of pg_dump, e.g. "17.6 (Debian 17.6-0+deb13u1)"

    @property
    def dump_major(self) -> int:
        """pg_dump's major version: an archive is readable by pg_restore of that major or newer."""
        head = self.dump_version.split()[0] if self.dump_version.split() else ""
        digits = head.split(".")[0]
        if not digits.isdigit():
            raise ArchiveFormatError(f"archive names no pg_dump version it was written by ({self.dump_version!r})")
        return int(digits)


class _Reader:
    def __init__(self, buf: mmap.mmap | bytes, pos: int = 0) -> None:
        self.buf = buf
        self.pos = pos
        self.int_size = 4

    def byte(self) -> int:
        if self.pos >= len(self.buf):
            raise ArchiveEndsEarlyError(f"archive ends early at byte {self.pos}")
        value = self.buf[self.pos]
        self.pos += 1
        return value

    def int(self) -> int:
        end = self.pos + 1 + self.int_size
        if end > len(self.buf):
            raise ArchiveEndsEarlyError(f"archive ends early at byte {self.pos}")
        sign = self.buf[self.pos]
        value = int.from_bytes(self.buf[self.pos + 1 : end], "little")
        self.pos = end
        return -value if sign else value

    def text(self) -> str | None:
        """A string (None for NULL)."""
        length = self.int()
        if length < 0:
            return None
        end = self.pos + length
        if end > len(self.buf):
            raise ArchiveEndsEarlyError(f"archive ends early at byte {self.pos}")
        value = bytes(self.buf[self.pos : end]).decode("utf-8", errors="replace")
        self.pos = end
        return value

    def skip_str(self) -> bool:
        """Skip a string; False for NULL."""
        length = self.int()
        if length < 0:
            return False
        self.pos += length
        return True


def read_toc(buf: mmap.mmap | bytes) -> Toc:
    r = _Reader(buf)
    if bytes(buf[:5]) != MAGIC:
        raise ArchiveFormatError("not a pg_dump custom-format archive (no PGDMP magic)")
    r.pos = 5
    version = (r.byte(), r.byte(), r.byte())
    if version[:2] not in SUPPORTED:
        raise ArchiveFormatError(f"archive version {'.'.join(map(str, version))} is not supported")
    r.int_size = r.byte()
    off_size = r.byte()
    if r.byte() != FORMAT_CUSTOM:
        raise ArchiveFormatError("not a custom-format archive")
    # Compression algorithm (0 none) from 1.15, a zlib level (0 none, -1 default) before.
    compressed = (r.byte() if version[:2] >= (1, 15) else r.int()) != 0
    for _ in range(7):
        r.int()  # creation time
    database = r.text() or ""
    server_version = r.text() or ""
    dump_version = r.text() or ""
    entries = []
    for _ in range(r.int()):
        dump_id = r.int()
        r.int()  # had a data dumper
        for _ in range(2):
            r.skip_str()  # catalog id: table oid, oid
        tag, desc = r.text() or "", r.text() or ""
        r.int()  # section
        defn = r.text() or ""
        r.skip_str()  # drop statement
        copy_stmt, namespace = r.text() or "", r.text() or ""
        r.skip_str()  # tablespace
        r.skip_str()  # table access method
        if version[:2] >= (1, 16):
            r.int()  # relkind
        owner = r.text() or ""
        r.skip_str()  # "false" (with oids)
        while r.skip_str():
            pass  # dependencies, ended by NULL
        flag_pos = r.pos
        flag = r.byte()
        if flag not in (OFFSET_NOT_SET, OFFSET_SET, OFFSET_NO_DATA):
            raise ArchiveFormatError(f"TOC entry {dump_id} has an unknown offset flag {flag}")
        offset = int.from_bytes(buf[r.pos : r.pos + off_size], "little")
        r.pos += off_size
        entries.append(TocEntry(dump_id, flag, flag_pos, offset, desc, tag, namespace, owner, defn, copy_stmt))
    return Toc(version, r.int_size, off_size, compressed, entries, r.pos, database, server_version, dump_version)


TOC_PREFIX_START = 1 << 20


def read_archive_toc(path: Path) -> Toc:
    """The header and table of contents of the archive file at `path` (read only). A `.zst` file is
    read compressed: only the beginning that holds the TOC is decompressed."""
    if path.suffix == ".zst":
        return _read_compressed_toc(path)
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            raise ArchiveFormatError("archive is empty")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return read_toc(buf)


def _read_compressed_toc(path: Path) -> Toc:
    """Decompress ever longer beginnings of `path` until the TOC in them is whole."""
    want = TOC_PREFIX_START
    while True:
        with open(path, "rb") as handle, zstandard.ZstdDecompressor().stream_reader(handle) as reader:
            pieces, got = [], 0
            while got < want and (piece := reader.read(want - got)):
                pieces.append(piece)
                got += len(piece)
            prefix = b"".join(pieces)
            more = got == want
        try:
            return read_toc(prefix)
        except ArchiveEndsEarlyError:
            if not more:
                raise
        want *= 4


def scan_blocks(buf: mmap.mmap | bytes, toc: Toc) -> dict[int, int]:
    """Dump id -> file position of its data block, walking the blocks from the end of the TOC.

    Table data of an uncompressed archive is COPY text (or INSERT statements), which never holds
    a NUL byte, and a chunk header with a non-zero length has at most four zero bytes in a row: so
    the first run of 1 + int_size zero bytes after a table-data block header is its end marker.
    Finding it with `find` runs at memory speed, where walking the per-row chunks (one per row
    with --compress=0) costs about a second per 7 million rows. Large-object blocks (binary) and
    compressed archives are walked chunk by chunk.
    """
    r = _Reader(buf, toc.data_start)
    r.int_size = toc.int_size
    int_size = toc.int_size + 1
    end_marker = bytes(int_size)
    end = len(buf)
    found: dict[int, int] = {}
    while r.pos < end:
        start = r.pos
        kind = r.byte()
        dump_id = r.int()
        if kind not in (BLOCK_DATA, BLOCK_BLOBS):
            raise ArchiveFormatError(f"unknown data block type {kind} at byte {start}")
        if dump_id in found:
            raise ArchiveFormatError(f"two data blocks for dump id {dump_id} (at {found[dump_id]} and {start})")
        found[dump_id] = start
        if kind == BLOCK_DATA and not toc.compressed:
            marker = buf.find(end_marker, r.pos)
            if marker < 0:
                raise ArchiveFormatError(f"archive ends inside the data of dump id {dump_id}")
            r.pos = marker + int_size
            continue
        while True:
            if kind == BLOCK_BLOBS and r.int() == 0:
                break  # oid 0: end of the large objects
            pos = r.pos
            while True:  # chunks of one table or one large object, ended by a zero length
                if pos + int_size > end:
                    raise ArchiveFormatError(f"archive ends inside the data of dump id {dump_id}")
                length = int.from_bytes(buf[pos + 1 : pos + int_size], "little")
                pos += int_size
                if length == 0:
                    break
                pos += length
            r.pos = pos
            if kind == BLOCK_DATA:
                break
        if r.pos > end:
            raise ArchiveFormatError(f"archive ends inside the data of dump id {dump_id}")
    return found


def patch_offsets(path: Path) -> int:
    """Write the data positions into the TOC of the archive at `path`; return how many were set.

    An archive whose offsets are already set (written to a file) is left as it is.
    """
    with open(path, "r+b") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            raise ArchiveFormatError("archive is empty")
        with mmap.mmap(handle.fileno(), 0) as buf:
            toc = read_toc(buf)
            missing = [e for e in toc.entries if e.offset_flag == OFFSET_NOT_SET]
            if not missing:
                return 0
            blocks = scan_blocks(buf, toc)
            patched = 0
            for entry in missing:
                pos = blocks.get(entry.dump_id)
                if pos is None:
                    continue  # no data block (pg_restore then treats it as it did before)
                field = bytes([OFFSET_SET]) + pos.to_bytes(toc.off_size, "little")
                buf[entry.offset_pos : entry.offset_pos + len(field)] = field
                patched += 1
    return patched
