"""The mail rules of DESIGN §3 end to end: mail APPENDed to a real Dovecot,
polled, answered through a capturing aiosmtpd; SQLite and PostgreSQL."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import make_msgid

import pytest
from sqlmodel import select

from mailflow.config import settings_from_mapping
from mailflow.core.ledger import LotKind
from mailflow.core.states import Status
from mailflow.db import transaction
from mailflow.desk import Desk
from mailflow.models import Attachment, Inbound, InboundStatus, Outbox, OutboxStatus, Request
from mailflow.services import clients, credits
from tests.integration.test_mail_flow import World, body_of, quote_mail, start_request
from tests.mails import mail, reply

pytestmark = pytest.mark.dovecot

SUPPORT = "support@agency.example"
STAFF = "staff@agency.example"


@pytest.fixture
def make_world(engine, clock, dovecot, smtp_server, imap_settings, smtp_settings):
    """A World whose settings a test may change: make_world(policy={...})."""
    worlds = []

    def make(**overrides) -> World:
        mailbox = {"address": SUPPORT, "display_name": "Agency Support",
                   "imap": {**imap_settings.model_dump(), "start": "all"},
                   **overrides.pop("mailbox", {})}
        settings = settings_from_mapping({"mailbox": mailbox, "smtp": smtp_settings.model_dump(),
                                          "staff": {"notify": [STAFF]}, **overrides})
        desk = Desk(settings, clock=clock)
        with transaction(engine) as session:
            acme = clients.add_client(session, desk, name="Acme",
                                      emails=["a@acme.example", "boss@acme.example"])
            credits.add_lot(session, desk, client=acme, kind=LotKind.PURCHASE, credits=5)
            clients.add_client(session, desk, name="Beta", emails=["x@beta.example"])
        world = World(engine, desk, dovecot, smtp_server)
        worlds.append(world)
        return world

    yield make
    for world in worlds:
        world.close()


def templates_to(world: World, address: str) -> list[str]:
    return [m["X-Mailflow-Template"] for m in world.sent_to(address)]


def last_inbound(world: World) -> Inbound:
    with transaction(world.engine) as session:
        return session.exec(select(Inbound).order_by(Inbound.id.desc())).first()


def requests_of(world: World) -> list[Request]:
    with transaction(world.engine) as session:
        return list(session.exec(select(Request).order_by(Request.id)))


def quote_token(quote) -> str:
    text = body_of(quote)
    return text.split("Quote reference:")[1].split()[0]


# --- linking an answer to the quote -----------------------------------------------------

def test_reply_token_address_alone_approves(make_world):
    world = make_world(mailbox={"reply_token": True})
    request_id = start_request(world)
    quote = quote_mail(world, request_id)
    token = quote_token(quote)
    assert quote["Reply-To"] == f"support+{token}@agency.example"
    # A mail program that drops threading headers and the subject tag.
    world.deliver(mail(sender="a@acme.example", to=quote["Reply-To"], subject="Banner",
                       body="APPROVE\n\nThanks"))
    world.poll()
    assert world.request(request_id).status == Status.APPROVED
    assert world.debits(request_id) == [-2]
    assert templates_to(world, "a@acme.example")[-1] == "client/approved"


def test_quoted_reference_line_alone_approves(make_world):
    world = make_world()
    request_id = start_request(world)
    quote = quote_mail(world, request_id)
    world.deliver(mail(sender="boss@acme.example", subject="About the banner",
                       body=f"approve\n\n> Quote reference: {quote_token(quote)}\n"))
    world.poll()
    assert world.request(request_id).status == Status.APPROVED
    assert world.debits(request_id) == [-2]


@pytest.mark.parametrize("required", [True, False], ids=["reference-required",
                                                          "reference-not-required"])
def test_subject_tag_alone(make_world, required):
    world = make_world(policy={"require_quote_reference": required})
    request_id = start_request(world)
    quote_mail(world, request_id)
    world.deliver(mail(sender="a@acme.example", subject=f"Re: [REQ-{request_id}] Banner",
                       body="APPROVE"))
    world.poll()
    if required:
        assert world.request(request_id).status == Status.QUOTED
        assert world.debits(request_id) == []
        answer = world.sent_to("a@acme.example")[-1]
        assert answer["X-Mailflow-Template"] == "client/not_authorised"
        assert "did not refer to the current quote" in body_of(answer)
        assert "Quote reference" in body_of(answer)
        assert last_inbound(world).reason == "not authorised: no_quote_reference"
    else:
        assert world.request(request_id).status == Status.APPROVED
        assert world.debits(request_id) == [-2]


def test_subject_tag_from_another_clients_address_does_not_link(make_world):
    world = make_world(policy={"require_quote_reference": False})
    request_id = start_request(world)
    quote_mail(world, request_id)
    world.deliver(mail(sender="x@beta.example", subject=f"Re: [REQ-{request_id}] Banner",
                       body="APPROVE"))
    world.poll()
    assert world.request(request_id).status == Status.QUOTED
    assert len(requests_of(world)) == 2  # Beta's mail became Beta's own request
    assert requests_of(world)[-1].client_id != world.request(request_id).client_id


# --- commands ----------------------------------------------------------------------

def test_balance_alone_gets_a_statement_and_creates_no_request(make_world):
    world = make_world()
    world.deliver(mail(sender="a@acme.example", subject="balance", body=""))
    world.poll()
    assert requests_of(world) == []
    (statement,) = world.sent_to("a@acme.example")
    assert statement["X-Mailflow-Template"] == "client/balance"
    assert statement["Auto-Submitted"] == "auto-replied"
    assert "Available now: 5 credits" in body_of(statement)
    assert world.sent_to(STAFF) == []


def test_both_approve_and_reject_asks_which_and_changes_nothing(make_world):
    world = make_world()
    request_id = start_request(world)
    quote = quote_mail(world, request_id)
    world.deliver(reply(sender="a@acme.example", original_subject=quote["Subject"],
                        original_body=body_of(quote), original_id=quote["Message-ID"],
                        answer="APPROVE or REJECT? Not sure yet."))
    world.poll()
    assert world.request(request_id).status == Status.QUOTED
    assert world.debits(request_id) == []
    assert templates_to(world, "a@acme.example")[-1] == "client/ambiguous_reply"
    assert last_inbound(world).classification == "ask_which"


def test_reply_without_keyword_is_a_comment_for_staff_and_a_receipt(make_world):
    world = make_world()
    request_id = start_request(world)
    quote = quote_mail(world, request_id)
    to_client = len(world.sent_to("a@acme.example"))
    world.deliver(reply(sender="a@acme.example", original_subject=quote["Subject"],
                        original_body=body_of(quote), original_id=quote["Message-ID"],
                        answer="Could the banner be blue rather than green?"))
    world.poll()
    assert world.request(request_id).status == Status.QUOTED
    # Every person gets an answer: one receipt that repeats how to approve.
    answers = world.sent_to("a@acme.example")[to_client:]
    assert [m["X-Mailflow-Template"] for m in answers] == ["client/comment_received"]
    assert quote_token(quote) in body_of(answers[0])
    comment = world.sent_to(STAFF)[-1]
    assert comment["X-Mailflow-Template"] == "staff/comment"
    assert "blue rather than green" in body_of(comment)
    assert f"[REQ-{request_id}]" in comment["Subject"]
    assert (last_inbound(world).classification, last_inbound(world).request_id) == \
        ("comment", request_id)


# --- strangers, loops, forgeries, bounces -------------------------------------------------

def test_unknown_sender_is_held_and_staff_told(make_world):
    world = make_world()
    world.deliver(mail(sender="stranger@else.example", subject="Hi", body="Can you help?"))
    world.poll()
    assert world.sent_to("stranger@else.example") == []
    assert templates_to(world, STAFF) == ["staff/held"]
    held = last_inbound(world)
    assert (held.status, held.classification) == (InboundStatus.HELD, "unknown_sender")
    assert held.raw  # kept for staff
    assert requests_of(world) == []


def test_unknown_sender_reply_policy_answers_once_per_day(make_world, clock):
    world = make_world(policy={"unknown_sender": "reply"})
    for n in (1, 2):
        world.deliver(mail(sender="stranger@else.example", subject=f"Hi {n}", body="help"))
        world.poll()
    assert templates_to(world, "stranger@else.example") == ["client/unknown_sender"]
    assert templates_to(world, STAFF) == ["staff/held", "staff/held"]
    clock.advance(days=1, minutes=1)
    world.deliver(mail(sender="stranger@else.example", subject="Hi 3", body="help"))
    world.poll()
    assert len(world.sent_to("stranger@else.example")) == 2


def test_staff_mailbox_responder_without_auto_submitted_does_not_loop(make_world):
    """Issue 9.3: a staff mailbox whose responder lacks Auto-Submitted answers every
    notice.  Our notices say Auto-Submitted: auto-generated, and what comes back
    from our own staff notification address never starts another notice."""
    world = make_world()
    world.deliver(mail(sender="stranger@else.example", subject="Hi", body="Can you help?"))
    world.poll()
    for round_ in range(4):
        notices = world.sent_to(STAFF)
        assert len(notices) == 1, f"round {round_}: {len(notices)} notices"
        notice = notices[-1]
        assert notice["Auto-Submitted"] == "auto-generated"
        world.deliver(mail(sender=STAFF, subject=f"Re: {notice['Subject']}",
                           body="Thank you. We will reply within one business day.",
                           in_reply_to=notice["Message-ID"]))
        world.poll()
    assert len(world.sent_to(STAFF)) == 1
    held = last_inbound(world)
    assert held.from_addr == STAFF and held.status == InboundStatus.HELD
    assert "without a notice" in held.reason


def test_vacation_reply_without_headers_is_recorded_not_answered(make_world):
    world = make_world()
    request_id = start_request(world)
    ack = world.sent_to("a@acme.example")[-1]
    before = len(world.sent_to("a@acme.example"))
    world.deliver(mail(sender="a@acme.example", subject=f"自動応答: {ack['Subject']}",
                       body="ただいま不在にしております。12月1日に戻ります。",
                       in_reply_to=ack["Message-ID"]))
    world.poll()
    assert len(world.sent_to("a@acme.example")) == before
    assert len(requests_of(world)) == 1
    recorded = last_inbound(world)
    assert (recorded.classification, recorded.request_id) == ("automatic", request_id)


def test_automatic_answers_over_the_hourly_limit_are_suppressed(make_world, clock):
    """A correspondent sending the same text again looks automatic: the cap applies
    (a person's different mails are never capped: tests/inbound/test_answers.py)."""
    world = make_world(policy={"autoreply_limit_per_hour": 2})
    for _ in range(3):
        world.deliver(mail(sender="a@acme.example", subject="BALANCE",
                           body="BALANCE"))
        world.poll()
        clock.advance(minutes=5)
    assert templates_to(world, "a@acme.example") == ["client/balance"] * 2
    with transaction(world.engine) as session:
        rows = session.exec(select(Outbox).where(Outbox.to_addrs == "a@acme.example")
                            .order_by(Outbox.id)).all()
    assert [r.status for r in rows] == [OutboxStatus.SENT, OutboxStatus.SENT,
                                        OutboxStatus.SUPPRESSED]
    clock.advance(hours=1)  # the hour has passed: answers again
    world.deliver(mail(sender="a@acme.example", subject="BALANCE",
                       body="BALANCE"))
    world.poll()
    assert len(world.sent_to("a@acme.example")) == 3


def test_forged_approve_changes_nothing_and_gets_no_answer(make_world):
    world = make_world(policy={"trusted_authserv_id": "mx.agency.example"})
    request_id = start_request(world)
    quote = quote_mail(world, request_id)
    to_client = len(world.sent_to("a@acme.example"))
    staff_before = len(world.sent_to(STAFF))
    world.deliver(reply(sender="a@acme.example", original_subject=quote["Subject"],
                        original_body=body_of(quote), original_id=quote["Message-ID"],
                        answer="APPROVE", headers={
                            "Authentication-Results": "mx.agency.example; spf=fail"
                            " smtp.mailfrom=acme.example; dmarc=fail (p=none)"
                            " header.from=acme.example"}))
    world.poll()
    assert world.request(request_id).status == Status.QUOTED
    assert world.debits(request_id) == []
    assert len(world.sent_to("a@acme.example")) == to_client
    (told,) = world.sent_to(STAFF)[staff_before:]
    assert "DMARC" in body_of(told)
    forged = last_inbound(world)
    assert (forged.status, forged.classification) == (InboundStatus.HELD, "forged")


def dsn(original) -> bytes:
    """A delivery status notification as Postfix writes it, our message attached."""
    original_raw = bytes(original).replace(b"\r\n", b"\n").decode("utf-8", "replace")
    return (
        "Return-Path: <>\n"
        "From: Mail Delivery System <MAILER-DAEMON@mx.acme.example>\n"
        f"To: {SUPPORT}\n"
        "Subject: Undelivered Mail Returned to Sender\n"
        f"Message-ID: {make_msgid(domain='mx.acme.example')}\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B0"\n'
        "\n--B0\nContent-Type: text/plain; charset=us-ascii\n\n"
        "This is the mail system at host mx.acme.example.\n\n"
        "I'm sorry to have to inform you that your message could not\n"
        "be delivered to one or more recipients.\n\n"
        "<a@acme.example>: host mx.acme.example said: 550 5.1.1 unknown user\n"
        "\n--B0\nContent-Type: message/delivery-status\n\n"
        "Reporting-MTA: dns; mx.acme.example\n\n"
        "Final-Recipient: rfc822; a@acme.example\nAction: failed\nStatus: 5.1.1\n"
        "\n--B0\nContent-Type: message/rfc822\n\n"
        f"{original_raw}\n--B0--\n"
    ).replace("\n", "\r\n").encode()


def test_bounce_marks_our_message_bounced_and_tells_staff(make_world):
    world = make_world()
    request_id = start_request(world)
    quote = quote_mail(world, request_id)
    quote_id = quote["Message-ID"].strip("<>")
    to_client, staff_before = len(world.sent_to("a@acme.example")), len(world.sent_to(STAFF))
    world.deliver(dsn(quote))
    world.poll()
    with transaction(world.engine) as session:
        row = session.exec(select(Outbox).where(Outbox.message_id == quote_id)).one()
    assert row.status == OutboxStatus.BOUNCED
    assert len(world.sent_to("a@acme.example")) == to_client  # no answer to a bounce
    assert len(world.sent_to("mailer-daemon@mx.acme.example")) == 0
    (told,) = world.sent_to(STAFF)[staff_before:]
    assert told["X-Mailflow-Template"] == "staff/bounce"
    assert quote_id in body_of(told)
    assert world.request(request_id).status == Status.QUOTED
    assert last_inbound(world).classification == "bounce"


# --- what a new request may look like -----------------------------------------------------

def test_html_only_request_becomes_a_request_with_readable_text(make_world):
    world = make_world()
    message = EmailMessage()
    message["From"] = "a@acme.example"
    message["To"] = SUPPORT
    message["Subject"] = "New landing page"
    message["Message-ID"] = make_msgid(domain="acme.example")
    message.set_content("<html><body><p>Please build a <b>landing page</b> for the"
                        " autumn sale.</p><ul><li>hero image</li></ul></body></html>",
                        subtype="html")
    world.deliver(bytes(message))
    world.poll()
    (request,) = requests_of(world)
    assert request.subject == "New landing page"
    assert "landing page" in request.text and "autumn sale" in request.text
    assert "<p>" not in request.text and "<b>" not in request.text
    assert templates_to(world, "a@acme.example") == ["client/ack"]


def test_request_with_attachment_stores_the_attachment(make_world):
    world = make_world()
    message = EmailMessage()
    message["From"] = "a@acme.example"
    message["To"] = SUPPORT
    message["Subject"] = "Replace the banner"
    message["Message-ID"] = make_msgid(domain="acme.example")
    message.set_content("The new banner is attached.")
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    message.add_attachment(png, maintype="image", subtype="png", filename="banner.png")
    world.deliver(bytes(message))
    world.poll()
    (request,) = requests_of(world)
    assert "banner is attached" in request.text
    with transaction(world.engine) as session:
        (attachment,) = session.exec(select(Attachment)).all()
        inbound = session.get(Inbound, attachment.inbound_id)
    assert inbound.request_id == request.id
    assert (attachment.filename, attachment.content_type, attachment.size) == \
        ("banner.png", "image/png", len(png))
    assert attachment.data == png
