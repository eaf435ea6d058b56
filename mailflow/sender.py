"""The outbox sender: claims pending rows after their transaction committed,
sends them over SMTP and records the result.

Claiming marks a row `sending` in its own short transaction (`FOR UPDATE SKIP
LOCKED` on PostgreSQL, so two instances never take the same row).  A row left
`sending` by a crash is sent again after `smtp.claim_timeout_seconds`: a duplicate is possible
in that narrow window and detectable by its fixed Message-ID; a loss is not.

A message that cannot be built or sent fails alone: the row becomes `failed`
with the reason, staff are told (never about a failed staff notice: that could
loop), and the rest of the batch goes out.  Headers are folded within 78
characters where they can be (RFC 5322), so no server refuses them as too long.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import time
from dataclasses import dataclass
from datetime import timedelta
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr

import sqlalchemy.exc
from sqlalchemy import func, or_, update
from sqlalchemy.engine import Engine
from sqlmodel import select

from mailflow.adapters.smtp_out import (
    PermanentSendError,
    SendError,
    SmtpConnection,
    ascii_address,
    with_attachments,
)
from mailflow.db import BUSY_TIMEOUT_MS, create_db_engine, transaction
from mailflow.desk import Desk
from mailflow.inline_images import html_part
from mailflow.models import Outbox, OutboxStatus, Request
from mailflow.render import shorten
from mailflow.services.outbox import notify_staff

log = logging.getLogger("mailflow.sender")

BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_MAX = timedelta(hours=2)


@dataclass
class SendReport:
    sent: int = 0
    retrying: int = 0
    failed: int = 0

    def __iadd__(self, other: SendReport) -> SendReport:
        self.sent += other.sent
        self.retrying += other.retrying
        self.failed += other.failed
        return self


def _one_line(value: str) -> str:
    """Header values never carry a line break, whatever a row holds."""
    return " ".join(value.replace("\r", " ").replace("\n", " ").split())


#: The longest word `compat32` can fold at white space within 78 characters,
#: the header's name included.  A value with a longer word (a URL), or with
#: non-ASCII text, goes out as RFC 2047 encoded words, which fold anywhere.
_FOLDABLE_WORD = 60
#: Display names longer than this are cut with "…".
MAX_DISPLAY_NAME = 100


def _foldable(value: str) -> bool:
    return value.isascii() and all(len(word) <= _FOLDABLE_WORD for word in value.split())


def _header(value: str, name: str) -> str | Header:
    value = _one_line(value)
    return value if _foldable(value) else Header(value, "utf-8", header_name=name)


def _mailbox(name: str, address: str) -> str | Header:
    """`Name <address>`, the name encoded (and folded) where it needs to be."""
    name, address = shorten(_one_line(name), MAX_DISPLAY_NAME), ascii_address(address)
    if _foldable(name):
        return formataddr((name, address))
    header = Header(name, "utf-8", header_name="From")
    header.append(f"<{address}>", "us-ascii")
    return header


def _address_list(addresses: list[str]) -> str:
    """Recipients for To: a non-ASCII domain in its ASCII form.  A non-ASCII
    local part stays UTF-8 (RFC 6532), held as surrogate-escaped bytes so the
    `compat32` generator writes it unencoded; the envelope then needs SMTPUTF8."""
    found = [ascii_address(address) for address in addresses]
    return ", ".join(a if a.isascii() else a.encode().decode("ascii", "surrogateescape")
                     for a in found)


def _text_part(body: str, subtype: str) -> MIMEText:
    return MIMEText(body, subtype, "utf-8")


def build_email(desk: Desk, row: Outbox) -> Message:
    """The outgoing message exactly as the row describes it: fixed Message-ID,
    threading headers, and `Auto-Submitted` on automatic answers (RFC 3834).

    Built with the `compat32` classes: the modern header objects parse every
    value they are given, which made building the message cost as much as
    processing the inbound one; these headers are ours and already clean."""
    mailbox = desk.settings.mailbox
    if row.body_html:
        message: Message = MIMEMultipart("alternative")
        message.attach(_text_part(row.body_text, "plain"))
        message.attach(html_part(row.body_html, mailbox.address.rpartition("@")[2]))
    else:
        message = _text_part(row.body_text, "plain")
    message = with_attachments(message, [(a.filename, a.content_type, a.data)
                                         for a in row.attachments])
    message["From"] = _mailbox(mailbox.display_name, mailbox.address)
    message["To"] = _address_list(row.recipients)
    if row.cc_recipients:
        message["Cc"] = _address_list(row.cc_recipients)
    message["Subject"] = _header(row.subject, "Subject")
    message["Date"] = format_datetime(row.created_at)
    message["Message-ID"] = f"<{_one_line(row.message_id)}>"
    if row.in_reply_to:
        message["In-Reply-To"] = f"<{_one_line(row.in_reply_to)}>"
    if row.references:
        message["References"] = " ".join(f"<{ref}>" for ref in row.references.split())
    if row.reply_to:
        message["Reply-To"] = _one_line(row.reply_to)
    if row.auto:
        message["Auto-Submitted"] = "auto-replied"
    elif row.template.startswith("staff/"):
        # Notices are generated, not written: a staff mailbox's responder that
        # honours RFC 3834 does not answer them (issue 9.3).
        message["Auto-Submitted"] = "auto-generated"
    message["X-Mailflow-Template"] = _one_line(row.template)
    if row.request_id:
        message["X-Mailflow-Request"] = str(row.request_id)
    return message


def backoff(attempts: int) -> timedelta:
    # The exponent is capped: a large smtp.max_attempts must not overflow timedelta.
    return min(BACKOFF_MAX, BACKOFF_BASE * (2 ** min(max(0, attempts - 1), 20)))


def claim(engine: Engine, desk: Desk, limit: int,
          shard: tuple[int, int] | None = None) -> list[Outbox]:
    """Claim up to LIMIT due rows, oldest first; SHARD (k, n): only rows whose
    client id (0 for none) is k modulo n, so each client's mail keeps its order."""
    now = desk.now()
    stale = now - timedelta(seconds=desk.settings.smtp.claim_timeout_seconds)
    with transaction(engine) as session:
        query = select(Outbox).where(or_(
            (Outbox.status == OutboxStatus.PENDING) & (Outbox.next_attempt_at <= now),
            (Outbox.status == OutboxStatus.SENDING) & (Outbox.claimed_at <= stale)))
        if shard is not None:
            query = query.where(func.coalesce(Outbox.client_id, 0) % shard[1] == shard[0])
        query = query.order_by(Outbox.id).limit(limit).with_for_update(skip_locked=True)
        rows = list(session.exec(query))
        for row in rows:
            row.status = OutboxStatus.SENDING
            row.claimed_at = now
            row.attempts += 1
            session.add(row)
    return rows


