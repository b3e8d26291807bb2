"""The drill's outputs: terminal table, build/drill/report.json (its shape: docs/operations/drill.md#outputs),
report.md and timeline.png."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drill.backups import ToolRun
from drill.notifications import Notification


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class AlertResult:
    alertname: str
    receiver: str
    channels: list[str]
    delivered_after_seconds: float | None  # None: never delivered on every expected channel
    resolved_after_seconds: float | None = None
    severity: str = ""
    fault: str = ""


@dataclass
class Timeline:
    """Everything that happened, in unix time, for the chart and the Markdown report."""

    started: float
    writes: list[tuple[int, float]] = field(default_factory=list)
    tool_runs: list[ToolRun] = field(default_factory=list)
    disaster: float | None = None
    verified: float | None = None
    pitr_disaster: float | None = None  # the lost cluster of the PITR scenario
    pitr_verified: float | None = None
    accident: float | None = None  # the accidental DELETE
    wal_stream: list[tuple[float, float | None]] = field(default_factory=list)  # (started, ended) of each wal-stream process
    faults: list[tuple[str, float, float | None]] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    alerts: list[AlertResult] = field(default_factory=list)
    rpo_seconds: float | None = None
    rto_seconds: float | None = None
    pitr_rpo_seconds: float | None = None
    pitr_rto_seconds: float | None = None
    pitr_restore_seconds: float | None = None
    backup_seconds: float | None = None
    restore_seconds: float | None = None
    drill_restore_seconds: float | None = None
    rpo_target_seconds: float = 0.0
    rto_target_seconds: float = 0.0
    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    run_seconds: float = 0.0

    def check(self, name: str, passed: bool, detail: str) -> bool:
        self.checks.append(Check(name, bool(passed), detail))
        return bool(passed)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def as_json(self) -> dict[str, Any]:
        """Exactly the shape docs/operations/drill.md#outputs documents."""
        return {
            "passed": self.passed,
            "rpo_seconds": _num(self.rpo_seconds),
            "rto_seconds": _num(self.rto_seconds),
            "pitr_rpo_seconds": _num(self.pitr_rpo_seconds),
            "pitr_rto_seconds": _num(self.pitr_rto_seconds),
            "backup_seconds": _num(self.backup_seconds),
            "restore_seconds": _num(self.restore_seconds),
            "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in self.checks],
            "alerts": [
                {
                    "alertname": a.alertname,
                    "receiver": a.receiver,
                    "channels": list(a.channels),
                    "delivered_after_seconds": _num(a.delivered_after_seconds),
                }
                for a in self.alerts
            ],
        }


