"""The alerting rehearsal: a quiet baseline, faults that must fire their alerts on the channels
their route leads to (`amtool config routes test` on the rendered alertmanager.yaml), the
resolved notifications once the faults are gone, and the routing checks over every notification
(docs/operations/drill.md#the-alerting-rehearsal)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from drill import notifications, report, routing
from drill.context import RunContext, rfc3339_seconds
from drill.recovery import Backups
from drill.services import Monitoring, Services

# The alerts the drill rehearses, with the fault it injects for each; REQUIRED_ALERTS adds the other
# names docs/monitoring/alerts.md says are relied on.
REHEARSED = {
    "HighErrorRate": "5xx burst",
    "HighResponseTime": "slow responses",
    "ClaudeAPIErrors": "Claude errors",
    "ExecutionFailureRateHigh": "failing executions",
    "BackupTooOld": "backups stop",
    "IpaBackendDown": "backend down",
    "WalStreamDown": "WAL stream stops",
}
PITR_ALERTS = ("WalStreamDown",)  # rendered only with pitrEnabled
REQUIRED_ALERTS = (*REHEARSED, "BackupJobFailed", "RestoreDrillFailed", "RestoreTooSlow", "ClaudeCostBudgetExceeded")
FAULT_VALUES: dict[str, tuple[str, float | bool]] = {
    "5xx burst": ("errors_5xx", 0.5),
    "slow responses": ("slow", 4.0),
    "Claude errors": ("claude_errors", 1.0),
    "failing executions": ("execution_failures", 0.8),
}
PHASES = (
    (
        "application faults and stopped backups",
        ("HighErrorRate", "HighResponseTime", "ClaudeAPIErrors", "ExecutionFailureRateHigh", "BackupTooOld"),
    ),
    ("backend down", ("IpaBackendDown",)),
    ("WAL stream stopped", PITR_ALERTS),
)
BASELINE_DATA_TIMEOUT = 30.0
DELIVERY_TIMEOUT = 150.0
RESOLVE_TIMEOUT = 120.0


def required_alerts(pitr_enabled: bool) -> tuple[str, ...]:
    """The alerts the rendered rules must hold: the PITR ones only when the render has PITR on."""
    return REQUIRED_ALERTS if pitr_enabled else tuple(a for a in REQUIRED_ALERTS if a not in PITR_ALERTS)


@dataclass(frozen=True)
class Expected:
    """Where an alert must arrive: the receiver amtool picks for its labels, that receiver's channels."""

    receiver: str
    channels: list[str]
    resolved_channels: list[str]  # the channels with send_resolved


def expected(ctx: RunContext, mon: Monitoring, alertname: str) -> Expected:
    rule = mon.copies.rules.alerts[alertname]
    labels = {"alertname": alertname, "namespace": ctx.rendered.settings.backend_namespace}
    labels.update({k: str(v) for k, v in (rule.get("labels") or {}).items()})
    receiver = routing.receiver(ctx.rendered.alertmanager_path, labels)
    channels = sorted(mon.copies.am.receivers.get(receiver, set()))
    resolved = mon.copies.am.send_resolved.get(receiver, {})
    return Expected(receiver, channels, [c for c in channels if resolved.get(c, False)])


def all_notes(s: Services, known: list[str]) -> list[notifications.Notification]:
    return notifications.from_teams(s.teams.posts, known) + notifications.from_mail(s.smtp.messages, known)


def _alert_rules(mon: Monitoring, names: set[str]) -> list[dict[str, Any]]:
    return [r for g in mon.prometheus.rule_groups() for r in g["rules"] if r.get("type") == "alerting" and r.get("name") in names]


def baseline(ctx: RunContext, mon: Monitoring) -> None:
    """No rehearsed alert fires before its fault: Prometheus evaluated every rehearsed rule, on data,
    for longer than the longest compressed `for:`, and none of them is pending or firing."""
    ctx.say("baseline: letting the rules evaluate before any fault")
    prom = mon.prometheus
    has_data = ctx.wait_for(
        lambda: bool(prom.query("ipa:http_requests:rate5m")) and bool(prom.query("ipa:backup_age_seconds")), BASELINE_DATA_TIMEOUT
    )
    names = {n for n in REHEARSED if n in mon.copies.rules.alerts}
    settle = max((mon.copies.rules.longest_for[n] for n in names), default=0.0)
    settled_at = time.time() + settle

    def settled() -> bool:
        rules = _alert_rules(mon, names)
        evaluated = len(rules) == len(names) and all(rfc3339_seconds(r["lastEvaluation"]) >= settled_at for r in rules)
        return evaluated and not any(r.get("state") == "pending" for r in rules)

    quiet = ctx.wait_for(settled, settle + 30.0)
    rules = {r["name"]: r for r in _alert_rules(mon, names)}
    firing = sorted(n for n, r in rules.items() if r.get("state") == "firing")
    pending = sorted(n for n, r in rules.items() if r.get("state") == "pending")
    others = sorted({a["labels"]["alertname"] for a in prom.alerts() if a["state"] == "firing"} - names)
    ctx.report.check(
        "quiet baseline (no rehearsed alert firing before its fault)",
        has_data and quiet and not firing,
        ("recording rules produce data" if has_data else f"recording rules produced no data within {BASELINE_DATA_TIMEOUT:g}s")
        + f"; {len(rules)} rehearsed rules evaluated {settle:g}s (the longest compressed `for:`) after that"
        + (f"; firing: {', '.join(firing)}" if firing else "")
        + (f"; still pending after {settle + 30:g}s: {', '.join(pending)}" if pending else "")
        + (f"; other firing alerts (not rehearsed): {', '.join(others)}" if others else "; nothing else firing"),
    )


