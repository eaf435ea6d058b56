"""The inbound SMTP/LMTP listener against a real aiosmtpd server on loopback,
and the database on SQLite and PostgreSQL (the `engine` fixture).

Every client socket has a timeout, so no test can hang: a missing reply is a
`socket.timeout` failure after a few seconds.
"""

from __future__ import annotations

import re
import smtplib
import uuid

import pytest
from sqlalchemy.engine import make_url
from sqlmodel import select

from mailflow.adapters.smtp_in import InboundListener, accepts_recipient, with_return_path
from mailflow.config import settings_from_mapping
from mailflow.core.ledger import LotKind
from mailflow.db import create_db_engine, transaction
from mailflow.desk import Desk
from mailflow.models import Inbound, InboundStatus, Outbox, Request
from mailflow.services import clients, credits
from tests import mails
from tests.mails import japanese_request
from tests.servers.dovecot import HOST, free_port

SUPPORT = "support@agency.example"
LIMIT_MB = 0.05  # 52,428 bytes: small, so the over-size case is quick
TIMEOUT = 5.0  # seconds, for every client socket


@pytest.fixture
def settings():
    """Overrides the conftest `settings`: the listener on a free loopback port."""
    return settings_from_mapping({
        "mailbox": {"address": SUPPORT},
        "staff": {"notify": ["staff@agency.example"]},
        "inbound_smtp": {"enabled": True, "host": HOST, "port": free_port()},
        "policy": {"max_message_mb": LIMIT_MB},
    })


@pytest.fixture
def known_clients(engine, desk):
    with transaction(engine) as session:
        acme = clients.add_client(session, desk, name="Acme", emails=["a@acme.example"])
        credits.add_lot(session, desk, client=acme, kind=LotKind.PURCHASE, credits=5)
        beta = clients.add_client(session, desk, name="Beta", emails=["x@beta.example"],
                                  lang="ja")
        credits.add_lot(session, desk, client=beta, kind=LotKind.PURCHASE, credits=5)


@pytest.fixture
def listen(engine, desk, known_clients):
    """start(lmtp=False, engine=None) -> a running listener on its own free port."""
    started: list[InboundListener] = []

    def start(*, lmtp: bool = False, engine_=None) -> InboundListener:
        inbound = desk.settings.inbound_smtp.model_copy(update={"lmtp": lmtp,
                                                                "port": free_port()})
        own = Desk(desk.settings.model_copy(update={"inbound_smtp": inbound}), clock=desk.clock)
        listener = InboundListener(engine_ or engine, own).start()
        started.append(listener)
        return listener

    yield start
    for listener in started:
        listener.stop()


def mail(**kwargs) -> bytes:
    """A test mail with CRLF line ends, as a mail server transmits it (smtplib
    sends bytes as they are, and aiosmtpd splits lines at CRLF only)."""
    return re.sub(rb"\r?\n", b"\r\n", mails.mail(**kwargs))


def client(listener: InboundListener) -> smtplib.SMTP:
    cls = smtplib.LMTP if listener.lmtp else smtplib.SMTP
    return cls(HOST, listener.port, timeout=TIMEOUT)


def transmit(listener: InboundListener, raw: bytes, *, sender: str = "a@acme.example",
             recipients=(SUPPORT,), size: bool = False) -> list[tuple[int, bytes]]:
    """One transaction step by step; returns the replies to DATA — one per
    accepted recipient under LMTP (RFC 2033), which smtplib does not read."""
    with client(listener) as conn:
        conn.ehlo()  # LHLO under smtplib.LMTP
        code, text = conn.mail(sender, [f"SIZE={len(raw)}"] if size else [])
        if code != 250:
            return [(code, text)]
        accepted = [r for r in recipients if conn.rcpt(r)[0] == 250]
        if not accepted:
            return []
        replies = [conn.data(raw)]
        if listener.lmtp:
            replies += [conn.getreply() for _ in accepted[1:]]
        return replies


def codes(replies) -> list[int]:
    return [code for code, _ in replies]


def inbound_rows(engine) -> list[Inbound]:
    with transaction(engine) as session:
        return list(session.exec(select(Inbound).order_by(Inbound.id)))


def requests_(engine) -> list[Request]:
    with transaction(engine) as session:
        return list(session.exec(select(Request).order_by(Request.id)))


