"""The inbound SMTP/LMTP listener: for sites whose mail server delivers
straight to mailflow instead of to an IMAP mailbox (DESIGN §3, §4).

One path, as for IMAP: every message goes through `intake.receive()`, and the
sending server hears `250` only after that returned, i.e. after the message's
effects and its processed-marker are committed (or the message was kept aside
as failed, which is also safely stored).  When the database cannot take it the
answer is `451 4.3.0`: the sending server keeps the message and tries again,
and a message that arrives twice is recognised by its Message-ID.

- `InboundHandler` is an aiosmtpd handler (a plain object with
  `handle_RCPT`/`handle_DATA`).  Only our mailbox address and its plus-form
  (`support+anything@domain`) are accepted, at RCPT time.
- `InboundListener(engine, desk)` owns an aiosmtpd `Controller` (its own
  thread and event loop) bound to `inbound_smtp.host/port`, speaking LMTP
  when `inbound_smtp.lmtp` is set; `start()` / `stop()`.

LMTP and several recipients (RFC 2033 §4.2): after DATA the server owes one
reply per accepted recipient.  aiosmtpd's `LMTP` class only swaps EHLO/HELO
for LHLO; `SMTP.smtp_DATA` pushes whatever `handle_DATA` returns followed by
one CRLF.  So the handler returns one status line per recipient joined by
CRLF (GNU Mailman's LMTP runner does the same).  aiosmtpd's own post-DATA
refusals (`552` too much data, `500` line too long) are pushed once whatever
the number of recipients, which leaves an LMTP client with several recipients
waiting for replies that never come; `_LMTPServer` repeats such a single-line
reply once per recipient.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy.engine import Engine

from mailflow.desk import Desk
from mailflow.intake import DatabaseUnavailable, receive
from mailflow.services.inbound import Outcome, Source

log = logging.getLogger("mailflow.smtp_in")

ACCEPTED = "250 2.0.0 Message accepted"
DUPLICATE = "250 2.0.0 Message already received"
NO_SUCH_USER = "550 5.1.1 No such user here"
TRY_AGAIN = "451 4.3.0 Temporary failure, try again later"

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_RETURN_PATH = re.compile(rb"(?im)^return-path[ \t]*:")


def accepts_recipient(mailbox_address: str, recipient: str) -> bool:
    """Our address, or its plus-form `local+anything@domain`, case-insensitively."""
    local, _, domain = mailbox_address.strip().lower().rpartition("@")
    their_local, at, their_domain = recipient.strip().strip("<>").lower().rpartition("@")
    if not at or their_domain != domain:
        return False
    return their_local == local or their_local.startswith(local + "+")


def with_return_path(raw: bytes, mail_from: str | None) -> bytes:
    """Prepend `Return-Path: <envelope sender>` unless the header block has one.

    The null sender `<>` (bounces, RFC 3834 auto-replies) becomes
    `Return-Path: <>`, which the classifier recognises.  Nothing else is added.
    """
    if mail_from is None:
        return raw
    end = _HEADER_END.search(raw)
    headers = raw[:end.start() + 1] if end else raw
    if _RETURN_PATH.search(headers):
        return raw
    address = mail_from.strip().strip("<>").strip()
    newline = b"\r\n" if raw.split(b"\n", 1)[0].endswith(b"\r") or not raw else b"\n"
    return b"Return-Path: <" + address.encode("utf-8", "surrogateescape") + b">" \
        + newline + raw


class InboundHandler:
    """aiosmtpd handler: refuse strangers at RCPT, commit before saying 250."""

    def __init__(self, engine: Engine, desk: Desk, *, lmtp: bool = False,
                 executor: ThreadPoolExecutor | None = None,
                 on_message: Callable[[Outcome], None] | None = None) -> None:
        self.engine = engine
        self.desk = desk
        self.source = Source(mailbox="lmtp" if lmtp else "smtp", uidvalidity=None, uid=None)
        self.lmtp = lmtp
        self.executor = executor
        self.on_message = on_message

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if not accepts_recipient(self.desk.settings.mailbox.address, address):
            log.info("refused recipient %s from %s", address, session.peer)
            return NO_SUCH_USER
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        status = await self._process(envelope)
        if not self.lmtp:
            return status
        # RFC 2033: one reply per accepted recipient.  All of them are our one
        # mailbox, so the message was processed once and each gets its status.
        return "\r\n".join([status] * max(1, len(envelope.rcpt_tos)))

    async def _process(self, envelope: Envelope) -> str:
        raw = envelope.original_content
        if raw is None:
            raw = envelope.content if isinstance(envelope.content, bytes) else b""
        raw = with_return_path(bytes(raw), envelope.mail_from)
        loop = asyncio.get_running_loop()
        try:
            outcome = await loop.run_in_executor(self.executor, self._receive, raw)
        except DatabaseUnavailable as error:
            log.warning("database unavailable, answered 451: %s", error)
            return TRY_AGAIN
        except Exception:
            log.exception("unexpected error, answered 451 (from %s)", envelope.mail_from)
            return TRY_AGAIN
        log.info("%s message from %s: %s%s", self.source.mailbox, envelope.mail_from,
                 outcome.verdict, " (duplicate)" if outcome.duplicate else "")
        return DUPLICATE if outcome.duplicate else ACCEPTED

    def _receive(self, raw: bytes) -> Outcome:
        outcome = receive(self.engine, self.desk, raw, source=self.source)
        if self.on_message is not None:
            try:
                self.on_message(outcome)
            except Exception:  # committed already; a failing hook must not cause a retry
                log.exception("on_message hook failed")
        return outcome


class _LMTPServer(LMTP):
    """aiosmtpd's LMTP, with its own post-DATA refusals repeated per recipient."""

    _data_replies = 0  # > 0 while the replies to a DATA body are being sent

    async def smtp_DATA(self, arg: str) -> None:
        recipients = len(self.envelope.rcpt_tos) if self.envelope is not None else 0
        self._data_replies = -recipients  # negative: the 354 has not gone out yet
        try:
            await super().smtp_DATA(arg)
        finally:
            self._data_replies = 0

    async def push(self, status) -> None:
        if self._data_replies < 0:
            text = status.decode("ascii", "replace") if isinstance(status, bytes) else status
            if text.startswith("354"):
                self._data_replies = -self._data_replies
                await super().push(status)
                return
        if self._data_replies > 1:
            single = status if isinstance(status, str) else status.decode("utf-8", "replace")
            if "\n" not in single:
                status = "\r\n".join([single] * self._data_replies)
        await super().push(status)