def _num(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


def _fmt(value: float | None, unit: str = "s", digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f} {unit}"


def terminal(report: Report) -> str:
    width = max([len(c.name) for c in report.checks] + [10])
    lines = ["", f"{'CHECK':<{width}}  RESULT  DETAIL", f"{'-' * width}  ------  {'-' * 40}"]
    for c in report.checks:
        lines.append(f"{c.name:<{width}}  {'PASS' if c.passed else 'FAIL':<6}  {c.detail}")
    lines += [
        "",
        f"RPO  {_fmt(report.rpo_seconds)}  (target {report.rpo_target_seconds:.0f} s)",
        f"RTO  {_fmt(report.rto_seconds)}  (target {report.rto_target_seconds:.0f} s)",
        f"PITR RPO  {_fmt(report.pitr_rpo_seconds, 's', 2)}  PITR RTO  {_fmt(report.pitr_rto_seconds)}  "
        f"(pitr-restore --latest {_fmt(report.pitr_restore_seconds)})",
        f"backup {_fmt(report.backup_seconds)} (mean of the successful runs), restore {_fmt(report.restore_seconds)}, "
        f"`ipa-backup drill` restore {_fmt(report.drill_restore_seconds)}",
        "",
        f"{'ALERT':<28} {'SEVERITY':<9} {'RECEIVER':<16} {'CHANNELS':<12} {'DELIVERED':>10} {'RESOLVED':>10}",
    ]
    for a in report.alerts:
        lines.append(
            f"{a.alertname:<28} {a.severity:<9} {a.receiver:<16} {'+'.join(a.channels):<12} "
            f"{_fmt(a.delivered_after_seconds):>10} {_fmt(a.resolved_after_seconds):>10}"
        )
    lines += [
        "",
        f"drill {'PASSED' if report.passed else 'FAILED'} in {report.run_seconds:.0f} s "
        f"({sum(c.passed for c in report.checks)}/{len(report.checks)} checks passed)",
    ]
    return "\n".join(lines)


def markdown(report: Report, chart: str | None) -> str:
    out = [
        "# Drill report",
        "",
        f"**Result: {'PASSED' if report.passed else 'FAILED'}** — {sum(c.passed for c in report.checks)}/{len(report.checks)} "
        f"checks passed, run time {report.run_seconds:.0f} s.",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| RPO (disaster − last write the restored data holds) | {_fmt(report.rpo_seconds)} | {report.rpo_target_seconds:.0f} s |",
        f"| RTO (disaster − verified restored service) | {_fmt(report.rto_seconds)} | {report.rto_target_seconds:.0f} s |",
        f"| PITR RPO (lost cluster − newest committed row restored) | {_fmt(report.pitr_rpo_seconds, 's', 2)} | "
        f"{report.rpo_target_seconds:.0f} s (60 s goal in production terms, see the check) |",
        f"| PITR RTO (lost cluster − commit on the restored server) | {_fmt(report.pitr_rto_seconds)} | "
        f"{report.rto_target_seconds:.0f} s |",
        f"| PITR restore duration (`ipa-backup pitr-restore --latest`) | {_fmt(report.pitr_restore_seconds)} | |",
        f"| backup duration (mean) | {_fmt(report.backup_seconds)} | |",
        f"| restore duration (`ipa-backup restore`) | {_fmt(report.restore_seconds)} | |",
        f"| restore in `ipa-backup drill` | {_fmt(report.drill_restore_seconds)} | {report.rto_target_seconds / 2:.0f} s "
        "(RestoreTooSlow) |",
        "",
    ]
    if chart:
        out += ["## Timeline", "", f"![timeline]({chart})", ""]
    out += ["## Checks", "", "| check | result | detail |", "|---|---|---|"]
    out += [f"| {c.name} | {'PASS' if c.passed else '**FAIL**'} | {c.detail.replace('|', '/')} |" for c in report.checks]
    out += [
        "",
        "## Alerts",
        "",
        "Delivery and resolution times count from the moment the fault was injected or removed.",
        "",
        "| alert | severity | fault | receiver | channels | delivered after | resolved after |",
        "|---|---|---|---|---|---|---|",
    ]
    out += [
        f"| {a.alertname} | {a.severity} | {a.fault} | {a.receiver} | {', '.join(a.channels)} | "
        f"{_fmt(a.delivered_after_seconds)} | {_fmt(a.resolved_after_seconds)} |"
        for a in report.alerts
    ]
    out += ["", "## What the drill changed in the rendered artifacts", ""]
    out += [f"- {c}" for c in report.changes]
    if report.notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in report.notes]
    return "\n".join(out) + "\n"


