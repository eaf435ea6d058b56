"""A sandbox mail world on loopback, so mailflow can be tried without a real mailbox.

`MailWorld` runs, on one background thread with its own asyncio loop:

- an IMAP server (pymap's in-memory `dict` backend): one mailbox per account,
  plain-text LOGIN/AUTHENTICATE PLAIN without TLS (loopback only), IDLE and MOVE;
- an SMTP server (aiosmtpd) that *delivers*: each accepted message is appended
  to the INBOX of every recipient it knows (`support+TOKEN@` goes to `support`),
  with `Return-Path`, `Delivered-To` and `Received` headers as a real MTA adds
  them.  Unknown recipients are refused at RCPT (550).

Everything lives in memory and is gone when the world stops.  Both servers bind
a loopback address only; port 0 picks a free port (see `imap_port`/`smtp_port`
after `start()`).

>>> world = MailWorld(imap_port=0, smtp_port=0)
>>> world.add_account("client@sandbox.example")
>>> world.start()
>>> settings = sandbox_settings(world, "sqlite:///sandbox.db")
>>> world.stop()
"""

from __future__ import annotations

import asyncio
import importlib.util
import ipaddress
import logging
import os
import re
import ssl
import threading
from argparse import Namespace
from collections.abc import Iterable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailflow.config import Settings

log = logging.getLogger("mailflow.sandbox")

DOMAIN = "sandbox.example"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_IMAP_PORT = 1143
DEFAULT_SMTP_PORT = 1025
DEFAULT_PASSWORD = "sandbox"
#: The environment variable `sandbox_settings` points mailbox.imap.password_env at.
PASSWORD_ENV = "MAILFLOW_SANDBOX_IMAP_PASSWORD"

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


class SandboxError(Exception):
    """The sandbox mail world could not start, or an operation on it failed."""


@dataclass(frozen=True)
class Account:
    """One mailbox of the sandbox: its address, IMAP login and role."""

    address: str
    username: str
    password: str
    role: str  # "support", "staff" or "client"


def _local_part(address: str) -> str:
    return address.rpartition("@")[0]


def _bare(address: str) -> str:
    """`Support+Token@Sandbox.Example` → `support@sandbox.example` (plus-addressing)."""
    address = address.strip().strip("<>").lower()
    local, at, domain = address.rpartition("@")
    if not at:
        return address
    return f"{local.split('+', 1)[0]}@{domain}"


def _check_loopback(host: str) -> str:
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"the sandbox binds loopback addresses only (127.0.0.1, ::1), "
                         f"not {host!r}")
    return host