def outbox_templates(engine) -> list[str]:
    with transaction(engine) as session:
        return sorted(session.exec(select(Outbox.template)))


# --- pure helpers -------------------------------------------------------------------

@pytest.mark.parametrize(("recipient", "accepted"), [
    ("support@agency.example", True),
    ("SUPPORT@Agency.Example", True),
    ("<support@agency.example>", True),
    ("support+k7Qx2@agency.example", True),
    ("Support+REQ-12@AGENCY.example", True),
    ("someone@agency.example", False),
    ("supportx@agency.example", False),
    ("support-x@agency.example", False),
    ("support@other.example", False),
    ("support@agency.example.evil", False),
    ("support", False),
    ("", False),
], ids=lambda value: str(value) or "empty")
def test_only_our_address_and_its_plus_form_are_recipients(recipient, accepted):
    assert accepts_recipient(SUPPORT, recipient) is accepted


@pytest.mark.parametrize(("raw", "mail_from", "expected"), [
    (b"Subject: x\r\n\r\nbody\r\n", "a@acme.example",
     b"Return-Path: <a@acme.example>\r\nSubject: x\r\n\r\nbody\r\n"),
    (b"Subject: x\r\n\r\nbody\r\n", "<>", b"Return-Path: <>\r\nSubject: x\r\n\r\nbody\r\n"),
    (b"Subject: x\n\nbody\n", "", b"Return-Path: <>\nSubject: x\n\nbody\n"),
    (b"Return-Path: <b@x.example>\r\nSubject: x\r\n\r\nbody\r\n", "a@acme.example",
     b"Return-Path: <b@x.example>\r\nSubject: x\r\n\r\nbody\r\n"),
    (b"RETURN-PATH:<>\r\nSubject: x\r\n\r\nbody\r\n", "a@acme.example",
     b"RETURN-PATH:<>\r\nSubject: x\r\n\r\nbody\r\n"),
    # A Return-Path line in the body is not a header.
    (b"Subject: x\r\n\r\nReturn-Path: <z@z>\r\n", "a@acme.example",
     b"Return-Path: <a@acme.example>\r\nSubject: x\r\n\r\nReturn-Path: <z@z>\r\n"),
], ids=["sender", "null-sender", "lf-only", "kept", "kept-any-case", "body-line"])
def test_return_path_is_added_only_when_missing(raw, mail_from, expected):
    assert with_return_path(raw, mail_from) == expected


# --- through the listener -------------------------------------------------------------

def test_new_request_is_committed_before_the_250(engine, listen):
    listener = listen()
    raw = mail(sender="a@acme.example", subject="Replace the banner",
               body="Please replace the top banner.")
    with client(listener) as conn:
        assert conn.sendmail("a@acme.example", [SUPPORT], raw) == {}
        # The 250 is in: the request and its acknowledgement are already committed.
        (request,) = requests_(engine)
        assert (request.subject, request.requester) == ("Replace the banner",
                                                        "a@acme.example")
        assert outbox_templates(engine) == ["client/ack", "staff/new_request"]
    (row,) = inbound_rows(engine)
    assert (row.mailbox, row.uidvalidity, row.uid) == ("smtp", None, None)
    assert (row.status, row.classification, row.request_id) == (
        InboundStatus.PROCESSED, "new_request", request.id)


WRONG_RECIPIENTS = [  # one table, one database: each row is refused at RCPT
    ["someone@agency.example"],
    ["support@other.example"],
    ["supportx@agency.example", "info@agency.example"],
]


def test_wrong_recipient_is_refused_at_rcpt_and_nothing_is_stored(engine, listen):
    listener = listen()
    for recipients in WRONG_RECIPIENTS:
        raw = mail(sender="a@acme.example", subject="Hello", body="hi", to=recipients[0])
        with client(listener) as conn:
            conn.ehlo()
            conn.mail("a@acme.example")
            assert [conn.rcpt(r)[0] for r in recipients] == [550] * len(recipients), recipients
            assert conn.docmd("DATA")[0] == 503  # no recipient: no DATA
            conn.rset()
            with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
                conn.sendmail("a@acme.example", recipients, raw)
        assert {code for code, _ in refused.value.recipients.values()} == {550}
    assert inbound_rows(engine) == []
    assert requests_(engine) == []


