"""A stand-in for Microsoft Teams Workflows webhooks: an HTTP server on 127.0.0.1 that records every POST.

Alertmanager's `msteamsv2_configs` posts an Adaptive Card message to the webhook URL; the real
Workflows endpoint answers 202 Accepted. This server answers the same way and keeps each post
(arrival time, path, parsed JSON) so a test or the drill can check which alerts were delivered::

    with TeamsStandin() as teams:
        webhook = teams.webhook_url("critical")   # http://127.0.0.1:<port>/workflows/critical
        ...
        teams.posts                                # [TeamsPost(received_at, path, body, text)]
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from devservices.httpserver import LoopbackService, QuietHandler

MAX_BODY = 1024 * 1024


@dataclass(frozen=True)
class TeamsPost:
    received_at: float  # unix time
    path: str
    body: Any  # parsed JSON (None when the body was not JSON)
    text: str  # the raw body


class _Handler(QuietHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's method name
        length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY)
        raw = self.rfile.read(length).decode("utf-8", errors="replace")
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        self.server.owner.record(TeamsPost(time.time(), self.path, body, raw))
        # The Workflows endpoint accepts with 202 and no body.
        self.reply(202 if body is not None else 400)


class TeamsStandin(LoopbackService):
    handler = _Handler

    def __init__(self, port: int | None = None) -> None:
        super().__init__(port)
        self._posts: list[TeamsPost] = []

    def webhook_url(self, name: str = "alerts") -> str:
        return f"{self.url}/workflows/{name}"

    def record(self, post: TeamsPost) -> None:
        with self._lock:
            self._posts.append(post)

    @property
    def posts(self) -> list[TeamsPost]:
        with self._lock:
            return list(self._posts)