class MailWorld:
    """Embedded IMAP (pymap) and delivering SMTP (aiosmtpd) on loopback."""

    def __init__(self, *, host: str = DEFAULT_HOST, imap_port: int = DEFAULT_IMAP_PORT,
                 smtp_port: int = DEFAULT_SMTP_PORT, domain: str = DOMAIN,
                 password: str = DEFAULT_PASSWORD) -> None:
        self.host = _check_loopback(host)
        self.domain = domain.lower()
        self.password = password
        self._wanted_ports = (imap_port, smtp_port)
        self._ports: tuple[int, int] | None = None
        self._accounts: dict[str, Account] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._config = None  # pymap config, built on the loop
        self._login = None
        self.support = self.add_account(f"support@{self.domain}", role="support")
        self.staff = self.add_account(f"staff@{self.domain}", role="staff")

    # -- accounts --------------------------------------------------------------------

    def add_account(self, address: str, *, role: str = "client", username: str | None = None,
                    password: str | None = None) -> Account:
        """A mailbox for ADDRESS (login: its local part unless USERNAME is given)."""
        address = _bare(address)
        if "@" not in address:
            raise ValueError(f"{address!r} is not an e-mail address")
        account = Account(address=address, username=username or _local_part(address),
                          password=password or self.password, role=role)
        with self._lock:
            existing = self._accounts.get(address)
            if existing is not None:
                return existing
            if any(a.username == account.username for a in self._accounts.values()):
                raise ValueError(f"IMAP user {account.username!r} exists already")
            self._accounts[address] = account
        if self.running:
            self._call(self._register(account))
        return account

    @property
    def accounts(self) -> list[Account]:
        with self._lock:
            return list(self._accounts.values())

    def account_for(self, address: str) -> Account | None:
        """The account mail to ADDRESS is delivered to (plus-tags ignored), or None."""
        with self._lock:
            return self._accounts.get(_bare(address))

    # -- ports -----------------------------------------------------------------------

    def _bound(self) -> tuple[int, int]:
        if self._ports is None:
            raise SandboxError("the mail world is not running")
        return self._ports

    @property
    def imap_port(self) -> int:
        return self._bound()[0]

    @property
    def smtp_port(self) -> int:
        return self._bound()[1]

    @property
    def running(self) -> bool:
        return self._ports is not None

    # -- start / stop ----------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> MailWorld:
        if self._thread is not None:
            raise SandboxError("the mail world was started already")
        if importlib.util.find_spec("pymap") is None:
            raise SandboxError("the sandbox needs pymap: pip install 'pymap>=0.36'")
        self._thread = threading.Thread(target=self._run, name="mailflow-sandbox", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise SandboxError(f"the mail world did not start within {timeout:.0f}s")
        if self._error is not None:
            error = self._error
            self.stop()
            raise SandboxError(f"cannot start the sandbox mail servers: {error}") from error
        log.info("sandbox IMAP on %s:%s, SMTP on %s:%s", self.host, self.imap_port,
                 self.host, self.smtp_port)
        return self

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Close both servers and their connections; idempotent."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None and thread.is_alive():
            try:
                loop.call_soon_threadsafe(stopping.set)
            except RuntimeError:  # the loop closed meanwhile
                pass
        thread.join(timeout)
        if thread.is_alive():
            log.warning("the sandbox mail servers did not stop within %.0fs", timeout)
        self._ports = None

    def __enter__(self) -> MailWorld:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as error:  # reported by start()
            self._error = error
        finally:
            try:
                _cancel_remaining(loop)
            finally:
                loop.close()
                self._ready.set()

    async def _serve(self) -> None:
        from aiosmtpd.smtp import SMTP
        from proxyprotocol.reader import ProxyProtocolReader
        from pymap.imap import IMAPServer

        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._config = config = _make_pymap_config(self.host)
        config.apply_context()
        from pymap.backend.dict import Login

        self._login = Login(config)
        for account in self.accounts:
            await self._register(account)
        imap_port, smtp_port = self._wanted_ports
        handler = _Delivery(self)
        imap_server = IMAPServer(self._login, config)

        async def imap_connection(reader, writer, sock_info) -> None:
            await imap_server(reader, _WholeResponses(writer), sock_info)

        imap = await asyncio.start_server(
            ProxyProtocolReader(config.proxy_protocol).get_callback(imap_connection),
            host=self.host, port=imap_port)
        try:
            smtp = await loop.create_server(
                lambda: SMTP(handler, hostname=self.domain, ident="mailflow sandbox",
                             auth_required=False, auth_require_tls=False,
                             authenticator=self._smtp_authenticator, loop=loop),
                host=self.host, port=smtp_port)
        except BaseException:
            imap.close()
            raise
        self._ports = (imap.sockets[0].getsockname()[1], smtp.sockets[0].getsockname()[1])
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            for server in (imap, smtp):
                server.close()
            await asyncio.wait([asyncio.ensure_future(s.wait_closed()) for s in (imap, smtp)],
                               timeout=2)

    # -- the IMAP side ---------------------------------------------------------------

    async def _register(self, account: Account) -> None:
        from pymap.backend.dict.filter import FilterSet
        from pymap.backend.dict.mailbox import MailboxSet
        from pymap.user import UserMetadata

        self._login.users_dict[account.username] = UserMetadata(
            self._config, account.username, password=account.password)
        self._config.set_cache.setdefault(account.username, (MailboxSet(), FilterSet()))

    async def _append(self, username: str, raw: bytes, folder: str = "INBOX") -> None:
        from pymap.parsing.message import AppendMessage

        mailbox_set, _filters = self._config.set_cache[username]
        if folder.upper() != "INBOX":
            try:
                await mailbox_set.add_mailbox(folder)
            except ValueError:  # exists
                pass
        mailbox = await mailbox_set.get_mailbox(folder)
        await mailbox.append(AppendMessage(raw, datetime.now(UTC), frozenset()), recent=True)

    def _call(self, coroutine, timeout: float = 10.0):
        """Run COROUTINE on the world's loop from another thread; return its result."""
        loop = self._loop
        if loop is None or not self.running:
            coroutine.close()
            raise SandboxError("the mail world is not running")
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise SandboxError(f"the mail world did not answer within {timeout:.0f}s") from None

    def deliver(self, raw: bytes, recipients: Iterable[str], *, mail_from: str = "") -> list[str]:
        """Put RAW into the INBOX of each known recipient (as SMTP would); returns
        the addresses delivered to.  Unknown recipients are skipped."""
        return self._call(self._deliver(raw, list(recipients), mail_from, peer=None))

    async def _deliver(self, raw: bytes, recipients: list[str], mail_from: str,
                       peer: str | None) -> list[str]:
        delivered = []
        for recipient in recipients:
            account = self.account_for(recipient)
            if account is None:
                continue
            trace = (f"Return-Path: <{mail_from}>\r\n"
                     f"Delivered-To: {account.address}\r\n"
                     f"Received: from {peer or 'localhost'} by {self.domain}"
                     f" (mailflow sandbox) for <{recipient}>;"
                     f" {format_datetime(datetime.now(UTC))}\r\n").encode()
            await self._append(account.username, trace + _strip_return_path(raw))
            delivered.append(account.address)
            log.info("delivered mail from <%s> to %s", mail_from, account.address)
        return delivered

    # -- the SMTP side ---------------------------------------------------------------

    def _smtp_authenticator(self, _server, _session, _envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult, LoginPassword

        if mechanism not in ("LOGIN", "PLAIN") or not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        for account in self.accounts:
            if login in (account.username, account.address) and password == account.password:
                return AuthResult(success=True, auth_data=account.username)
        return AuthResult(success=False, handled=False)


class _Delivery:
    """aiosmtpd handler: refuse unknown recipients at RCPT, deliver at DATA."""

    def __init__(self, world: MailWorld) -> None:
        self.world = world

    async def handle_RCPT(self, _server, _session, envelope, address: str,  # noqa: N802
                          _rcpt_options) -> str:
        if self.world.account_for(address) is None:
            return f"550 5.1.1 <{address}>: no such mailbox in the sandbox"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, _server, session, envelope) -> str:  # noqa: N802
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        peer = session.host_name or (session.peer[0] if session.peer else None)
        delivered = await self.world._deliver(raw, envelope.rcpt_tos,
                                              envelope.mail_from or "", peer)
        if not delivered:
            return "550 5.1.1 no known recipient"
        return f"250 2.0.0 delivered to {len(delivered)} mailbox(es)"


class _WholeResponses:
    """A StreamWriter that sends each pymap response as one write.

    pymap writes a response piece by piece (`* 1 FETCH (`, `FLAGS ...`) and
    asyncio sends each piece at once, so one line spans several TCP segments.
    imapclient's `idle_check` reads the non-blocking socket and fails on a line
    that is not complete yet ("unterminated line", mjs/imapclient#519).  Real
    servers seldom split lines on loopback; buffering until `drain()` (pymap
    drains after every response) makes pymap behave the same.
    """

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._buffer = bytearray()

    def write(self, data: bytes) -> None:
        self._buffer += data

    async def drain(self) -> None:
        self._flush()
        await self._writer.drain()

    def _flush(self) -> None:
        if self._buffer:
            self._writer.write(bytes(self._buffer))
            self._buffer.clear()

    def close(self) -> None:
        self._flush()
        self._writer.close()

    def __getattr__(self, name: str):
        return getattr(self._writer, name)


def _strip_return_path(raw: bytes) -> bytes:
    """A delivering MTA replaces any Return-Path the sender put in the header."""
    header_end = re.search(rb"\r?\n(?=\r?\n)", raw)  # the newline before the blank line
    split = header_end.end() if header_end else len(raw)
    head, rest = raw[:split], raw[split:]
    kept, skipping = [], False
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and skipping:
            continue
        skipping = line.lower().startswith(b"return-path:")
        if not skipping:
            kept.append(line)
    return b"".join(kept) + rest


def _make_pymap_config(host: str):
    """pymap's dict-backend config for an embedded server: no TLS, clear-text
    passwords (it is a sandbox), no DNS look-ups, no thread pool."""
    from pymap.backend.dict import Config
    from pymap.concurrent import Subsystem
    from pysasl.hashing import Cleartext

    class SandboxConfig(Config):
        @property
        def greeting(self) -> bytes:  # the default looks up the host's FQDN
            return b"mailflow sandbox IMAP ready"

    args = Namespace(debug=False, passlib_cfg=None, proxy_protocol=None,
                     inherited_sockets=None)
    return SandboxConfig(args, host=host, port=0, demo_data=False, demo_user="",
                         demo_password="", tls_enabled=False, reject_dnsbl=False,
                         hash_context=Cleartext(), cpu_subsystem=Subsystem.for_asyncio(),
                         ssl_context=ssl.create_default_context(ssl.Purpose.CLIENT_AUTH),
                         invalid_user_sleep=0.2)


def _cancel_remaining(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel open connections' tasks so the loop closes cleanly."""
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.wait(tasks, timeout=STOP_TIMEOUT))


# -- mailflow pointed at the world ------------------------------------------------------

def sandbox_settings(world: MailWorld, database_url: str, *, poll_seconds: int = 2,
                     base: Settings | None = None) -> Settings:
    """mailflow `Settings` for WORLD: IMAP as `support` (start: all, IDLE on),
    SMTP without TLS or login, staff notices to the staff mailbox, no inbound
    SMTP listener.  Everything else (time zone, credits, catalog, templates,
    policy) comes from BASE, by default the built-in defaults.  The IMAP
    password is put into this process's environment (`PASSWORD_ENV`)."""
    from mailflow.config import settings_from_mapping

    os.environ[PASSWORD_ENV] = world.support.password
    data = base.model_dump(mode="json") if base is not None else {}
    data.update({
        "database_url": database_url,
        "mailbox": {
            **data.get("mailbox", {}),
            "address": world.support.address,
            "display_name": "Sandbox Support",
            "imap": {**data.get("mailbox", {}).get("imap", {}),
                     "host": world.host, "port": world.imap_port, "tls": False,
                     "username": world.support.username, "password_env": PASSWORD_ENV,
                     "folder": "INBOX", "idle": True, "poll_seconds": poll_seconds,
                     "start": "all"},
        },
        "smtp": {**data.get("smtp", {}),
                 "host": world.host, "port": world.smtp_port, "tls": False,
                 "starttls": False, "username": None},
        "inbound_smtp": {"enabled": False},
        "staff": {"notify": [world.staff.address],
                  "members": [{"name": "Staff", "emails": [world.staff.address]}]},
    })
    return settings_from_mapping(data, source="sandbox")
