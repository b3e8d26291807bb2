"""Backup sets in one blob container: `<tier>/<set id>/<file>`, manifest.json written last.

Tiers are prefixes so that the storage account's lifecycle policy (prefix filters, which
Azure and Azurite both support fully) keeps each tier for its own time; see docs/operations/backup-tool.md.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobBlock, BlobServiceClient, ContainerClient, ExponentialRetry

from ipa_backup import log
from ipa_backup.config import Settings
from ipa_backup.errors import IntegrityError, StorageError

TIERS = ("frequent", "daily", "weekly")
MANIFEST = "manifest.json"


@dataclass
class SetInfo:
    set_id: str
    tier: str
    files: dict[str, int] = field(default_factory=dict)  # blob file name -> size

    @property
    def prefix(self) -> str:
        return f"{self.tier}/{self.set_id}/"

    @property
    def complete(self) -> bool:
        return MANIFEST in self.files

    @property
    def size(self) -> int:
        return sum(self.files.values())

    @property
    def started_at(self) -> datetime:
        """From the set id, `YYYYmmddTHHMMSSfffZ-xxxxxx` (UTC, milliseconds)."""
        try:
            start = datetime.strptime(self.set_id[:15], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
            return start + timedelta(milliseconds=int(self.set_id[15:18]))
        except ValueError:
            return datetime.fromtimestamp(0, UTC)  # a foreign name sorts as oldest


def _storage_error(action: str, exc: Exception) -> StorageError:
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return StorageError(f"blob storage unreachable or refused while {action}: {detail}")


class BlobStore:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Bounded retries with short back-off: a dead endpoint fails the run in well under a minute
        # per block instead of the SDK's default of several minutes.
        retry = ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=settings.upload_retries)
        kwargs: dict[str, Any] = {
            "retry_policy": retry,
            "connection_timeout": 10,
            "read_timeout": settings.upload_timeout,
            "max_single_put_size": settings.block_size,
            "max_block_size": settings.block_size,
        }
        if settings.connection_string:
            service = BlobServiceClient.from_connection_string(settings.connection_string, **kwargs)
        else:
            from azure.identity import DefaultAzureCredential  # only needed with workload identity

            assert settings.account_url is not None
            service = BlobServiceClient(settings.account_url, credential=DefaultAzureCredential(), **kwargs)
        self.container: ContainerClient = service.get_container_client(settings.container)

    def ensure_container(self) -> None:
        """Create the container if it is missing (Azurite, tests); in Azure it is declared by Pulumi."""
        try:
            self.container.create_container()
        except ResourceExistsError:
            pass
        except AzureError as exc:
            raise _storage_error(f"creating container {self.settings.container!r}", exc) from exc

    def list_sets(self) -> list[SetInfo]:
        """All sets, complete or not, newest first."""
        sets: dict[str, SetInfo] = {}
        try:
            for tier in TIERS:
                for blob in self.container.list_blobs(name_starts_with=f"{tier}/"):
                    parts = blob.name.split("/", 2)
                    if len(parts) != 3:
                        continue
                    info = sets.setdefault(parts[1], SetInfo(parts[1], tier))
                    info.files[parts[2]] = int(blob.size or 0)
        except ResourceNotFoundError as exc:
            raise StorageError(f"container {self.settings.container!r} does not exist") from exc
        except AzureError as exc:
            raise _storage_error("listing sets", exc) from exc
        return sorted(sets.values(), key=lambda s: s.set_id, reverse=True)

    def find_set(self, set_id: str | None) -> SetInfo:
        """The named set (`ID` or `tier/ID`), or the newest complete one; never an incomplete one."""
        sets = self.list_sets()
        if set_id is None:
            for info in sets:
                if info.complete:
                    return info
            raise IntegrityError(f"no complete backup set in container {self.settings.container!r}")
        wanted = set_id.strip("/").split("/")[-1]
        for info in sets:
            if info.set_id == wanted:
                if not info.complete:
                    raise IntegrityError(
                        f"backup set {info.set_id} is incomplete: it has no {MANIFEST} (the run that wrote it failed)"
                    )
                return info
        raise IntegrityError(f"backup set {wanted!r} does not exist in container {self.settings.container!r}")

    def read_manifest(self, info: SetInfo) -> dict[str, Any]:
        try:
            data = self.container.get_blob_client(info.prefix + MANIFEST).download_blob().readall()
        except AzureError as exc:
            raise _storage_error(f"reading the manifest of {info.set_id}", exc) from exc
        try:
            manifest: dict[str, Any] = json.loads(data)
        except ValueError as exc:
            raise IntegrityError(f"manifest of {info.set_id} is not valid JSON: {exc}") from exc
        return manifest

    def write_manifest(self, info: SetInfo, manifest: dict[str, Any]) -> None:
        body = json.dumps(manifest, indent=2, sort_keys=True).encode()
        try:
            self.container.get_blob_client(info.prefix + MANIFEST).upload_blob(body, overwrite=False)
        except AzureError as exc:
            raise _storage_error(f"writing the manifest of {info.set_id}", exc) from exc

    def upload_stream(self, name: str, chunks: Iterable[bytes]) -> tuple[int, str]:
        """Upload a stream as parallel staged blocks; commit only after the stream ended cleanly.

        Returns (size, sha256 hex) of the stored bytes. If the stream raises (its producer
        failed) or a block fails after its retries, nothing is committed: no blob appears.
        """
        blob = self.container.get_blob_client(name)
        digest = hashlib.sha256()
        size = 0
        block_ids: list[str] = []
        pending: deque[Future[Any]] = deque()
        max_pending = self.settings.upload_concurrency * 2
        progress = _Progress(name, self.settings.progress_interval)
        pool = ThreadPoolExecutor(self.settings.upload_concurrency, thread_name_prefix="upload")

        def stage(data: bytes) -> None:
            block_id = base64.b64encode(f"{len(block_ids):010d}".encode()).decode()
            block_ids.append(block_id)
            pending.append(pool.submit(blob.stage_block, block_id, data, length=len(data)))
            while len(pending) >= max_pending:
                pending.popleft().result()

        try:
            buffer = bytearray()
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                buffer += chunk
                while len(buffer) >= self.settings.block_size:
                    stage(bytes(buffer[: self.settings.block_size]))
                    del buffer[: self.settings.block_size]
                progress.update(size)
            if buffer or not block_ids:
                stage(bytes(buffer))
            while pending:
                pending.popleft().result()
            blob.commit_block_list([BlobBlock(block_id=b) for b in block_ids])
        except AzureError as exc:
            raise _storage_error(f"uploading {name}", exc) from exc
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        progress.done(size)
        return size, digest.hexdigest()

    def download(self, name: str, sink: Callable[[bytes], None]) -> tuple[int, str]:
        """Stream a blob into `sink` in order; return (size, sha256 hex) of its bytes.

        Ranges of one block size are fetched in parallel (bounded read-ahead) while this thread
        hashes and feeds `sink`, so network, checksum and decompression overlap.
        """
        digest = hashlib.sha256()
        size = 0
        progress = _Progress(name, self.settings.progress_interval, verb="downloaded")
        blob = self.container.get_blob_client(name)
        step = self.settings.block_size
        pool = ThreadPoolExecutor(self.settings.upload_concurrency, thread_name_prefix="download")

        def fetch(offset: int, length: int) -> bytes:
            data: bytes = blob.download_blob(offset=offset, length=length, max_concurrency=1).readall()
            if len(data) != length:
                raise IntegrityError(f"{name}: short read at offset {offset} ({len(data)} of {length} bytes)")
            return data

        try:
            total = int(blob.get_blob_properties().size)
            ranges = iter([(offset, min(step, total - offset)) for offset in range(0, total, step)])
            pending: deque[Future[bytes]] = deque()
            for offset, length in ranges:
                pending.append(pool.submit(fetch, offset, length))
                if len(pending) >= self.settings.upload_concurrency * 2:
                    break
            while pending:
                data = pending.popleft().result()
                following = next(ranges, None)
                if following is not None:
                    pending.append(pool.submit(fetch, *following))
                digest.update(data)
                size += len(data)
                sink(data)
                progress.update(size)
        except ResourceNotFoundError as exc:
            raise IntegrityError(f"{name} is listed in the manifest but missing from storage") from exc
        except AzureError as exc:
            raise _storage_error(f"downloading {name}", exc) from exc
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        progress.done(size)
        return size, digest.hexdigest()


class _Progress:
    """Logs bytes moved every `interval` seconds of a long transfer."""

    def __init__(self, name: str, interval: float, verb: str = "uploaded") -> None:
        self.name = name
        self.interval = interval
        self.verb = verb
        self.start = time.monotonic()
        self.last = self.start
        self.lock = threading.Lock()

    def update(self, size: int) -> None:
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            log.info(f"{self.verb} {size / 1e6:.1f} MB of {self.name}", file=self.name, bytes=size,
                     mb_per_s=round(size / 1e6 / max(now - self.start, 1e-6), 1))

    def done(self, size: int) -> None:
        elapsed = time.monotonic() - self.start
        log.info(f"{self.verb} {self.name}", file=self.name, bytes=size, seconds=round(elapsed, 2))


def verify_file(store: BlobStore, info: SetInfo, entry: dict[str, Any], sink: Callable[[bytes], None]) -> None:
    """Download one manifest entry into `sink` and check its size and SHA-256."""
    size, sha = store.download(info.prefix + entry["name"], sink)
    if sha != entry["sha256"] or size != entry["size"]:
        raise IntegrityError(
            f"checksum mismatch in set {info.set_id}: {entry['name']} has sha256 {sha} and {size} bytes, "
            f"the manifest says {entry['sha256']} and {entry['size']} bytes (corrupted blob)"
        )


def iter_chunks(handle: IO[bytes], size: int = 1 << 20) -> Iterator[bytes]:
    while True:
        data = handle.read(size)
        if not data:
            return
        yield data
