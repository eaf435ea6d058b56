"""The IMAP mailbox the poller reads: a thin layer over `imapclient.IMAPClient`.

Everything is addressed by UID, never by sequence number.  Every imapclient,
imaplib, socket or TLS error comes out as `MailboxError`, so callers handle one
exception family; `MailboxError.connection_lost` says whether the connection is
gone (reconnect) or the server merely refused one command.

Reconnecting is the caller's decision: `retry_with_backoff(mailbox.reconnect)`
tries a bounded number of times with exponentially growing, capped delays.

With `auth: oauth2` every connect logs in with XOAUTH2 and an access token
from `mailflow.oauth` (refreshed when due; once more when the server refuses
it).  `LoginNeeded`/`OAuthError` pass through as they are (a person must act);
a token endpoint that cannot be reached is a lost connection (try again).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import imaplib
import logging
import random
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import imapclient
from imapclient.exceptions import IMAPClientError, LoginError
from imapclient.imapclient import SocketTimeout

from mailflow.config import ImapSettings
from mailflow.errors import ConfigError

if TYPE_CHECKING:
    from mailflow.oauth.tokens import AccessToken, TokenSource

log = logging.getLogger(__name__)

T = TypeVar("T")

# RFC 2177: clients should re-issue IDLE at least every 29 minutes.
MAX_IDLE_SECONDS = 29 * 60


class MailboxError(Exception):
    """The IMAP server could not be reached or refused an operation."""

    def __init__(self, message: str, *, connection_lost: bool = False) -> None:
        super().__init__(message)
        self.connection_lost = connection_lost


@dataclass(frozen=True)
class FolderState:
    """What SELECT tells us about a folder."""

    name: str
    uidvalidity: int
    uidnext: int
    exists: int


# -- backoff ----------------------------------------------------------------------------


class Backoff:
    """Exponential delays: base, 2*base, 4*base ... capped at max_delay, with jitter.

    `next_delay()` never returns less than `base`, so a loop that sleeps it
    between attempts is never a tight loop; `reset()` after a success.
    """

    def __init__(self, base: float = 1.0, max_delay: float = 60.0, *, factor: float = 2.0,
                 jitter: float = 0.1) -> None:
        if base <= 0 or max_delay < base or factor < 1:
            raise ValueError("need 0 < base <= max_delay and factor >= 1")
        self.base, self.max_delay, self.factor, self.jitter = base, max_delay, factor, jitter
        self._attempt = 0

    def next_delay(self) -> float:
        delay = min(self.max_delay, self.base * self.factor ** self._attempt)
        self._attempt += 1
        spread = delay * self.jitter
        return max(self.base, min(self.max_delay, delay + random.uniform(-spread, spread)))

    def reset(self) -> None:
        self._attempt = 0


def retry_with_backoff(
    action: Callable[[], T],
    *,
    attempts: int = 5,
    base_delay: float = 1.0,
    max_delay: float = 60.0,
    retry_on: tuple[type[BaseException], ...] = (MailboxError,),
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
) -> T:
    """Call ACTION until it succeeds, at most ATTEMPTS times; re-raise the last error.

    Between attempts it sleeps an exponentially growing delay capped at
    MAX_DELAY.  ON_RETRY(attempt, error, delay) is told before each sleep.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    backoff = Backoff(base_delay, max(base_delay, max_delay))
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except retry_on as error:
            if attempt == attempts:
                raise
            delay = backoff.next_delay()
            if on_retry is not None:
                on_retry(attempt, error, delay)
            log.warning("attempt %d/%d failed (%s); retrying in %.1fs",
                        attempt, attempts, error, delay)
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


# -- the mailbox -------------------------------------------------------------------------


def _chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def _has_new_mail(responses: Iterable) -> bool:
    """An untagged `n EXISTS` (or `n RECENT`, n > 0) means mail arrived."""
    return any(
        len(r) >= 2 and (r[1] == b"EXISTS" or (r[1] == b"RECENT" and r[0] > 0))
        for r in responses
    )


