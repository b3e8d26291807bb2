"""Backup sets in one blob container: `<tier>/<set id>/<file>`, manifest.json written last.

Tiers are prefixes so that the storage account's lifecycle policy (prefix filters, which
Azure and Azurite both support fully) keeps each tier for its own time; see docs/operations/backup-tool.md.
"""

from __future__ import annotations

import base64
import hashlib
import json
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import BlobBlock, BlobServiceClient, ContainerClient, ExponentialRetry

from ipa_backup import log
from ipa_backup.config import TARGETS, Settings, storage_backoff
from ipa_backup.errors import IntegrityError, StorageError

TIERS = ("frequent", "daily", "weekly")
MANIFEST = "manifest.json"
TARGET_FILES = {"postgres": "postgres.dump.zst", "redis": "redis.rdb.zst"}  # the file that makes a set hold a target
# The set ids the tool writes: UTC time to the millisecond, then a random tail.
SET_ID_RE = re.compile(r"^\d{8}T\d{9}Z-[0-9a-f]{6}$")
_ignored_folders: set[str] = set()  # foreign folders already warned about in this run


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
    def targets(self) -> tuple[str, ...]:
        """The targets the set's folder holds; its manifest must say the same (sets.check_manifest)."""
        return tuple(t for t in TARGETS if TARGET_FILES[t] in self.files)

    @property
    def started_at(self) -> datetime:
        """From the set id, `YYYYmmddTHHMMSSfffZ-xxxxxx` (UTC, milliseconds)."""
        try:
            start = datetime.strptime(self.set_id[:15], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
            return start + timedelta(milliseconds=int(self.set_id[15:18]))
        except ValueError:
            return datetime.fromtimestamp(0, UTC)  # a foreign name sorts as oldest


class DeadlineError(AzureError):
    """An operation's deadline passed: no further attempt is made."""


# The deadline of the storage operation running in this thread (time.monotonic()), or None.
_deadline = threading.local()


def _time_left() -> float | None:
    deadline: float | None = getattr(_deadline, "at", None)
    return None if deadline is None else deadline - time.monotonic()


class _DeadlineTransport(RequestsTransport):
    """Gives each attempt of a request at most the time left before its operation's deadline, and
    starts none after it: the SDK's retries, and a download's own re-reads on top of them, then end
    within the bound even when every attempt waits for its full time-out."""

    def send(self, request: Any, **kwargs: Any) -> Any:
        left = _time_left()
        if left is not None:
            if left <= 0:
                raise DeadlineError("deadline passed")
            kwargs["connection_timeout"] = min(kwargs.get("connection_timeout", self.connection_config.timeout), left)
            kwargs["read_timeout"] = min(kwargs.get("read_timeout", self.connection_config.read_timeout), left)
        return super().send(request, **kwargs)

    def sleep(self, duration: float) -> None:
        left = _time_left()
        time.sleep(duration if left is None else max(0.0, min(duration, left)))


class _Retry(ExponentialRetry):
    """Back-off 1, 2, 4, 8, 8 ... s (config.storage_backoff, no jitter: the documented bound is exact);
    no retry once the deadline passed."""

    def get_backoff_time(self, settings: dict[str, Any]) -> float:
        return storage_backoff(int(settings["count"]))

    def increment(self, settings: dict[str, Any], request: Any, response: Any = None, error: Any = None) -> bool:
        if isinstance(error, DeadlineError):
            return False
        return bool(super().increment(settings, request, response, error))


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, DeadlineError) or (
        isinstance(exc, (ServiceRequestError, ServiceResponseError)) and "timed out" in str(exc).lower()
    )


