"""`mailflow serve` on OAuth2 mailboxes, as a real process: tokens that expire
and are renewed while it runs, a token revoked mid-IDLE (the session kicked,
as a provider does), and a sign-in the provider refuses for good.

The two long runs (several `serve` processes, seconds of token churn) use
SQLite only: what they test is the mail connections, not the database, and
the other two run on both databases."""

from __future__ import annotations

import shutil
import time

import pytest
from sqlmodel import select

from mailflow.config import settings_from_mapping
from mailflow.core.ledger import LotKind
from mailflow.db import create_db_engine, transaction
from mailflow.desk import Desk
from mailflow.models import Inbound, Outbox, OutboxStatus
from mailflow.services import clients, credits
from tests.integration.oauth_world import USER, generic, sign_in
from tests.integration.procs import ServeProcess, env_for, write_config
from tests.mails import mail

pytestmark = pytest.mark.dovecot

REFUSED = "has expired or was revoked"


def _add_acme(engine) -> None:
    desk = Desk(settings_from_mapping({}))
    with transaction(engine) as session:
        client = clients.add_client(session, desk, name="Acme", emails=["a@acme.example"])
        credits.add_lot(session, desk, client=client, kind=LotKind.PURCHASE, credits=4)


@pytest.fixture
def acme(engine):
    _add_acme(engine)


@pytest.fixture
def sqlite_world(tmp_path, sqlite_template):
    """(database URL, engine) of a fresh SQLite database with the client Acme."""
    path = tmp_path / "mailflow.db"
    shutil.copy(sqlite_template, path)
    engine = create_db_engine(f"sqlite:///{path}")
    _add_acme(engine)
    yield f"sqlite:///{path}", engine
    engine.dispose()


def _config(tmp_path, db_url, imap_port, smtp_port, oauth2, *, imap_oauth2=True,
            smtp_oauth2=False):
    overrides = {"mailbox__imap__start": "new"}
    if imap_oauth2:
        overrides.update(mailbox__imap__auth="oauth2", mailbox__imap__oauth2=oauth2)
    if smtp_oauth2:
        overrides.update(smtp__auth="oauth2", smtp__username=USER, smtp__oauth2=oauth2)
    return write_config(tmp_path / "mailflow.yaml", db_url=db_url, imap_port=imap_port,
                        smtp_port=smtp_port, **overrides)


def _request(dovecot, n: int) -> None:
    dovecot.append(USER, "INBOX", mail(sender="a@acme.example", subject=f"Request {n}",
                                       body="Please replace the banner."))


def _inbound_count(engine) -> int:
    with transaction(engine) as session:
        return len(session.exec(select(Inbound)).all())


def _wait(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.1)


@pytest.mark.slow
def test_serve_renews_short_lived_tokens_for_imap_and_smtp_and_loses_nothing(
        tmp_path, sqlite_world, token_server, oauth_dovecot, oauth_smtp_server):
    db_url, engine = sqlite_world
    token_server.access_seconds = 1.2  # renewed 0.3 s before expiry
    oauth2 = generic(token_server, tmp_path / "tokens.json")
    sign_in(token_server, oauth2)
    config = _config(tmp_path, db_url, oauth_dovecot.port, oauth_smtp_server.port, oauth2,
                     smtp_oauth2=True)
    served = ServeProcess(env_for(config, "unused"), tmp_path / "serve.log")
    try:
        served.wait_for_log("first connection to")
        for n in range(3):  # each while a different token is current
            _request(oauth_dovecot, n)
            time.sleep(1.3)
        oauth_smtp_server.wait_for(6, timeout=20)  # 3 acknowledgements, 3 staff notes
        assert served.terminate() == 0
    finally:
        served.kill()
    log = served.text()
    assert log.count("due for renewal; reconnecting") >= 3
    assert oauth_dovecot.log_path.read_text().count("method=XOAUTH2") >= 4
    assert token_server.counts["refresh"] >= 3
    assert oauth_smtp_server.logins and set(oauth_smtp_server.logins) == {USER}
    assert REFUSED not in log and "Traceback" not in log
    assert _inbound_count(engine) == 3
    assert oauth_dovecot.list_messages(USER, "INBOX") == []


