"""What reached the Teams and SMTP stand-ins, as (channel, time, status, alert names) records.

The rendered templates put the status first in the title (`[FIRING:1] ...` / `[RESOLVED] ...`,
Alertmanager's convention) and, since routes group by alertname, one alert name per message.
A name counts when it appears as a whole word in the title (Teams card's first text block, the
e-mail subject), else in the whole message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from devservices.smtp_standin import Mail
from devservices.teams_standin import TeamsPost

_STATUS = re.compile(r"\[\s*(FIRING|RESOLVED)", re.IGNORECASE)


@dataclass(frozen=True)
class Notification:
    channel: str  # "teams" or "email"
    received_at: float
    status: str  # "firing", "resolved" or "unknown"
    alertnames: frozenset[str]
    title: str


def _names(title: str, text: str, known: Iterable[str]) -> frozenset[str]:
    def found(where: str) -> frozenset[str]:
        return frozenset(n for n in known if re.search(rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9_])", where))

    return found(title) or found(text)


def _status(title: str) -> str:
    m = _STATUS.search(title)
    return m.group(1).lower() if m else "unknown"


def _card_title(body: Any) -> str:
    """The first TextBlock of the Adaptive Card (where msteamsv2 puts `title`)."""
    try:
        for attachment in body["attachments"]:
            for block in attachment["content"]["body"]:
                if block.get("type") == "TextBlock" and block.get("text"):
                    return str(block["text"])
    except (KeyError, TypeError):
        pass
    return ""


def from_teams(posts: Iterable[TeamsPost], known: Iterable[str]) -> list[Notification]:
    known = list(known)
    out = []
    for post in posts:
        title = _card_title(post.body)
        out.append(Notification("teams", post.received_at, _status(title or post.text), _names(title, post.text, known), title))
    return out


def from_mail(messages: Iterable[Mail], known: Iterable[str]) -> list[Notification]:
    known = list(known)
    return [Notification("email", m.received_at, _status(m.subject), _names(m.subject, m.text, known), m.subject) for m in messages]


def first(notes: Iterable[Notification], alertname: str, channel: str, status: str, after: float) -> Notification | None:
    """The earliest notification of `alertname` on `channel` with `status` received after `after`."""
    hits = [n for n in notes if n.channel == channel and n.status == status and alertname in n.alertnames and n.received_at >= after]
    return min(hits, key=lambda n: n.received_at, default=None)
