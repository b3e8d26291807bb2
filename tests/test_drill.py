"""`make drill`: the drill's copies of the rendered artifacts, its notification parsing, and whole runs
(one to the end, one interrupted) against real services on loopback, asserting on build/drill/report.json."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from devservices.heartbeat_standin import Heartbeat
from devservices.process import REPO_ROOT
from devservices.smtp_standin import Mail
from devservices.teams_standin import TeamsPost
from devservices.tools import tool
from drill import artifacts, heartbeat, notifications, promql, routing
from drill import pitr as drill_pitr
from drill import rendered as drill_rendered
from drill.promql import compress_expr, format_duration, parse_duration
from drill.workload import Commit

Rendered = Callable[[str], Path]


# --- rule compression ------------------------------------------------------------------------------


def test_durations_round_trip() -> None:
    assert parse_duration("1h30m") == 5400
    assert parse_duration("250ms") == 0.25
    assert parse_duration("0s") == 0
    assert [format_duration(s) for s in (5, 60, 90, 3600, 0.5)] == ["5s", "1m", "1m30s", "1h", "500ms"]
    with pytest.raises(ValueError):
        parse_duration("5 minutes")


def test_compress_expr_scales_windows_steps_and_offsets_on_the_tree_but_not_strings() -> None:
    expr = r'rate(x{le=~"[0-9]+", a="[5m]", b=~"1\\.0"}[5m]) + max_over_time(y[1h:5m]) - z offset 1d + sum(rate(w[1m] offset -1h))'
    got = compress_expr(expr, 60, 5)
    assert (
        promql_parser.parse(got.text).prettify()
        == promql_parser.parse(
            r'rate(x{le=~"[0-9]+", a="[5m]", b=~"1\\.0"}[5s]) + max_over_time((y)[1m:5s]) - z offset 24m + sum(rate(w[5s] offset -1m))'
        ).prettify()
    )
    assert got.durations == 5 and got.thresholds == ()
    assert "increase(a[1h12m])" in compress_expr("increase(a[3d])", 60, 5).text


def test_compress_expr_scales_age_thresholds_only() -> None:
    age = compress_expr("min(time() - last_success) > 3600 and errors > 3600", 60, 5)
    assert age.thresholds == ((3600.0, 60.0),)
    assert promql_parser.parse(age.text).prettify() == promql_parser.parse("min(time() - last_success) > 60 and errors > 3600").prettify()
    flipped = compress_expr("7200 < bool time() - x", 60, 5)
    assert flipped.thresholds == ((7200.0, 120.0),) and "bool" in flipped.text


def test_compress_rules_of_the_dev_render(rendered: Rendered) -> None:
    original = yaml.safe_load((rendered("dev") / "prometheus" / "rules.yaml").read_text())
    settings = drill_rendered.load(rendered("dev")).settings
    drill = promql.compress_rules(original, {"BackupTooOld": settings.rpo_target_minutes * 60})
    before = {r["alert"]: r for g in original["groups"] for r in g["rules"] if "alert" in r}
    assert set(drill.alerts) == set(before)
    for name, rule in drill.alerts.items():
        if "for" in before[name]:
            assert parse_duration(rule["for"]) == max(1.0, parse_duration(before[name]["for"]) / 60), name
            assert drill.longest_for[name] == parse_duration(rule["for"])
        assert rule["labels"] == before[name]["labels"] and rule["annotations"] == before[name]["annotations"]
    numbers: list[float] = []
    promql_parser.walk(
        promql_parser.parse(drill.alerts["BackupTooOld"]["expr"]),
        lambda n: numbers.append(n.val) if isinstance(n, promql_parser.NumberLiteral) else None,
    )
    assert numbers == [settings.rpo_target_minutes * 60 / 60]
    assert any("from settings.json" in c for c in drill.changes)
    assert all(g["interval"] == "1s" for g in drill.content["groups"])
    # The rendered content itself is untouched.
    assert original == yaml.safe_load((rendered("dev") / "prometheus" / "rules.yaml").read_text())


def test_compressed_dev_rules_pass_promtool(rendered: Rendered, tmp_path: Path) -> None:
    render = drill_rendered.load(rendered("dev"))
    rules, _ = artifacts.with_watchdog(render.rules, render.kps_values)
    drill = promql.compress_rules(rules, {"BackupTooOld": render.settings.rpo_target_minutes * 60})
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(drill.content))
    result = subprocess.run([tool("promtool"), "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Watchdog" in drill.alerts


def test_compress_rules_refuses_a_backup_alert_whose_threshold_is_not_the_settings_rpo() -> None:
    rules = {
        "groups": [{"name": "g", "rules": [{"alert": "BackupTooOld", "expr": "time() - ipa_backup_last_success_timestamp_seconds > 7200"}]}]
    }
    with pytest.raises(promql.CompressionError, match="3600s, the value of the settings; it compares with 7200s"):
        promql.compress_rules(rules, {"BackupTooOld": 3600})
    no_age = {"groups": [{"name": "g", "rules": [{"alert": "BackupTooOld", "expr": "ipa:backup_age_seconds > 3600"}]}]}
    with pytest.raises(promql.CompressionError, match="no number"):
        promql.compress_rules(no_age, {"BackupTooOld": 3600})


def test_watchdog_is_added_only_when_the_chart_would_have_it() -> None:
    rules = {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "up == 0"}]}]}
    added, changes = artifacts.with_watchdog(rules, {"defaultRules": {"rules": {"etcd": False}}})
    assert [r["alert"] for g in added["groups"] for r in g["rules"]] == ["A", "Watchdog"] and changes
    kept, none = artifacts.with_watchdog(rules, {"defaultRules": {"rules": {"general": False}}})
    assert kept == rules and not none


# --- the rendered settings and PodMonitor -------------------------------------------------------------


def test_the_drill_reads_the_settings_of_the_render(rendered: Rendered, tmp_path: Path) -> None:
    render = drill_rendered.load(rendered("dev"))
    raw = json.loads((rendered("dev") / "settings.json").read_text())
    assert render.settings.rpo_target_minutes == raw["rpoTargetMinutes"]
    assert render.settings.backup_schedule == raw["backupSchedule"]
    broken = tmp_path / "dev"
    shutil.copytree(rendered("dev"), broken)
    (broken / "settings.json").write_text(json.dumps({**raw, "rpoTargetMinutes": "soon"}))
    with pytest.raises(artifacts.ArtifactError, match="rpoTargetMinutes"):
        drill_rendered.load(broken)
    (broken / "topology.json").unlink()
    with pytest.raises(artifacts.ArtifactError, match=r"topology\.json is missing"):
        drill_rendered.load(broken)


def test_backend_scrape_config_comes_from_the_pod_monitor(rendered: Rendered) -> None:
    render = drill_rendered.load(rendered("dev"))
    monitor = artifacts.find_pod_monitor(render.manifests, render.topology["backend_app"])
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    [config], changes = artifacts.scrape_config_from_pod_monitor(monitor, "127.0.0.1:9")
    assert config["metrics_path"] == endpoint["path"]
    assert config["scrape_interval"] == format_duration(max(1.0, parse_duration(endpoint["interval"]) / 60))
    labels = config["static_configs"][0]["labels"]
    assert labels["namespace"] == monitor["spec"]["namespaceSelector"]["matchNames"][0] and labels["endpoint"] == endpoint["port"]
    assert {"target_label": "job", "replacement": render.topology["backend_job"], "action": "replace"} in config["relabel_configs"]
    assert changes
    odd = copy.deepcopy(monitor)
    odd["spec"]["podMetricsEndpoints"][0]["basicAuth"] = {"username": {"name": "s", "key": "u"}}
    with pytest.raises(artifacts.ArtifactError, match="basicAuth"):
        artifacts.scrape_config_from_pod_monitor(odd, "127.0.0.1:9")
    with pytest.raises(artifacts.ArtifactError, match="one PodMonitor"):
        artifacts.find_pod_monitor(render.manifests, "no-such-app")


# --- Alertmanager ---------------------------------------------------------------------------------

LOCAL = artifacts.LocalEndpoints("http://127.0.0.1:9/workflows/x", "http://127.0.0.1:9/heartbeat/w", "pw-123", "127.0.0.1:2525")


def test_localize_alertmanager_keeps_routing_and_templates(rendered: Rendered, tmp_path: Path) -> None:
    original = yaml.safe_load((rendered("dev") / "alertmanager" / "alertmanager.yaml").read_text())
    am = artifacts.localize_alertmanager(original, tmp_path, LOCAL)
    text = yaml.safe_dump(am.content)
    assert "/etc/alertmanager" not in text
    assert sorted(p.read_text() for p in am.secret_files.values()) == sorted(
        {LOCAL.teams_url, LOCAL.smtp_password} | ({LOCAL.heartbeat_url} if am.heartbeat else set())
    )
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in am.secret_files.values())

    def strip_timers(route: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in route.items() if k not in ("group_wait", "group_interval", "routes")}
        if am.heartbeat and route.get("receiver") == am.heartbeat.receiver:
            out.pop("repeat_interval", None)
        out["routes"] = [strip_timers(r) for r in route.get("routes") or []]
        return out

    assert strip_timers(am.content["route"]) == strip_timers(original["route"])
    assert am.content["inhibit_rules"] == original["inhibit_rules"]
    assert am.content["templates"] == original["templates"]
    allowed = {
        "msteamsv2_configs": {"webhook_url_file"},
        "email_configs": {"auth_password_file", "smarthost", "require_tls"},
        "webhook_configs": {"url_file"},
    }
    for got, want in zip(am.content["receivers"], original["receivers"], strict=True):
        for kind, may_change in allowed.items():
            for g, w in zip(got.get(kind) or [], want.get(kind) or [], strict=True):
                changed = {k for k in set(g) | set(w) if g.get(k) != w.get(k)}
                assert changed <= may_change, (kind, changed)
    assert am.receivers["teams-and-email"] == {"teams", "email"}


def test_amtool_routes_the_drill_copy_like_the_render(rendered: Rendered, tmp_path: Path) -> None:
    path = rendered("dev") / "alertmanager" / "alertmanager.yaml"
    am = artifacts.localize_alertmanager(yaml.safe_load(path.read_text()), tmp_path / "secrets", LOCAL)
    copy_path = tmp_path / "alertmanager.yaml"
    copy_path.write_text(yaml.safe_dump(am.content))
    for labels in (
        {"alertname": "X", "severity": "critical", "namespace": "ipa"},
        {"alertname": "X", "severity": "warning"},
        {"alertname": "X", "severity": "info"},
        {"alertname": "Watchdog", "severity": "none"},
    ):
        assert routing.receivers(copy_path, labels) == routing.receivers(path, labels), labels
    assert routing.receiver(path, {"alertname": "X", "severity": "critical"}) == "teams-and-email"
    assert routing.receiver(path, {"alertname": "X", "severity": "warning"}) == "teams"


def test_amtool_routing_sees_a_changed_route(rendered: Rendered, tmp_path: Path) -> None:
    """The check can fail: a route sending warnings to e-mail is what amtool reports."""
    config = yaml.safe_load((rendered("dev") / "alertmanager" / "alertmanager.yaml").read_text())
    for route in config["route"]["routes"]:
        if route["matchers"] == ['severity = "warning"']:
            route["receiver"] = "teams-and-email"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    assert routing.receiver(bad, {"alertname": "X", "severity": "warning"}) == "teams-and-email"
    with pytest.raises(artifacts.ArtifactError, match="amtool"):
        routing.receivers(tmp_path / "missing.yaml", {"alertname": "X"})


def test_heartbeat_route_timers_are_compressed(tmp_path: Path) -> None:
    config = {
        "route": {
            "receiver": "null",
            "group_interval": "5m",
            "routes": [{"receiver": "hb", "matchers": ['alertname = "Watchdog"'], "group_wait": "0s", "repeat_interval": "5m"}],
        },
        "receivers": [{"name": "null"}, {"name": "hb", "webhook_configs": [{"url_file": "/s/url", "send_resolved": False}]}],
    }
    am = artifacts.localize_alertmanager(config, tmp_path, LOCAL)
    assert am.heartbeat == artifacts.HeartbeatRoute("hb", 300.0, 300.0, 5.0, 5.0, False)
    assert am.heartbeat.longest_gap == 600 and am.heartbeat.drill_longest_gap == 10
    route = am.content["route"]["routes"][0]
    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == ("0s", "5s", "5s")
    assert Path(am.content["receivers"][1]["webhook_configs"][0]["url_file"]).read_text() == LOCAL.heartbeat_url
    two = copy.deepcopy(config)
    two["route"]["routes"].append({"receiver": "hb", "matchers": ['alertname = "Other"']})
    with pytest.raises(artifacts.ArtifactError, match="one heartbeat route"):
        artifacts.localize_alertmanager(two, tmp_path, LOCAL)
    odd = copy.deepcopy(config)
    odd["receivers"][1]["pagerduty_configs"] = [{}]
    with pytest.raises(artifacts.ArtifactError, match="pagerduty_configs"):
        artifacts.localize_alertmanager(odd, tmp_path, LOCAL)


def test_backup_cronjob_env_is_translated_name_for_name(rendered: Rendered) -> None:
    cronjobs = artifacts.find_cronjobs(artifacts.load_manifests(rendered("dev") / "kubernetes"))
    assert {"backup", "drill"} <= set(cronjobs)
    backup = cronjobs["backup"]
    local = {
        "PGHOST": "127.0.0.1",
        "PGPORT": "5433",
        "PGUSER": "u",
        "PGPASSWORD": "p",
        "PGPASSWORD_FILE": "/work/s/pg",
        "REDIS_PASSWORD_FILE": "/work/s/redis",
        "REDIS_URL": "redis://127.0.0.1:7/0",
        "REDISCLI_AUTH": "r",
        "AZURE_STORAGE_CONNECTION_STRING": "cs",
        "PUSHGATEWAY_URL": "http://127.0.0.1:8",
    }
    env = artifacts.translate_env(backup.env, local, {}).env
    assert set(env) == set(backup.env_names) - {"BACKUP_BLOB_ACCOUNT_URL"} | {"AZURE_STORAGE_CONNECTION_STRING"}
    assert not any(".svc" in v or "windows.net" in v or "/var/run/secrets" in v for v in env.values())
    assert env["BACKUP_CONTAINER"] == "ipa-backups" and env["PGDATABASE"] == "ipa"
    with pytest.raises(artifacts.ArtifactError, match="PGUSER"):
        artifacts.translate_env(backup.env, {k: v for k, v in local.items() if k != "PGUSER"}, {})


# --- heartbeat verdicts ------------------------------------------------------------------------------

HB = artifacts.HeartbeatRoute("heartbeat", 300.0, 30.0, 5.0, 0.5, False)


def _beats(*times: float, status: str = "firing", name: str = "Watchdog") -> list[Heartbeat]:
    return [Heartbeat(t, "/heartbeat/watchdog", status, (name,), "heartbeat") for t in times]


def test_heartbeat_schedule_verdict() -> None:
    ok, detail = heartbeat.schedule_verdict(_beats(100.0, 105.1, 110.3, 115.4), HB, [])
    assert ok, detail
    assert "4 beats" in detail
    # A missed beat, a resolved notification, too few beats, a refused payload: each fails.
    assert not heartbeat.schedule_verdict(_beats(100.0, 105.0, 118.0), HB, [])[0]
    assert "gaps outside: [13.0]" in heartbeat.schedule_verdict(_beats(100.0, 105.0, 118.0), HB, [])[1]
    assert not heartbeat.schedule_verdict(_beats(100.0, 105.0) + _beats(110.0, status="resolved"), HB, [])[0]
    assert not heartbeat.schedule_verdict(_beats(100.0, 105.0), HB, [])[0]
    assert not heartbeat.schedule_verdict(_beats(100.0, 105.0, 110.0), HB, ["/heartbeat/watchdog: version '3'"])[0]
    # Beats far more often than repeat_interval fail too.
    assert not heartbeat.schedule_verdict(_beats(100.0, 101.0, 102.0), HB, [])[0]


def test_heartbeat_stop_verdict() -> None:
    stopped, expiry = 200.0, 4.0
    ok, detail = heartbeat.stop_verdict(_beats(190.0, 195.0, 200.5, 203.0), stopped, expiry, 3.8, 7.0)
    assert ok and "last beat +3.0s" in detail, detail
    late = heartbeat.stop_verdict(_beats(195.0, 200.5, 210.0), stopped, expiry, 3.8, 7.0)
    assert not late[0] and "late beats at +[10.0]s" in late[1]
    held = heartbeat.stop_verdict(_beats(195.0), stopped, expiry, None, 7.0)
    assert not held[0] and "still held" in held[1]


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
    assert list(report) == [
        "passed",
        "rpo_seconds",
        "rto_seconds",
        "pitr_rpo_seconds",
        "pitr_rto_seconds",
        "backup_seconds",
        "restore_seconds",
        "checks",
        "alerts",
    ]
    assert all(list(c) == ["name", "passed", "detail"] for c in report["checks"])
    assert all(list(a) == ["alertname", "receiver", "channels", "delivered_after_seconds"] for a in report["alerts"])
    for key in ("rpo_seconds", "rto_seconds", "pitr_rpo_seconds", "pitr_rto_seconds", "backup_seconds", "restore_seconds"):
        assert isinstance(report[key], float) and report[key] > 0, key
    # The drill's WAL stream uploads the segment in progress every second: a lost cluster loses about that.
    assert report["pitr_rpo_seconds"] < 1 + 2 and report["pitr_rto_seconds"] < 120
    # The compressed schedule backs up every 30 s: the RPO is below that plus one backup.
    assert report["rpo_seconds"] < 30 + report["backup_seconds"] + 2
    assert report["rto_seconds"] < 120
    alerts = {a["alertname"]: a for a in report["alerts"]}
    assert set(alerts) >= {"HighErrorRate", "HighResponseTime", "ClaudeAPIErrors", "BackupTooOld", "IpaBackendDown", "WalStreamDown"}
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
        "rendered routing (amtool config routes test)",
        "heartbeat route rendered",
        "heartbeat on schedule",
        "heartbeat stops when Prometheus stops",
        "PITR restored data",
        "PITR RPO (lost cluster) within 60 s in production terms",
        "PITR accidental DELETE: every row committed before the target back, none after",
        "WAL stream resumes from its slot after a stop",
        "ipa-backup drill rehearses PITR",
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


# --- point-in-time recovery ----------------------------------------------------------------------------


def _commits(*rows: tuple[int, float, float]) -> list[Commit]:
    return [Commit(*row) for row in rows]


def test_wal_stream_env_and_scrape_come_from_the_render(rendered: Rendered) -> None:
    render = drill_rendered.load(rendered("dev"))
    env = {e["name"]: e for e in drill_pitr.find_wal_stream(render.manifests) or []}
    assert env["WAL_SLOT"]["value"] == render.topology["wal_slot"] and "WAL_PARTIAL_UPLOAD_SECONDS" in env
    [config], _ = drill_pitr.wal_stream_scrape(render.manifests, render.topology["wal_stream"], "127.0.0.1:9")
    assert config["static_configs"][0]["targets"] == ["127.0.0.1:9"]
    assert {"target_label": "job", "replacement": render.topology["wal_stream_job"], "action": "replace"} in config["relabel_configs"]
    with pytest.raises(artifacts.ArtifactError, match="one PodMonitor no-such"):
        drill_pitr.wal_stream_scrape(render.manifests, "no-such", "127.0.0.1:9")
    assert drill_pitr.find_wal_stream([m for m in render.manifests if m.get("kind") != "Deployment"]) is None


def test_pitr_rpo_in_production_terms() -> None:
    # Measured with the drill's 1 s partial uploads; production uploads every 15 s: up to 14 s more.
    assert drill_pitr.production_rpo(0.6, 15) == pytest.approx(14.6)
    assert drill_pitr.production_rpo(0.6, 1) == pytest.approx(0.6)


def test_lost_cluster_verdict_finds_missing_commits() -> None:
    acked = _commits((1, 10.0, 10.01), (2, 10.1, 10.11), (3, 10.2, 10.21))
    assert drill_pitr.lost_cluster_verdict(acked, [(1, 10.0), (2, 10.1)]) == (10.1, [])
    assert drill_pitr.lost_cluster_verdict(acked, [(1, 10.0), (3, 10.2)]) == (10.2, [2])  # a hole before the newest row
    assert drill_pitr.lost_cluster_verdict(acked, []) == (0.0, [])


def test_accidental_delete_target_and_verdict() -> None:
    commits = _commits((11, 10.0, 10.01), (12, 10.1, 10.11), (13, 10.2, 10.21), (14, 10.3, 10.31))
    target = drill_pitr.target_between_commits(commits, 10.15)
    assert target is not None and 10.11 < target < 10.2  # between 12's acknowledgement and 13's row
    assert drill_pitr.target_between_commits(commits, 9.0) is None
    assert drill_pitr.target_between_commits(commits, 11.0) is None
    before = {1, 2}
    ok, detail = drill_pitr.delete_verdict(before, commits, target, {1, 2, 11, 12})
    assert ok and "2 committed after it absent" in detail
    assert not drill_pitr.delete_verdict(before, commits, target, {1, 2, 11, 12, 13})[0]  # a row after the target
    assert not drill_pitr.delete_verdict(before, commits, target, {1, 11, 12})[0]  # a row from before the writer lost
    assert not drill_pitr.delete_verdict(before, commits, target, {1, 2, 11})[0]  # a commit before the target lost
    assert not drill_pitr.delete_verdict(before, commits, target, {1, 2, 11, 12, 99})[0]  # a row nobody wrote