def test_a_refused_recipient_does_not_stop_ours(engine, listen):
    listener = listen()
    raw = mail(sender="a@acme.example", subject="Plugin install", body="Please install it.")
    with client(listener) as conn:
        refused = conn.sendmail("a@acme.example", ["info@agency.example", SUPPORT], raw)
    assert list(refused) == ["info@agency.example"] and refused["info@agency.example"][0] == 550
    assert [r.subject for r in requests_(engine)] == ["Plugin install"]


def test_iso_2022_jp_request_arrives_intact(engine, listen):
    listener = listen()
    raw = japanese_request("x@beta.example", "バナーの差し替え",
                           "トップページのバナーを差し替えてください。")
    assert codes(transmit(listener, raw, sender="x@beta.example")) == [250]
    (request,) = requests_(engine)
    assert request.subject == "バナーの差し替え"
    assert "トップページのバナーを差し替えてください。" in request.text


def test_undeclared_8bit_bytes_are_stored_byte_for_byte(engine, listen):
    """An unknown sender is held with its raw message: nothing decoded, nothing
    added but the Return-Path; a leading dot survives SMTP transparency."""
    listener = listen()
    body = "見積もりをお願いします。".encode("shift_jis") + b"\r\n.dotted line\r\ncaf\xe9\r\n"
    raw = (b"From: stranger@elsewhere.example\r\nTo: support@agency.example\r\n"
           b"Subject: 8-bit\r\nMessage-ID: <8bit-" + uuid.uuid4().hex.encode()
           + b"@elsewhere.example>\r\n\r\n" + body)
    with client(listener) as conn:
        assert conn.sendmail("stranger@elsewhere.example", [SUPPORT], raw) == {}
    (row,) = inbound_rows(engine)
    assert row.status == InboundStatus.HELD
    assert row.raw == b"Return-Path: <stranger@elsewhere.example>\r\n" + raw


def test_same_message_twice_is_processed_once(engine, listen):
    listener = listen()
    raw = mail(sender="a@acme.example", subject="Landing page", body="Build one, please.")
    first = transmit(listener, raw)
    second = transmit(listener, raw)
    assert codes(first) == codes(second) == [250]
    assert b"already" in second[0][1]
    assert len(requests_(engine)) == 1
    assert len(inbound_rows(engine)) == 1
    assert outbox_templates(engine) == ["client/ack", "staff/new_request"]


RETURN_PATHS = [  # envelope sender, headers of the message, classification
    ("<>", {}, "automatic"),
    ("a@acme.example", {}, "new_request"),
    ("a@acme.example", {"Return-Path": "<>"}, "automatic"),
    ("<>", {"Return-Path": "<a@acme.example>"}, "new_request"),
]


def test_null_envelope_sender_is_seen_as_a_null_return_path(engine, listen):
    """The classifier knows bounces and RFC 3834 answers by a null return path:
    the envelope's `<>` becomes `Return-Path: <>`; a Return-Path already in the
    message is left alone."""
    listener = listen()
    for number, (envelope_from, headers, _) in enumerate(RETURN_PATHS):
        raw = mail(sender="a@acme.example", subject=f"I am away {number}",
                   body="Back on Monday.", headers=headers)
        assert codes(transmit(listener, raw, sender=envelope_from)) == [250]
    rows = inbound_rows(engine)
    assert [(r.subject, r.classification) for r in rows] == [
        (f"I am away {n}", expected) for n, (*_, expected) in enumerate(RETURN_PATHS)]
    assert [r.subject for r in requests_(engine)] == ["I am away 1", "I am away 3"]
    assert outbox_templates(engine) == ["client/ack", "client/ack",
                                        "staff/new_request", "staff/new_request"]


def unreachable_engine(engine, tmp_path):
    """The same kind of database, but one that cannot be opened."""
    if engine.url.get_backend_name() == "sqlite":
        return create_db_engine(f"sqlite:///{tmp_path / 'no-such-dir' / 'mailflow.db'}")
    url = make_url(engine.url).set(database=f"mailflow_missing_{uuid.uuid4().hex[:10]}")
    return create_db_engine(url.render_as_string(hide_password=False))