@pytest.mark.slow
def test_serve_reconnects_after_a_token_revoked_mid_idle_and_loses_nothing(
        tmp_path, db_url, engine, acme, token_server, oauth_dovecot, smtp_server):
    oauth2 = generic(token_server, tmp_path / "tokens.json")
    sign_in(token_server, oauth2)
    config = _config(tmp_path, db_url, oauth_dovecot.port, smtp_server.port, oauth2)
    served = ServeProcess(env_for(config, "unused"), tmp_path / "serve.log")
    try:
        served.wait_for_log("first connection to")
        time.sleep(0.3)  # in IDLE
        token_server.expire_access(USER)  # the session's token is no good any more ...
        assert "support" in oauth_dovecot.kick(USER)  # ... and the server ends the session
        _request(oauth_dovecot, 1)  # arrives while mailflow is away
        smtp_server.wait_for(2, timeout=20)
        assert served.terminate() == 0
    finally:
        served.kill()
    log = served.text()
    assert "IMAP: IMAP idle: connection lost" in log and "reconnecting in" in log
    assert token_server.counts["refresh"] == 1  # the refused token was replaced once
    assert REFUSED not in log
    assert _inbound_count(engine) == 1
    assert oauth_dovecot.list_messages(USER, "INBOX") == []


@pytest.mark.slow
def test_serve_stops_with_one_line_and_mails_staff_once_when_the_sign_in_is_revoked(
        tmp_path, sqlite_world, token_server, oauth_dovecot, smtp_server):
    db_url, engine = sqlite_world
    oauth2 = generic(token_server, tmp_path / "tokens.json")
    sign_in(token_server, oauth2)
    config = _config(tmp_path, db_url, oauth_dovecot.port, smtp_server.port, oauth2)
    env = env_for(config, "unused")
    served = ServeProcess(env, tmp_path / "serve.log")
    try:
        served.wait_for_log("first connection to")
        token_server.revoke_user(USER)  # an admin signed the mailbox out everywhere
        oauth_dovecot.kick(USER)
        _request(oauth_dovecot, 1)
        assert served.process.wait(timeout=30) == 1  # it stopped by itself
    finally:
        served.kill()
    refused = [line for line in served.text().splitlines() if REFUSED in line]
    assert len(refused) == 1
    assert refused[0].endswith("run `mailflow mailbox login` again")
    notice = smtp_server.wait_for(1)[0]
    assert notice.recipients == ("staff@agency.example",)
    assert notice.message()["Subject"] == ("Action needed: sign in to the support mailbox "
                                           f"again ({USER})")
    assert "mailflow mailbox login" in notice.message().get_content()
    assert len(oauth_dovecot.list_messages(USER, "INBOX")) == 1  # waits, untouched

    # Restarted (systemd) before anyone signed in: the same line, no mail, no server asked.
    asked = token_server.counts["token"]
    again = ServeProcess(env, tmp_path / "serve2.log")
    try:
        assert again.process.wait(timeout=30) == 1
    finally:
        again.kill()
    assert sum(REFUSED in line for line in again.text().splitlines()) == 1
    assert token_server.counts["token"] == asked
    assert len(smtp_server.messages) == 1

    # Signed in again (what `mailflow mailbox login` stores): the waiting mail is processed.
    sign_in(token_server, oauth2)
    third = ServeProcess(env, tmp_path / "serve3.log")
    try:
        _wait(lambda: _inbound_count(engine) == 1)
        smtp_server.wait_for(3, timeout=20)
        assert third.terminate() == 0
    finally:
        third.kill()
    assert oauth_dovecot.list_messages(USER, "INBOX") == []


@pytest.mark.slow
def test_serve_stops_when_the_smtp_sign_in_is_revoked_and_keeps_the_outbox(
        tmp_path, db_url, engine, acme, token_server, oauth_dovecot, oauth_smtp_server):
    oauth2 = generic(token_server, tmp_path / "tokens.json")
    sign_in(token_server, oauth2)
    token_server.revoke_user(USER)
    config = _config(tmp_path, db_url, oauth_dovecot.port, oauth_smtp_server.port, oauth2,
                     imap_oauth2=False, smtp_oauth2=True)  # IMAP logs in with a password
    served = ServeProcess(env_for(config, oauth_dovecot.password), tmp_path / "serve.log")
    try:
        served.wait_for_log("first connection to")
        _request(oauth_dovecot, 1)
        assert served.process.wait(timeout=30) == 1
    finally:
        served.kill()
    log = served.text()
    assert f"smtp: the OAuth2 sign-in for {USER} (generic) {REFUSED}" in log
    assert oauth_smtp_server.messages == []  # nothing could be sent, not even to staff
    with transaction(engine) as session:
        statuses = [row.status for row in session.exec(select(Outbox))]
    assert statuses and set(statuses) == {OutboxStatus.PENDING}  # kept for after the login
    assert _inbound_count(engine) == 1