#: How long the sender waits for SQLite's write lock to mark one message sent
#: (as long as every other connection waits: `PRAGMA busy_timeout` in db.py).
SQLITE_LOCK_WAIT = 30.0
#: Between two tries for it: short enough to get in between two of the
#: poller's commit groups, which follow one another closely.
SQLITE_LOCK_RETRY = 0.0005


class _Recorder:
    """Writes send results: one UPDATE each, committed at once.

    On PostgreSQL on a connection of its own in autocommit, held for the whole
    send: one round trip a message instead of five (pool ping, BEGIN, UPDATE,
    COMMIT), and without waiting for the WAL flush (`synchronous_commit` off
    on this connection only).  The mark is committed for every other session
    at once and survives a crash of this process (the SIGKILL case); only a
    crash of the database server itself within its WAL writer delay could lose
    it, and the message would then go out once more with its fixed Message-ID
    (a duplicate, never a loss).

    On SQLite a short transaction per mark, also on a connection held for the
    send, which asks for the write lock every half millisecond itself instead
    of through SQLite's busy handler: that one sleeps 1, 2, 5, 10 … 100 ms
    between tries and, while the poller commits group after group, kept
    missing the moments the lock was free (the sender spent 78 % of a
    2,000-message ingest waiting, and `poll` a third of its time waiting for
    the sender at the end).  Each message is still marked before the next is
    sent: a crash repeats at most one."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._connection = None

    def update(self, row_id: int, values: dict) -> None:
        statement = update(Outbox).where(Outbox.id == row_id).values(**values)
        if self._connection is None:
            self._connection = self._connect()
        try:
            if self.engine.dialect.name == "postgresql":
                self._connection.execute(statement)
            else:
                self._sqlite_update(statement)
        except BaseException:
            self.close()
            raise

    def _connect(self):
        connection = self.engine.connect()
        if self.engine.dialect.name == "postgresql":
            connection = connection.execution_options(isolation_level="AUTOCOMMIT")
            connection.exec_driver_sql("SET synchronous_commit TO OFF")
        else:  # on the driver's connection: no transaction (no write lock) for a setting
            connection.connection.driver_connection.execute("PRAGMA busy_timeout=0")
        return connection

    def _sqlite_update(self, statement) -> None:
        deadline = time.monotonic() + SQLITE_LOCK_WAIT
        while True:
            try:
                with self._connection.begin():
                    self._connection.execute(statement)
                return
            except sqlalchemy.exc.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
            time.sleep(SQLITE_LOCK_RETRY)

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            if self.engine.dialect.name == "postgresql":
                connection.exec_driver_sql("RESET synchronous_commit")
            else:
                connection.rollback()  # none is open unless a mark failed midway
                connection.connection.driver_connection.execute(
                    f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        except Exception:  # a broken connection: not back into the pool
            connection.invalidate()
        connection.close()


def _record(engine: Engine, desk: Desk, row: Outbox, error: SendError | None,
            recorder: _Recorder | None = None) -> str:
    """Write one send's result at once (a crash right after a send can then
    repeat at most that one message).  One UPDATE, no ORM round trip."""
    now = desk.now()
    if error is None:
        values, outcome = {"status": OutboxStatus.SENT, "sent_at": now, "last_error": None}, \
            "sent"
    elif error.scope == "connection":
        # The server (down, login refused), not this message, failed: keep it
        # pending without spending an attempt, so an outage never fails mail.
        values = {"status": OutboxStatus.PENDING, "last_error": str(error)[:1000],
                  "attempts": max(0, row.attempts - 1), "next_attempt_at": now + BACKOFF_BASE}
        outcome = "retrying"
    elif isinstance(error, PermanentSendError) or \
            row.attempts >= desk.settings.smtp.max_attempts:
        values, outcome = {"status": OutboxStatus.FAILED, "last_error": str(error)[:1000]}, \
            "failed"
    else:
        values = {"status": OutboxStatus.PENDING, "last_error": str(error)[:1000],
                  "next_attempt_at": now + backoff(row.attempts)}
        outcome = "retrying"
    (recorder or _Recorder(engine)).update(row.id, values)
    if outcome == "failed":
        _tell_staff(engine, desk, row, error)
    return outcome


def _tell_staff(engine: Engine, desk: Desk, row: Outbox, error: SendError) -> None:
    """A staff notice about a message that failed for good, in its own transaction.
    Never about a failed staff notice: its own notice could fail the same way."""
    if row.template.startswith("staff/"):
        return
    try:
        with transaction(engine) as session:
            notify_staff(session, desk, template="staff/bounce",
                         request=session.get(Request, row.request_id) if row.request_id
                         else None,
                         context={"original": {"to": row.to_addrs, "subject": row.subject,
                                               "message_id": row.message_id},
                                  "reason": f"not sent: {error}"})
    except Exception:  # the failed row is shown by `mailflow outbox` all the same
        log.exception("outbox %s failed; the staff notice about it could not be written",
                      row.id)


def _release(engine: Engine, desk: Desk, rows: list[Outbox]) -> None:
    """Give back claimed rows that were never offered to the server."""
    if not rows:
        return
    with transaction(engine) as session:
        for row in rows:
            current = session.get(Outbox, row.id)
            current.status = OutboxStatus.PENDING
            current.attempts = max(0, current.attempts - 1)
            current.next_attempt_at = desk.now() + BACKOFF_BASE
            session.add(current)


def _send_one(desk: Desk, smtp: SmtpConnection, row: Outbox) -> SendError | None:
    try:
        message = build_email(desk, row)
    except Exception as exc:  # a row that cannot become a message must not block the rest
        log.exception("outbox %s cannot be built into a message", row.id)
        return PermanentSendError(f"cannot build the message: {exc}")
    try:
        smtp.send(message, envelope_from=desk.settings.mailbox.address,
                  recipients=[*row.recipients, *row.cc_recipients])
    except SendError as exc:
        log.warning("outbox %s to %s: %s", row.id, row.to_addrs, exc)
        return exc
    return None


def send_due(engine: Engine, desk: Desk, *, limit: int = 100,
             connection: SmtpConnection | None = None, max_rounds: int = 1000,
             workers: int = 1, shard: tuple[int, int] | None = None) -> SendReport:
    """Send every row that is due now, in claims of `limit`; bounded by `max_rounds`.

    `workers` > 1: that many threads, each with its own SMTP connection,
    each sending the rows of its share of the clients (`claim`'s shard), so
    one's wait for the server or the database overlaps the others' work and
    a client's messages still go out in order."""
    if workers > 1 and connection is None:
        return _send_in_threads(engine, desk, limit=limit, max_rounds=max_rounds,
                                workers=workers)
    report = SendReport()
    own = connection is None
    smtp = connection or SmtpConnection(desk.settings.smtp)
    recorder = _Recorder(engine)
    try:
        for _ in range(max_rounds):
            rows = claim(engine, desk, limit, shard)
            if not rows:
                break
            done = 0
            try:
                for row in rows:
                    error = _send_one(desk, smtp, row)
                    outcome = _record(engine, desk, row, error, recorder)
                    done += 1
                    setattr(report, outcome, getattr(report, outcome) + 1)
                    if error is not None and error.scope == "connection":
                        _release(engine, desk, rows[done:])
                        return report  # the server is unreachable: the rest waits
            except BaseException:
                # Anything unexpected (a config error, an interrupt): give the
                # unsent rows back now rather than leaving them claimed.
                try:
                    _release(engine, desk, rows[done:])
                except Exception:  # pragma: no cover - the database is gone too
                    log.exception("could not release claimed outbox rows")
                raise

    finally:
        recorder.close()
        if own:
            smtp.close()
    return report


def _send_in_threads(engine: Engine, desk: Desk, *, limit: int, max_rounds: int,
                     workers: int) -> SendReport:
    import threading

    reports = [SendReport() for _ in range(workers)]
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            reports[index] = send_due(engine, desk, limit=limit, max_rounds=max_rounds,
                                      shard=(index, workers))
        except BaseException as error:  # re-raised below, in the caller's thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(index,), name=f"mailflow-send-{index}")
               for index in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    total = SendReport()
    for report in reports:
        total += report
    return total


class SenderProcess:
    """Sends the outbox in a child process while the caller goes on processing
    mail: sending runs on the second core instead of competing with mail
    processing for one interpreter lock.

    `wake()` after each committed group; the child also looks every `interval`
    seconds (rows written by other processes, retries that fell due).  Fork it
    before the caller starts threads.  The child opens its own database
    connections, ignores SIGINT/SIGTERM (the parent stops it after the round in
    hand) and exits by itself when the parent is gone."""

    def __init__(self, engine: Engine, desk: Desk, *, interval: float = 2.0,
                 workers: int = 1) -> None:
        import multiprocessing

        context = multiprocessing.get_context("fork")
        self.engine, self.desk, self.interval = engine, desk, interval
        self.workers = workers
        self._wake = context.Event()
        self._stop = context.Event()
        self._counts = context.Array("i", 3)  # sent, retrying, failed
        self._parent = os.getpid()
        self._process = context.Process(target=self._child, name="mailflow-sender",
                                        daemon=True)

    def start(self) -> SenderProcess:
        # The pool's idle connections are closed first: a forked child would
        # otherwise keep their sockets open, and a PostgreSQL session lock the
        # parent later takes on one of them (the poller's) would outlive the
        # parent's death for as long as the child lives, so the next run after
        # a crash found the mailbox "being polled" and did nothing.
        self.engine.dispose()
        # Objects that exist now are never collected in the child: keeping the
        # collector off them keeps the child from copying the parent's pages.
        gc.freeze()
        self._process.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 120) -> SendReport:
        """Stop the child after its round in hand, then send what is left, here."""
        self._stop.set()
        self._wake.set()
        self._process.join(timeout=timeout)
        if self._process.is_alive():  # stuck on a dead server: its claim times out
            self._process.kill()
            self._process.join(timeout=10)
        report = SendReport(*self._counts[:])
        try:
            report += send_due(self.engine, self.desk, workers=self.workers)
        except Exception as error:
            log.error("outbox sender: %s; the rest waits for the next run", error)
        return report

    def _child(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self.engine.dispose(close=False)  # the parent's connections stay the parent's
        engine = create_db_engine(self.engine.url.render_as_string(hide_password=False))
        failures = 0
        while os.getppid() == self._parent:
            try:
                report = send_due(engine, self.desk, workers=self.workers)
                with self._counts.get_lock():
                    self._counts[0] += report.sent
                    self._counts[1] += report.retrying
                    self._counts[2] += report.failed
                if report.sent or report.failed:
                    log.info("outbox: %d sent, %d to retry, %d failed", report.sent,
                             report.retrying, report.failed)
                failures, wait = 0, self.interval
            except Exception as error:
                failures += 1
                wait = min(60.0, self.interval * 2 ** failures)
                log.error("outbox sender: %s; retry in %.0fs", error, wait)
            if self._stop.is_set():
                break
            self._wake.wait(wait)
            self._wake.clear()
        engine.dispose()
        os._exit(0)
