"""A capturing SMTP server for tests (aiosmtpd on a free loopback port).

Every accepted message is recorded as a `Captured` (envelope from, recipients,
raw bytes).  `refuse(...)` makes the server answer a chosen stage with a 451 or
550 so tests can exercise temporary and permanent failures.
"""

from __future__ import annotations

import email
import email.policy
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.servers.dovecot import HOST, free_port

TEMPORARY = "451 4.3.0 Temporary failure, try again later"
PERMANENT = "550 5.1.1 Mailbox unavailable"


@dataclass(frozen=True)
class Captured:
    envelope_from: str  # "" for the null sender <>
    recipients: tuple[str, ...]
    raw: bytes
    mail_options: tuple[str, ...] = ()  # e.g. ("SMTPUTF8", "BODY=8BITMIME")

    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.raw, policy=email.policy.default)


@dataclass
class _Refusal:
    stage: str  # "MAIL", "RCPT" or "DATA"
    reply: str
    recipients: frozenset[str] = field(default_factory=frozenset)  # RCPT only; empty = all
    remaining: int | None = None  # None = until cleared


class CaptureHandler:
    """aiosmtpd handler: refuse where told to, record everything else."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._messages: list[Captured] = []
        self._refusals: list[_Refusal] = []
        self.connections = 0

    # -- configuration from the test thread -----------------------------------------

    def refuse(self, stage: str = "DATA", code: int = 451, *, recipients=(),
               times: int | None = None, reply: str | None = None) -> None:
        stage = stage.upper()
        if stage not in ("MAIL", "RCPT", "DATA"):
            raise ValueError(f"stage must be MAIL, RCPT or DATA, not {stage!r}")
        if reply is None:
            reply = {451: TEMPORARY, 550: PERMANENT}.get(code, f"{code} Refused by test")
        with self._lock:
            self._refusals.append(
                _Refusal(stage, reply, frozenset(r.lower() for r in recipients), times))

    def accept_all(self) -> None:
        with self._lock:
            self._refusals.clear()

    def _refusal(self, stage: str, recipient: str | None = None) -> str | None:
        with self._lock:
            for refusal in self._refusals:
                if refusal.stage != stage:
                    continue
                if recipient is not None and refusal.recipients \
                        and recipient.lower() not in refusal.recipients:
                    continue
                if refusal.remaining is not None:
                    refusal.remaining -= 1
                    if refusal.remaining <= 0:
                        self._refusals.remove(refusal)
                return refusal.reply
        return None

    # -- aiosmtpd hooks ------------------------------------------------------------------

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        with self._lock:
            self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        refused = self._refusal("MAIL")
        if refused:
            return refused
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        refused = self._refusal("RCPT", address)
        if refused:
            return refused
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        refused = self._refusal("DATA")
        if refused:
            return refused
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        with self._lock:
            self._messages.append(
                Captured("" if envelope.mail_from == "<>" else envelope.mail_from, tuple(envelope.rcpt_tos), bytes(raw),
                         tuple(envelope.mail_options)))
            self._lock.notify_all()
        return "250 Message accepted for delivery"

    # -- reading from the test thread -------------------------------------------------

    @property
    def messages(self) -> list[Captured]:
        with self._lock:
            return list(self._messages)

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Captured]:
        """Block until at least COUNT messages arrived; raise TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"expected {count} message(s) within {timeout}s, got {len(self._messages)}")
                self._lock.wait(remaining)
            return list(self._messages)


class SmtpServer:
    """Capturing SMTP server on 127.0.0.1:<free port>.  `start()`/`stop()` or `with`."""

    def __init__(self, port: int | None = None, *, users: dict[str, str] | None = None,
                 smtputf8: bool = True) -> None:
        """USERS (login -> password) turns on AUTH PLAIN/LOGIN without TLS (not required).
        SMTPUTF8: offer the extension (RFC 6531) for internationalised addresses."""
        self.host = HOST
        self.smtputf8 = smtputf8
        self.port = port or 0
        self.users = dict(users) if users else None
        self.handler = CaptureHandler()
        self._controller: Controller | None = None
        self.logins: list[str] = []

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if isinstance(auth_data, LoginPassword) and self.users is not None:
            login = auth_data.login.decode()
            if self.users.get(login) == auth_data.password.decode():
                self.logins.append(login)
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    def start(self) -> SmtpServer:
        if self._controller is not None:
            return self
        if not self.port:
            self.port = free_port()
        self._controller = Controller(
            self.handler, hostname=HOST, port=self.port, ready_timeout=10,
            # Keep the bytes exactly as sent; do not decode or add headers.
            decode_data=False, enable_SMTPUTF8=self.smtputf8,
            **({"authenticator": self._authenticate, "auth_require_tls": False}
               if self.users is not None else {}),
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # Shortcuts to the handler.
    @property
    def messages(self) -> list[Captured]:
        return self.handler.messages

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Captured]:
        return self.handler.wait_for(count, timeout)

    def refuse(self, stage: str = "DATA", code: int = 451, **kwargs) -> None:
        self.handler.refuse(stage, code, **kwargs)

    def accept_all(self) -> None:
        self.handler.accept_all()

    def reset(self) -> None:
        """Forget messages and refusals (between tests sharing one server)."""
        self.handler.accept_all()
        self.handler.clear()
