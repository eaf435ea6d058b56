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

Without a dovecot binary the Dovecot fixture skips, or fails when `CI=true`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from mailflow.config import ImapSettings, SmtpSettings
from tests.requirements import unavailable
from tests.servers.dovecot import Dovecot, DovecotError, dovecot_binary
from tests.servers.smtp import SmtpServer

__all__ = ["dovecot", "smtp_server", "imap_settings", "smtp_settings"]


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    if dovecot_binary() is None:
        unavailable("dovecot is not installed (run scripts/install-system-deps.sh as root)")
    server = None
    try:
        server = Dovecot()
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