@contextmanager
def _faults(s: Services, b: Backups, names: list[str]) -> Iterator[dict[str, float]]:
    started: dict[str, float] = {}
    for name in names:
        fault = REHEARSED[name]
        now = time.time()
        if fault in FAULT_VALUES:
            s.backend.set_fault(*FAULT_VALUES[fault])
        elif fault == "backups stop":
            b.schedule.pause(wait=False)
        elif fault == "backend down":
            s.backend.set_fault("down", True)
        elif fault == "WAL stream stops" and b.pitr is not None:
            b.pitr.stream.stop()  # SIGTERM, as when its pod is deleted
        started[name] = now
    try:
        yield started
    finally:
        s.backend.clear_faults()
        b.schedule.resume()
        if b.pitr is not None and not b.pitr.stream.running:
            b.pitr.stream.start()  # the same spool: it resumes from there and from its slot


def _chain(mon: Monitoring, name: str) -> str:
    """Where an undelivered alert got stuck: its state in Prometheus and in Alertmanager."""
    with contextlib.suppress(Exception):
        prom = sorted({a["state"] for a in mon.prometheus.alerts() if a["labels"].get("alertname") == name}) or ["inactive"]
        held = [a for a in mon.alertmanager.alerts() if a["labels"].get("alertname") == name]
        am = ", ".join(f"{a['status']['state']} -> {'+'.join(r['name'] for r in a.get('receivers') or [])}" for a in held)
        return f"Prometheus: {'/'.join(prom)}; Alertmanager: {am or 'not held'}"
    return "Prometheus or Alertmanager did not answer"


def rehearse(ctx: RunContext, s: Services, mon: Monitoring, b: Backups) -> None:
    for title, all_names in PHASES:
        names = [n for n in all_names if n in mon.copies.rules.alerts]
        if all_names == PITR_ALERTS and b.pitr is None:
            continue  # PITR off in the render (or its start failed, a check already says so)
        if not names or ctx.remaining() < 60:
            ctx.report.check(f"alerting phase: {title}", False, "skipped: " + ("no rules" if not names else "out of time"))
            continue
        _phase(ctx, s, mon, b, title, names)