class _Controller(Controller):
    def __init__(self, handler: InboundHandler, *, lmtp: bool, **kwargs) -> None:
        self.lmtp = lmtp
        super().__init__(handler, **kwargs)

    def factory(self) -> SMTP:
        server_class = _LMTPServer if self.lmtp else SMTP
        return server_class(self.handler, **self.SMTP_kwargs)


class InboundListener:
    """The SMTP (or LMTP) server on `inbound_smtp.host:port`, in its own thread."""

    def __init__(self, engine: Engine, desk: Desk, *, workers: int = 4,
                 on_message: Callable[[Outcome], None] | None = None) -> None:
        """ON_MESSAGE is called in a worker thread with each outcome after its
        commit (e.g. to wake the outbox sender)."""
        settings = desk.settings.inbound_smtp
        self.engine = engine
        self.desk = desk
        self.host = settings.host
        self.port = settings.port
        self.lmtp = settings.lmtp
        self.workers = workers
        self.on_message = on_message
        self._executor: ThreadPoolExecutor | None = None
        self._controller: _Controller | None = None

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> InboundListener:
        if self._controller is not None:
            return self
        self._executor = ThreadPoolExecutor(max_workers=self.workers,
                                            thread_name_prefix="mailflow-smtp-in")
        handler = InboundHandler(self.engine, self.desk, lmtp=self.lmtp,
                                 executor=self._executor, on_message=self.on_message)
        limit = int(self.desk.settings.policy.max_message_mb * 1024 * 1024)
        controller = _Controller(
            handler, lmtp=self.lmtp, hostname=self.host, port=self.port, ready_timeout=10,
            # The bytes exactly as sent: no decoding, no added headers.
            decode_data=False, enable_SMTPUTF8=True, data_size_limit=limit,
            ident="mailflow")
        try:
            controller.start()
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise
        self._controller = controller
        log.info("%s listener on %s:%s", "LMTP" if self.lmtp else "SMTP", self.host, self.port)
        return self

    def stop(self) -> None:
        """Stop listening.  A message being committed is finished (the sender
        may not hear the 250; it retries and the copy is recognised)."""
        controller, self._controller = self._controller, None
        executor, self._executor = self._executor, None
        if controller is not None:
            controller.stop()
        if executor is not None:
            executor.shutdown(wait=True)

    def __enter__(self) -> InboundListener:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
