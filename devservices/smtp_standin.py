"""A stand-in SMTP relay (aiosmtpd) on 127.0.0.1 that records every message it accepts.

It offers AUTH PLAIN without TLS, as Alertmanager with `require_tls: false` expects, and
accepts only the configured user name and password, so a delivery proves that Alertmanager read
the password from its secret file::

    with SmtpStandin(username="am@x", password="pw") as smtp:
        smtp.smarthost           # 127.0.0.1:<port>
        smtp.messages            # [Mail(received_at, mail_from, rcpt_tos, subject, text, login)]
"""

from __future__ import annotations

import email
import email.policy
import logging
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from devservices.process import free_port


@dataclass(frozen=True)
class Mail:
    received_at: float  # unix time
    mail_from: str
    rcpt_tos: tuple[str, ...]
    subject: str
    text: str  # every text part of the message, decoded
    login: str | None  # the authenticated user, None without AUTH


def _decoded_text(raw: bytes) -> tuple[str, str]:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    parts: list[str] = []
    for part in message.walk():
        if part.get_content_maintype() == "text":
            try:
                parts.append(str(part.get_content()))
            except (LookupError, ValueError):
                parts.append(part.get_payload(decode=True).decode("utf-8", errors="replace"))  # type: ignore[union-attr]
    return str(message.get("Subject", "")), "\n".join(parts)


class SmtpStandin:
    def __init__(self, username: str, password: str, port: int | None = None) -> None:
        self.username = username
        self.password = password
        self.port = port or free_port()
        self._lock = threading.Lock()
        self._messages: list[Mail] = []
        self.failed_logins: list[str] = []
        self._controller: Controller | None = None

    @property
    def smarthost(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def messages(self) -> list[Mail]:
        with self._lock:
            return list(self._messages)

    # aiosmtpd handler hook
    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        raw = envelope.original_content or b""
        subject, text = _decoded_text(raw)
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        mail = Mail(time.time(), str(envelope.mail_from), tuple(envelope.rcpt_tos), subject, text, login)
        with self._lock:
            self._messages.append(mail)
        return "250 Message accepted for delivery"

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            login, password = auth_data.login.decode(), auth_data.password.decode()
            if login == self.username and password == self.password:
                return AuthResult(success=True, auth_data=auth_data)
            self.failed_logins.append(login)
        return AuthResult(success=False, handled=False)

    def start(self) -> SmtpStandin:
        # AUTH without TLS is the point here (loopback only, like `require_tls: false`); keep its warnings quiet.
        warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
        warnings.filterwarnings("ignore", message="Session.login_data is deprecated")
        logging.getLogger("mail.log").setLevel(logging.ERROR)
        self._controller = Controller(
            self,
            hostname="127.0.0.1",
            port=self.port,
            authenticator=self._authenticate,
            auth_require_tls=False,
            auth_required=True,
            # aiosmtpd's LOGIN prompts ("User Name") differ from what Alertmanager's LOGIN expects
            # ("Username:"), and Alertmanager picks the first mechanism offered: offer PLAIN only.
            auth_exclude_mechanism=["LOGIN"],
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
