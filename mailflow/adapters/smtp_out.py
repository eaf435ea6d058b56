"""Outgoing mail over SMTP: a thin layer over `smtplib`.

Errors come out as one family: `TemporarySendError` (4xx replies, connection
failures, timeouts: try again later) and `PermanentSendError` (5xx replies:
retrying will not help), both `SendError`.  `SendError.scope` tells a batch
sender whether the failure belongs to this message (`"message"`) or to the
connection/server (`"connection"`: login refused, STARTTLS missing), in which
case the rest of the batch would fail the same way.

A message is sent all-or-nothing: every recipient is offered with RCPT before
DATA, and if any is refused the transaction is reset, nothing is delivered, and
the error lists the refused addresses in `SendError.refused`.

Internationalised addresses: a non-ASCII domain is sent in its ASCII (IDNA)
form, which every server takes; a non-ASCII local part has no ASCII form and
needs a server that offers SMTPUTF8 (RFC 6531), or the message fails alone
with a `PermanentSendError`.  So does a message that cannot be encoded.
"""

from __future__ import annotations

import copy
import io
import logging
import re
import smtplib
import ssl
from collections.abc import Sequence
from email import encoders
from email._policybase import Compat32
from email.generator import BytesGenerator
from email.message import EmailMessage, Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.policy import EmailPolicy, compat32
from typing import TYPE_CHECKING, Literal

from mailflow.config import SmtpSettings
from mailflow.errors import ConfigError, MailflowError

if TYPE_CHECKING:
    from mailflow.oauth.tokens import AccessToken, TokenSource

log = logging.getLogger(__name__)

Scope = Literal["message", "connection"]


class SendError(Exception):
    """A message could not be handed to the SMTP server."""

    def __init__(self, message: str, *, code: int | None = None,
                 refused: dict[str, tuple[int, str]] | None = None,
                 scope: Scope = "message") -> None:
        super().__init__(message)
        self.code = code
        self.refused = refused or {}
        self.scope = scope


class TemporarySendError(SendError):
    """A 4xx reply or a connection failure: the same message may succeed later."""


class PermanentSendError(SendError):
    """A 5xx reply: the server will not take this message as it is."""


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def _reply_error(stage: str, code: int, reply: bytes | str, *,
                 refused: dict[str, tuple[int, str]] | None = None,
                 scope: Scope = "message") -> SendError:
    kind = PermanentSendError if 500 <= code < 600 else TemporarySendError
    return kind(f"SMTP {stage} refused: {code} {_text(reply)}", code=code,
                refused=refused, scope=scope)


def _refused_error(refused: dict[str, tuple[int, str]]) -> SendError:
    """Some recipients were refused, so nothing was sent: permanent if any refusal was."""
    permanent = any(c >= 500 for c, _ in refused.values())
    kind = PermanentSendError if permanent else TemporarySendError
    first_code = next(iter(refused.values()))[0]
    listing = "; ".join(f"{a}: {c} {r}" for a, (c, r) in refused.items())
    return kind(f"SMTP recipients refused (nothing sent): {listing}",
                code=first_code, refused=refused)


#: Characters IDNA 2003 (the standard library's codec) maps to other letters
#: where IDNA 2008 keeps them (`straße` would become `strasse`: another domain).
_IDNA_DEVIATIONS = frozenset("\u00df\u03c2\u200c\u200d")


def ascii_address(address: str) -> str:
    """ADDRESS with a non-ASCII domain in its ASCII form (`info@例え.jp` →
    `info@xn--r8jz45g.jp`), which needs no SMTPUTF8.  A non-ASCII local part
    has no ASCII form, nor has a domain IDNA cannot encode: unchanged."""
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii() or _IDNA_DEVIATIONS.intersection(domain):
        return address
    try:
        return f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError:
        return address


class _FastCompat32(Compat32):
    """`compat32`, writing a header that needs no folding or encoding as it is.

    `compat32` runs every value through `email.header.Header.encode`, about a
    tenth of a millisecond per header and some 25 headers in a digest's parts;
    for an ASCII value on one line that fits within the line length that
    function returns the value unchanged (tests/test_sender_speed.py compares
    the two on random values), so it is skipped."""

    def _fold(self, name, value, sanitize):
        if (isinstance(value, str) and value.isascii() and self.max_line_length
                and len(name) + 2 + len(value) <= self.max_line_length
                and "\n" not in value and "\r" not in value):
            return f"{name}: {value}{self.linesep}"
        return super()._fold(name, value, sanitize)


_FAST_COMPAT32 = _FastCompat32()


