"""The whole conversation through real servers: Dovecot (IMAP), aiosmtpd (SMTP),
and the database on SQLite and PostgreSQL."""

from __future__ import annotations

import email
from datetime import timedelta

import pytest
from sqlmodel import select

from mailflow.adapters.imap import Mailbox
from mailflow.config import settings_from_mapping
from mailflow.core.ledger import EntryKind, LotKind
from mailflow.core.states import Status
from mailflow.db import transaction
from mailflow.desk import Desk
from mailflow.models import Entry, Inbound, InboundStatus, Invoice, Request
from mailflow.poller import Poller
from mailflow.sender import send_due
from mailflow.services import clients, credits
from mailflow.services import requests as svc
from tests.mails import japanese_request, mail, reply

pytestmark = pytest.mark.dovecot

SUPPORT = "support@agency.example"


class World:
    """Mailflow wired to the test servers, driven step by step."""

    def __init__(self, engine, desk, dovecot, smtp_server):
        self.engine, self.desk, self.dovecot, self.smtp = engine, desk, dovecot, smtp_server
        self.mailbox = Mailbox(desk.settings.mailbox.imap)

    def deliver(self, raw: bytes) -> None:
        self.dovecot.append("support", "INBOX", raw)

    def poll(self, **kwargs):
        report = Poller(self.engine, self.desk, self.mailbox).poll_once(**kwargs)
        send_due(self.engine, self.desk)
        return report

    def sent_to(self, address: str):
        return [c.message() for c in self.smtp.messages if address in c.recipients]

    def request(self, request_id: int) -> Request:
        with transaction(self.engine) as session:
            return session.get(Request, request_id)

    def debits(self, request_id: int) -> list[int]:
        with transaction(self.engine) as session:
            return [e.delta for e in session.exec(select(Entry).where(
                Entry.request_id == request_id, Entry.kind == EntryKind.DEBIT))]

    def quote(self, request_id: int, credits_: int):
        with transaction(self.engine) as session:
            return svc.quote_request(session, self.desk, request_id=request_id,
                                     terms=svc.QuoteTerms(credits_,
                                                          self.desk.today() + timedelta(days=7)))

    def close(self):
        self.mailbox.close()


@pytest.fixture
def world(engine, clock, dovecot, smtp_server, imap_settings, smtp_settings):
    settings = settings_from_mapping({
        "mailbox": {"address": SUPPORT, "display_name": "Agency Support",
                    "imap": {**imap_settings.model_dump(), "start": "all"}},
        "smtp": smtp_settings.model_dump(),
        "staff": {"notify": ["staff@agency.example"]},
    })
    desk = Desk(settings, clock=clock)
    with transaction(engine) as session:
        acme = clients.add_client(session, desk, name="Acme", emails=["a@acme.example",
                                                                      "boss@acme.example"])
        credits.add_lot(session, desk, client=acme, kind=LotKind.PURCHASE, credits=5)
        beta = clients.add_client(session, desk, name="Beta", emails=["x@beta.example"],
                                  lang="ja")
        credits.add_lot(session, desk, client=beta, kind=LotKind.PURCHASE, credits=5)
    w = World(engine, desk, dovecot, smtp_server)
    yield w
    w.close()


def start_request(world: World, subject="Replace the banner", sender="a@acme.example") -> int:
    world.deliver(mail(sender=sender, subject=subject, body="Please replace the top banner."))
    world.poll()
    with transaction(world.engine) as session:
        return session.exec(select(Request.id).order_by(Request.id.desc())).first()


def quote_mail(world: World, request_id: int, address="a@acme.example"):
    world.quote(request_id, 2)
    world.poll()
    return [m for m in world.sent_to(address) if "X-Mailflow-Template" in m
            and m["X-Mailflow-Template"] == "client/quote"][-1]


def body_of(message) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


