"""XOAUTH2 against real servers: Dovecot's oauth2 passdb and an aiosmtpd XOAUTH2
handler, both checking tokens with the test authorization server."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from mailflow.adapters.imap import Mailbox, MailboxError
from mailflow.adapters.smtp_out import PermanentSendError, SmtpConnection, TemporarySendError
from mailflow.config import ImapSettings, OAuth2Settings, SmtpSettings
from mailflow.errors import ConfigError
from mailflow.oauth.tokens import LoginNeeded, TokenSource
from tests.integration.oauth_world import USER, generic, imap_oauth, sign_in, smtp_oauth
from tests.mails import mail
from tests.servers.smtp import SmtpServer

pytestmark = pytest.mark.dovecot


class Clock:
    """Seconds since the epoch, moved by the test (our side's idea of time only)."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def oauth2(token_server, tmp_path) -> dict:
    return generic(token_server, tmp_path / "tokens.json")


def xoauth2_logins(dovecot) -> int:
    return dovecot.log_path.read_text().count("method=XOAUTH2")


# -- IMAP --------------------------------------------------------------------------------


def test_imap_logs_in_with_xoauth2_and_reuses_the_fresh_token(
        oauth_dovecot, token_server, oauth2):
    sign_in(token_server, oauth2)
    oauth_dovecot.append(USER, "INBOX", mail(sender="a@acme.example", subject="Hello",
                                             body="Hello there."))
    settings = imap_oauth(oauth_dovecot.port, oauth2)
    for _ in range(2):
        with Mailbox(settings) as box:
            box.select()
            assert b"Subject: Hello" in box.fetch(box.search_uids())[0][1]
    assert xoauth2_logins(oauth_dovecot) == 2
    assert token_server.counts["introspect"] == 2
    assert token_server.counts["refresh"] == 0  # the stored token was still fresh


def test_imap_refreshes_a_token_due_for_renewal_before_it_logs_in(
        oauth_dovecot, token_server, oauth2):
    tokens = sign_in(token_server, oauth2)
    first = tokens.access_token()
    clock = Clock(first.renew_at + 1)  # our clock: the token is due now
    settings = imap_oauth(oauth_dovecot.port, oauth2)
    box = Mailbox(settings, tokens=TokenSource(settings.oauth2, USER, where="mailbox.imap",
                                               clock=clock))
    box.connect()
    box.close()
    assert token_server.counts["refresh"] == 1
    assert box.session_renew_at is not None and box.session_renew_at > first.renew_at
    assert tokens.access_token().value != first.value  # the new token was stored


def test_imap_token_refused_by_the_server_gets_one_new_token_and_one_retry(
        oauth_dovecot, token_server, oauth2):
    sign_in(token_server, oauth2)
    token_server.expire_access(USER)  # revoked or expired early: our cache still trusts it
    with Mailbox(imap_oauth(oauth_dovecot.port, oauth2)) as box:
        assert box.select().name == "INBOX"
    assert token_server.counts["refresh"] == 1
    assert "Login: user=<support>, method=XOAUTH2" in oauth_dovecot.log_tail()


def test_imap_refused_sign_in_raises_login_needed_and_stops_asking(
        oauth_dovecot, token_server, oauth2):
    sign_in(token_server, oauth2)
    token_server.revoke_user(USER)
    box = Mailbox(imap_oauth(oauth_dovecot.port, oauth2))
    with pytest.raises(LoginNeeded) as caught:
        box.connect()
    message = str(caught.value)
    assert "\n" not in message
    assert "invalid_grant" in message and "run `mailflow mailbox login` again" in message
    assert caught.value.revoked
    asked = token_server.counts["token"]
    with pytest.raises(LoginNeeded):
        box.connect()
    assert token_server.counts["token"] == asked  # remembered: the provider is not asked again
    assert not box.connected


def test_imap_without_a_stored_sign_in_says_to_log_in(oauth_dovecot, token_server, oauth2):
    with pytest.raises(LoginNeeded, match=r"no OAuth2 sign-in stored .*mailflow mailbox login"):
        Mailbox(imap_oauth(oauth_dovecot.port, oauth2)).connect()
    assert token_server.counts["token"] == 0


def test_imap_token_endpoint_down_is_a_lost_connection_to_retry(
        oauth_dovecot, token_server, oauth2):
    tokens = sign_in(token_server, oauth2)
    settings = imap_oauth(oauth_dovecot.port, oauth2)
    due = Clock(tokens.access_token().renew_at + 1)
    token_server.stop()
    box = Mailbox(settings, tokens=TokenSource(settings.oauth2, USER, where="mailbox.imap",
                                               clock=due))
    with pytest.raises(MailboxError) as caught:
        box.connect()
    assert caught.value.connection_lost
    assert "cannot reach" in str(caught.value)


def test_imap_password_login_is_unchanged_beside_oauth2(oauth_dovecot, token_server,
                                                        monkeypatch):
    monkeypatch.setenv("MAILFLOW_IMAP_PASSWORD", oauth_dovecot.password)
    settings = ImapSettings(host="127.0.0.1", port=oauth_dovecot.port, username=USER)
    with Mailbox(settings) as box:
        box.select()
    assert "method=PLAIN" in oauth_dovecot.log_tail()
    assert token_server.counts["token"] == token_server.counts["introspect"] == 0


# -- SMTP --------------------------------------------------------------------------------


def _send(settings: SmtpSettings, **options) -> None:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "support@agency.example", \
        "a@acme.example", "Hi"
    message.set_content("Hello.")
    with SmtpConnection(settings, **options) as smtp:
        smtp.send(message, envelope_from="support@agency.example", recipients=["a@acme.example"])


def test_smtp_sends_after_auth_xoauth2(oauth_smtp_server, token_server, oauth2):
    sign_in(token_server, oauth2)
    _send(smtp_oauth(oauth_smtp_server.port, oauth2))
    assert oauth_smtp_server.logins == [USER]
    assert oauth_smtp_server.wait_for(1)[0].recipients == ("a@acme.example",)


def test_smtp_token_refused_gets_one_new_token_and_one_retry(
        oauth_smtp_server, token_server, oauth2):
    sign_in(token_server, oauth2)
    token_server.expire_access(USER)
    _send(smtp_oauth(oauth_smtp_server.port, oauth2))
    assert oauth_smtp_server.refused_tokens == 1  # the 334 error challenge, then 535
    assert oauth_smtp_server.logins == [USER]
    assert token_server.counts["refresh"] == 1
    assert len(oauth_smtp_server.wait_for(1)) == 1


def test_smtp_refused_sign_in_raises_login_needed(oauth_smtp_server, token_server, oauth2):
    sign_in(token_server, oauth2)
    token_server.revoke_user(USER)
    with pytest.raises(LoginNeeded, match="smtp: the OAuth2 sign-in .* has expired or was "
                                          "revoked"):
        _send(smtp_oauth(oauth_smtp_server.port, oauth2))
    assert oauth_smtp_server.messages == []


def test_smtp_token_endpoint_down_is_a_connection_failure_to_retry(
        oauth_smtp_server, token_server, oauth2):
    tokens = sign_in(token_server, oauth2)
    settings = smtp_oauth(oauth_smtp_server.port, oauth2)
    due = Clock(tokens.access_token().renew_at + 1)
    token_server.stop()
    with pytest.raises(TemporarySendError) as caught:
        _send(settings, tokens=TokenSource(settings.oauth2, USER, where="smtp", clock=due))
    assert caught.value.scope == "connection"


def test_smtp_server_without_xoauth2_is_a_permanent_connection_error(token_server, oauth2):
    sign_in(token_server, oauth2)
    with SmtpServer(users={USER: "secret"}) as plain:
        with pytest.raises(PermanentSendError, match="does not offer AUTH XOAUTH2") as caught:
            _send(smtp_oauth(plain.port, oauth2))
    assert caught.value.scope == "connection"


def test_smtp_password_login_is_unchanged(token_server, monkeypatch):
    monkeypatch.setenv("MAILFLOW_SMTP_PASSWORD", "secret")
    with SmtpServer(users={"desk": "secret"}) as server:
        _send(SmtpSettings(host="127.0.0.1", port=server.port, username="desk",
                           timeout_seconds=5))
        assert server.logins == ["desk"]
    assert token_server.counts["token"] == 0


def test_imap_and_smtp_configured_alike_share_one_sign_in(
        oauth_dovecot, oauth_smtp_server, token_server, oauth2):
    token_server.access_seconds = 600
    sign_in(token_server, oauth2)
    imap = imap_oauth(oauth_dovecot.port, oauth2)
    smtp = smtp_oauth(oauth_smtp_server.port, oauth2)
    assert TokenSource.for_section(imap, "mailbox.imap").key == \
        TokenSource.for_section(smtp, "smtp").key
    with Mailbox(imap) as box:
        box.select()
    _send(smtp)
    assert token_server.counts["token"] == 0  # one stored token served both
    assert OAuth2Settings(**oauth2).token_file == oauth2["token_file"]


def test_a_client_secret_variable_that_is_not_set_fails_at_connect(
        oauth_dovecot, token_server, oauth2, monkeypatch):
    monkeypatch.delenv("MAILFLOW_TEST_SECRET", raising=False)
    settings = imap_oauth(oauth_dovecot.port, {**oauth2, "client_secret_env":
                                               "MAILFLOW_TEST_SECRET"})
    with pytest.raises(ConfigError, match=r"^mailbox.imap.oauth2.client_secret_env: "
                                          r"environment variable MAILFLOW_TEST_SECRET is not set"):
        Mailbox(settings).connect()
    assert token_server.counts["token"] == 0
