"""Storage that stalls (a proxy in front of Azurite that stops answering) fails every command within the
documented bound; a set whose manifest and folder disagree is refused before any download."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from subprocess import Popen
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient
from conftest import World

from devservices.image import image_path, image_workdir


def error_of(stderr: str) -> dict[str, Any]:
    """The final structured error line."""
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    errors = [line for line in lines if line.get("level") == "error"]
    assert errors, f"no error logged:\n{stderr}"
    return errors[-1]


def add_bulk(world: World, rows: int = 200_000) -> None:
    world.pg.psql(
        f"CREATE TABLE public.bulk AS SELECT i, md5(i::text) || md5((i * 7)::text) AS v FROM generate_series(1, {rows}) i", world.database
    )


def database_exists(world: World, name: str) -> bool:
    return world.pg.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{name}'").strip() == "1"


class StallingProxy:
    """A TCP proxy on 127.0.0.1 in front of Azurite. It forwards until `stall()`; from then on it forwards
    nothing, on open connections and new ones, which it still accepts and keeps open: an endpoint that
    accepts connections but never answers."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.stalled = threading.Event()
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def stall(self) -> None:
        self.stalled.set()

    def close(self) -> None:
        self.stalled.set()
        for sock in self.sockets:
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.sockets.append(client)
            if self.stalled.is_set():
                continue  # held open, never served
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self.sockets.append(upstream)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self.stalled.is_set():
                if not select.select([src], [], [], 0.05)[0]:
                    continue
                data = src.recv(65536)
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                if self.stalled.is_set():
                    return  # dropped: nothing more reaches either side, and nothing is read
                dst.sendall(data)
        except OSError:
            return


@contextmanager
def stalling_proxy(world: World) -> Iterator[StallingProxy]:
    proxy = StallingProxy(world.blob.port)
    try:
        yield proxy
    finally:
        proxy.close()


def via(world: World, proxy: StallingProxy) -> str:
    """The connection string with the proxy in place of Azurite (BlobEndpoint=http://127.0.0.1:PORT/...)."""
    return world.blob.connection_string.replace(f"127.0.0.1:{world.blob.port}/", f"127.0.0.1:{proxy.port}/")


def stall_after(proc: Popen[str], proxy: StallingProxy, file: str, min_bytes: int) -> list[str]:
    """Read the tool's progress lines until `min_bytes` of `file` went through, then stall the proxy."""
    assert proc.stderr is not None
    lines = []
    while True:
        line = proc.stderr.readline()
        assert line, "the transfer ended before it was under way:\n" + "".join(lines)
        lines.append(line)
        entry = json.loads(line)
        if file in str(entry.get("file")) and int(entry.get("bytes", 0)) >= min_bytes:
            proxy.stall()
            return lines


def test_the_default_bound_is_under_a_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    from ipa_backup import config

    for name in ("BACKUP_STORAGE_TIMEOUT_SECONDS", "BACKUP_STORAGE_RETRIES", "BACKUP_UPLOAD_TIMEOUT_SECONDS", "BACKUP_UPLOAD_RETRIES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BACKUP_CONTAINER", "backups")
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "UseDevelopmentStorage=true")
    settings = config.load()
    # 15 s x (2 retries + 1) + 1 s + 2 s of back-off
    assert (settings.storage_timeout, settings.storage_retries, settings.storage_deadline) == (15.0, 2, 48.0)
    monkeypatch.setenv("BACKUP_UPLOAD_TIMEOUT_SECONDS", "4")  # the older names still count
    monkeypatch.setenv("BACKUP_STORAGE_RETRIES", "3")
    assert config.load().storage_deadline == 4 * 4 + 1 + 2 + 4


@pytest.mark.services
def test_stalled_storage_fails_a_backup_within_the_bound(world: World) -> None:
    add_bulk(world)
    good = world.backup_ok()
    with stalling_proxy(world) as proxy:
        # Bound: 4 s x (1 retry + 1) + 1 s back-off = 9 s.
        proc = world.popen(
            "backup",
            env={
                "AZURE_STORAGE_CONNECTION_STRING": via(world, proxy),
                "BACKUP_STORAGE_TIMEOUT_SECONDS": "4",
                "BACKUP_STORAGE_RETRIES": "1",
                "BACKUP_BLOCK_SIZE_MB": "1",
                "BACKUP_UPLOAD_CONCURRENCY": "1",
                "BACKUP_PROGRESS_SECONDS": "0",
            },
        )
        head = stall_after(proc, proxy, "postgres.dump.zst", 2_000_000)
        stalled_at = time.monotonic()
        _, stderr = proc.communicate(timeout=120)
        elapsed = time.monotonic() - stalled_at
    stderr = "".join(head) + stderr
    assert proc.returncode == 4, stderr
    msg = str(error_of(stderr)["msg"])
    assert "blob storage unreachable or refused while uploading" in msg and "postgres.dump.zst" in msg
    assert "no answer within the 9s bound" in msg
    assert elapsed < 9 + 3, f"the backup took {elapsed:.1f}s to fail after storage stalled"
    print(f"backup failed {elapsed:.1f}s after storage stalled")
    assert [s["set_id"] for s in world.sets() if s["complete"]] == [good["set_id"]]  # nothing committed


