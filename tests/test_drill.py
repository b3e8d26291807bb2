"""`make drill`: the drill's copies of the rendered artifacts, its notification parsing, and whole runs
(one to the end, one interrupted) against real services on loopback, asserting on build/drill/report.json."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from devservices.process import REPO_ROOT
from devservices.smtp_standin import Mail
from devservices.teams_standin import TeamsPost
from drill import artifacts, notifications
from drill.artifacts import compress_expr, format_duration, parse_duration

Rendered = Callable[[str], Path]


# --- rule compression ------------------------------------------------------------------------------


def test_durations_round_trip() -> None:
    assert parse_duration("1h30m") == 5400
    assert parse_duration("250ms") == 0.25
    assert [format_duration(s) for s in (5, 60, 90, 3600, 0.5)] == ["5s", "1m", "90s", "1h", "500ms"]
    with pytest.raises(ValueError):
        parse_duration("5 minutes")


def test_compress_expr_scales_windows_steps_and_offsets_but_not_strings() -> None:
    expr = 'rate(x{le=~"[0-9]+", a="[5m]"}[5m]) + max_over_time(y[1h:5m]) - z offset 1d + sum(w[1m])'
    assert compress_expr(expr, 60, 5) == ('rate(x{le=~"[0-9]+", a="[5m]"}[5s]) + max_over_time(y[1m:5s]) - z offset 24m + sum(w[5s])')
    assert compress_expr("increase(a[3d])", 60, 5) == "increase(a[72m])"


def test_compress_rules_of_the_dev_render(rendered: Rendered) -> None:
    original = yaml.safe_load((rendered("dev") / "prometheus" / "rules.yaml").read_text())
    drill = artifacts.compress_rules(original, rpo_seconds=3600)
    before = {r["alert"]: r for g in original["groups"] for r in g["rules"] if "alert" in r}
    assert set(drill.alerts) == set(before)
    for name, rule in drill.alerts.items():
        if "for" in before[name]:
            assert parse_duration(rule["for"]) == max(1.0, parse_duration(before[name]["for"]) / 60), name
        assert rule["labels"] == before[name]["labels"] and rule["annotations"] == before[name]["annotations"]
    assert "> 60\n" in drill.alerts["BackupTooOld"]["expr"] or "> 60 " in drill.alerts["BackupTooOld"]["expr"]
    assert "3600" not in drill.alerts["BackupTooOld"]["expr"]
    assert all(g["interval"] == "1s" for g in drill.content["groups"])
    # The rendered content itself is untouched.
    assert original == yaml.safe_load((rendered("dev") / "prometheus" / "rules.yaml").read_text())


def test_compress_rules_refuses_a_backup_alert_without_the_rpo() -> None:
    rules = {"groups": [{"name": "g", "rules": [{"alert": "BackupTooOld", "expr": "ipa:backup_age_seconds > 7200"}]}]}
    with pytest.raises(artifacts.ArtifactError, match="RPO"):
        artifacts.compress_rules(rules, rpo_seconds=3600)


# --- Alertmanager ---------------------------------------------------------------------------------


def test_localize_alertmanager_keeps_routing_and_templates(rendered: Rendered, tmp_path: Path) -> None:
    original = yaml.safe_load((rendered("dev") / "alertmanager" / "alertmanager.yaml").read_text())
    am = artifacts.localize_alertmanager(original, tmp_path, "http://127.0.0.1:9/workflows/x", "pw-123", "127.0.0.1:2525")
    text = yaml.safe_dump(am.content)
    assert "/etc/alertmanager" not in text
    assert sorted(p.read_text() for p in am.secret_files.values()) == ["http://127.0.0.1:9/workflows/x", "pw-123"]
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in am.secret_files.values())

    def strip_timers(route: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in route.items() if k not in ("group_wait", "group_interval", "routes")}
        out["routes"] = [strip_timers(r) for r in route.get("routes") or []]
        return out

    assert strip_timers(am.content["route"]) == strip_timers(original["route"])
    assert am.content["inhibit_rules"] == original["inhibit_rules"]
    assert am.content["templates"] == original["templates"]
    for got, want in zip(am.content["receivers"], original["receivers"], strict=True):
        for kind in ("msteamsv2_configs", "email_configs"):
            for g, w in zip(got.get(kind) or [], want.get(kind) or [], strict=True):
                changed = {k for k in set(g) | set(w) if g.get(k) != w.get(k)}
                allowed = {"webhook_url_file"} if kind == "msteamsv2_configs" else {"auth_password_file", "smarthost", "require_tls"}
                assert changed <= allowed, (kind, changed)
    assert am.receivers["teams-and-email"] == {"teams", "email"}
    for severity, receiver in (("critical", "teams-and-email"), ("warning", "teams"), ("info", "null")):
        assert artifacts.route_receiver(am.content, {"alertname": "X", "severity": severity}) == receiver
    assert artifacts.route_receiver(am.content, {"alertname": "Watchdog", "severity": "critical"}) == "null"


def test_backup_cronjob_env_is_translated_name_for_name(rendered: Rendered) -> None:
    cronjobs = artifacts.find_cronjobs(rendered("dev") / "kubernetes")
    assert set(cronjobs) == {"backup", "drill"}
    backup = cronjobs["backup"]
    local = {
        "PGHOST": "127.0.0.1",
        "PGPORT": "5433",
        "PGUSER": "u",
        "PGPASSWORD": "p",
        "REDIS_URL": "redis://127.0.0.1:7/0",
        "REDISCLI_AUTH": "r",
        "AZURE_STORAGE_CONNECTION_STRING": "cs",
        "PUSHGATEWAY_URL": "http://127.0.0.1:8",
    }
    env = artifacts.translate_env(backup.env, local, {}).env
    assert set(env) == set(backup.env_names) - {"BACKUP_BLOB_ACCOUNT_URL"} | {"AZURE_STORAGE_CONNECTION_STRING"}
    assert not any(".svc" in v or "windows.net" in v for v in env.values())
    assert env["BACKUP_CONTAINER"] == "ipa-backups" and env["PGDATABASE"] == "ipa"
    with pytest.raises(artifacts.ArtifactError, match="PGUSER"):
        artifacts.translate_env(backup.env, {k: v for k, v in local.items() if k != "PGUSER"}, {})


# --- notifications ----------------------------------------------------------------------------------


def test_notifications_name_alert_status_and_channel() -> None:
    card = {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "content": {
                    "body": [
                        {"type": "TextBlock", "text": "[RESOLVED] [dev] [critical] HighErrorRate: 5xx"},
                        {"type": "TextBlock", "text": "see also BackupTooOld"},
                    ]
                },
            }
        ],
    }
    teams = notifications.from_teams([TeamsPost(10.0, "/w", card, json.dumps(card))], ["HighErrorRate", "BackupTooOld", "HighError"])
    assert teams == [
        notifications.Notification(
            "teams", 10.0, "resolved", frozenset({"HighErrorRate"}), card["attachments"][0]["content"]["body"][0]["text"]
        )
    ]
    mail = notifications.from_mail(
        [Mail(11.0, "a@x", ("b@y",), "[FIRING:2] [dev] [warning] HighResponseTime", "<p>..</p>", "a@x")], ["HighResponseTime"]
    )
    assert mail[0].status == "firing" and mail[0].alertnames == {"HighResponseTime"}
    assert notifications.first(teams + mail, "HighErrorRate", "teams", "resolved", after=9.0) == teams[0]
    assert notifications.first(teams + mail, "HighErrorRate", "teams", "resolved", after=10.5) is None


# --- whole runs -----------------------------------------------------------------------------------------


def _drill(build_dir: Path, out: Path, seed: int) -> subprocess.Popen[bytes]:
    log = open(out.parent / f"{out.name}.log", "wb")  # noqa: SIM115 - the child keeps it
    return subprocess.Popen(
        [sys.executable, "-m", "drill", "--build-dir", str(build_dir), "--out", str(out), "--seed", str(seed)],
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _leftovers(marker: Path) -> list[str]:
    """Command lines of running processes that mention `marker` (the drill's work folder)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(marker) in cmdline and "pytest" not in cmdline:
                found.append(cmdline)
    return found


@pytest.mark.services
def test_the_whole_drill_passes_and_reports(rendered: Rendered, tmp_path: Path) -> None:
    out = tmp_path / "drill"
    started = time.monotonic()
    proc = _drill(rendered("dev"), out, seed=7)
    rc = proc.wait(timeout=900)
    elapsed = time.monotonic() - started
    log = (tmp_path / "drill.log").read_text()
    report = json.loads((out / "report.json").read_text())
    failed = [c for c in report["checks"] if not c["passed"]]
    assert rc == 0 and report["passed"] and not failed, f"{failed}\n{log[-4000:]}"
    assert elapsed < 900
    # The shape of docs/operations/drill.md#outputs, exactly.
    assert list(report) == ["passed", "rpo_seconds", "rto_seconds", "backup_seconds", "restore_seconds", "checks", "alerts"]
    assert all(list(c) == ["name", "passed", "detail"] for c in report["checks"])
    assert all(list(a) == ["alertname", "receiver", "channels", "delivered_after_seconds"] for a in report["alerts"])
    for key in ("rpo_seconds", "rto_seconds", "backup_seconds", "restore_seconds"):
        assert isinstance(report[key], float) and report[key] > 0, key
    # The compressed schedule backs up every 30 s: the RPO is below that plus one backup.
    assert report["rpo_seconds"] < 30 + report["backup_seconds"] + 2
    assert report["rto_seconds"] < 120
    alerts = {a["alertname"]: a for a in report["alerts"]}
    assert set(alerts) >= {"HighErrorRate", "HighResponseTime", "ClaudeAPIErrors", "BackupTooOld", "IpaBackendDown"}
    assert sorted(alerts["HighErrorRate"]["channels"]) == ["email", "teams"]
    assert alerts["HighResponseTime"]["channels"] == ["teams"] and alerts["HighResponseTime"]["receiver"] == "teams"
    assert all(a["delivered_after_seconds"] is not None and a["delivered_after_seconds"] < 150 for a in report["alerts"])
    names = {c["name"] for c in report["checks"]}
    assert {
        "restored PostgreSQL data",
        "restored Redis data",
        "ipa-backup drill",
        "every process stopped",
        "routing: every notification on its severity's channels",
    } <= names
    md = (out / "report.md").read_text()
    assert "![timeline](timeline.png)" in md and "RPO" in md
    assert (out / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "DISASTER" in log and "restored and verified" in log  # progress is shown
    assert not _leftovers(out)


@pytest.mark.services
def test_an_interrupted_drill_stops_everything_and_fails(rendered: Rendered, tmp_path: Path) -> None:
    out = tmp_path / "drill"
    proc = _drill(rendered("dev"), out, seed=8)
    log_path = tmp_path / "drill.log"
    deadline = time.monotonic() + 300
    while "baseline:" not in (log_path.read_text() if log_path.exists() else "") and time.monotonic() < deadline:
        assert proc.poll() is None, log_path.read_text()
        time.sleep(0.5)
    assert "baseline:" in log_path.read_text(), "the drill never got its services running"
    os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the drill
    rc = proc.wait(timeout=120)
    report = json.loads((out / "report.json").read_text())
    checks = {c["name"]: c for c in report["checks"]}
    assert rc == 130 and report["passed"] is False
    assert checks["drill ran to the end"]["passed"] is False and "interrupted" in checks["drill ran to the end"]["detail"]
    assert checks["every process stopped"]["passed"], checks["every process stopped"]
    assert not _leftovers(out)