class _Workers:
    """A few daemon threads for parallel block transfers. Daemon threads, unlike a ThreadPoolExecutor's,
    never hold up the exit of a failed or interrupted run while a request of theirs is still waiting."""

    def __init__(self, count: int, name: str) -> None:
        self.tasks: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = queue.SimpleQueue()
        self.threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(count)]
        for thread in self.threads:
            thread.start()

    def _work(self) -> None:
        while (task := self.tasks.get()) is not None:
            future, fn = task
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                future.set_exception(exc)

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        self.tasks.put((future, fn))
        return future

    def close(self, pending: Iterable[Future[Any]]) -> None:
        """Cancel what has not started; the running ones end by their own deadline, unwaited."""
        for future in pending:
            future.cancel()
        for _ in self.threads:
            self.tasks.put(None)


class BlobStore:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Every request: connect time-out, read time-out, bounded retries with bounded back-off, and
        # an overall deadline per operation (see `bounded`), so a stalled endpoint fails the run within
        # settings.storage_deadline instead of the SDK's defaults of many minutes.
        timeouts = {"connection_timeout": settings.storage_connect_timeout, "read_timeout": settings.storage_timeout}
        kwargs: dict[str, Any] = {
            "retry_policy": _Retry(retry_total=settings.storage_retries),
            "transport": _DeadlineTransport(**timeouts),
            "max_single_put_size": settings.block_size,
            "max_block_size": settings.block_size,
            **timeouts,
        }
        if settings.connection_string:
            service = BlobServiceClient.from_connection_string(settings.connection_string, **kwargs)
        else:
            from azure.identity import DefaultAzureCredential  # only needed with workload identity

            assert settings.account_url is not None
            # The token requests get the same time-outs and retries (azure-identity's own pipeline).
            credential = DefaultAzureCredential(
                retry_total=settings.storage_retries, retry_backoff_factor=1, retry_backoff_max=8, **timeouts
            )
            service = BlobServiceClient(settings.account_url, credential=credential, **kwargs)
        self.container: ContainerClient = service.get_container_client(settings.container)

    @contextmanager
    def bounded(self) -> Iterator[None]:
        """One storage operation (a request, its retries and re-reads) in this thread: it ends within
        settings.storage_deadline, with DeadlineError when no attempt answered in time."""
        outer = getattr(_deadline, "at", None)
        _deadline.at = time.monotonic() + self.settings.storage_deadline
        try:
            yield
        finally:
            _deadline.at = outer

    def error(self, action: str, exc: Exception) -> StorageError:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if _is_timeout(exc):
            s = self.settings
            detail = (
                f"no answer within the {s.storage_deadline:.0f}s bound ({s.storage_retries + 1} attempts of at most "
                f"{s.storage_timeout:.0f}s plus back-off; BACKUP_STORAGE_TIMEOUT_SECONDS, BACKUP_STORAGE_RETRIES)"
            )
        return StorageError(f"blob storage unreachable or refused while {action}: {detail}")

    def ensure_container(self) -> None:
        """Create the container if it is missing (Azurite, tests); in Azure it is declared by Pulumi."""
        try:
            with self.bounded():
                self.container.create_container()
        except ResourceExistsError:
            pass
        except AzureError as exc:
            raise self.error(f"creating container {self.settings.container!r}", exc) from exc

    def _blobs(self, prefix: str) -> Iterator[Any]:
        """The blobs under `prefix`, one bounded operation per page of the listing."""
        pages = self.container.list_blobs(name_starts_with=prefix).by_page()
        while True:
            with self.bounded():
                page = next(pages, None)
                if page is None:
                    return
                blobs = list(page)
            yield from blobs

    def list_blobs(self, prefix: str, metadata: bool = False) -> list[Any]:
        """Every blob under `prefix` (name, size, last_modified and, with `metadata`, its metadata)."""
        include = ["metadata"] if metadata else None
        pages = self.container.list_blobs(name_starts_with=prefix, include=include).by_page()
        found: list[Any] = []
        try:
            while True:
                with self.bounded():
                    page = next(pages, None)
                    if page is None:
                        return found
                    found.extend(page)
        except ResourceNotFoundError as exc:
            raise StorageError(f"container {self.settings.container!r} does not exist") from exc
        except AzureError as exc:
            raise self.error(f"listing {prefix}", exc) from exc

    def delete(self, name: str) -> None:
        """Delete a blob; one already gone is fine."""
        try:
            with self.bounded():
                self.container.get_blob_client(name).delete_blob()
        except ResourceNotFoundError:
            pass
        except AzureError as exc:
            raise self.error(f"deleting {name}", exc) from exc

    def list_sets(self) -> list[SetInfo]:
        """All sets, complete or not, newest first. Only folders named like the set ids the tool writes
        count: anything else in a tier is ignored (with one warning), so it can never become the newest set."""
        sets: dict[str, SetInfo] = {}  # by prefix: the same id in two tiers is two folders
        foreign: set[str] = set()
        try:
            for tier in TIERS:
                for blob in self._blobs(f"{tier}/"):
                    parts = blob.name.split("/", 2)
                    if len(parts) != 3 or not SET_ID_RE.match(parts[1]):
                        foreign.add(f"{tier}/{parts[1]}" if len(parts) == 3 else blob.name)
                        continue
                    info = sets.setdefault(f"{tier}/{parts[1]}", SetInfo(parts[1], tier))
                    info.files[parts[2]] = int(blob.size or 0)
        except ResourceNotFoundError as exc:
            raise StorageError(f"container {self.settings.container!r} does not exist") from exc
        except AzureError as exc:
            raise self.error("listing sets", exc) from exc
        if foreign - _ignored_folders:
            log.warning(
                "ignored blobs that are not in a backup set folder (set ids look like YYYYmmddTHHMMSSfffZ-xxxxxx)", ignored=sorted(foreign)
            )
            _ignored_folders.update(foreign)
        return sorted(sets.values(), key=lambda s: s.set_id, reverse=True)

    def find_set(self, set_id: str | None, needs: Iterable[str] = ()) -> SetInfo:
        """The named set (`ID` or `tier/ID`), or the newest complete one holding every target in `needs`
        (a frequent set may hold Redis only); never an incomplete one. A named set's targets are checked
        against its manifest (sets.require_targets), which tells a Redis-only set from a broken one."""
        sets = self.list_sets()
        wanted_targets = [t for t in TARGETS if t in set(needs)]
        if set_id is None:
            for info in sets:
                if info.complete and all(t in info.targets for t in wanted_targets):
                    return info
            holding = f" holding {' and '.join(wanted_targets)}" if wanted_targets else ""
            newest = next((s for s in sets if s.complete), None)
            seen = f" (the newest, {newest.set_id}, holds {', '.join(newest.targets) or 'nothing'})" if newest and holding else ""
            raise IntegrityError(f"no complete backup set{holding} in container {self.settings.container!r}{seen}")
        *tier, wanted = set_id.strip("/").split("/")
        found = [s for s in sets if s.set_id == wanted and (not tier or s.tier == tier[-1])]
        if len(found) > 1:
            raise IntegrityError(
                f"backup set {wanted} is stored in several tiers ({', '.join(s.tier for s in found)}): name one as <tier>/{wanted}"
            )
        for info in found:
            if not info.complete:
                raise IntegrityError(f"backup set {info.set_id} is incomplete: it has no {MANIFEST} (the run that wrote it failed)")
            return info
        hint = "" if SET_ID_RE.match(wanted) else " (set ids look like YYYYmmddTHHMMSSfffZ-xxxxxx)"
        raise IntegrityError(f"backup set {wanted!r} does not exist in container {self.settings.container!r}{hint}")

    def read_manifest(self, info: SetInfo) -> dict[str, Any]:
        try:
            with self.bounded():
                data = self.container.get_blob_client(info.prefix + MANIFEST).download_blob().readall()
        except AzureError as exc:
            raise self.error(f"reading the manifest of {info.set_id}", exc) from exc
        try:
            manifest: dict[str, Any] = json.loads(data)
        except ValueError as exc:
            raise IntegrityError(f"manifest of {info.set_id} is not valid JSON: {exc}") from exc
        return manifest

    def write_manifest(self, info: SetInfo, manifest: dict[str, Any]) -> None:
        self.write_json(info.prefix + MANIFEST, manifest, f"the manifest of {info.set_id}")

    def write_json(self, name: str, value: dict[str, Any], what: str) -> None:
        """A small JSON blob, never over an existing one."""
        body = json.dumps(value, indent=2, sort_keys=True).encode()
        try:
            with self.bounded():
                self.container.get_blob_client(name).upload_blob(body, overwrite=False)
        except AzureError as exc:
            raise self.error(f"writing {what}", exc) from exc

    def read_bytes(self, name: str, what: str) -> bytes:
        """A small blob, whole."""
        try:
            with self.bounded():
                data: bytes = self.container.get_blob_client(name).download_blob().readall()
        except AzureError as exc:
            raise self.error(f"reading {what}", exc) from exc
        return data

    def upload_stream(
        self, name: str, chunks: Iterable[bytes], metadata: dict[str, str] | None = None, new_only: bool = False
    ) -> tuple[int, str]:
        """Upload a stream as parallel staged blocks; commit only after the stream ended cleanly.

        Returns (size, sha256 hex) of the stored bytes. If the stream raises (its producer
        failed) or a block fails after its retries, nothing is committed: no blob appears.
        `metadata` is committed with the block list: it is part of the very version it describes.
        `new_only`: the commit is refused (StorageError) when a blob of that name exists already.
        """
        blob = self.container.get_blob_client(name)
        digest = hashlib.sha256()
        size = 0
        block_ids: list[str] = []
        pending: deque[Future[Any]] = deque()
        max_pending = self.settings.upload_concurrency * 2
        progress = _Progress(name, self.settings.progress_interval)
        pool = _Workers(self.settings.upload_concurrency, "upload")

        def put(block_id: str, data: bytes) -> None:
            with self.bounded():
                blob.stage_block(block_id, data, length=len(data))

        def stage(data: bytes) -> None:
            block_id = base64.b64encode(f"{len(block_ids):010d}".encode()).decode()
            block_ids.append(block_id)
            pending.append(pool.submit(partial(put, block_id, data)))
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
            with self.bounded():
                blocks = [BlobBlock(block_id=b) for b in block_ids]
                if new_only:
                    blob.commit_block_list(blocks, metadata=metadata, match_condition=MatchConditions.IfMissing)
                else:
                    blob.commit_block_list(blocks, metadata=metadata)
        except AzureError as exc:
            raise self.error(f"uploading {name}", exc) from exc
        finally:
            pool.close(pending)
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
        pool = _Workers(self.settings.upload_concurrency, "download")
        pending: deque[Future[bytes]] = deque()

        def fetch(offset: int, length: int) -> bytes:
            with self.bounded():  # the range request and the reading of its body
                data: bytes = blob.download_blob(offset=offset, length=length, max_concurrency=1).readall()
            if len(data) != length:
                raise IntegrityError(f"{name}: short read at offset {offset} ({len(data)} of {length} bytes)")
            return data

        try:
            with self.bounded():
                total = int(blob.get_blob_properties().size)
            ranges = iter([(offset, min(step, total - offset)) for offset in range(0, total, step)])
            for offset, length in ranges:
                pending.append(pool.submit(partial(fetch, offset, length)))
                if len(pending) >= self.settings.upload_concurrency * 2:
                    break
            while pending:
                data = pending.popleft().result()
                following = next(ranges, None)
                if following is not None:
                    pending.append(pool.submit(partial(fetch, *following)))
                digest.update(data)
                size += len(data)
                sink(data)
                progress.update(size)
        except ResourceNotFoundError as exc:
            raise IntegrityError(f"{name} is listed in the manifest but missing from storage") from exc
        except AzureError as exc:
            raise self.error(f"downloading {name}", exc) from exc
        finally:
            pool.close(pending)
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
            log.info(
                f"{self.verb} {size / 1e6:.1f} MB of {self.name}",
                file=self.name,
                bytes=size,
                mb_per_s=round(size / 1e6 / max(now - self.start, 1e-6), 1),
            )

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
