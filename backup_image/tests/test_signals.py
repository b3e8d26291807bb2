"""SIGTERM and SIGINT stop a run cleanly (children ended, work dir removed, no manifest, target as it
was, exit 128 + signal), and BACKUP_COMMAND_TIMEOUT_SECONDS bounds every long-running child."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import backup_testdata as data
import pytest
from conftest import World
from procs import descendants, processes, wait_for_child

from devservices.image import IN_IMAGE, image_path, image_workdir


def log_lines(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def error_of(stderr: str) -> dict[str, Any]:
    """The final structured error line."""
    errors = [line for line in log_lines(stderr) if line.get("level") == "error"]
    assert errors, f"no error logged:\n{stderr}"
    return errors[-1]


def still_running(pids: dict[int, str]) -> dict[int, str]:
    table = processes()
    return {pid: name for pid, name in pids.items() if pid in table and table[pid][1] == name}


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.05)


def sessions(world: World, database: str, where: str = "true") -> int:
    """The tool's server sessions (application_name ipa-backup) on `database`."""
    return int(
        world.pg.psql(
            f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}' "
            f"AND application_name = 'ipa-backup' AND pid <> pg_backend_pid() AND {where}"
        ).strip()
    )


def keys_per_db(world: World) -> dict[str, int]:
    return {db: int(v["keys"]) for db, v in world.rcli().info("keyspace").items()}