@pytest.mark.services
def test_stalled_storage_fails_a_restore_within_the_default_bound(world: World) -> None:
    add_bulk(world)
    out = world.backup_ok()
    work = image_workdir("stall-")
    target = f"{world.database}_stalled"
    with stalling_proxy(world) as proxy:
        # The defaults (the world's older-named settings cleared): 15 s x 3 attempts + 3 s = 48 s.
        proc = world.popen(
            "restore",
            out["set_id"],
            "--pg-database",
            target,
            "--only",
            "postgres",
            env={
                "AZURE_STORAGE_CONNECTION_STRING": via(world, proxy),
                "BACKUP_UPLOAD_TIMEOUT_SECONDS": "",
                "BACKUP_UPLOAD_RETRIES": "",
                "BACKUP_BLOCK_SIZE_MB": "1",
                "BACKUP_PROGRESS_SECONDS": "0",
                "BACKUP_WORK_DIR": image_path(work),
                "TMPDIR": image_path(work),
            },
        )
        head = stall_after(proc, proxy, "postgres.dump.zst", 2_000_000)
        stalled_at = time.monotonic()
        _, stderr = proc.communicate(timeout=300)
        elapsed = time.monotonic() - stalled_at
    stderr = "".join(head) + stderr
    assert proc.returncode == 4, stderr
    msg = str(error_of(stderr)["msg"])
    # Whichever file was being fetched (ranges are read ahead, several MB at a time).
    assert f"blob storage unreachable or refused while downloading {out['tier']}/{out['set_id']}/" in msg
    assert "no answer within the 48s bound" in msg
    # The bound, plus a second a download waits before its own re-read and the exit itself.
    assert elapsed < 48 + 5, f"the restore took {elapsed:.1f}s to fail after storage stalled"
    print(f"restore failed {elapsed:.1f}s after storage stalled")
    assert not database_exists(world, target)
    assert list(work.iterdir()) == []  # the work dir was removed


@pytest.mark.services
@pytest.mark.parametrize("command", ["list", "verify", "backup"])
def test_storage_stalled_from_the_start_fails_within_the_bound(world: World, command: str) -> None:
    world.backup_ok()
    with stalling_proxy(world) as proxy:
        proxy.stall()
        started = time.monotonic()
        # Bound: 3 s x (1 retry + 1) + 1 s = 7 s.
        result = world.run(
            command,
            env={
                "AZURE_STORAGE_CONNECTION_STRING": via(world, proxy),
                "BACKUP_STORAGE_TIMEOUT_SECONDS": "3",
                "BACKUP_STORAGE_RETRIES": "1",
            },
        )
        elapsed = time.monotonic() - started
    assert result.returncode == 4, result.stderr
    msg = str(error_of(result.stderr)["msg"])
    assert "blob storage unreachable or refused while" in msg and "no answer within the 7s bound" in msg
    assert elapsed < 7 + 4, f"{command} took {elapsed:.1f}s to fail"


# --- the manifest is the contract ---------------------------------------------------------------


def container(world: World) -> ContainerClient:
    return BlobServiceClient.from_connection_string(world.blob.connection_string).get_container_client(world.container)


