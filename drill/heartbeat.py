"""The dead man's switch: Alertmanager sends the always-firing Watchdog to the heartbeat receiver
on a fixed cadence, and the beats stop once Prometheus is gone (docs/operations/drill.md#the-heartbeat).

Cadence: Alertmanager flushes the Watchdog's group every `group_interval` and re-sends when
`repeat_interval` has passed since the last send, so beats are `repeat_interval` to
`repeat_interval + group_interval` apart.

Stop: Prometheus re-sends a firing alert every resend delay with endsAt = send time + 4 x
max(resend delay, evaluation interval) (the alert's expiry). Once Prometheus stops, Alertmanager
resolves the Watchdog at that endsAt, and a resolved Watchdog sends nothing (send_resolved: false).
So the last beat comes at most one expiry after Prometheus stopped, and the receiver then hears
nothing for a whole beat interval: what makes the outside service page.
"""

from __future__ import annotations

import contextlib
import itertools
import time

from devservices.heartbeat_standin import Heartbeat
from drill import routing
from drill.artifacts import WATCHDOG, HeartbeatRoute
from drill.context import RunContext, rfc3339_seconds
from drill.promql import format_duration, parse_duration
from drill.services import Monitoring, Services

SLACK_SECONDS = 1.5  # delivery and scheduling jitter on a loaded 2-core machine
MIN_BEATS = 3


def _fmt(seconds: float) -> str:
    return format_duration(seconds) if seconds > 0 else "0s"


def route(ctx: RunContext, mon: Monitoring) -> HeartbeatRoute | None:
    """The heartbeat route, checked against the render: amtool routes Watchdog to it, it sends only
    firing notifications, and its repeat_interval is the settings' heartbeatInterval."""
    hb = mon.copies.am.heartbeat
    watchdog = mon.copies.rules.alerts.get(WATCHDOG)
    if hb is None or watchdog is None:
        ctx.report.check(
            "heartbeat route rendered",
            False,
            "no route to a webhook (heartbeat) receiver in alertmanager.yaml" if hb is None else "no Watchdog rule in the drill's rules",
        )
        return None
    labels = {"alertname": WATCHDOG, **{k: str(v) for k, v in (watchdog.get("labels") or {}).items()}}
    receiver = routing.receiver(ctx.rendered.alertmanager_path, labels)
    interval = parse_duration(ctx.rendered.settings.heartbeat_interval)
    ok = receiver == hb.receiver and not hb.send_resolved and hb.repeat_interval == interval
    ctx.report.check(
        "heartbeat route rendered",
        ok,
        f"amtool routes {WATCHDOG} to {receiver} (webhook receiver {hb.receiver}, send_resolved {str(hb.send_resolved).lower()}); "
        f"repeat_interval {_fmt(hb.repeat_interval)} (heartbeatInterval of settings.json: {_fmt(interval)}), group_interval "
        f"{_fmt(hb.group_interval)}: in production a beat every {_fmt(hb.repeat_interval)} to {_fmt(hb.longest_gap)}",
    )
    return hb if ok else None


def _beats(s: Services, hb: HeartbeatRoute, since: float, until: float | None = None) -> list[Heartbeat]:
    return [
        b for b in s.heartbeat.beats if b.received_at >= since and (until is None or b.received_at <= until) and b.receiver == hb.receiver
    ]


def schedule_verdict(beats: list[Heartbeat], hb: HeartbeatRoute, rejected: list[str]) -> tuple[bool, str]:
    """Whether `beats` (received while Prometheus ran) are firing Watchdogs, `repeat_interval` to
    `repeat_interval + group_interval` apart (± jitter); and the detail to report."""
    gaps = [y.received_at - x.received_at for x, y in itertools.pairwise(beats)]
    low, high = hb.drill_repeat_interval - SLACK_SECONDS, hb.drill_longest_gap + SLACK_SECONDS
    odd = [b for b in beats if b.status != "firing" or set(b.alertnames) != {WATCHDOG}]
    off = [round(g, 1) for g in gaps if not low <= g <= high]
    span = beats[-1].received_at - beats[0].received_at if beats else 0.0
    ok = len(beats) >= MIN_BEATS and not off and not odd and not rejected
    return ok, (
        f"{len(beats)} beats over {span:.0f}s, gaps {min(gaps, default=0):.1f}s to {max(gaps, default=0):.1f}s "
        f"(expected {hb.drill_repeat_interval:g}s to {hb.drill_longest_gap:g}s, the compressed repeat_interval + group_interval, "
        f"±{SLACK_SECONDS:g}s)"
        + (f"; gaps outside: {off[:5]}" if off else "")
        + (f"; fewer than {MIN_BEATS} beats" if len(beats) < MIN_BEATS else "")
        + (f"; not a firing {WATCHDOG}: {odd[0]}" if odd else "")
        + (f"; payloads refused: {rejected[:2]}" if rejected else "")
    )


