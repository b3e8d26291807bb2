"""A stand-in for an outside heartbeat service (a dead man's switch) on 127.0.0.1.

Alertmanager's `webhook_configs` POST the webhook JSON (version "4": receiver, status, alerts
with their labels, ...) to the configured URL; services such as healthchecks.io or Opsgenie's
heartbeats count each POST as a beat and page when the beats stop. This server answers 200 to a
well-formed payload and records it, and answers 400 to anything else (kept in `rejected`)::

    with HeartbeatStandin() as heartbeat:
        heartbeat.webhook_url("watchdog")    # http://127.0.0.1:<port>/heartbeat/watchdog
        ...
        heartbeat.beats                       # [Heartbeat(received_at, path, status, alertnames, receiver)]
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from devservices.httpserver import LoopbackService, QuietHandler

MAX_BODY = 1024 * 1024
WEBHOOK_VERSION = "4"


@dataclass(frozen=True)
class Heartbeat:
    received_at: float  # unix time
    path: str
    status: str  # "firing" or "resolved", as Alertmanager sent it
    alertnames: tuple[str, ...]
    receiver: str


def parse_webhook(path: str, raw: str, received_at: float) -> Heartbeat:
    """The beat an Alertmanager webhook payload stands for; ValueError naming what is wrong."""
    body: Any = json.loads(raw)
    if not isinstance(body, dict):
        raise ValueError("the payload is not a JSON object")
    if body.get("version") != WEBHOOK_VERSION:
        raise ValueError(f"version {body.get('version')!r}, expected {WEBHOOK_VERSION!r}")
    if body.get("status") not in ("firing", "resolved"):
        raise ValueError(f"status {body.get('status')!r}, expected firing or resolved")
    alerts = body.get("alerts")
    if not isinstance(alerts, list) or not alerts or not all(isinstance(a, dict) and isinstance(a.get("labels"), dict) for a in alerts):
        raise ValueError("alerts must be a non-empty list of objects with labels")
    names = tuple(str(a["labels"].get("alertname", "")) for a in alerts)
    return Heartbeat(received_at, path, str(body["status"]), names, str(body.get("receiver", "")))


class _Handler(QuietHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's method name
        length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY)
        raw = self.rfile.read(length).decode("utf-8", errors="replace")
        owner: HeartbeatStandin = self.server.owner
        try:
            beat = parse_webhook(self.path, raw, time.time())
        except ValueError as err:
            owner.reject(f"{self.path}: {err}")
            self.reply(400, f"{err}\n".encode())
            return
        owner.record(beat)
        self.reply(200)


class HeartbeatStandin(LoopbackService):
    handler = _Handler

    def __init__(self, port: int | None = None) -> None:
        super().__init__(port)
        self._beats: list[Heartbeat] = []
        self._rejected: list[str] = []

    def webhook_url(self, name: str = "watchdog") -> str:
        return f"{self.url}/heartbeat/{name}"

    def record(self, beat: Heartbeat) -> None:
        with self._lock:
            self._beats.append(beat)

    def reject(self, why: str) -> None:
        with self._lock:
            self._rejected.append(why)

    @property
    def beats(self) -> list[Heartbeat]:
        with self._lock:
            return list(self._beats)

    @property
    def rejected(self) -> list[str]:
        with self._lock:
            return list(self._rejected)
