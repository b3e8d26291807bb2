"""The benchmark's report arithmetic (the benchmark itself runs with `make bench`, not in tests)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import backup_bench


def result(seed_cpu: float, reference_cpu: float, ipa_cpu: float) -> dict[str, object]:
    return {
        "database": "multi",
        "size_bytes": 1.23e9,
        "seed_backup": 24.0,
        "seed_restore": 14.0,
        "seed_restore_cpu": seed_cpu,
        "seed_bytes": 4.4e8,
        "pg_dump_z1_file": 12.0,
        "pg_restore_z1_file": 11.0,
        "pg_restore_z1_file_cpu": reference_cpu,
        "floor": 3.0,
        "ipa_runs": [{"knobs": {}, "backup": 6.0, "restore": 12.0, "restore_cpu": ipa_cpu, "stored_bytes": 4.2e8}],
    }


def test_ceiling_uses_the_least_cpu_of_any_restore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backup_bench.os, "cpu_count", lambda: 2)
    report = backup_bench.table([result(seed_cpu=21.0, reference_cpu=20.0, ipa_cpu=23.0)])
    # 20 s of CPU over 2 cores: no restore under 10 s, so at most 14 / 10 = 1.40x the seed.
    assert "no restore can take under 10.0 s: at most 1.40x the seed's 14.0 s" in report
    assert "kept 1.50 cores busy" in report  # 21 s of CPU in 14 s
    assert "| multi | 1.23 GB | ipa-backup (defaults) | 6.0 | 12.0 | 23.0 | 420 | 4.00x | 1.17x |" in report


def test_busy_cpu_seconds_counts_this_process_work() -> None:
    before = backup_bench.busy_cpu_seconds()
    deadline = backup_bench.time.process_time() + 0.3
    while backup_bench.time.process_time() < deadline:
        pass
    assert backup_bench.busy_cpu_seconds() - before >= 0.25
