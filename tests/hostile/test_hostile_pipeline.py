"""Hostile and broken mail through the real pipeline (`intake.receive`, on SQLite
and PostgreSQL; a few through Dovecot and aiosmtpd where the folder matters).
Each case: the pipeline returns normally, the message is recorded (`Inbound`)
and processed, held, failed with a reason, or answered as DESIGN §3 says."""

from __future__ import annotations

import time
import tracemalloc
from datetime import timedelta
from email import policy
from email.parser import BytesParser

import pytest
from sqlmodel import select

from mailflow.config import settings_from_mapping
from mailflow.core.ledger import EntryKind, LotKind
from mailflow.core.states import Status
from mailflow.db import transaction
from mailflow.desk import Desk
from mailflow.intake import receive
from mailflow.models import Attachment, Entry, Inbound, InboundStatus, Outbox, Quote, Request
from mailflow.sender import build_email
from mailflow.services import clients, credits
from mailflow.services import requests as svc
from tests.hostile.hostile_mail import (
    CLIENT,
    SUPPORT,
    deep_nesting,
    guessed_token,
    huge_attachment,
    invalid_base64,
    many_parts,
    raw_mail,
)
from tests.mails import mail, reply

STAFF = "staff@agency.example"
AUTHSERV = "mx.agency.example"


def make_desk(clock, **policy_) -> Desk:
    return Desk(settings_from_mapping({
        "mailbox": {"address": SUPPORT, "display_name": "Agency Support"},
        "staff": {"notify": [STAFF]}, "policy": policy_}), clock=clock)


@pytest.fixture
def hdesk(engine, clock) -> Desk:
    """A desk trusting our MX's Authentication-Results, with client Acme (5 credits)."""
    desk = make_desk(clock, trusted_authserv_id=AUTHSERV)
    with transaction(engine) as session:
        acme = clients.add_client(session, desk, name="Acme", emails=[CLIENT])
        credits.add_lot(session, desk, client=acme, kind=LotKind.PURCHASE, credits=5)
    return desk


def inbound(engine, inbound_id: int) -> Inbound:
    with transaction(engine) as session:
        return session.get(Inbound, inbound_id)


def outbox(engine) -> list[Outbox]:
    with transaction(engine) as session:
        return list(session.exec(select(Outbox).order_by(Outbox.id)))


def to_client(engine, address: str = CLIENT) -> list[Outbox]:
    return [row for row in outbox(engine) if address in row.recipients]


def debits(engine) -> list[int]:
    with transaction(engine) as session:
        return [e.delta for e in session.exec(select(Entry).where(Entry.kind == EntryKind.DEBIT))]


def sent_form(desk: Desk, row: Outbox):
    """The outgoing message as a receiving mail program would parse it."""
    return BytesParser(policy=policy.default).parsebytes(bytes(build_email(desk, row)))


def assert_clean_headers(message, *, to: str) -> None:
    """Exactly one Subject, To only the intended address, no header we did not write."""
    assert len(message.get_all("Subject")) == 1
    assert "\n" not in message["Subject"] and "\r" not in message["Subject"]
    assert message.get_all("Bcc") is None and message.get_all("Cc") is None
    assert [str(a.addr_spec) for a in message["To"].addresses] == [to]
    allowed = {"from", "to", "subject", "date", "message-id", "in-reply-to", "references",
               "reply-to", "auto-submitted", "x-mailflow-template", "x-mailflow-request",
               "content-type", "content-transfer-encoding", "mime-version"}
    assert {name.lower() for name in message.keys()} <= allowed
    for part in message.walk():
        assert {name.lower() for name in part.keys()} <= allowed


# --- CR/LF and header injection -------------------------------------------------------

INJECTIONS = {
    "folded subject": [("From", CLIENT), ("Subject", "Hi\r\n Bcc: victim@x")],
    "encoded CRLF in subject": [("From", CLIENT),
                                ("Subject", "=?utf-8?q?Hi=0D=0ABcc:_victim@x?=")],
    "encoded CRLF and NUL in subject": [("From", CLIENT),
                                        ("Subject", "=?utf-8?b?SGkNCkJjYzogdkB4AA==?=")],
    "display name with newline": [("From", '"Evil\r\n Bcc: victim@x" <a@acme.example>'),
                                  ("Subject", "Hello")],
    "encoded display name with CRLF": [
        ("From", "=?utf-8?q?Evil=0D=0ABcc:_victim@x?= <a@acme.example>"), ("Subject", "Hi")],
    "second subject header": [("From", CLIENT), ("Subject", "One"),
                              ("Subject", "Two\r\n\tBcc: victim@x")],
}


