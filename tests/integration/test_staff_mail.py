"""Running the desk by mail (issue 11 point 1, DESIGN §3 rule 8) through real
servers: Dovecot (IMAP), aiosmtpd (SMTP capture), SQLite and PostgreSQL.

A staff member replies to a staff notice: the new text goes to the client in
the request's thread (footer, Cc, attachments); command lines act instead;
the member gets one line back.  Anyone else's staff commands do nothing."""

from __future__ import annotations

from datetime import timedelta
from email.message import EmailMessage
from email.utils import make_msgid

import pytest
from sqlmodel import select

from mailflow.adapters.imap import Mailbox
from mailflow.config import settings_from_mapping
from mailflow.core.ledger import LotKind
from mailflow.core.states import Status
from mailflow.db import transaction
from mailflow.desk import Desk
from mailflow.models import Inbound, InboundStatus, Quote, Request, RequestNote
from mailflow.poller import Poller
from mailflow.sender import send_due
from mailflow.services import clients, credits
from tests.mails import mail

pytestmark = pytest.mark.dovecot

SUPPORT = "support@agency.example"
SATO = "sato@agency.example"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
AUTH_PASS = "mx.agency.example; dmarc=pass header.from=agency.example"
AUTH_FAIL = "mx.agency.example; dmarc=fail header.from=agency.example"


class World:
    def __init__(self, engine, desk, dovecot, smtp_server):
        self.engine, self.desk, self.dovecot, self.smtp = engine, desk, dovecot, smtp_server
        self.mailbox = Mailbox(desk.settings.mailbox.imap)

    def deliver(self, raw: bytes) -> None:
        self.dovecot.append("support", "INBOX", raw)
        Poller(self.engine, self.desk, self.mailbox).poll_once()
        send_due(self.engine, self.desk)

    def sent(self, template: str, to: str | None = None):
        return [m for c in self.smtp.messages if (m := c.message())["X-Mailflow-Template"]
                == template and (to is None or to in c.recipients)]

    def request(self, request_id: int) -> Request:
        with transaction(self.engine) as session:
            return session.get(Request, request_id)


@pytest.fixture
def world(engine, clock, dovecot, smtp_server, imap_settings, smtp_settings):
    settings = settings_from_mapping({
        "mailbox": {"address": SUPPORT, "display_name": "Agency Support",
                    "imap": {**imap_settings.model_dump(), "start": "all"}},
        "smtp": smtp_settings.model_dump(),
        "staff": {"notify": ["desk@agency.example"],
                  "members": [{"name": "Sato", "emails": [SATO]},
                              {"name": "Tanaka", "emails": ["tanaka@agency.example"]}]},
        "policy": {"trusted_authserv_id": "mx.agency.example"},
    })
    desk = Desk(settings, clock=clock)
    with transaction(engine) as session:
        acme = clients.add_client(session, desk, name="Acme",
                                  emails=["a@acme.example", "boss@acme.example"])
        credits.add_lot(session, desk, client=acme, kind=LotKind.PURCHASE, credits=5)
    w = World(engine, desk, dovecot, smtp_server)
    yield w
    w.mailbox.close()


def body_of(message) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


def open_request(world: World) -> tuple[int, EmailMessage]:
    """A client's request (Cc'ing a colleague); returns its number and the staff notice."""
    world.deliver(mail(sender="a@acme.example", subject="Replace the banner",
                       body="Please replace the top banner.",
                       headers={"Cc": "boss@acme.example", "Authentication-Results":
                                "mx.agency.example; dmarc=pass header.from=acme.example"}))
    (notice,) = world.sent("staff/new_request")
    return int(notice["X-Mailflow-Request"]), notice


def staff_reply(notice, body: str, *, sender: str = SATO, auth: str = AUTH_PASS,
                files=()) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = SUPPORT
    message["Subject"] = f"Re: {notice['Subject']}"
    message["Message-ID"] = make_msgid(domain="agency.example")
    message["In-Reply-To"] = notice["Message-ID"]
    message["References"] = notice["Message-ID"]
    message["Authentication-Results"] = auth
    quoted = "\n".join("> " + line for line in body_of(notice).splitlines())
    message.set_content(f"{body}\n\nOn Sun, Desk wrote:\n{quoted}\n")
    for name, kind, data in files:
        main, sub = kind.split("/")
        message.add_attachment(data, maintype=main, subtype=sub, filename=name)
    return message.as_bytes()


def test_staff_reply_to_a_notice_goes_to_the_client_in_the_thread(world):
    number, notice = open_request(world)
    (ack,) = world.sent("client/ack")
    world.deliver(staff_reply(notice, "Hello,\n\nCould you send the new photo?\n\nSato",
                              files=[("mockup.png", "image/png", PNG)]))
    (sent,) = world.sent("client/reply")
    assert sent["To"] == "a@acme.example" and sent["Cc"] == "boss@acme.example"
    text = body_of(sent)
    assert text.startswith("Hello,\n\nCould you send the new photo?\n\nSato\n")
    assert "Desk wrote" not in text and "QUOTE n" not in text  # trimmed: new text only
    assert "\n-- \n" in text and "5 credits available" in text
    assert sent["In-Reply-To"] == ack["Message-ID"]
    assert notice["Message-ID"] not in (sent["References"] or "")  # staff mail stays inside
    (attached,) = [p for p in sent.iter_attachments()]
    assert attached.get_filename() == "mockup.png" and attached.get_content() == PNG
    (done,) = world.sent("staff/command_result", to=SATO)
    assert body_of(done).splitlines()[0] == (
        f"[REQ-{number}] sent to a@acme.example (cc boss@acme.example) with 1 file")