class _Generator(BytesGenerator):
    """A BytesGenerator choosing multipart boundaries without a regular
    expression per boundary: the standard one compiles a new pattern for each
    (its random boundary), a millisecond a part.  A plain substring test is
    stricter than its line-start pattern, so the boundary is as safe."""

    @classmethod
    def _make_boundary(cls, text=None):
        boundary = super()._make_boundary()  # without text: no pattern
        if text is None:
            return boundary
        candidate, counter = boundary, 0
        while ("--" + candidate).encode("ascii") in text if isinstance(text, bytes) \
                else ("--" + candidate) in text:
            candidate = f"{boundary}.{counter}"
            counter += 1
        return candidate


def _flatten(message: Message, international: bool) -> bytes:
    """The bytes to send: Bcc removed, CRLF line ends (what smtplib.send_message does).

    International (SMTPUTF8) messages may carry UTF-8 in headers (RFC 6532):
    the modern policies write it as is with `utf8=True`; a `compat32` message
    writes header values holding surrogate-escaped bytes back as those bytes."""
    message = copy.copy(message)
    del message["Bcc"]
    del message["Resent-Bcc"]
    policy = message.policy
    if international and isinstance(policy, EmailPolicy):
        policy = policy.clone(utf8=True)
    elif policy is compat32:
        policy = _FAST_COMPAT32
    with io.BytesIO() as out:
        _Generator(out, policy=policy).flatten(message, linesep="\r\n")
        return out.getvalue()


def with_attachments(body: Message, files: Sequence[tuple[str, str, bytes]]) -> Message:
    """`body` (a text part or multipart/alternative) followed by FILES
    (filename, content type, bytes) in a multipart/mixed; `body` itself when
    there are none.  Files are base64; a non-ASCII filename is RFC 2231-encoded."""
    if not files:
        return body
    mixed = MIMEMultipart("mixed")
    mixed.attach(body)
    for filename, content_type, data in files:
        maintype, _, subtype = content_type.partition("/")
        if not (maintype and subtype):
            maintype, subtype = "application", "octet-stream"
        part = MIMEBase(maintype, subtype)
        part.set_payload(data)
        encoders.encode_base64(part)
        name = filename if filename.isascii() else ("utf-8", "", filename)
        part.add_header("Content-Disposition", "attachment", filename=name)
        mixed.attach(part)
    return mixed