@contextmanager
def table_locked(world: World, table: str) -> Iterator[None]:
    """Another session holds ACCESS EXCLUSIVE on `table`: pg_dump waits for it (a dump that hangs)."""
    psql = subprocess.Popen(
        [str(world.pg.bin_dir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **world.pg.env(world.database), "PGAPPNAME": "test-lock"},
    )
    assert psql.stdin is not None and psql.stdout is not None
    psql.stdin.write(f"BEGIN;\nLOCK TABLE {table} IN ACCESS EXCLUSIVE MODE;\nSELECT 'locked';\n")
    psql.stdin.flush()
    assert psql.stdout.readline().strip() == "locked"
    try:
        yield
    finally:
        psql.stdin.write("ROLLBACK;\n")
        psql.stdin.close()
        psql.wait(timeout=30)


def stop_with(proc: subprocess.Popen[str], sig: signal.Signals) -> tuple[str, float]:
    """Send `sig` to the tool; its stderr and the seconds it took to exit."""
    started = time.monotonic()
    os.kill(proc.pid, sig)
    _, stderr = proc.communicate(timeout=60)
    return stderr, time.monotonic() - started


def assert_stopped_by(stderr: str, command: str, sig: signal.Signals) -> None:
    err = error_of(stderr)
    assert err["command"] == command and err["signal"] == sig.name, err
    assert err["exit_code"] == 128 + sig and str(err["msg"]).startswith(f"stopped by {sig.name}"), err


@pytest.mark.services
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_a_backup_ends_pg_dump_and_leaves_the_set_incomplete(world: World, sig: signal.Signals) -> None:
    good = world.backup_ok()
    with table_locked(world, "app.users"):
        proc = world.popen("backup")
        wait_for_child(proc.pid, "pg_dump")
        # pg_dump is mid-dump, waiting for the lock: its session shows it.
        wait_until(lambda: sessions(world, world.database, "wait_event_type = 'Lock'") == 1, 60, "pg_dump waits")
        children = descendants(proc.pid)
        stderr, seconds = stop_with(proc, sig)
        assert proc.returncode == 128 + sig, stderr
        assert_stopped_by(stderr, "backup", sig)
        assert still_running(children) == {}, f"left running: {still_running(children)}"
        # pg_dump cancelled its query on the way out: no session of it is left waiting on the server.
        wait_until(lambda: sessions(world, world.database) == 0, 10, "pg_dump's session ended")
    assert seconds < 10
    sets = world.sets()
    assert [s["set_id"] for s in sets if s["complete"]] == [good["set_id"]]  # no manifest for the stopped run


def sigterm_forced_restore(world: World, set_id: str, only: str, held: str) -> None:
    """`restore SET --force --only ONLY`, its child `held` frozen, then SIGTERM: the tool exits 143 within
    seconds, with every child ended and its work dir removed."""
    work = image_workdir(f"sigterm-{only}-")
    env = {"BACKUP_WORK_DIR": image_path(work), "TMPDIR": image_path(work)}
    proc = world.popen("restore", set_id, "--force", "--only", only, env=env)
    os.kill(wait_for_child(proc.pid, held), signal.SIGSTOP)
    children = descendants(proc.pid)
    stderr, seconds = stop_with(proc, signal.SIGTERM)
    assert proc.returncode == 143, stderr
    assert_stopped_by(stderr, "restore", signal.SIGTERM)
    assert still_running(children) == {}, f"left running: {still_running(children)}"
    assert seconds < 15
    assert list(work.iterdir()) == [], "the work dir was not removed"


@pytest.mark.services
def test_sigterm_during_a_forced_restore_leaves_the_live_database_as_it_was(world: World) -> None:
    world.pg.psql("CREATE TABLE public.bulk AS SELECT i, md5(i::text) AS v FROM generate_series(1, 200000) i", world.database)
    out = world.backup_ok()
    world.pg.psql("INSERT INTO public.no_pk VALUES ('after the backup', -1)", world.database)
    live_before = world.pg.psql(data.PG_FINGERPRINT, world.database)
    databases_before = world.pg.psql("SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database")
    # pg_restore held mid-way, whatever the machine's speed.
    sigterm_forced_restore(world, out["set_id"], "postgres", "pg_restore")
    assert world.pg.psql(data.PG_FINGERPRINT, world.database) == live_before
    # The database it restored into beside the live one is gone, with its sessions.
    assert world.pg.psql("SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database") == databases_before
    wait_until(
        lambda: int(world.pg.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ipa-backup'")) == 0,
        10,
        "pg_restore's sessions ended",
    )


@pytest.mark.services
def test_sigterm_while_the_private_redis_server_runs(world: World) -> None:
    source = world.rcli()
    pipe = source.pipeline(transaction=False)
    for i in range(20_000):
        pipe.set(f"bulk:{i}", "x" * 100)
    pipe.execute()
    out = world.backup_ok()
    source.set("after the backup", "live")
    live_before = data.redis_fingerprint(source)
    keyspace_before = keys_per_db(world)
    # --force into the live server: the set's database is restored into an empty one first, then swapped in;
    # the restore is held while its private redis-server runs.
    sigterm_forced_restore(world, out["set_id"], "redis", "redis-server")
    assert data.redis_fingerprint(source) == live_before
    assert keys_per_db(world) == keyspace_before  # no staged copy left in another database


@pytest.mark.services
def test_sigterm_reaches_the_tool_running_as_pid_1(world: World) -> None:
    """As PID 1 of a PID namespace (a container without an init), a process ignores signals it has no handler for."""
    with table_locked(world, "app.users"):
        proc = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--kill-child", str(IN_IMAGE), "ipa-backup", "backup"],
            env={**os.environ, **world.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for_child(proc.pid, "pg_dump")
        tool = next(pid for pid, (ppid, _) in processes().items() if ppid == proc.pid)
        nspid = next(line for line in Path(f"/proc/{tool}/status").read_text().splitlines() if line.startswith("NSpid:"))
        assert nspid.split()[-1] == "1", nspid  # PID 1 in its namespace
        children = descendants(proc.pid)
        os.kill(tool, signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert_stopped_by(stderr, "backup", signal.SIGTERM)
    assert still_running(children) == {}


@pytest.mark.services
def test_the_command_timeout_bounds_pg_dump(world: World) -> None:
    good = world.backup_ok()
    with table_locked(world, "app.users"):
        started = time.monotonic()
        result = world.run("backup", env={"BACKUP_COMMAND_TIMEOUT_SECONDS": "3"})
        seconds = time.monotonic() - started
        assert result.returncode == 3, result.stderr
        msg = str(error_of(result.stderr)["msg"])
        assert "pg_dump of" in msg and "pg_dump did not finish within 3s (BACKUP_COMMAND_TIMEOUT_SECONDS)" in msg, msg
        wait_until(lambda: sessions(world, world.database) == 0, 10, "pg_dump's session ended")
    assert seconds < 3 + 10
    assert [s["set_id"] for s in world.sets() if s["complete"]] == [good["set_id"]]


def test_stream_stdout_stops_a_child_past_its_time(tmp_path: Path) -> None:
    from ipa_backup import proc
    from ipa_backup.errors import SourceError

    marker = tmp_path / "pid"
    script = f"echo $$ > {marker}; echo started; exec sleep 60"
    started = time.monotonic()
    with pytest.raises(SourceError, match=r"sh did not finish within 1s and was stopped"):
        for _ in proc.stream_stdout(["sh", "-c", script], {}, SourceError, timeout=1):
            pass
    assert time.monotonic() - started < 5
    assert int(marker.read_text()) not in processes()


def test_run_stops_a_child_past_the_command_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    from ipa_backup import proc
    from ipa_backup.errors import TargetError

    monkeypatch.setattr(proc, "_command_timeout", 1.0)
    started = time.monotonic()
    with pytest.raises(TargetError, match=r"sleep did not finish within 1s \(BACKUP_COMMAND_TIMEOUT_SECONDS\)"):
        proc.run(["sleep", "60"], timeout=proc.command_timeout(), error=TargetError)
    assert time.monotonic() - started < 5
    assert "sleep" not in descendants(os.getpid()).values()


def test_end_children_ends_the_whole_tree() -> None:
    # In a process of its own: here it would end this session's servers, which are children of pytest.
    script = """
import json, subprocess, sys, time
from ipa_backup import proc
child = proc.popen([sys.executable, "-c", "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"])
while not any(n == "sleep" for n in proc.descendants(child.pid).values()):
    time.sleep(0.01)
tree = proc.descendants(child.pid) | {child.pid: "python"}
print(json.dumps({"tree": sorted(tree), "ended": proc.end_children(grace=2)}), flush=True)
child.wait(timeout=5)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert any(name.startswith("sleep[") for name in report["ended"]), report
    assert len(report["ended"]) == 2, report  # the registered child and the sleep it started
    assert not set(report["tree"]) & set(processes()), "left running"