def manifest_of(world: World, prefix: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(container(world).get_blob_client(f"{prefix}/manifest.json").download_blob().readall())
    return data


def put_manifest(world: World, prefix: str, manifest: dict[str, Any]) -> None:
    container(world).get_blob_client(f"{prefix}/manifest.json").upload_blob(json.dumps(manifest).encode(), overwrite=True)


def copy_folder(world: World, source: str, dest: str) -> None:
    c = container(world)
    for blob in c.list_blobs(name_starts_with=f"{source}/"):
        data = c.get_blob_client(blob.name).download_blob().readall()
        c.get_blob_client(dest + blob.name[len(source) :]).upload_blob(data, overwrite=True)


def delete_folder(world: World, prefix: str) -> None:
    c = container(world)
    for blob in c.list_blobs(name_starts_with=f"{prefix}/"):
        c.delete_blob(blob.name)


def assert_refused(world: World, set_ref: str, expected: str) -> None:
    """verify and restore exit 5 with `expected`, download nothing and create no target."""
    target = f"{world.database}_refused"
    for args in (["verify", set_ref], ["restore", set_ref, "--pg-database", target, "--only", "postgres"]):
        result = world.run(*args)
        assert result.returncode == 5, result.stderr
        assert expected in str(error_of(result.stderr)["msg"]), result.stderr
        assert '"downloaded ' not in result.stderr  # refused from the listing and the manifest alone
    assert not database_exists(world, target)


@pytest.mark.services
@pytest.mark.parametrize("required", ["postgres.dump.zst", "redis.rdb.zst"])
def test_a_manifest_without_a_required_file_is_refused(world: World, required: str) -> None:
    out = world.backup_ok()
    prefix = f"{out['tier']}/{out['set_id']}"
    manifest = manifest_of(world, prefix)
    manifest["files"] = [f for f in manifest["files"] if f["name"] != required]
    put_manifest(world, prefix, manifest)
    container(world).delete_blob(f"{prefix}/{required}")
    assert_refused(world, out["set_id"], f"manifest of set {prefix} lacks the required {required}")


@pytest.mark.services
def test_the_folder_and_the_manifest_must_hold_the_same_files(world: World) -> None:
    out = world.backup_ok()
    prefix = f"{out['tier']}/{out['set_id']}"
    container(world).get_blob_client(f"{prefix}/notes.txt").upload_blob(b"not part of the set")
    assert_refused(world, out["set_id"], f"the folder of set {prefix} holds notes.txt, which its manifest does not list")
    container(world).delete_blob(f"{prefix}/notes.txt")
    container(world).delete_blob(f"{prefix}/postgres-globals.sql.zst")  # optional, but listed
    assert_refused(world, out["set_id"], f"manifest of set {prefix} lists postgres-globals.sql.zst, missing from the set's folder")


@pytest.mark.services
def test_a_blob_whose_size_differs_from_the_manifest_is_refused_before_download(world: World) -> None:
    out = world.backup_ok()
    prefix = f"{out['tier']}/{out['set_id']}"
    blob = container(world).get_blob_client(f"{prefix}/redis.rdb.zst")
    blob.upload_blob(blob.download_blob().readall()[:-10], overwrite=True)
    assert_refused(world, out["set_id"], f"size mismatch in set {out['set_id']}: redis.rdb.zst has")


@pytest.mark.services
def test_a_set_copied_into_another_sets_folder_is_refused(world: World) -> None:
    out = world.backup_ok()
    copy = "29991231T235959999Z-c0ffee"  # sorts newest: the default restore would pick it
    copy_folder(world, f"{out['tier']}/{out['set_id']}", f"{out['tier']}/{copy}")
    expected = f"manifest of set {out['tier']}/{copy} belongs to set '{out['set_id']}'"
    assert_refused(world, copy, expected)
    default = world.run("restore", "--pg-database", f"{world.database}_default", "--only", "postgres")
    assert default.returncode == 5 and expected in str(error_of(default.stderr)["msg"])
    assert not database_exists(world, f"{world.database}_default")


@pytest.mark.services
def test_a_set_moved_to_another_tier_is_refused(world: World) -> None:
    out = world.backup_ok()
    other = "daily" if out["tier"] != "daily" else "frequent"
    copy_folder(world, f"{out['tier']}/{out['set_id']}", f"{other}/{out['set_id']}")
    both = world.run("verify", out["set_id"])
    assert both.returncode == 5
    assert f"backup set {out['set_id']} is stored in several tiers" in str(error_of(both.stderr)["msg"])
    delete_folder(world, f"{out['tier']}/{out['set_id']}")
    assert_refused(
        world, out["set_id"], f"manifest of set {other}/{out['set_id']} says tier '{out['tier']}', but the set is stored under {other}/"
    )


@pytest.mark.services
def test_folders_not_named_like_a_set_are_ignored(world: World) -> None:
    out = world.backup_ok()
    copy_folder(world, f"{out['tier']}/{out['set_id']}", f"{out['tier']}/zz-latest")  # sorted newest by name
    result = world.run("list", "--json")
    assert result.returncode == 0, result.stderr
    assert [s["set_id"] for s in json.loads(result.stdout)] == [out["set_id"]]
    warnings = [json.loads(line) for line in result.stderr.splitlines() if '"ignored blobs' in line]
    assert len(warnings) == 1 and warnings[0]["ignored"] == [f"{out['tier']}/zz-latest"], result.stderr
    verify = world.run("verify")  # the default is the newest real set, never the foreign folder
    assert verify.returncode == 0, verify.stderr
    assert json.loads(verify.stdout)["set_id"] == out["set_id"]
    named = world.run("verify", "zz-latest")
    assert named.returncode == 5
    assert "backup set 'zz-latest' does not exist" in str(error_of(named.stderr)["msg"])