def _says_bye(responses: Iterable) -> bool:
    return any(len(r) >= 1 and r[0] == b"BYE" for r in responses)


class Mailbox:
    """One IMAP connection to the support mailbox.

    >>> box = Mailbox(settings.mailbox.imap)
    >>> box.connect(); box.ensure_folders(); state = box.select()
    >>> for uid, raw in box.fetch(box.search_uids(after_uid=last_seen)): ...
    """

    def __init__(self, settings: ImapSettings, password: str | None = None, *,
                 timeout: float = 30.0, ssl_context: ssl.SSLContext | None = None,
                 noop_interval: float = 5.0, tokens: TokenSource | None = None) -> None:
        self.settings = settings
        self._password = password
        self._tokens = tokens
        # With XOAUTH2: when the session's token is due for renewal; a long
        # IDLE reconnects by then (Exchange Online ends the session when it expires).
        self.session_renew_at: float | None = None
        self.timeout = timeout
        self.ssl_context = ssl_context
        self.noop_interval = noop_interval
        self._client: imapclient.IMAPClient | None = None
        self._selected: str | None = None
        self._last_selected: str | None = None  # survives a lost connection
        self._known_folders: set[str] = set()

    # -- connection ----------------------------------------------------------------

    @property
    def password(self) -> str:
        password = self._password if self._password is not None else self.settings.password
        if password is None:
            raise ConfigError(
                f"mailbox.imap.password_env: environment variable "
                f"{self.settings.password_env} is not set")
        return password

    @property
    def tokens(self) -> TokenSource:
        """Where XOAUTH2 access tokens come from (`auth: oauth2`)."""
        if self._tokens is None:
            from mailflow.oauth.tokens import TokenSource

            self._tokens = TokenSource.for_section(self.settings, "mailbox.imap")
        return self._tokens

    @property
    def connected(self) -> bool:
        return self._client is not None

    def connect(self) -> Mailbox:
        """Open the connection and log in (TLS from the first byte when `tls`)."""
        self.close()
        oauth2 = self.settings.auth == "oauth2"
        # Credentials first: a missing password or sign-in fails before any socket.
        password = None if oauth2 else self.password
        token = self._access_token() if oauth2 else None
        where = f"{self.settings.host}:{self.settings.port}"
        with self._errors(f"connect to {where}"):
            context = self.ssl_context or (ssl.create_default_context()
                                           if self.settings.tls else None)
            client = imapclient.IMAPClient(
                self.settings.host, port=self.settings.port, ssl=self.settings.tls,
                ssl_context=context,
                timeout=SocketTimeout(connect=self.timeout, read=self.timeout))
            try:
                if token is not None:
                    self._oauth2_login(client, token)
                else:
                    client.login(self.settings.username, password)
            except BaseException:
                with contextlib.suppress(Exception):
                    client.shutdown()
                raise
        self._client = client
        self._known_folders.clear()
        log.info("connected to IMAP %s as %s", where, self.settings.username)
        return self

    def _access_token(self, rejected: str | None = None) -> AccessToken:
        from mailflow.oauth.tokens import TokenUnavailable

        try:
            return self.tokens.access_token(rejected=rejected)
        except TokenUnavailable as error:
            raise MailboxError(f"IMAP login: {error}", connection_lost=True) from error

    def _oauth2_login(self, client: imapclient.IMAPClient, token: AccessToken) -> None:
        try:
            client.oauth2_login(self.settings.username, token.value)
        except LoginError:
            # Refused though we thought it fresh (revoked, or expired early):
            # one new token, one more try; a second refusal is the server's answer.
            token = self._access_token(rejected=token.value)
            client.oauth2_login(self.settings.username, token.value)
        self.session_renew_at = token.renew_at

    def reconnect(self) -> FolderState | None:
        """Drop the connection, connect again and re-select the folder that was selected."""
        folder = self._last_selected
        self.connect()
        return self.select(folder) if folder else None

    def close(self) -> None:
        """Log out (quietly: the connection may already be gone)."""
        client, self._client = self._client, None
        self._selected = None
        if client is None:
            return
        try:
            client.logout()
        except Exception:
            with contextlib.suppress(Exception):
                client.shutdown()

    def interrupt(self) -> None:
        """From another thread: break a blocking IDLE or read at once (for shutdown).
        The connection is unusable afterwards; the owner sees `MailboxError`."""
        client = self._client
        if client is None:
            return
        with contextlib.suppress(Exception):
            client.socket().shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> Mailbox:
        return self.connect()

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def client(self) -> imapclient.IMAPClient:
        if self._client is None:
            raise MailboxError("not connected to the IMAP server", connection_lost=True)
        return self._client

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn imapclient/socket errors into MailboxError; drop a dead connection."""
        try:
            yield
        except MailboxError:
            raise
        except LoginError as error:
            raise MailboxError(f"IMAP {action}: login refused for "
                               f"{self.settings.username!r}: {error}") from error
        except (imaplib.IMAP4.abort, OSError, EOFError) as error:
            # abort: the server closed or broke the connection; OSError covers
            # socket errors, timeouts and TLS errors.
            self._drop()
            raise MailboxError(f"IMAP {action}: connection lost: {error}",
                               connection_lost=True) from error
        except IMAPClientError as error:
            raise MailboxError(f"IMAP {action}: {error}") from error

    def _drop(self) -> None:
        client, self._client = self._client, None
        self._selected = None
        if client is not None:
            with contextlib.suppress(Exception):
                client.shutdown()

    # -- folders -------------------------------------------------------------------

    def ensure_folders(self, *extra: str) -> None:
        """Create the processed and failed folders (and EXTRA) if missing."""
        for folder in (self.settings.processed_folder, self.settings.failed_folder, *extra):
            self._ensure_folder(folder)

    def _ensure_folder(self, folder: str) -> None:
        if folder in self._known_folders or folder.upper() == "INBOX":
            return
        with self._errors(f"create folder {folder!r}"):
            if not self.client.folder_exists(folder):
                try:
                    self.client.create_folder(folder)
                    log.info("created IMAP folder %s", folder)
                except IMAPClientError:
                    # Another process may have created it meanwhile.
                    if not self.client.folder_exists(folder):
                        raise
        self._known_folders.add(folder)

    def select(self, folder: str | None = None) -> FolderState:
        """Select FOLDER (default: the configured one) read-write; report UIDVALIDITY/UIDNEXT."""
        folder = folder or self.settings.folder
        with self._errors(f"select {folder!r}"):
            response = self.client.select_folder(folder)
            uidnext = response.get(b"UIDNEXT")
            if uidnext is None:  # optional in SELECT on old servers
                uidnext = self.client.folder_status(folder, [b"UIDNEXT"])[b"UIDNEXT"]
            state = FolderState(name=folder, uidvalidity=int(response[b"UIDVALIDITY"]),
                                uidnext=int(uidnext), exists=int(response.get(b"EXISTS", 0)))
        self._selected = self._last_selected = folder
        return state

    def _require_selected(self) -> None:
        if self._selected is None:
            raise MailboxError("no IMAP folder selected (call select() first)")

    # -- reading ---------------------------------------------------------------------

    def search_uids(self, after_uid: int = 0) -> list[int]:
        """UIDs greater than AFTER_UID in the selected folder, ascending.

        `UID SEARCH UID n:*` also matches the last message when every UID is
        below n (`*` is the highest UID), so the result is filtered.
        """
        self._require_selected()
        with self._errors("search"):
            uids = self.client.search(["UID", f"{after_uid + 1}:*"])
        return sorted(uid for uid in uids if uid > after_uid)

    def search_since(self, date: dt.date) -> list[int]:
        """UIDs of messages with an internal date on or after DATE, ascending."""
        self._require_selected()
        if isinstance(date, dt.datetime):
            date = date.date()
        with self._errors("search since"):
            return sorted(self.client.search(["SINCE", date]))

    def fetch(self, uids: Iterable[int]) -> list[tuple[int, bytes]]:
        """(uid, raw bytes) for UIDS in UID order, fetched in batches, without setting \\Seen.

        A UID that no longer exists (expunged meanwhile) is left out.
        """
        self._require_selected()
        wanted = sorted(set(uids))
        result: list[tuple[int, bytes]] = []
        for batch in _chunks(wanted, self.settings.batch_size):
            with self._errors("fetch"):
                data = self.client.fetch(batch, ["BODY.PEEK[]"])
            for uid in batch:
                item = data.get(uid)
                if item is None:
                    continue
                raw = item.get(b"BODY[]")
                if raw is None:
                    raw = item.get(b"RFC822")
                if raw is not None:
                    result.append((uid, bytes(raw)))
        return result

    # -- acknowledging ---------------------------------------------------------------

    @property
    def capabilities(self) -> frozenset[bytes]:
        with self._errors("capability"):
            return frozenset(self.client.capabilities())

    def move(self, uids: Iterable[int], folder: str) -> None:
        """Move UIDS to FOLDER (created if missing): MOVE, or COPY + \\Deleted + UID EXPUNGE."""
        self._require_selected()
        uids = sorted(set(uids))
        if not uids:
            return
        self._ensure_folder(folder)
        with self._errors(f"move to {folder!r}"):
            client = self.client
            if client.has_capability("MOVE"):
                client.move(uids, folder)
                return
            client.copy(uids, folder)
            client.add_flags(uids, [imapclient.DELETED], silent=True)
            if client.has_capability("UIDPLUS"):
                client.uid_expunge(uids)
            else:
                # Without UIDPLUS, EXPUNGE removes every \Deleted message in
                # the folder; the poller's folder holds only mail it owns.
                client.expunge()

    # -- waiting ---------------------------------------------------------------------

    @property
    def has_idle(self) -> bool:
        """Whether `idle_wait` uses IMAP IDLE (configured on and offered by the server)."""
        if not self.settings.idle:
            return False
        with self._errors("capability"):
            return self.client.has_capability("IDLE")

    def idle_wait(self, timeout: float) -> bool:
        """Wait up to TIMEOUT seconds for new mail in the selected folder.

        True as soon as the server reports new messages, False on timeout.
        With IDLE the server pushes; without it the folder is polled by NOOP
        every `noop_interval` seconds.  Timeouts above 29 minutes are cut to 29.
        """
        self._require_selected()
        timeout = max(0.0, min(timeout, MAX_IDLE_SECONDS))
        if self.has_idle:
            return self._idle(timeout)
        return self._noop_wait(timeout)

    def _idle(self, timeout: float) -> bool:
        client = self.client
        deadline = time.monotonic() + timeout
        new_mail = False
        with self._errors("idle"):
            client.idle()
        # idle_check() returns [] early when the server closed the socket (it
        # swallows the EOF); a few early empty returns in a row mean just that.
        early_empty = 0
        try:
            while not new_mail:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                started = time.monotonic()
                responses = client.idle_check(timeout=remaining)
                if _says_bye(responses):
                    raise imaplib.IMAP4.abort("server said BYE")
                new_mail = _has_new_mail(responses)
                returned_early = time.monotonic() - started < remaining * 0.9
                early_empty = early_empty + 1 if not responses and returned_early else 0
                if early_empty >= 3:
                    raise imaplib.IMAP4.abort("server closed the connection")
        except (IMAPClientError, OSError) as error:
            # The connection is stuck in IDLE or gone: never reuse it.
            self._drop()
            raise MailboxError(f"IMAP idle: connection lost: {error}",
                               connection_lost=True) from error
        with self._errors("idle done"):
            _text, late = client.idle_done()
        return new_mail or _has_new_mail(late)

    def _noop_wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            with self._errors("noop"):
                _text, responses = self.client.noop()
            if _has_new_mail(responses):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(self.noop_interval, remaining))
