"""`mailflow serve`: everything, running until SIGTERM.

Threads, each with one job:
- mail: IMAP IDLE (or a poll every `poll_seconds` where the server lacks
  IDLE); every wake-up polls the folder, so a silent IDLE never leaves mail
  waiting longer than `poll_seconds`.  After each batch it wakes the sender,
  so sending overlaps with processing the next batch.
- sender (a child process, so it runs on the other core): sends the outbox
  when woken, and every few seconds for rows written by other processes
  (`mailflow quote` from a staff shell) and for retries.
- scheduler: APScheduler runs the periodic jobs; missed runs catch up once at start.
- inbound SMTP/LMTP listener, when `inbound_smtp.enabled`.

`stop` (set by SIGTERM/SIGINT) ends each loop after the message or batch in
hand is committed; nothing is left half-done because every unit of work is a
transaction.

With OAuth2 (`auth: oauth2`), the mail thread reconnects when its session's
access token is due for renewal (Exchange Online ends the session when the
token expires), and after any drop (a revoked token, a `BYE`) with a new token.
When the provider refuses the sign-in itself (`LoginNeeded`: revoked or expired
refresh token) — seen by the mail thread, or by the sender child in the token
store — `serve` logs one line saying to run `mailflow mailbox login`, tells
staff by mail if SMTP still works, and stops with exit code 1.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine

from mailflow.adapters.imap import Backoff, Mailbox, MailboxError
from mailflow.desk import Desk
from mailflow.errors import ConfigError
from mailflow.intake import DatabaseUnavailable
from mailflow.oauth.tokens import LoginNeeded, OAuthError, TokenSource
from mailflow.poller import Poller
from mailflow.sender import SenderProcess

log = logging.getLogger("mailflow.serve")

# How often the main thread looks whether the sender's SMTP sign-in was refused.
SIGN_IN_WATCH_SECONDS = 2.0


@dataclass
class Service:
    engine: Engine
    desk: Desk
    stop: threading.Event = field(default_factory=threading.Event)
    sender: SenderProcess | None = None
    mailbox: Mailbox | None = None
    threads: list[threading.Thread] = field(default_factory=list)
    _idling: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    errors: list[BaseException] = field(default_factory=list)
    _smtp_tokens: TokenSource | None = None

    # -- mail --------------------------------------------------------------------

    def mail_loop(self) -> None:
        settings = self.desk.settings.mailbox.imap
        self.mailbox = Mailbox(settings)
        poller = Poller(self.engine, self.desk, self.mailbox, after_batch=self.wake_sender)
        backoff = Backoff(1.0, 60.0)
        while not self.stop.is_set():
            try:
                if not self.mailbox.connected:
                    self.mailbox.connect()
                report = poller.poll_once()
                self.wake_sender()
                backoff.reset()
                if report.skipped_locked:
                    # Another instance holds this mailbox: look again soon rather
                    # than wait on IDLE for mail it may have left behind.
                    self.stop.wait(1.0)
                    continue
                if report.processed or report.failed or report.duplicates:
                    continue  # mail may have arrived while we worked: poll again first
                wait = self._session_seconds(settings.poll_seconds)
                if wait <= 0:
                    log.info("IMAP: the session's OAuth2 token is due for renewal; reconnecting")
                    self.mailbox.close()
                    continue
                if self.mailbox.has_idle:
                    with self._lock:
                        if self.stop.is_set():
                            break
                        self._idling = True  # only now may a stop cut the connection
                    try:
                        self.mailbox.idle_wait(wait)
                    finally:
                        self._idling = False
                else:
                    self.stop.wait(wait)
            except (OAuthError, ConfigError) as error:  # a person must act
                self._sign_in_refused(error)
                break
            except MailboxError as error:
                if self.stop.is_set():
                    break
                delay = backoff.next_delay()
                log.warning("IMAP: %s; reconnecting in %.0fs", error, delay)
                self.mailbox.close()
                self.stop.wait(delay)
            except DatabaseUnavailable as error:
                delay = backoff.next_delay()
                log.error("database unavailable: %s; mail stays in the inbox, retry in %.0fs",
                          error, delay)
                self.stop.wait(delay)
        self.mailbox.close()

    def _session_seconds(self, poll_seconds: float) -> float:
        """How long to wait for mail before the session's token must be renewed."""
        renew_at = self.mailbox.session_renew_at if self.mailbox else None
        if renew_at is None:
            return poll_seconds
        return min(poll_seconds, renew_at - time.time())

    # -- a refused sign-in ------------------------------------------------------------

    def _sign_in_refused(self, error: OAuthError | ConfigError) -> None:
        """One line, staff told of a refused sign-in (once, through SMTP if it
        still works), then stop."""
        log.error("%s", error)
        if isinstance(error, LoginNeeded):
            from mailflow.oauth.check import tell_staff_login_needed

            try:
                if tell_staff_login_needed(self.engine, self.desk, error):
                    log.info("staff told by mail")
                    self.wake_sender()
            except Exception:
                log.exception("could not queue the staff notice")
        self.errors.append(error)
        self.request_stop()

    def _smtp_sign_in_refused(self) -> LoginNeeded | ConfigError | None:
        """The sender's SMTP sign-in, as its child process left it in the token store."""
        if self.desk.settings.smtp.auth != "oauth2":
            return None
        try:
            if self._smtp_tokens is None:
                self._smtp_tokens = TokenSource.for_section(self.desk.settings.smtp, "smtp")
            self._smtp_tokens.refused()
        except (LoginNeeded, ConfigError) as error:
            return error
        return None

    # -- scheduled jobs -------------------------------------------------------------

    def start_scheduler(self):
        from apscheduler.schedulers.background import BackgroundScheduler

        from mailflow import jobs

        try:
            for report in jobs.run_due(self.engine, self.desk):
                log.info("catch-up: %s", report)
        except Exception:
            log.exception("catch-up of scheduled jobs failed; the scheduler will retry")
        scheduler = BackgroundScheduler(timezone=self.desk.tz)
        for name, trigger, func in jobs.scheduled_jobs(self.desk.settings):
            scheduler.add_job(self._job_runner(name, func), trigger, id=name,
                              max_instances=1, coalesce=True, misfire_grace_time=3600)
        # Hourly: finish any period a crash left half-done (a digest of many clients).
        scheduler.add_job(self._job_runner("catch-up", jobs.run_due), "interval", hours=1,
                          id="catch-up", max_instances=1, coalesce=True)
        scheduler.start()
        return scheduler

    def _job_runner(self, name: str, func: Callable) -> Callable[[], None]:
        def run() -> None:
            try:
                report = func(self.engine, self.desk)
                log.info("job %s: %s", name, report)
                self.wake_sender()
            except Exception:
                log.exception("job %s failed; it runs again at its next time", name)
        return run

    # -- the whole ------------------------------------------------------------------

    def _thread(self, name: str, target: Callable[[], None]) -> None:
        def guarded() -> None:
            try:
                target()
            except BaseException as error:  # a bug: stop everything, exit non-zero
                log.exception("%s thread crashed", name)
                self.errors.append(error)
                self.request_stop()

        thread = threading.Thread(target=guarded, name=f"mailflow-{name}", daemon=True)
        thread.start()
        self.threads.append(thread)

    def wake_sender(self) -> None:
        if self.sender is not None:
            self.sender.wake()

    def request_stop(self) -> None:
        """Stop after the work in hand: a batch being processed is committed and
        moved; only an idle wait is cut short."""
        with self._lock:
            self.stop.set()
            if self._idling and self.mailbox is not None:
                self.mailbox.interrupt()

    def run(self, *, scheduler: bool = True) -> int:
        """Run until `stop`; returns the exit code (0 after a clean stop)."""
        listener = None
        sched = None
        # The sender is forked first, before this process starts any thread.
        self.sender = SenderProcess(self.engine, self.desk).start()
        if self.desk.settings.inbound_smtp.enabled:
            from mailflow.adapters.smtp_in import InboundListener

            listener = InboundListener(self.engine, self.desk,
                                       on_message=lambda _outcome: self.wake_sender())
            listener.start()
        self._thread("mail", self.mail_loop)
        if scheduler:
            sched = self.start_scheduler()
        log.info("mailflow serving %s", self.desk.settings.mailbox.address)
        while not self.stop.wait(SIGN_IN_WATCH_SECONDS):
            refused = self._smtp_sign_in_refused()
            if refused is not None:
                self._sign_in_refused(refused)
        log.info("stopping: finishing the work in hand")
        if sched is not None:
            sched.shutdown(wait=True)
        if listener is not None:
            listener.stop()
        for thread in self.threads:
            thread.join(timeout=60)
        self.sender.stop()
        log.info("stopped")
        return 1 if self.errors else 0


def run_service(engine: Engine, desk: Desk, stop: threading.Event | None = None, *,
                scheduler: bool = True) -> int:
    service = Service(engine, desk)
    if stop is not None:
        def relay() -> None:
            stop.wait()
            service.request_stop()
        threading.Thread(target=relay, daemon=True).start()
    return service.run(scheduler=scheduler)
