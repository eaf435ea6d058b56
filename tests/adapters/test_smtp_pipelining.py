"""Sending many messages fast: PIPELINING (RFC 2920) where the server offers
it, headers written without re-folding what needs none, and multipart
boundaries chosen without a regular expression each — all byte-for-byte what
the plain path sends."""

from __future__ import annotations

import random
import string
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32

import pytest

from mailflow.adapters import smtp_out
from mailflow.adapters.smtp_out import PermanentSendError, SmtpConnection, _flatten
from mailflow.config import SmtpSettings
from tests.servers.smtp import SmtpServer


def message(n: int, body: str = "Hello.\n") -> MIMEText:
    part = MIMEText(body, "plain")  # us-ascii, 7bit: a leading dot stays on its line
    part["From"] = "Support <support@agency.example>"
    part["To"] = "alice@client.example"
    part["Subject"] = f"[REQ-{n}] Received"
    part["Message-ID"] = f"<pipe{n}@agency.example>"
    return part


@pytest.mark.parametrize("pipelining", [True, False])
def test_many_messages_on_one_connection(pipelining):
    with SmtpServer(pipelining=pipelining) as server:
        settings = SmtpSettings(host=server.host, port=server.port, timeout_seconds=5)
        with SmtpConnection(settings) as smtp:
            smtp.open()
            assert smtp._smtp.has_extn("pipelining") is pipelining
            for n in range(5):
                smtp.send(message(n, body=".leading dot\n"), envelope_from="b@agency.example",
                          recipients=["alice@client.example", "bob@client.example"])
        captured = server.handler.wait_for(5)
        assert server.handler.connections == 1
        assert [c.recipients for c in captured] == [("alice@client.example",
                                                     "bob@client.example")] * 5
        for n, c in enumerate(captured):
            assert c.raw.rstrip(b"\r\n") == _flatten(message(n, ".leading dot\n"),
                                                     False).rstrip(b"\r\n")
            assert c.message().get_payload() == ".leading dot\r\n"  # unquoted again


def test_pipelined_refused_recipient_delivers_nothing_and_the_next_goes_out():
    with SmtpServer() as server:
        server.handler.refuse("RCPT", 550, recipients=["bob@client.example"], times=1)
        settings = SmtpSettings(host=server.host, port=server.port, timeout_seconds=5)
        with SmtpConnection(settings) as smtp:
            with pytest.raises(PermanentSendError) as refused:
                smtp.send(message(1), envelope_from="b@agency.example",
                          recipients=["alice@client.example", "bob@client.example"])
            assert set(refused.value.refused) == {"bob@client.example"}
            smtp.send(message(2), envelope_from="b@agency.example",
                      recipients=["alice@client.example"])
        [captured] = server.handler.wait_for(1)
        assert b"[REQ-2]" in captured.raw
        assert len(server.handler.messages) == 1


def test_pipelined_refused_data_is_reported_and_the_connection_goes_on():
    with SmtpServer() as server:
        server.handler.refuse("DATA", 451, times=1)
        settings = SmtpSettings(host=server.host, port=server.port, timeout_seconds=5)
        with SmtpConnection(settings) as smtp:
            with pytest.raises(smtp_out.TemporarySendError):
                smtp.send(message(1), envelope_from="b@agency.example",
                          recipients=["alice@client.example"])
            smtp.send(message(2), envelope_from="b@agency.example",
                      recipients=["alice@client.example"])
        assert len(server.handler.wait_for(1)) == 1
        assert server.handler.connections == 1


def test_fast_folding_writes_what_compat32_writes():
    rng = random.Random(2026)
    alphabet = string.ascii_letters[:8] + string.digits[:3] + ' ;,=?"<>@.-_/:()[]\t\'\x7f'
    names = ["Subject", "To", "Content-Type", "X-Mailflow-Template", "Message-ID"]
    fast = smtp_out._FAST_COMPAT32.clone(linesep="\r\n")
    slow = compat32.clone(linesep="\r\n")
    for _ in range(20_000):
        name = rng.choice(names)
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 100)))
        if rng.random() < 0.05:
            value += "\nnext: line"
        if rng.random() < 0.05:
            value = "ご依頼 " + value
        assert outcome(fast, name, value) == outcome(slow, name, value), (name, value)


def outcome(policy, name: str, value: str):
    try:
        return policy.fold_binary(name, value)
    except Exception as error:  # both must refuse the same values the same way
        return type(error), str(error)


def test_a_boundary_found_in_the_text_is_changed(monkeypatch):
    monkeypatch.setattr(random, "randrange", lambda _n: 7)
    boundary = smtp_out._Generator._make_boundary()
    text = f"body\r\n--{boundary}\r\nmore".encode()
    chosen = smtp_out._Generator._make_boundary(text)
    assert chosen != boundary and f"--{chosen}".encode() not in text
    assert smtp_out._Generator._make_boundary(b"nothing alike") == boundary


def test_multipart_flattens_as_the_standard_generator_does():
    outer = MIMEMultipart("alternative", boundary="===============fixed==")
    outer.attach(MIMEText("plain ✓", "plain", "utf-8"))
    outer.attach(MIMEText("<p>html ✓</p>", "html", "utf-8"))
    outer["Subject"] = "A subject long enough to need folding " * 3
    outer["To"] = "alice@client.example"
    assert _flatten(outer, False) == outer.as_bytes(policy=compat32.clone(linesep="\r\n"))