class SmtpConnection:
    """One SMTP connection reused for many messages.

        with SmtpConnection(settings) as smtp:
            for row in batch:
                smtp.send(row.message, envelope_from=..., recipients=[...])

    The connection opens on first use.  If the server dropped it between
    messages, the next `send` reconnects once before anything of the message
    was transmitted, so a message is never offered twice by this class.
    """

    def __init__(self, settings: SmtpSettings, *, ssl_context: ssl.SSLContext | None = None,
                 local_hostname: str | None = None, tokens: TokenSource | None = None) -> None:
        self.settings = settings
        self._tokens = tokens
        self.ssl_context = ssl_context
        self.local_hostname = local_hostname
        self._smtp: smtplib.SMTP | None = None
        self.sent = 0

    # -- connection --------------------------------------------------------------------

    def _context(self) -> ssl.SSLContext:
        return self.ssl_context or ssl.create_default_context()

    def open(self) -> None:
        """Connect, say EHLO, STARTTLS and log in as configured.

        With `auth: oauth2` the login is `AUTH XOAUTH2` with an access token
        from `mailflow.oauth`, fetched at every connect (refreshed when due;
        once more when the server refuses it).  `LoginNeeded`/`OAuthError`
        pass through as they are: a person must act."""
        self.close()
        s = self.settings
        where = f"{s.host}:{s.port}"
        password = token = None
        if s.auth == "oauth2":
            token = self._access_token()
        elif s.username:
            password = s.password
            if password is None:
                raise ConfigError(f"smtp.password_env: environment variable {s.password_env} "
                                  f"is not set (needed to log in as {s.username!r})")
        smtp: smtplib.SMTP | None = None
        try:
            if s.tls:
                smtp = smtplib.SMTP_SSL(s.host, s.port, local_hostname=self.local_hostname,
                                        timeout=s.timeout_seconds, context=self._context())
            else:
                smtp = smtplib.SMTP(s.host, s.port, local_hostname=self.local_hostname,
                                    timeout=s.timeout_seconds)
            smtp.ehlo_or_helo_if_needed()
            if s.starttls and not s.tls:
                if not smtp.has_extn("starttls"):
                    raise PermanentSendError(f"SMTP server {where} does not offer STARTTLS",
                                             scope="connection")
                code, reply = smtp.starttls(context=self._context())
                if code != 220:
                    raise _reply_error("STARTTLS", code, reply, scope="connection")
                smtp.ehlo()
            if token is not None:
                self._oauth2_login(smtp, token)
            elif s.username:
                smtp.login(s.username, password)
        except (SendError, MailflowError):
            self._quietly_close(smtp)
            raise
        except smtplib.SMTPResponseException as error:
            self._quietly_close(smtp)
            stage = "login" if isinstance(error, smtplib.SMTPAuthenticationError) else "greeting"
            raise _reply_error(stage, error.smtp_code, error.smtp_error,
                               scope="connection") from error
        except smtplib.SMTPNotSupportedError as error:
            self._quietly_close(smtp)
            raise PermanentSendError(f"SMTP {where}: {error}", scope="connection") from error
        except (smtplib.SMTPException, OSError) as error:
            self._quietly_close(smtp)
            raise TemporarySendError(f"SMTP {where}: cannot connect: {error}",
                                     scope="connection") from error
        self._smtp = smtp

    @property
    def tokens(self) -> TokenSource:
        """Where XOAUTH2 access tokens come from (`auth: oauth2`)."""
        if self._tokens is None:
            from mailflow.oauth.tokens import TokenSource

            self._tokens = TokenSource.for_section(self.settings, "smtp")
        return self._tokens

    def _access_token(self, rejected: str | None = None) -> AccessToken:
        from mailflow.oauth.tokens import TokenUnavailable

        try:
            return self.tokens.access_token(rejected=rejected)
        except TokenUnavailable as error:
            raise TemporarySendError(f"SMTP login: {error}", scope="connection") from error

    def _oauth2_login(self, smtp: smtplib.SMTP, token: AccessToken) -> None:
        s = self.settings
        if "XOAUTH2" not in smtp.esmtp_features.get("auth", "").upper().split():
            raise PermanentSendError(f"SMTP server {s.host}:{s.port} does not offer "
                                     "AUTH XOAUTH2", scope="connection")
        try:
            smtp.auth("XOAUTH2", self._xoauth2(s.username or "", token.value))
        except smtplib.SMTPAuthenticationError:
            # Refused though we thought it fresh (revoked, or expired early):
            # one new token, one more try; a second refusal is the server's answer.
            token = self._access_token(rejected=token.value)
            smtp.auth("XOAUTH2", self._xoauth2(s.username or "", token.value))

    @staticmethod
    def _xoauth2(username: str, access_token: str):
        """smtplib's authobject for XOAUTH2: the token as the initial response;
        an empty answer to the error challenge a refusing server sends next."""
        calls = 0

        def respond(challenge: bytes | None = None) -> str:
            nonlocal calls
            calls += 1
            return f"user={username}\1auth=Bearer {access_token}\1\1" if calls == 1 else ""

        return respond

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            self._quietly_close(smtp)

    @staticmethod
    def _quietly_close(smtp: smtplib.SMTP | None) -> None:
        if smtp is not None:
            try:
                smtp.close()
            except OSError:
                pass

    def __enter__(self) -> SmtpConnection:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- sending -----------------------------------------------------------------------

    def send(self, message: EmailMessage, *, envelope_from: str,
             recipients: Sequence[str]) -> None:
        """Send MESSAGE to RECIPIENTS with envelope sender ENVELOPE_FROM (may be "")."""
        if isinstance(recipients, str):
            recipients = [recipients]
        recipients = [ascii_address(r) for r in recipients]
        if not recipients:
            raise PermanentSendError("no recipients")
        envelope_from = ascii_address(envelope_from)
        international = not all(a.isascii() for a in [envelope_from, *recipients])
        try:
            data = _flatten(message, international)
        except Exception as error:  # this message's fault: it must not stop the others
            raise PermanentSendError(f"cannot encode the message: {error!r:.300}") from error

        reused = self._smtp is not None
        if not reused:
            self.open()
        try:
            self._transaction(data, envelope_from, recipients, international)
        except _Stale:
            if not reused:
                raise TemporarySendError("SMTP server closed the connection",
                                         scope="connection") from None
            log.info("SMTP connection was closed by the server; reconnecting")
            self.open()
            try:
                self._transaction(data, envelope_from, recipients, international)
            except _Stale as error:
                raise TemporarySendError("SMTP server closed the connection",
                                         scope="connection") from error
        self.sent += 1

    def _transaction(self, data: bytes, envelope_from: str, recipients: list[str],
                     international: bool) -> None:
        smtp = self._smtp
        assert smtp is not None
        try:
            # MAIL: nothing of the message has gone out yet, so a dead
            # connection here is safe to retry on a fresh one (_Stale).
            options: list[str] = []
            if international:
                if not smtp.has_extn("smtputf8"):
                    non_ascii = ", ".join(a for a in [envelope_from, *recipients]
                                          if not a.isascii())
                    raise PermanentSendError(
                        f"SMTP server does not offer SMTPUTF8, needed for {non_ascii}")
                options += ["SMTPUTF8", "BODY=8BITMIME"]
            elif not data.isascii() and smtp.has_extn("8bitmime"):
                options.append("BODY=8BITMIME")
            if smtp.has_extn("pipelining"):
                self._pipelined(smtp, data, envelope_from, recipients, options)
                return
            try:
                code, reply = smtp.mail(envelope_from, options)
            except (smtplib.SMTPServerDisconnected, ConnectionError) as error:
                self._drop()
                raise _Stale(str(error)) from error
            if code == 421:
                self._drop()
                raise _Stale(_text(reply))
            if code != 250:
                self._reset()
                raise _reply_error("MAIL FROM", code, reply)

            refused: dict[str, tuple[int, str]] = {}
            for recipient in recipients:
                code, reply = smtp.rcpt(recipient)
                if code not in (250, 251):
                    refused[recipient] = (code, _text(reply))
            if refused:
                self._reset()
                raise _refused_error(refused)

            code, reply = smtp.data(data)
            if code != 250:
                self._reset()
                raise _reply_error("DATA", code, reply)
        except (SendError, _Stale):
            raise
        except smtplib.SMTPResponseException as error:
            # data() raises SMTPDataError when DATA itself is refused.
            self._reset()
            raise _reply_error("DATA", error.smtp_code, error.smtp_error) from error
        except (smtplib.SMTPException, OSError) as error:
            self._drop()
            raise TemporarySendError(f"SMTP connection failed while sending: {error}",
                                     scope="connection") from error

    def _pipelined(self, smtp: smtplib.SMTP, data: bytes, envelope_from: str,
                   recipients: list[str], options: list[str]) -> None:
        """MAIL, every RCPT and DATA in one write, then their replies in order
        (RFC 2920): one round trip where there were 2 + recipients.  Nothing of
        the message goes out unless every step was accepted; a DATA accepted
        after a refusal (a server may answer 354 when some recipient was
        taken) is abandoned by closing the connection, which delivers nothing."""
        if any(option.lower() == "smtputf8" for option in options):
            smtp.command_encoding = "utf-8"  # as smtplib.SMTP.mail does
        optionlist = "".join(f" {option}" for option in options)
        lines = [f"mail FROM:{smtplib.quoteaddr(envelope_from)}{optionlist}",
                 *(f"rcpt TO:{smtplib.quoteaddr(recipient)}" for recipient in recipients),
                 "data"]
        if any("\r" in line or "\n" in line for line in lines):
            raise PermanentSendError("an address holds a line break")
        try:
            smtp.send("".join(f"{line}\r\n" for line in lines))
            code, reply = smtp.getreply()
        except (smtplib.SMTPServerDisconnected, ConnectionError) as error:
            self._drop()  # nothing of the message was transmitted: safe on a fresh one
            raise _Stale(str(error)) from error
        if code == 421:
            self._drop()
            raise _Stale(_text(reply))
        mail = (code, reply)
        refused: dict[str, tuple[int, str]] = {}
        for recipient in recipients:
            code, reply = smtp.getreply()
            if code not in (250, 251):
                refused[recipient] = (code, _text(reply))
        data_code, data_reply = smtp.getreply()
        if mail[0] != 250 or refused or data_code != 354:
            if data_code == 354:
                self._drop()  # abandon the transaction: nothing is delivered
            else:
                self._reset()
            if mail[0] != 250:
                raise _reply_error("MAIL FROM", *mail)
            if refused:
                raise _refused_error(refused)
            raise _reply_error("DATA", data_code, data_reply)
        quoted = re.sub(rb"(?m)^\.", b"..", data)
        if not quoted.endswith(b"\r\n"):
            quoted += b"\r\n"
        smtp.send(quoted + b".\r\n")
        code, reply = smtp.getreply()
        if code != 250:
            self._reset()
            raise _reply_error("DATA", code, reply)

    def _reset(self) -> None:
        """RSET after a refusal so the connection can carry the next message."""
        smtp = self._smtp
        if smtp is None:
            return
        try:
            code, _reply = smtp.rset()
            if code == 421:
                self._drop()
        except (smtplib.SMTPException, OSError):
            self._drop()

    def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        self._quietly_close(smtp)


class _Stale(Exception):
    """The reused connection was closed before the message was offered."""


def send_message(settings: SmtpSettings, message: EmailMessage, *, envelope_from: str,
                 recipients: list[str], ssl_context: ssl.SSLContext | None = None) -> None:
    """Send one message on its own connection; raise a SendError if it was not accepted."""
    with SmtpConnection(settings, ssl_context=ssl_context) as connection:
        connection.send(message, envelope_from=envelope_from, recipients=recipients)