@pytest.mark.parametrize("headers", INJECTIONS.values(), ids=INJECTIONS.keys())
def test_header_injection_never_reaches_our_outgoing_headers(engine, hdesk, headers):
    outcome = receive(engine, hdesk, raw_mail([*headers, ("To", SUPPORT)], b"Please help.\r\n"))
    assert (outcome.status, outcome.verdict) == (InboundStatus.PROCESSED, "new_request")
    with transaction(engine) as session:
        request = session.get(Request, outcome.request_id)
    assert "\n" not in request.subject and "\r" not in request.subject
    assert "\x00" not in request.subject
    (ack,) = to_client(engine)
    assert_clean_headers(sent_form(hdesk, ack), to=CLIENT)
    (staff,) = to_client(engine, STAFF)
    assert_clean_headers(sent_form(hdesk, staff), to=STAFF)


# --- HTML injection -------------------------------------------------------------------

def test_html_in_subject_and_text_is_escaped_in_the_html_part(engine, hdesk):
    evil = '<script>alert(1)</script> "><img src=x onerror=alert(2)>'
    outcome = receive(engine, hdesk, mail(sender=CLIENT, subject=f"Banner {evil}",
                                          body=f"{evil}\nPlease replace the banner."))
    assert outcome.verdict == "new_request"
    (ack,) = to_client(engine)
    assert ack.body_html is not None
    assert "<script>" not in ack.body_html and "<img" not in ack.body_html
    assert "&lt;script&gt;" in ack.body_html and "&#34;&gt;&lt;img" in ack.body_html
    html_part = sent_form(hdesk, ack).get_body(preferencelist=("html",)).get_content()
    assert "<script>" not in html_part and "<img" not in html_part
    for row in outbox(engine):  # no HTML part anywhere carries the raw markup
        assert row.body_html is None or "onerror=alert(2)>" not in row.body_html


# --- size and structure ---------------------------------------------------------------