def _phase(ctx: RunContext, s: Services, mon: Monitoring, b: Backups, title: str, names: list[str]) -> None:
    want = {n: expected(ctx, mon, n) for n in names}
    known = list(mon.copies.rules.alerts)
    ctx.say(f"alerting: {title}: expecting " + ", ".join(f"{n} -> {'+'.join(want[n].channels)}" for n in names))
    receivers: dict[str, str] = {}

    def seen_receivers() -> None:
        with contextlib.suppress(Exception):
            for alert in mon.alertmanager.alerts():
                name = alert["labels"].get("alertname")
                if name in want and alert.get("receivers"):
                    receivers[name] = alert["receivers"][0]["name"]

    def delivered(name: str, status: str, after: float) -> dict[str, float]:
        notes = all_notes(s, known)
        hits = {}
        for channel in want[name].channels:
            note = notifications.first(notes, name, channel, status, after)
            if note is not None:
                hits[channel] = note.received_at
        return hits

    stuck: dict[str, str] = {}
    with _faults(s, b, names) as started:
        fault_start = min(started.values())
        for name in names:
            ctx.timeline.faults.append((REHEARSED[name], started[name], None))

        def all_fired() -> bool:
            seen_receivers()
            return all(len(delivered(n, "firing", started[n])) == len(want[n].channels) for n in names)

        ctx.wait_for(all_fired, DELIVERY_TIMEOUT, step=0.5)
        fired = {n: delivered(n, "firing", started[n]) for n in names}
        stuck = {n: _chain(mon, n) for n in names if len(fired[n]) < len(want[n].channels)}
        ctx.say("  delivered: " + ", ".join(f"{n} {max(fired[n].values()) - started[n]:.1f}s" if fired[n] else f"{n} NOT" for n in names))
    cleared = time.time()
    ctx.timeline.faults = [(f, a, cleared if z is None and a >= fault_start else z) for f, a, z in ctx.timeline.faults]

    def all_resolved() -> bool:
        return all(len(delivered(n, "resolved", cleared)) >= len(want[n].resolved_channels) for n in names)

    ctx.wait_for(all_resolved, RESOLVE_TIMEOUT, step=0.5)
    for name in names:
        w, got = want[name], fired[name]
        complete = len(got) == len(w.channels) and bool(w.channels)
        after = max(got.values()) - started[name] if complete else None
        res = delivered(name, "resolved", cleared)
        res_after = max(res.values()) - cleared if res and len(res) >= len(w.resolved_channels) else None
        severity = str((mon.copies.rules.alerts[name].get("labels") or {}).get("severity", ""))
        actual = receivers.get(name, w.receiver)
        ctx.report.alerts.append(report.AlertResult(name, actual, w.channels, after, res_after, severity, REHEARSED[name]))
        ctx.report.check(
            f"alert {name} delivered",
            complete and actual == w.receiver,
            f"{severity} -> {actual} ({'+'.join(w.channels)}; amtool: {w.receiver}): "
            + (", ".join(f"{c} after {t - started[name]:.1f}s" for c, t in sorted(got.items())) or "nothing delivered")
            + (
                f"; missing on {', '.join(sorted(set(w.channels) - set(got)))} after {DELIVERY_TIMEOUT:g}s ({stuck.get(name, '')})"
                if not complete
                else ""
            ),
        )
        ctx.report.check(
            f"alert {name} resolved",
            res_after is not None,
            (
                ", ".join(f"{c} after {t - cleared:.1f}s" for c, t in sorted(res.items()))
                or f"no resolved notification within {RESOLVE_TIMEOUT:g}s"
            )
            + f" (fault removed; expected on {'+'.join(w.resolved_channels) or 'no channel'})",
        )


def routing_checks(ctx: RunContext, s: Services, mon: Monitoring) -> None:
    """Every notification reached only the channels of the receiver amtool picks for its alert."""
    rules = mon.copies.rules.alerts
    notes = all_notes(s, list(rules))
    ctx.timeline.notifications = notes
    severity = {n: str((r.get("labels") or {}).get("severity", "")) for n, r in rules.items()}
    channels: dict[str, list[str]] = {}
    wrong = []
    for note in notes:
        for name in note.alertnames:
            if name not in channels:
                channels[name] = expected(ctx, mon, name).channels
            if note.channel not in channels[name]:
                wrong.append(f"{name} ({severity.get(name)}) on {note.channel}")
    ctx.report.check(
        "routing: every notification on its severity's channels",
        bool(notes) and not wrong,
        f"{len(notes)} notifications ({sum(n.channel == 'teams' for n in notes)} Teams, "
        f"{sum(n.channel == 'email' for n in notes)} e-mail), channels per alert from `amtool config routes test`"
        + (f"; wrong channel: {', '.join(sorted(set(wrong)))}" if wrong else "; warnings never e-mailed"),
    )
    mails = s.smtp.messages
    logins_ok = bool(mails) and all(m.login == s.smtp.username for m in mails) and not s.smtp.failed_logins
    ctx.report.check(
        "e-mail authenticated with the secret file's password",
        logins_ok,
        f"{len(mails)} mails as {s.smtp.username}; failed logins {len(s.smtp.failed_logins)}",
    )
    unparsed = [n.title for n in notes if n.status == "unknown" or not n.alertnames]
    ctx.report.check(
        "every notification names its alert and status",
        not unparsed,
        "all notifications parsed" if not unparsed else f"unreadable: {unparsed[:3]}",
    )


def severity_routing(ctx: RunContext, mon: Monitoring) -> None:
    """critical -> Teams + e-mail, warning -> Teams, info -> nobody, per amtool on the rendered file."""
    namespace = ctx.rendered.settings.backend_namespace
    path = ctx.rendered.alertmanager_path
    routes = {
        sev: routing.receiver(path, {"alertname": "X", "severity": sev, "namespace": namespace}) for sev in ("critical", "warning", "info")
    }
    got = {sev: sorted(mon.copies.am.receivers.get(r, set())) for sev, r in routes.items()}
    ok = got == {"critical": ["email", "teams"], "warning": ["teams"], "info": []}
    ctx.report.check(
        "rendered routing (amtool config routes test)",
        ok,
        "; ".join(f"{sev} -> {routes[sev]} ({'+'.join(got[sev]) or 'nobody'})" for sev in routes)
        + ("" if ok else " (expected: critical -> Teams + e-mail, warning -> Teams, info -> nobody)"),
    )