def test_request_becomes_ticket_with_acknowledgement(world):
    request_id = start_request(world)
    assert world.request(request_id).status == Status.RECEIVED
    (ack,) = world.sent_to("a@acme.example")
    assert f"[REQ-{request_id}]" in ack["Subject"]
    assert ack["Auto-Submitted"] == "auto-replied"
    assert "5 credits available" in body_of(ack)
    assert world.sent_to("staff@agency.example")  # staff are told
    assert [u for u, _ in world.dovecot.list_messages("support", "Processed")]
    assert world.dovecot.list_messages("support", "INBOX") == []


def test_reply_approve_above_quoted_quote_with_both_words_approves_once(world):
    request_id = start_request(world)
    quote = quote_mail(world, request_id)
    text = body_of(quote)
    assert "APPROVE" in text and "REJECT" in text
    answer = reply(sender="a@acme.example", original_subject=quote["Subject"],
                   original_body=text, original_id=quote["Message-ID"], answer="APPROVE")
    world.deliver(answer)
    world.poll()
    assert world.request(request_id).status == Status.APPROVED
    assert world.debits(request_id) == [-2]
    confirmation = world.sent_to("a@acme.example")[-1]
    assert confirmation["X-Mailflow-Template"] == "client/approved"
    assert confirmation["In-Reply-To"].strip("<>") in answer.decode()
    assert "3 credits available" in body_of(confirmation)
    # A second APPROVE (a new message) changes nothing and is told so, once a day:
    # a third gets no answer (no mail ping-pong).
    before = len(world.smtp.messages)
    for _ in range(2):
        world.deliver(reply(sender="a@acme.example", original_subject=quote["Subject"],
                            original_body=text, original_id=quote["Message-ID"],
                            answer="APPROVE"))
        world.poll()
    assert world.debits(request_id) == [-2]
    (note,) = world.smtp.messages[before:]
    assert note.message()["X-Mailflow-Template"] == "client/already_answered"
    assert "already approved" in body_of(note.message())


def test_reply_reject(world):
    request_id = start_request(world)
    quote = quote_mail(world, request_id)
    world.deliver(reply(sender="boss@acme.example", original_subject=quote["Subject"],
                        original_body=body_of(quote), original_id=quote["Message-ID"],
                        answer="Reject, sorry - too expensive."))
    world.poll()
    assert world.request(request_id).status == Status.REJECTED
    assert world.debits(request_id) == []


def test_approval_from_another_clients_address_changes_nothing(world):
    request_id = start_request(world)
    quote = quote_mail(world, request_id)
    world.deliver(reply(sender="x@beta.example", original_subject=quote["Subject"],
                        original_body=body_of(quote), original_id=quote["Message-ID"],
                        answer="APPROVE"))
    world.poll()
    assert world.request(request_id).status == Status.QUOTED
    assert world.debits(request_id) == []
    (answer,) = world.sent_to("x@beta.example")
    assert answer["X-Mailflow-Template"] == "client/not_authorised"
    assert quote["Subject"].split("]")[1].strip() not in body_of(answer)  # learns nothing


def test_approval_of_a_replaced_quote_changes_nothing(world):
    request_id = start_request(world)
    old = quote_mail(world, request_id)
    quote_mail(world, request_id)  # re-quote: the first one is void
    world.deliver(reply(sender="a@acme.example", original_subject=old["Subject"],
                        original_body="Credits: 2", original_id=old["Message-ID"],
                        answer="APPROVE"))
    world.poll()
    assert world.request(request_id).status == Status.QUOTED
    assert world.debits(request_id) == []
    answer = world.sent_to("a@acme.example")[-1]
    assert answer["X-Mailflow-Template"] == "client/not_authorised"


