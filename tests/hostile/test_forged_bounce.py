"""Only a real failed-delivery report marks one of our messages bounced (issue 9,
point 6): a mail from `MAILER-DAEMON@client-domain` quoting our Message-ID does
not.  Through the real pipeline, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlmodel import select

from mailflow.db import transaction
from mailflow.intake import receive
from mailflow.models import InboundStatus, Outbox, OutboxStatus
from mailflow.services import clients
from tests.hostile.test_hostile_pipeline import CLIENT, STAFF, make_desk
from tests.mails import mail


def dsn(our_id: str, action: str = "failed") -> bytes:
    return (
        "From: Mail Delivery Subsystem <MAILER-DAEMON@mx.acme.example>\r\n"
        "To: support@agency.example\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        "Message-ID: <dsn-1@mx.acme.example>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.acme.example"
        f"\r\n\r\nFinal-Recipient: rfc822; {CLIENT}\r\nAction: {action}\r\nStatus: 5.1.1\r\n"
        "--b\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: <{our_id}>\r\nSubject: [REQ-1] Received\r\n--b--\r\n").encode()


FORGED = {
    "daemon quoting our id, bounce subject": lambda our_id: mail(
        sender=f"MAILER-DAEMON@{CLIENT.split('@')[1]}", subject="Undelivered Mail",
        body=f"Your mail bounced.\n\n> Message-ID: <{our_id}>\n"),
    "daemon quoting our id, ordinary subject": lambda our_id: mail(
        sender=f"MAILER-DAEMON@{CLIENT.split('@')[1]}", subject="Hello",
        body=f"Message-ID: <{our_id}>\n"),
    "delay report": lambda our_id: dsn(our_id, action="delayed"),
}


@pytest.fixture
def acked(engine, clock):
    """A desk, client Acme, and the acknowledgement of Acme's request."""
    desk = make_desk(clock)
    with transaction(engine) as session:
        clients.add_client(session, desk, name="Acme", emails=[CLIENT])
    receive(engine, desk, mail(sender=CLIENT, subject="Banner", body="Please."))
    with transaction(engine) as session:
        ack = session.exec(select(Outbox).where(Outbox.template == "client/ack")).one()
    return desk, ack


def rows(engine) -> list[Outbox]:
    with transaction(engine) as session:
        return list(session.exec(select(Outbox).order_by(Outbox.id)))


@pytest.mark.parametrize("forged", FORGED.values(), ids=FORGED.keys())
def test_a_mail_that_is_no_failed_delivery_report_marks_nothing(engine, acked, forged):
    desk, ack = acked
    outcome = receive(engine, desk, forged(ack.message_id))
    assert outcome.status is not InboundStatus.FAILED
    after = rows(engine)
    assert next(r for r in after if r.id == ack.id).status == OutboxStatus.PENDING
    assert not [r for r in after if r.template == "staff/bounce"]


def test_a_failed_delivery_report_marks_our_message_and_tells_staff(engine, acked):
    desk, ack = acked
    outcome = receive(engine, desk, dsn(ack.message_id))
    assert (outcome.status, outcome.verdict) == (InboundStatus.IGNORED, "bounce")
    after = rows(engine)
    assert next(r for r in after if r.id == ack.id).status == OutboxStatus.BOUNCED
    (notice,) = [r for r in after if r.template == "staff/bounce"]
    assert notice.recipients == [STAFF]
