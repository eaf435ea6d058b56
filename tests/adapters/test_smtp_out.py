"""The outgoing SMTP adapter against a capturing aiosmtpd server."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from mailflow.adapters.smtp_out import (
    PermanentSendError,
    SendError,
    SmtpConnection,
    TemporarySendError,
    send_message,
)
from mailflow.config import SmtpSettings
from mailflow.errors import ConfigError
from tests.servers.dovecot import free_port
from tests.servers.smtp import SmtpServer


def make_message(n: int = 1, *, to: str = "alice@client.example",
                 body: str = "Your request was received.\n") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Example Support <support@agency.example>"
    message["To"] = to
    message["Subject"] = f"[REQ-{n}] Received"
    message["Message-ID"] = f"<out{n}@agency.example>"
    message.set_content(body)
    return message


def as_sent(message: EmailMessage) -> bytes:
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


def test_delivers_bytes_and_envelope(smtp_server, smtp_settings):
    message = make_message()
    send_message(smtp_settings, message, envelope_from="bounces@agency.example",
                 recipients=["alice@client.example", "bob@client.example"])
    [captured] = smtp_server.wait_for(1)
    assert captured.envelope_from == "bounces@agency.example"
    assert captured.recipients == ("alice@client.example", "bob@client.example")
    assert captured.raw.rstrip(b"\r\n") == as_sent(message).rstrip(b"\r\n")


def test_utf8_body_and_null_sender_are_delivered(smtp_server, smtp_settings):
    message = make_message(body="ご依頼を承りました。\n残高: 3 クレジット\n")
    message.replace_header("Subject", "[REQ-7] 受付のお知らせ")
    send_message(smtp_settings, message, envelope_from="", recipients=["alice@client.example"])
    [captured] = smtp_server.wait_for(1)
    assert captured.envelope_from == ""
    received = captured.message()
    assert received["Subject"] == "[REQ-7] 受付のお知らせ"
    assert received.get_content().replace("\r\n", "\n") == "ご依頼を承りました。\n残高: 3 クレジット\n"


def test_bcc_header_is_not_transmitted(smtp_server, smtp_settings):
    message = make_message()
    message["Bcc"] = "staff@agency.example"
    send_message(smtp_settings, message, envelope_from="support@agency.example",
                 recipients=["alice@client.example", "staff@agency.example"])
    [captured] = smtp_server.wait_for(1)
    assert b"Bcc:" not in captured.raw and b"staff@agency.example" not in captured.raw
    assert captured.recipients == ("alice@client.example", "staff@agency.example")


@pytest.mark.parametrize(
    ("stage", "code", "error"),
    [
        ("MAIL", 451, TemporarySendError),
        ("RCPT", 451, TemporarySendError),
        ("DATA", 451, TemporarySendError),
        ("MAIL", 550, PermanentSendError),
        ("RCPT", 550, PermanentSendError),
        ("DATA", 554, PermanentSendError),
    ],
    ids=["mail-451", "rcpt-451", "data-451", "mail-550", "rcpt-550", "data-554"],
)
def test_refusal_maps_to_error_kind(smtp_server, smtp_settings, stage, code, error):
    smtp_server.refuse(stage, code)
    with pytest.raises(error) as caught:
        send_message(smtp_settings, make_message(), envelope_from="support@agency.example",
                     recipients=["alice@client.example"])
    assert caught.value.code == code
    assert caught.value.scope == "message"
    assert smtp_server.messages == []


def test_one_refused_recipient_sends_to_nobody(smtp_server, smtp_settings):
    smtp_server.refuse("RCPT", 550, recipients=["gone@client.example"])
    with pytest.raises(PermanentSendError) as caught:
        send_message(smtp_settings, make_message(), envelope_from="support@agency.example",
                     recipients=["alice@client.example", "gone@client.example"])
    assert set(caught.value.refused) == {"gone@client.example"}
    assert caught.value.refused["gone@client.example"][0] == 550
    assert smtp_server.messages == []


def test_mixed_temporary_and_permanent_recipient_refusal_is_permanent(smtp_server,
                                                                      smtp_settings):
    smtp_server.refuse("RCPT", 451, recipients=["busy@client.example"])
    smtp_server.refuse("RCPT", 550, recipients=["gone@client.example"])
    with pytest.raises(PermanentSendError):
        send_message(smtp_settings, make_message(), envelope_from="support@agency.example",
                     recipients=["busy@client.example", "gone@client.example"])


def test_connection_refused_is_temporary():
    settings = SmtpSettings(host="127.0.0.1", port=free_port(), timeout_seconds=2)
    with pytest.raises(TemporarySendError) as caught:
        send_message(settings, make_message(), envelope_from="support@agency.example",
                     recipients=["alice@client.example"])
    assert caught.value.scope == "connection"
    assert isinstance(caught.value, SendError)


def test_many_messages_over_one_connection(smtp_server, smtp_settings):
    with SmtpConnection(smtp_settings) as connection:
        for n in range(20):
            connection.send(make_message(n), envelope_from="support@agency.example",
                            recipients=[f"client{n}@client.example"])
    captured = smtp_server.wait_for(20)
    assert [c.recipients for c in captured] == [(f"client{n}@client.example",)
                                                 for n in range(20)]
    assert smtp_server.handler.connections == 1
    assert connection.sent == 20


def test_connection_survives_a_refused_message(smtp_server, smtp_settings):
    with SmtpConnection(smtp_settings) as connection:
        smtp_server.refuse("DATA", 451, times=1)
        with pytest.raises(TemporarySendError):
            connection.send(make_message(1), envelope_from="support@agency.example",
                            recipients=["alice@client.example"])
        connection.send(make_message(2), envelope_from="support@agency.example",
                        recipients=["alice@client.example"])
    [captured] = smtp_server.wait_for(1)
    assert captured.message()["Message-ID"] == "<out2@agency.example>"
    assert smtp_server.handler.connections == 1


def test_connection_reopens_when_server_went_away(smtp_settings, smtp_server):
    with SmtpConnection(smtp_settings) as connection:
        connection.send(make_message(1), envelope_from="support@agency.example",
                        recipients=["alice@client.example"])
        port = smtp_server.port
        smtp_server.stop()  # drops the open connection
        restarted = SmtpServer(port=port).start()
        try:
            connection.send(make_message(2), envelope_from="support@agency.example",
                            recipients=["alice@client.example"])
            [captured] = restarted.wait_for(1)
        finally:
            restarted.stop()
    assert captured.message()["Message-ID"] == "<out2@agency.example>"


def test_auth_login_with_password_from_environment(monkeypatch):
    monkeypatch.setenv("MAILFLOW_TEST_SMTP_PASSWORD", "s3cret")
    with SmtpServer(users={"mailer": "s3cret"}) as server:
        settings = SmtpSettings(port=server.port, username="mailer",
                                password_env="MAILFLOW_TEST_SMTP_PASSWORD", timeout_seconds=5)
        send_message(settings, make_message(), envelope_from="support@agency.example",
                     recipients=["alice@client.example"])
        server.wait_for(1)
        assert server.logins == ["mailer"]


def test_auth_refused_is_permanent_for_the_connection(monkeypatch):
    monkeypatch.setenv("MAILFLOW_TEST_SMTP_PASSWORD", "wrong")
    with SmtpServer(users={"mailer": "s3cret"}) as server:
        settings = SmtpSettings(port=server.port, username="mailer",
                                password_env="MAILFLOW_TEST_SMTP_PASSWORD", timeout_seconds=5)
        with pytest.raises(PermanentSendError) as caught:
            send_message(settings, make_message(), envelope_from="support@agency.example",
                         recipients=["alice@client.example"])
        assert caught.value.scope == "connection"
        assert server.messages == []


def test_missing_password_env_is_a_config_error(monkeypatch, smtp_settings):
    monkeypatch.delenv("MAILFLOW_TEST_NO_SUCH_VAR", raising=False)
    settings = smtp_settings.model_copy(update={"username": "mailer",
                                                "password_env": "MAILFLOW_TEST_NO_SUCH_VAR"})
    with pytest.raises(ConfigError, match="MAILFLOW_TEST_NO_SUCH_VAR"):
        send_message(settings, make_message(), envelope_from="support@agency.example",
                     recipients=["alice@client.example"])


def test_starttls_not_offered_is_permanent_for_the_connection(smtp_server, smtp_settings):
    settings = smtp_settings.model_copy(update={"starttls": True})
    with pytest.raises(PermanentSendError, match="STARTTLS") as caught:
        send_message(settings, make_message(), envelope_from="support@agency.example",
                     recipients=["alice@client.example"])
    assert caught.value.scope == "connection"