def test_auto_reply_gets_no_answer(world):
    request_id = start_request(world)
    quote = quote_mail(world, request_id)
    before = len(world.smtp.messages)
    world.deliver(mail(sender="a@acme.example", subject=f"Out of office: {quote['Subject']}",
                       body="I am away until Monday. APPROVE", in_reply_to=quote["Message-ID"],
                       headers={"Auto-Submitted": "auto-replied"}))
    world.poll()
    assert len(world.smtp.messages) == before
    assert world.request(request_id).status == Status.QUOTED
    with transaction(world.engine) as session:
        last = session.exec(select(Inbound).order_by(Inbound.id.desc())).first()
    assert (last.status, last.classification) == (InboundStatus.IGNORED, "automatic")


def test_iso_2022_jp_request_and_japanese_approval(world):
    world.deliver(japanese_request("x@beta.example", "バナーの差し替え",
                                   "トップページのバナーを差し替えてください。"))
    world.poll()
    with transaction(world.engine) as session:
        request = session.exec(select(Request).order_by(Request.id.desc())).first()
    assert request.subject == "バナーの差し替え"
    assert "トップページ" in request.text
    quote = quote_mail(world, request.id, address="x@beta.example")
    assert "承認" in body_of(quote)
    world.deliver(reply(sender="x@beta.example", original_subject=quote["Subject"],
                        original_body=body_of(quote), original_id=quote["Message-ID"],
                        answer="承認します。よろしくお願いします。", charset="iso-2022-jp"))
    world.poll()
    assert world.request(request.id).status == Status.APPROVED
    assert world.debits(request.id) == [-2]


def test_malformed_message_goes_to_failed_folder_and_next_is_processed(world, monkeypatch):
    import mailflow.services.inbound as inbound

    original = inbound.act

    def explode_on_poison(session, desk, decision, ctx):
        if "POISON" in ctx.msg.subject:
            raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "simulated broken part")
        return original(session, desk, decision, ctx)

    monkeypatch.setattr(inbound, "act", explode_on_poison)
    world.deliver(mail(sender="a@acme.example", subject="POISON", body="x"))
    world.deliver(mail(sender="a@acme.example", subject="A normal request", body="hello"))
    world.poll()
    failed = world.dovecot.list_messages("support", "Failed")
    assert len(failed) == 1 and b"POISON" in failed[0][1]
    with transaction(world.engine) as session:
        rows = session.exec(select(Inbound).order_by(Inbound.id)).all()
        assert [r.status for r in rows] == [InboundStatus.FAILED, InboundStatus.PROCESSED]
        assert "simulated broken part" in rows[0].reason and rows[0].raw
        assert session.exec(select(Request)).one().subject == "A normal request"
    staff = [m["X-Mailflow-Template"] for m in world.sent_to("staff@agency.example")]
    assert "staff/failed" in staff


def test_genuinely_broken_mime_is_kept_and_processed(world):
    broken = (b"From: a@acme.example\r\nTo: support@agency.example\r\nSubject: broken\r\n"
              b"Message-ID: <broken@x>\r\nContent-Type: multipart/mixed; boundary=\"nope\r\n\r\n"
              b"--nope\r\nContent-Type: text/plain; charset=unknown-8bit\r\n"
              b"Content-Transfer-Encoding: base64\r\n\r\n!!!not base64\xff\xfe\r\n")
    world.deliver(broken)
    world.deliver(mail(sender="a@acme.example", subject="after", body="still works"))
    report = world.poll()
    assert report.processed + report.failed == 2
    assert world.dovecot.list_messages("support", "INBOX") == []


def test_first_connection_answers_none_of_the_existing_mail(world):
    world.desk.settings = world.desk.settings.model_copy(update={
        "mailbox": world.desk.settings.mailbox.model_copy(update={
            "imap": world.desk.settings.mailbox.imap.model_copy(update={"start": "new"})})})
    world.deliver(mail(sender="a@acme.example", subject="old history", body="old"))
    world.poll()
    assert world.smtp.messages == []
    assert len(world.dovecot.list_messages("support", "INBOX")) == 1
    world.deliver(mail(sender="a@acme.example", subject="new mail", body="new"))
    world.poll()
    with transaction(world.engine) as session:
        assert [r.subject for r in session.exec(select(Request))] == ["new mail"]
    # History import: records only, nothing answered.
    before = len(world.smtp.messages)
    report = world.poll(since=world.desk.today() - timedelta(days=1), answers=False)
    assert report.processed == 1 and len(world.smtp.messages) == before
    with transaction(world.engine) as session:
        assert len(session.exec(select(Request)).all()) == 1
        assert session.exec(select(Inbound).where(Inbound.subject == "old history")).one() \
            .classification.startswith("history:")


