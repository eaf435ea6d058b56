"""A capturing SMTP server for tests (aiosmtpd on a free loopback port).

Every accepted message is recorded as a `Captured` (envelope from, recipients,
raw bytes).  `refuse(...)` makes the server answer a chosen stage with a 451 or
550 so tests can exercise temporary and permanent failures.

`SmtpServer(oauth=token_server)` requires `AUTH XOAUTH2` before MAIL and
checks each token with the test authorization server's introspection
(tests/servers/oauth.py); a refused token gets what Gmail sends: a 334
challenge carrying a JSON error, then 535.
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import TYPE_CHECKING

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.servers.dovecot import HOST, free_port

if TYPE_CHECKING:
    from tests.servers.oauth import TokenServer

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
        self.pipelining = True  # offer PIPELINING (RFC 2920), as Postfix, Gmail, Exchange do

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
        if self.pipelining:  # aiosmtpd reads commands in order, however they arrive
            responses = [*responses[:-1], "250-PIPELINING", responses[-1]]
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


class XOAuth2Handler(CaptureHandler):
    """A CaptureHandler that also offers AUTH XOAUTH2, checked by CHECK(user, token)."""

    def __init__(self, check: Callable[[str, str], bool]) -> None:
        super().__init__()
        self._check = check

    async def auth_XOAUTH2(self, server, args) -> AuthResult:
        if len(args) > 1:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except ValueError:
                return AuthResult(success=False, handled=False)
        else:
            blob = await server.challenge_auth("")
            if not isinstance(blob, bytes):
                return AuthResult(success=False, handled=True)
        fields = dict(part.split("=", 1) for part in blob.decode(errors="replace").split("\1")
                      if "=" in part)
        user, token = fields.get("user", ""), fields.get("auth", "").removeprefix("Bearer ")
        if self._check(user, token):
            return AuthResult(success=True, auth_data=user)
        await server.challenge_auth(json.dumps({"status": "401", "schemes": "Bearer",
                                                "scope": "mail"}))
        return AuthResult(success=False, handled=False)  # 535

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if not session.authenticated:
            return "530 5.7.0 Authentication required"
        return await super().handle_MAIL(server, session, envelope, address, mail_options)


class SmtpServer:
    """Capturing SMTP server on 127.0.0.1:<free port>.  `start()`/`stop()` or `with`."""

    def __init__(self, port: int | None = None, *, users: dict[str, str] | None = None,
                 smtputf8: bool = True, oauth: TokenServer | None = None,
                 pipelining: bool = True) -> None:
        """USERS (login -> password) turns on AUTH PLAIN/LOGIN without TLS (not required);
        OAUTH (a running TokenServer) turns on AUTH XOAUTH2 and requires a login.
        SMTPUTF8: offer the extension (RFC 6531) for internationalised addresses;
        PIPELINING: offer RFC 2920 (the handler's `pipelining` flag)."""
        self.host = HOST
        self.smtputf8 = smtputf8
        self.port = port or 0
        self.users = dict(users) if users else None
        self.oauth = oauth
        self.handler = XOAuth2Handler(self._check_token) if oauth else CaptureHandler()
        self.handler.pipelining = pipelining
        self._controller: Controller | None = None
        self.logins: list[str] = []
        self.refused_tokens = 0

    def _check_token(self, user: str, token: str) -> bool:
        assert self.oauth is not None
        answer = self.oauth.introspect(token)
        if answer.get("active") and answer.get("username") == user:
            self.logins.append(user)
            return True
        self.refused_tokens += 1
        return False

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
        auth = {}
        if self.users is not None:
            auth = {"authenticator": self._authenticate, "auth_require_tls": False}
        if self.oauth is not None:
            auth["auth_require_tls"] = False  # the handler requires a login before MAIL
        self._controller = Controller(
            self.handler, hostname=HOST, port=self.port, ready_timeout=10,
            # Keep the bytes exactly as sent; do not decode or add headers.
            decode_data=False, enable_SMTPUTF8=self.smtputf8, **auth,
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