@pytest.mark.slow
def test_50_mb_attachment_is_recorded_without_its_data_in_bounded_memory(engine, hdesk):
    raw = huge_attachment(50 * 1024 * 1024)
    size = len(raw)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        outcome = receive(engine, hdesk, raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - started
    print(f"\n{size / 2**20:.1f} MB message: {elapsed:.2f} s, peak {peak / 2**20:.1f} MB "
          f"({peak / size:.2f}x the message)")
    assert peak < 4 * size
    # Only its headers were read: it is held for staff, not acted on half-read.
    assert (outcome.status, outcome.verdict) == (InboundStatus.HELD, "oversize")
    row = inbound(engine, outcome.inbound_id)
    assert "max_message_mb" in row.reason and "over the" in row.reason
    assert row.raw is None  # the original stays in the mailbox, not in the database
    with transaction(engine) as session:
        stored = session.exec(select(Attachment).where(Attachment.inbound_id == row.id)).all()
        notices = session.exec(select(Outbox)).all()
    assert all(a.data is None or len(a.data) < size for a in stored)
    assert [(n.template, n.to_addrs) for n in notices] == [("staff/held", "staff@agency.example")]
    assert "oversized" in notices[0].subject


def test_5000_mime_parts_are_processed_in_bounded_time(engine, hdesk):
    started = time.perf_counter()
    outcome = receive(engine, hdesk, many_parts(5000))
    print(f"\n5,000 parts: {time.perf_counter() - started:.2f} s")
    assert outcome.verdict == "new_request"
    with transaction(engine) as session:
        stored = session.exec(select(Attachment).where(
            Attachment.inbound_id == outcome.inbound_id)).all()
    assert len(stored) == 4999 and {a.data for a in stored} == {b"xyz"}


@pytest.mark.parametrize("depth", [200, 1000])
def test_deeply_nested_mime_is_recorded_in_bounded_time(engine, hdesk, depth):
    started = time.perf_counter()
    outcome = receive(engine, hdesk, deep_nesting(depth))
    print(f"\n{depth} levels: {time.perf_counter() - started:.2f} s, {outcome.verdict}")
    row = inbound(engine, outcome.inbound_id)
    assert (row.status, outcome.verdict) == (InboundStatus.PROCESSED, "new_request")
    if depth == 200:
        assert "The bottom." in row.text
    else:  # the standard parser's recursion gives out: the headers still count
        assert "body not read" in row.reason


def test_invalid_base64_body_is_processed_with_the_defect_recorded(engine, hdesk):
    outcome = receive(engine, hdesk, invalid_base64())
    assert (outcome.status, outcome.verdict) == (InboundStatus.PROCESSED, "new_request")


def test_invalid_date_is_processed_and_recorded(engine, hdesk):
    outcome = receive(engine, hdesk, raw_mail([
        ("From", CLIENT), ("Subject", "Bad date"), ("Date", "Thu, 31 Feb 2026 25:61:61 +9999")]))
    assert outcome.verdict == "new_request"
    assert "invalid Date header" in inbound(engine, outcome.inbound_id).reason


# --- values that the database refuses (found by fuzzing on PostgreSQL) ----------------

DATABASE_HOSTILE = {
    "NUL in body": raw_mail([("From", CLIENT), ("Subject", "nul")], b"hel\x00lo\r\n"),
    "NUL in Message-ID": raw_mail([("From", CLIENT), ("Subject", "x"),
                                   ("Message-ID", b"<a\x00b@x>")], message_id=False),
    "NUL in address": raw_mail([("From", b"a\x00b@acme.example"), ("Subject", "x")]),
    "300-char Message-ID": raw_mail([("From", CLIENT), ("Subject", "x"),
                                     ("Message-ID", f"<{'k' * 300}@y>")], message_id=False),
    "400-char From": raw_mail([("From", "a" * 400 + "@acme.example"), ("Subject", "x")]),
    "50,000 References": raw_mail([("From", CLIENT), ("Subject", "refs"), (
        "References", " ".join(f"<r{i}@x>" for i in range(50_000)))]),
    "NUL in attachment type": raw_mail([
        ("From", CLIENT), ("Subject", "x"), ("Content-Type", 'multipart/mixed; boundary="b"')],
        b"--b\r\nContent-Type: app/x\x00y\r\nContent-Disposition: attachment\r\n\r\nz\r\n--b--\r\n"),
    "undecodable encoded words": raw_mail([
        ("From", "=?x-bogus?q?=FF?= <a@acme.example>"), ("Subject", "=?x-bogus?b?//79?=")]),
}


@pytest.mark.parametrize("raw", DATABASE_HOSTILE.values(), ids=DATABASE_HOSTILE.keys())
def test_values_the_database_refuses_are_made_storable(engine, hdesk, raw):
    outcome = receive(engine, hdesk, raw)
    assert outcome.status is not InboundStatus.FAILED, outcome.reason
    assert inbound(engine, outcome.inbound_id) is not None
    assert receive(engine, hdesk, raw).duplicate


# --- who may do what ------------------------------------------------------------------

def test_missing_from_is_held_staff_told_and_nobody_answered(engine, hdesk):
    outcome = receive(engine, hdesk, raw_mail([("To", SUPPORT), ("Subject", "No sender")]))
    assert outcome.status is InboundStatus.HELD
    assert inbound(engine, outcome.inbound_id).raw  # kept for staff
    rows = outbox(engine)
    assert [r.recipients for r in rows] == [[STAFF]]


def quoted_request(engine, desk) -> tuple[int, Quote]:
    outcome = receive(engine, desk, mail(sender=CLIENT, subject="Replace the banner",
                                         body="Please replace the top banner."))
    with transaction(engine) as session:
        quote = svc.quote_request(session, desk, request_id=outcome.request_id,
                                  terms=svc.QuoteTerms(2, desk.today() + timedelta(days=7)))
    return outcome.request_id, quote


def status_of(engine, request_id: int) -> Status:
    with transaction(engine) as session:
        return Status(session.get(Request, request_id).status)


def test_forged_approval_failing_dmarc_changes_nothing_and_gets_no_reply(engine, hdesk):
    request_id, quote = quoted_request(engine, hdesk)
    before = len(to_client(engine))
    forged = reply(sender=CLIENT, original_subject=f"[REQ-{request_id}] Quote",
                   original_body="reply APPROVE or REJECT", original_id=quote.message_id,
                   answer="APPROVE",
                   headers={"Authentication-Results": f"{AUTHSERV}; spf=fail; dmarc=fail"})
    outcome = receive(engine, hdesk, forged)
    assert (outcome.status, outcome.verdict) == (InboundStatus.HELD, "forged")
    assert status_of(engine, request_id) is Status.QUOTED and debits(engine) == []
    assert len(to_client(engine)) == before  # no answer to the forged address
    assert outbox(engine)[-1].recipients == [STAFF]


def test_dmarc_fail_from_someone_elses_server_is_not_trusted(engine, hdesk):
    request_id, quote = quoted_request(engine, hdesk)
    spoofed = reply(sender=CLIENT, original_subject=f"[REQ-{request_id}] Quote",
                    original_body="x", original_id=quote.message_id, answer="APPROVE",
                    headers={"Authentication-Results": "evil.example; dmarc=fail"})
    assert receive(engine, hdesk, spoofed).verdict == "approve"


def test_approval_replayed_against_a_voided_quote_changes_nothing(engine, hdesk):
    request_id, old = quoted_request(engine, hdesk)
    with transaction(engine) as session:  # re-quote: the first quote is void
        svc.quote_request(session, hdesk, request_id=request_id,
                          terms=svc.QuoteTerms(3, hdesk.today() + timedelta(days=7)))
    replay = reply(sender=CLIENT, original_subject=f"[REQ-{request_id}] Quote",
                   original_body=f"Quote reference: {old.token}", original_id=old.message_id,
                   answer="APPROVE")
    outcome = receive(engine, hdesk, replay)
    assert outcome.verdict == "not_authorised"
    assert status_of(engine, request_id) is Status.QUOTED and debits(engine) == []
    assert to_client(engine)[-1].template == "client/not_authorised"


def test_guessed_quote_token_changes_nothing(engine, hdesk):
    request_id, quote = quoted_request(engine, hdesk)
    token = guessed_token()
    assert len(token) == len(quote.token) and token != quote.token
    guess = mail(sender=CLIENT, subject=f"Re: [REQ-{request_id}] Quote",
                 to=f"support+{token}@agency.example",
                 body=f"APPROVE\n\n> Quote reference: {token}\n")
    outcome = receive(engine, hdesk, guess)
    assert outcome.verdict == "not_authorised"
    assert status_of(engine, request_id) is Status.QUOTED and debits(engine) == []
    with transaction(engine) as session:
        assert session.get(Quote, quote.id).status == "open"


# --- through Dovecot and aiosmtpd: the folders and the real envelopes -----------------

@pytest.mark.dovecot
def test_hostile_mail_through_imap_is_filed_and_answers_reach_only_the_sender(
        engine, clock, dovecot, smtp_server, imap_settings, smtp_settings):
    from mailflow.adapters.imap import Mailbox
    from mailflow.poller import Poller
    from mailflow.sender import send_due

    desk = Desk(settings_from_mapping({
        "mailbox": {"address": SUPPORT, "display_name": "Agency Support",
                    "imap": {**imap_settings.model_dump(), "start": "all"}},
        "smtp": smtp_settings.model_dump(), "staff": {"notify": [STAFF]}}), clock=clock)
    with transaction(engine) as session:
        clients.add_client(session, desk, name="Acme", emails=[CLIENT])
    hostile = [
        raw_mail([("From", "=?utf-8?q?Evil=0D=0ABcc:_victim@x?= <a@acme.example>"),
                  ("Subject", "=?utf-8?q?Hi=0D=0ABcc:_victim@x?=")]),
        raw_mail([("From", CLIENT), ("Subject", "nul")], b"hel\x00lo\r\n"),
        raw_mail([("To", SUPPORT), ("Subject", "No sender")]),
        invalid_base64(),
        deep_nesting(200),
    ]
    for raw in hostile:
        dovecot.append("support", "INBOX", raw)
    mailbox = Mailbox(desk.settings.mailbox.imap)
    try:
        report = Poller(engine, desk, mailbox).poll_once()
        send_due(engine, desk)
    finally:
        mailbox.close()
    assert report.processed + report.failed == len(hostile)
    assert dovecot.list_messages("support", "INBOX") == []
    filed = (len(dovecot.list_messages("support", "Processed"))
             + len(dovecot.list_messages("support", "Failed")))
    assert filed == len(hostile)
    with transaction(engine) as session:
        assert len(session.exec(select(Inbound)).all()) == len(hostile)
    recipients = {r for m in smtp_server.messages for r in m.recipients}
    assert recipients <= {CLIENT, STAFF} and CLIENT in recipients
    for captured in smtp_server.messages:
        message = captured.message()
        assert message.get_all("Bcc") is None and len(message.get_all("Subject")) == 1