def test_command_lines_act_and_the_rest_is_sent(world):
    number, notice = open_request(world)
    due = world.desk.today() + timedelta(days=10)
    world.deliver(staff_reply(notice, f"QUOTE 3 DUE {due.month}/{due.day} Includes a resize\n"
                                      "NOTE client prefers blue\nASSIGN Tanaka\n"
                                      "The quote follows in a separate mail."))
    request = world.request(number)
    assert (request.status, request.credits, request.due, request.owner) == (
        Status.QUOTED, 3, due, "Tanaka")
    with transaction(world.engine) as session:
        quote = session.exec(select(Quote).where(Quote.request_id == number)).one()
        assert (quote.note, quote.actor) == ("Includes a resize", "Sato")
        (note,) = session.exec(select(RequestNote)).all()
        assert (note.author, note.text) == ("Sato", "client prefers blue")
    (client_quote,) = world.sent("client/quote")
    (sent,) = world.sent("client/reply")
    assert body_of(sent).startswith("The quote follows in a separate mail.\n")
    assert "blue" not in body_of(sent) and "blue" not in body_of(client_quote)  # internal
    (done,) = world.sent("staff/command_result", to=SATO)
    assert body_of(done).splitlines()[0] == (
        f"[REQ-{number}] quoted 3 credits, due {due.isoformat()}; note added;"
        " assigned to Tanaka; sent to a@acme.example (cc boss@acme.example)")
    # The owner now gets the request's notices.
    world.deliver(mail(sender="a@acme.example", subject=f"Re: [REQ-{number}] Replace the"
                       " banner", body="Thanks, the photo comes tomorrow.",
                       in_reply_to=client_quote["Message-ID"]))
    (comment,) = world.sent("staff/comment")
    assert comment["To"] == "tanaka@agency.example"


def test_complete_by_mail(world):
    number, notice = open_request(world)
    world.deliver(staff_reply(notice, "QUOTE 1 DUE " + (world.desk.today() + timedelta(
        days=5)).isoformat()))
    with transaction(world.engine) as session:
        from mailflow.services import requests as svc
        svc.approve_request(session, world.desk, request_id=number)
    world.deliver(staff_reply(notice, "COMPLETE The banner is live."))
    assert world.request(number).status == Status.COMPLETED
    (completed,) = world.sent("client/completed")
    assert "The banner is live." in body_of(completed)
    assert world.sent("client/reply") == []  # commands only: nothing else to the client


@pytest.mark.parametrize(("body", "problem"), [
    pytest.param("QUOTE three DUE 12/10\nHello", "'three' is not a whole number of credits",
                 id="credits"),
    pytest.param("QUOTE 3 DUE 2/30\nHello", "'2/30' is not a date: no such day", id="date"),
    pytest.param("ASSIGN Nobody\nHello", "staff member 'Nobody' not found", id="staff"),
    pytest.param("QUOTE 3\nHello", "has no due date yet", id="no-due"),
    pytest.param("COMPLETE\nHello", "received", id="transition"),
])
def test_a_bad_command_changes_nothing_and_the_member_is_told(world, body, problem):
    number, notice = open_request(world)
    world.deliver(staff_reply(notice, body))
    request = world.request(number)
    assert (request.status, request.owner, request.credits) == (Status.RECEIVED, None, None)
    assert world.sent("client/reply") == [] and world.sent("client/quote") == []
    (answer,) = world.sent("staff/command_result", to=SATO)
    assert answer["Subject"].startswith(f"[REQ-{number}] Not done")
    first = body_of(answer).splitlines()[0]
    assert first.startswith(f"[REQ-{number}] nothing done: ") and problem in first


@pytest.mark.parametrize(("sender", "auth", "body", "verdict"), [
    pytest.param("desk@agency.example", AUTH_PASS, "Sure, we can do that.", "staff_refused",
                 id="notify-address-not-a-member"),
    pytest.param("a@acme.example", "mx.agency.example; dmarc=pass header.from=acme.example",
                 "COMPLETE", "staff_refused", id="client-sends-a-command"),
    pytest.param(SATO, AUTH_FAIL, "QUOTE 3 DUE 12/10", "forged", id="forged-staff-member"),
])
def test_staff_mail_from_anyone_else_does_nothing_and_is_reported(world, sender, auth, body,
                                                                  verdict):
    number, notice = open_request(world)
    if sender == "a@acme.example":  # the client answers its acknowledgement instead
        (ack,) = world.sent("client/ack")
        notice = ack
    world.deliver(staff_reply(notice, body, sender=sender, auth=auth))
    request = world.request(number)
    assert (request.status, request.credits) == (Status.RECEIVED, None)
    assert world.sent("client/reply") == [] and world.sent("staff/command_result") == []
    with transaction(world.engine) as session:
        last = session.exec(select(Inbound).order_by(Inbound.id.desc())).first()
        assert (last.status, last.classification) == (InboundStatus.HELD, verdict)
    held = world.sent("staff/held", to="desk@agency.example")
    if sender == "desk@agency.example":
        # Our own notification address answering our notice (a responder without
        # Auto-Submitted): recorded, never notified again — that loops (issue 9.3).
        assert held == [] and "without a notice" in last.reason
        return
    assert len(held) == 1 and sender in body_of(held[0])
