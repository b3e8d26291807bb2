"""The metrics contract (components/metrics_contract.py) against code that writes or prices its metrics without it.

ipa-backup writes the backup metrics itself (it cannot import components/): what it pushes is what the
metrics contract says, name for name, type, help, labels and label values."""

from __future__ import annotations

from typing import Any

import pytest
from ipa_backup import metrics as backup_metrics
from prometheus_client import CollectorRegistry

from components.metrics_contract import BACKUP, BACKUP_METRICS, BACKUP_TARGETS, BASE_BACKUP_METRICS, TOKEN_TYPES, WAL_STREAM_METRICS
from components.rules.groups import BACKUP_TARGETS as RULE_BACKUP_TARGETS
from components.topology import WAL_STREAM_JOB
from tests.conftest import stack_settings


def _pushed(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, Any]]:
    """Every family ipa-backup pushes after a successful backup and drill, by name."""
    families: dict[str, dict[str, Any]] = {}

    def capture(url: str, job: str, registry: CollectorRegistry, timeout: float, grouping_key: dict[str, str] | None = None) -> None:
        assert job == BACKUP
        for family in registry.collect():
            if family.name in backup_metrics.BACKUP_METRICS:  # one group per target: a Redis-only set keeps PostgreSQL's
                assert grouping_key == {"target": family.samples[0].labels["target"]}, family.name
            entry = families.setdefault(family.name, {"type": family.type, "help": family.documentation, "labels": set(), "values": set()})
            entry["labels"] |= {tuple(sample.labels) for sample in family.samples}  # over all pushes (one per target)
            entry["values"] |= {(k, v) for sample in family.samples for k, v in sample.labels.items()}

    monkeypatch.setattr(backup_metrics, "pushadd_to_gateway", capture)
    monkeypatch.setattr(backup_metrics, "_groups", lambda url: [])  # no group of an earlier tool to move
    backup_metrics.push_backup("http://pushgateway", {t: (1.7e9, 10.0, 1000) for t in BACKUP_TARGETS})
    backup_metrics.push_drill("http://pushgateway", 1.7e9, dict.fromkeys(BACKUP_TARGETS, 60.0), pitr_seconds=30.0)
    return families


def test_ipa_backup_pushes_the_contracts_backup_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    pushed = _pushed(monkeypatch)
    assert backup_metrics.JOB == BACKUP
    assert set(pushed) == {m.name for m in BACKUP_METRICS}
    for metric in BACKUP_METRICS:
        family = pushed[metric.name]
        assert (family["type"], family["help"]) == (metric.type, metric.help), metric.name
        assert family["labels"] == {metric.labels}, metric.name
        assert family["values"] == {(label, v) for label, values in metric.values.items() for v in values}, metric.name


def _families(registry: CollectorRegistry) -> dict[str, tuple[str, str, set[tuple[str, ...]]]]:
    return {f.name: (f.type, f.documentation, {tuple(s.labels) for s in f.samples}) for f in registry.collect()}


def test_base_backup_pushes_the_contracts_base_backup_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    pushed: dict[str, tuple[str, str, set[tuple[str, ...]]]] = {}

    def capture(url: str, job: str, registry: CollectorRegistry, timeout: float, grouping_key: dict[str, str] | None = None) -> None:
        assert job == BACKUP and grouping_key is None  # pushadd under the backup job: it replaces only these names
        pushed.update(_families(registry))

    monkeypatch.setattr(backup_metrics, "pushadd_to_gateway", capture)
    backup_metrics.push_base_backup("http://pushgateway", 1.7e9, 60.0, 1000)
    assert pushed == {m.name: (m.type, m.help, {m.labels}) for m in BASE_BACKUP_METRICS}


def test_wal_stream_serves_the_contracts_wal_stream_metrics() -> None:
    from ipa_backup.wal import Metrics

    assert _families(Metrics().registry) == {m.name: (m.type, m.help, {m.labels}) for m in WAL_STREAM_METRICS}
    assert {m.exposed_by for m in WAL_STREAM_METRICS} == {WAL_STREAM_JOB}  # the PodMonitor's job label


def test_the_rules_watch_every_backup_target() -> None:
    assert set(RULE_BACKUP_TARGETS) == set(BACKUP_TARGETS)


def test_every_token_type_has_a_price() -> None:
    # The cost rules multiply claude_tokens_total by the price of its `type`.
    assert list(stack_settings("dev").claude_default_pricing.as_dict()) == list(TOKEN_TYPES)