def test_buy_by_mail_answers_with_the_invoice_pdf_once(world):
    """An order through IMAP and SMTP: the invoice mail carries the PDF; the same
    order delivered again (a new UID, the same Message-ID) makes nothing more."""
    order = mail(sender="a@acme.example", subject="Credits", body="BUY 3\n\nThanks")
    world.deliver(order)
    world.poll()
    world.deliver(order)
    world.poll()
    world.deliver(japanese_request("x@beta.example", "追加購入", "購入 2"))
    world.poll()

    (invoice_mail,) = [m for m in world.sent_to("a@acme.example")
                       if m["X-Mailflow-Template"] == "client/invoice"]
    assert "INV-2026-0001" in invoice_mail["Subject"]
    assert invoice_mail["In-Reply-To"] == email.message_from_bytes(order)["Message-ID"]
    (pdf,) = list(invoice_mail.iter_attachments())
    assert pdf.get_filename() == "INV-2026-0001.pdf"
    assert pdf.get_content().startswith(b"%PDF")
    assert "26,400 yen (incl. tax)" in body_of(invoice_mail)
    (ja_mail,) = [m for m in world.sent_to("x@beta.example")
                  if m["X-Mailflow-Template"] == "client/invoice"]
    assert "INV-2026-0002" in ja_mail["Subject"] and "17,600円（税込）" in body_of(ja_mail)
    assert len([m for m in world.sent_to("staff@agency.example")
                if m["X-Mailflow-Template"] == "staff/invoice_issued"]) == 2
    with transaction(world.engine) as session:
        assert len(session.exec(select(Invoice)).all()) == 2


def test_a_backlog_is_handled_in_arrival_order_across_batches_with_the_parse_worker(world):
    """Enough mail for the parse worker, in fetch batches (7) that are not a
    multiple of the commit group (10): the worker holds the next groups across
    batch boundaries; every message is handled once, in arrival order, and
    moved out of the inbox, and each of them is read by the worker as the main
    process would read it (a reply's APPROVE, an auto-reply)."""
    world.desk.settings = world.desk.settings.model_copy(update={
        "mailbox": world.desk.settings.mailbox.model_copy(update={
            "imap": world.desk.settings.mailbox.imap.model_copy(update={"batch_size": 7})})})
    count = 47
    for n in range(count):
        headers = {"Auto-Submitted": "auto-replied"} if n % 9 == 4 else None
        world.deliver(mail(sender="a@acme.example" if n % 2 else "x@beta.example",
                           subject=f"Job {n}", body=f"Please do job {n}.", headers=headers,
                           message_id=f"<job{n}@client.example>"))
    report = world.poll()
    assert report.processed == count and report.failed == 0 and report.duplicates == 0
    assert world.dovecot.list_messages("support", "INBOX") == []
    assert len(world.dovecot.list_messages("support", "Processed")) == count
    with transaction(world.engine) as session:
        rows = session.exec(select(Inbound).order_by(Inbound.id)).all()
        requests = session.exec(select(Request).order_by(Request.id)).all()
    assert [r.message_id for r in rows] == [f"job{n}@client.example" for n in range(count)]
    assert [r.classification for r in rows] == [
        "automatic" if n % 9 == 4 else "new_request" for n in range(count)]
    assert [r.subject for r in requests] == [f"Job {n}" for n in range(count) if n % 9 != 4]
