"""Pytest fixtures for the test mail servers.

Import them in tests/conftest.py with `from tests.servers.fixtures import *`.

- `dovecot`: a running private `Dovecot` (tests/servers/dovecot.py), fresh
  for each test (starting and stopping take about 0.1 s each).  Users
  `support`, `alice`, `bob`, `carol`, password "secret"; `.port`, `.host`,
  `.append(user, folder, raw)`, `.list_messages(user, folder)`,
  `.create_user(name)`, `.restart()`, `.log_path`.
  Set MAILFLOW_KEEP_DOVECOT=1 to keep its directory (config, log, Maildir).
- `smtp_server`: a running capturing `SmtpServer` (tests/servers/smtp.py),
  fresh for each test: `.port`, `.messages`, `.wait_for(n)`, `.refuse(...)`.
- `imap_settings` / `smtp_settings`: `ImapSettings`/`SmtpSettings` pointing at
  those servers (the IMAP password comes from MAILFLOW_IMAP_PASSWORD, which
  the fixture sets).
- `token_server`: a running OAuth2 authorization server (tests/servers/oauth.py)
  with the client `mailflow-test` registered; `REQUESTS_CA_BUNDLE` is set to
  its CA so HTTP clients trust it.  `oauth_dovecot`: a Dovecot that also
  accepts XOAUTH2 tokens of that server (passwords still work);
  `oauth_smtp_server`: an SmtpServer that requires AUTH XOAUTH2 with them.

Without a dovecot binary the Dovecot fixture skips, or fails when `CI=true`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from mailflow.config import ImapSettings, SmtpSettings
from tests.requirements import unavailable
from tests.servers.dovecot import Dovecot, DovecotError, dovecot_binary
from tests.servers.oauth import TokenServer
from tests.servers.smtp import SmtpServer

__all__ = ["dovecot", "smtp_server", "imap_settings", "smtp_settings", "token_server",
           "oauth_dovecot", "oauth_smtp_server"]

OAUTH_CLIENT = "mailflow-test"


def _dovecot(**options) -> Iterator[Dovecot]:
    if dovecot_binary() is None:
        unavailable("dovecot is not installed (run scripts/install-system-deps.sh as root)")
    server = None
    try:
        server = Dovecot(**options)
        server.start()
    except DovecotError as error:
        if server is not None:
            server.cleanup()
        unavailable(f"cannot start Dovecot: {error}")
    try:
        yield server
    finally:
        if os.environ.get("MAILFLOW_KEEP_DOVECOT"):
            server.stop()
            print(f"Dovecot directory kept: {server.root}")
        else:
            server.cleanup()


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    yield from _dovecot()


@pytest.fixture
def token_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[TokenServer]:
    server = TokenServer().start()
    server.add_client(OAUTH_CLIENT)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.ca_path))
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def oauth_dovecot(token_server: TokenServer) -> Iterator[Dovecot]:
    yield from _dovecot(oauth2_introspection_url=f"{token_server.http_url}/introspect")


@pytest.fixture
def oauth_smtp_server(token_server: TokenServer) -> Iterator[SmtpServer]:
    server = SmtpServer(oauth=token_server).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def imap_settings(dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch) -> ImapSettings:
    monkeypatch.setenv("MAILFLOW_IMAP_PASSWORD", dovecot.password)
    return ImapSettings(host=dovecot.host, port=dovecot.port, username="support",
                        password_env="MAILFLOW_IMAP_PASSWORD")


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def smtp_settings(smtp_server: SmtpServer) -> SmtpSettings:
    return SmtpSettings(host=smtp_server.host, port=smtp_server.port, timeout_seconds=5)