def chart(timeline: Timeline, path: Path) -> None:
    """A PNG of the timeline: writes, backups, disaster, restore, faults and alert notifications."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = timeline.started
    lanes = ["writes", "backups", "WAL stream", "restore / drill", "faults", "Teams", "e-mail"]
    fig, ax = plt.subplots(figsize=(12, 4.2), dpi=110)
    y = {name: len(lanes) - 1 - i for i, name in enumerate(lanes)}

    # Writes: spans of continuous writing.
    spans: list[tuple[float, float]] = []
    for _seq, t in timeline.writes:
        if spans and t - spans[-1][1] < 1.0:
            spans[-1] = (spans[-1][0], t)
        else:
            spans.append((t, t))
    ax.broken_barh([(a - t0, max(b - a, 0.3)) for a, b in spans], (y["writes"] - 0.3, 0.6), color="#4c72b0")
    last_seen = max([timeline.started, *(r.finished for r in timeline.tool_runs), *(t for _s, t in timeline.writes)])
    streams = [(a - t0, max((b if b is not None else last_seen) - a, 0.3)) for a, b in timeline.wal_stream]
    ax.broken_barh(streams, (y["WAL stream"] - 0.3, 0.6), color="#64b5cd")
    for run in timeline.tool_runs:
        lane = {"backup": "backups", "base-backup": "WAL stream"}.get(run.command, "restore / drill")
        if run.command in ("backup", "base-backup"):
            color = "#55a868" if run.ok else "#c44e52"
        else:
            color = "#8172b2" if run.command == "drill" else "#dd8452"
        ax.broken_barh([(run.started - t0, max(run.seconds, 0.3))], (y[lane] - 0.3, 0.6), color=color)
        if run.command != "backup":
            ax.text(run.started - t0, y[lane] + 0.35, run.command, fontsize=7)
    # Faults injected together share one bar and one label.
    together: dict[tuple[float, float], list[str]] = {}
    for name, start, end in timeline.faults:
        stop = end if end is not None else start + 5
        together.setdefault((round(start, 0), round(stop, 0)), []).append(name)
    for (start, stop), names in together.items():
        ax.broken_barh([(start - t0, stop - start)], (y["faults"] - 0.3, 0.6), color="#ccb974", alpha=0.7)
        ax.text(start - t0 + 0.5, y["faults"] - 0.1, " + ".join(names), fontsize=6.5)
    for channel, lane in (("teams", "Teams"), ("email", "e-mail")):
        for status, marker, color in (("firing", "^", "#c44e52"), ("resolved", "v", "#55a868")):
            xs = [n.received_at - t0 for n in timeline.notifications if n.channel == channel and n.status == status]
            ax.scatter(
                xs, [y[lane]] * len(xs), marker=marker, color=color, s=40, label=f"{status}" if channel == "teams" else None, zorder=3
            )
    # Events as vertical lines, labelled upright beside them: the PITR ones come seconds apart.
    for at, label, color, style in (
        (timeline.disaster, "disaster", "#c44e52", "--"),
        (timeline.verified, "restored", "#55a868", "--"),
        (timeline.pitr_disaster, "PITR: cluster lost", "#c44e52", ":"),
        (timeline.pitr_verified, "PITR restored", "#55a868", ":"),
        (timeline.accident, "DELETE", "#937860", ":"),
    ):
        if at is not None:
            ax.axvline(at - t0, color=color, linestyle=style, linewidth=1.2)
            ax.text(at - t0, len(lanes) - 0.3, label + " ", color=color, fontsize=6.5, rotation=90, ha="right", va="top")
    ax.set_yticks([y[n] for n in lanes], lanes)
    ax.set_ylim(-0.7, len(lanes) - 0.2)
    ax.set_xlabel("seconds since the drill started")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, title="notifications", title_fontsize=7)
    ax.set_title("make drill: timeline", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def write(report: Report, timeline: Timeline, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    chart_name: str | None = "timeline.png"
    try:
        chart(timeline, out_dir / "timeline.png")
    except Exception as exc:  # noqa: BLE001 - a broken chart must not hide the report
        report.check("timeline chart written", False, f"matplotlib failed: {exc}")
        chart_name = None
    json_path = out_dir / "report.json"
    json_path.write_text(json.dumps(report.as_json(), indent=2) + "\n")
    md_path = out_dir / "report.md"
    md_path.write_text(markdown(report, chart_name))
    return json_path, md_path