@pytest.mark.parametrize("lmtp", [False, True], ids=["smtp", "lmtp"])
def test_database_unreachable_answers_451_and_the_retry_is_processed(engine, listen,
                                                                     tmp_path, lmtp):
    broken = unreachable_engine(engine, tmp_path)
    try:
        down = listen(lmtp=lmtp, engine_=broken)
        raw = mail(sender="a@acme.example", subject="Retry me", body="Please.")
        recipients = (SUPPORT, "support+x@agency.example") if lmtp else (SUPPORT,)
        replies = transmit(down, raw, recipients=recipients)
        assert codes(replies) == [451] * len(recipients)
        assert all(b"4.3.0" in text for _, text in replies)
        down.stop()
    finally:
        broken.dispose()
    # The sending server kept it (4xx) and tries again once the database is back.
    up = listen(lmtp=lmtp)
    assert codes(transmit(up, raw, recipients=recipients)) == [250] * len(recipients)
    assert [r.subject for r in requests_(engine)] == ["Retry me"]


def test_lmtp_two_of_our_addresses_get_two_replies_and_one_request(engine, listen):
    listener = listen(lmtp=True)
    raw = mail(sender="a@acme.example", subject="Two addresses", body="Install the plugin.")
    replies = transmit(listener, raw, recipients=(SUPPORT, "Support+abc@agency.example",
                                                  "nobody@agency.example"))
    assert codes(replies) == [250, 250]
    (row,) = inbound_rows(engine)
    assert (row.mailbox, row.classification) == ("lmtp", "new_request")
    assert [r.subject for r in requests_(engine)] == ["Two addresses"]
    assert outbox_templates(engine) == ["client/ack", "staff/new_request"]


def test_lmtp_greeting_is_lhlo_only(tmp_path, settings):
    """No database needed: nothing is delivered."""
    nowhere = create_db_engine(f"sqlite:///{tmp_path / 'unused.db'}")
    inbound = settings.inbound_smtp.model_copy(update={"lmtp": True})
    desk = Desk(settings.model_copy(update={"inbound_smtp": inbound}))
    with InboundListener(nowhere, desk) as listener, \
            smtplib.SMTP(HOST, listener.port, timeout=TIMEOUT) as conn:
        assert conn.ehlo()[0] == 500
        assert conn.helo()[0] == 500
        assert conn.docmd("LHLO", "client.example")[0] == 250
    nowhere.dispose()


def oversized() -> bytes:
    line = "x" * 76
    body = "\n".join([line] * (int(LIMIT_MB * 1024 * 1024) // 77 + 100))
    return mail(sender="a@acme.example", subject="Huge", body=body)


@pytest.mark.parametrize("lmtp", [False, True], ids=["smtp", "lmtp-two-recipients"])
def test_message_over_the_size_limit_is_refused_with_552(engine, listen, lmtp):
    listener = listen(lmtp=lmtp)
    recipients = (SUPPORT, "support+a@agency.example") if lmtp else (SUPPORT,)
    raw = oversized()
    assert len(raw) > LIMIT_MB * 1024 * 1024
    # Declared with SIZE: refused at MAIL, one reply.
    assert codes(transmit(listener, raw, recipients=recipients, size=True)) == [552]
    with client(listener) as conn, pytest.raises(smtplib.SMTPSenderRefused) as refused:
        conn.sendmail("a@acme.example", list(recipients), raw)
    assert refused.value.smtp_code == 552
    # Undeclared: refused after DATA, once per recipient under LMTP.
    assert codes(transmit(listener, raw, recipients=recipients)) == [552] * len(recipients)
    assert inbound_rows(engine) == []
    # The listener takes the next message as usual.
    ok = mail(sender="a@acme.example", subject="Small", body="fine")
    assert codes(transmit(listener, ok, recipients=recipients)) == [250] * len(recipients)
    assert [r.subject for r in inbound_rows(engine)] == ["Small"]


def test_stop_frees_the_port_and_start_again_works(engine, listen):
    listener = listen()
    listener.stop()
    assert not listener.running
    with pytest.raises(OSError):
        smtplib.SMTP(HOST, listener.port, timeout=1)
    listener.start()
    raw = mail(sender="a@acme.example", subject="After restart", body="hello")
    assert codes(transmit(listener, raw)) == [250]