def on_schedule(ctx: RunContext, s: Services, hb: HeartbeatRoute, since: float) -> None:
    ok, detail = schedule_verdict(_beats(s, hb, since), hb, s.heartbeat.rejected)
    ctx.report.check("heartbeat on schedule", ok, detail)


def _watchdog_held(mon: Monitoring) -> bool:
    with contextlib.suppress(Exception):
        return any(a["labels"].get("alertname") == WATCHDOG for a in mon.alertmanager.alerts())
    return True


def _observed_expiry(mon: Monitoring) -> float | None:
    """endsAt - updatedAt of the Watchdog in Alertmanager: the validity Prometheus gives each send."""
    with contextlib.suppress(Exception):
        for alert in mon.alertmanager.alerts():
            if alert["labels"].get("alertname") == WATCHDOG:
                return rfc3339_seconds(alert["endsAt"]) - rfc3339_seconds(alert["updatedAt"])
    return None


def stop_verdict(beats: list[Heartbeat], stopped: float, expiry: float, expired_after: float | None, silence: float) -> tuple[bool, str]:
    """Whether the beats stopped: Alertmanager dropped the Watchdog (`expired_after` seconds after the
    stop, None: not in time) and no beat came later than the expiry (+ jitter) in the `silence` after it."""
    quiet_from = stopped + expiry + SLACK_SECONDS
    last = max((b.received_at for b in beats if b.received_at <= quiet_from), default=None)
    late = [round(b.received_at - stopped, 1) for b in beats if b.received_at > quiet_from]
    ok = expired_after is not None and not late
    return ok, (
        (
            f"Alertmanager dropped {WATCHDOG} {expired_after:.1f}s after Prometheus stopped"
            if expired_after is not None
            else f"Alertmanager still held {WATCHDOG} {expiry + 2 * SLACK_SECONDS:g}s after Prometheus stopped"
        )
        + f" (expiry 4 x max(resend delay, evaluation interval) = {expiry:g}s); "
        + f"last beat {'none' if last is None else f'{last - stopped:+.1f}s'} from the stop; "
        + (
            f"late beats at +{late}s (after {expiry + SLACK_SECONDS:g}s)"
            if late
            else f"then silence for {silence:g}s (> one beat interval)"
        )
    )


def stops_with_prometheus(ctx: RunContext, s: Services, mon: Monitoring, hb: HeartbeatRoute) -> None:
    """Stop Prometheus; the Watchdog expires in Alertmanager within its expiry, no beat follows, and the
    receiver hears nothing for a whole beat interval."""
    expiry = mon.alert_expiry_seconds
    observed = _observed_expiry(mon)
    ctx.say(f"heartbeat: stopping Prometheus; the beats must stop within {expiry:g}s (the Watchdog's expiry)")
    stopped = mon.stop_prometheus()
    expired = ctx.wait_for(lambda: not _watchdog_held(mon), expiry + 2 * SLACK_SECONDS)
    expired_after = time.time() - stopped if expired else None
    quiet_from = stopped + expiry + SLACK_SECONDS
    silence = hb.drill_longest_gap + SLACK_SECONDS
    # Listen for one whole beat interval after the expiry; a late beat ends the wait (and fails the check).
    ctx.wait_for(lambda: bool(_beats(s, hb, quiet_from)), max(0.0, quiet_from - time.time()) + silence)
    ok, detail = stop_verdict(_beats(s, hb, 0.0), stopped, expiry, expired_after, silence)
    ctx.report.check(
        "heartbeat stops when Prometheus stops",
        ok,
        detail
        + (f"; Alertmanager's endsAt - updatedAt of {WATCHDOG} was {observed:.1f}s" if observed is not None else "")
        + f"; in production the last beat comes at most 4 x max(1m resend delay, evaluation interval) after Prometheus stops, "
        f"then none for {_fmt(hb.longest_gap)}",
    )
