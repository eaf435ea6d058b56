"""Buying credits by mail (issue 12 point 1), through the one door every inbound
message takes (`intake.receive`), on SQLite and PostgreSQL: `BUY n` / 購入 from a
client address → an invoice with its PDF, staff told; bad counts → a refusal that
says why; unclear wording → a question; nothing twice, nothing from strangers."""

from __future__ import annotations

import email
import email.policy
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import select

from mailflow import jobs
from mailflow.config import settings_from_mapping
from mailflow.core.ledger import EntryKind, LotKind
from mailflow.core.states import Status
from mailflow.db import transaction
from mailflow.desk import Desk
from mailflow.intake import receive
from mailflow.models import (
    Entry,
    Inbound,
    Invoice,
    InvoiceSequence,
    InvoiceStatus,
    Outbox,
    OutboxStatus,
    Request,
)
from mailflow.services import billing, clients, credits
from mailflow.services import requests as svc
from tests.mails import japanese_request, mail, reply

SUPPORT = "support@agency.example"
STAFF = "staff@agency.example"
ACME = "hanako@acme.example"
ACME_2 = "taro@acme.example"
SAKURA = "suzuki@sakura.example"
AUTHSERV = "mx.agency.example"


def make_desk(clock, *, policy=None, billing_=None) -> Desk:
    return Desk(settings_from_mapping({
        "mailbox": {"address": SUPPORT, "display_name": "Agency Support"},
        "staff": {"notify": [STAFF]}, "policy": policy or {},
        "billing": {"max_credits_per_order": 100, **(billing_ or {})}}), clock=clock)


@pytest.fixture
def desk(clock) -> Desk:
    return make_desk(clock)


@pytest.fixture
def world(engine, desk):
    """Acme (English, two contacts) and Sakura (Japanese), no credits yet."""
    with transaction(engine) as session:
        acme = clients.add_client(session, desk, name="Acme", emails=[ACME, ACME_2], lang="en")
        sakura = clients.add_client(session, desk, name="Sakura Foods", emails=[SAKURA],
                                    lang="ja")
        return {"acme": acme.id, "sakura": sakura.id}


def rows(engine, table, *where):
    with transaction(engine) as session:
        key = next(iter(table.__table__.primary_key.columns))
        return list(session.exec(select(table).where(*where).order_by(key)))


def mails(engine, template: str | None = None) -> list[Outbox]:
    return rows(engine, Outbox, *([Outbox.template == template] if template else []))


def inbound(engine, message_id: str) -> Inbound:
    return rows(engine, Inbound, Inbound.message_id == message_id.strip("<>"))[0]


def message_id_of(raw: bytes) -> str:
    return email.message_from_bytes(raw)["Message-ID"].strip("<>")


def attachments(engine, row: Outbox) -> list[tuple[str, str, bytes]]:
    with transaction(engine) as session:
        found = session.get(Outbox, row.id)
        return [(a.filename, a.content_type, a.data) for a in found.attachments]


# --- an order becomes an invoice --------------------------------------------------------


def test_buy_in_new_mail_issues_an_invoice_with_pdf_and_tells_staff(engine, desk, world):
    raw = mail(sender=ACME, subject="Credits", body="Hi,\n\nBUY 5\n\nThanks,\nHanako")
    outcome = receive(engine, desk, raw)

    assert (outcome.verdict, outcome.request_id) == ("buy", None)
    [invoice] = rows(engine, Invoice)
    assert (invoice.number, invoice.credits, invoice.total_yen, invoice.tax_yen) == (
        "INV-2026-0001", 5, 44000, 4000)
    assert invoice.status == InvoiceStatus.ISSUED
    assert invoice.source_message_id == message_id_of(raw)
    assert (invoice.client_id, invoice.requester) == (world["acme"], ACME)
    assert "INV-2026-0001" in outcome.reason
    [to_client] = mails(engine, "client/invoice")
    assert to_client.to_addrs == ACME and to_client.in_reply_to == message_id_of(raw)
    assert "INV-2026-0001" in to_client.subject
    assert "44,000 yen (incl. tax)" in to_client.body_text
    [(filename, content_type, data)] = attachments(engine, to_client)
    assert (filename, content_type) == ("INV-2026-0001.pdf", "application/pdf")
    assert data.startswith(b"%PDF")
    [notice] = mails(engine, "staff/invoice_issued")
    assert notice.to_addrs == STAFF and "INV-2026-0001" in notice.body_text
    assert rows(engine, Request) == []  # an order is not a request


@pytest.mark.parametrize("body", ["5クレジット購入します。", "購入 5", "お世話になっております。\n"
                                  "追加で5クレジット購入したいです。\nよろしくお願いいたします。"],
                         ids=["n-kurejitto-kounyu", "kounyu-n", "with-courtesy"])
def test_japanese_order_in_iso_2022_jp_gets_a_japanese_invoice(engine, desk, world, body):
    outcome = receive(engine, desk, japanese_request(SAKURA, "クレジット購入", body))

    assert outcome.verdict == "buy"
    [invoice] = rows(engine, Invoice)
    assert (invoice.client_id, invoice.credits, invoice.total_yen) == (world["sakura"], 5, 44000)
    [to_client] = mails(engine, "client/invoice")
    assert "請求書" in to_client.subject and "44,000円（税込）" in to_client.body_text


def test_an_order_that_says_more_shows_staff_the_rest(engine, desk, world):
    receive(engine, desk, mail(sender=ACME, subject="Credits", body=(
        "BUY 5\n\nAlso, could you update the footer of the top page?")))
    assert [i.credits for i in rows(engine, Invoice)] == [5]
    [notice] = mails(engine, "staff/invoice_issued")
    assert "The order mail also said" in notice.body_text
    assert "could you update the footer of the top page?" in notice.body_text


def test_an_order_alone_shows_staff_no_extra_text(engine, desk, world):
    receive(engine, desk, mail(sender=ACME, subject="Credits", body="Hi,\n\nBUY 5\n\nThanks"))
    [notice] = mails(engine, "staff/invoice_issued")
    assert "also said" not in notice.body_text


def test_order_in_the_subject_alone_counts(engine, desk, world):
    receive(engine, desk, mail(sender=ACME, subject="BUY 3", body=""))
    assert [i.credits for i in rows(engine, Invoice)] == [3]


def test_any_contact_of_the_client_may_order(engine, desk, world):
    receive(engine, desk, mail(sender=ACME_2, subject="order", body="BUY 2"))
    [invoice] = rows(engine, Invoice)
    assert (invoice.client_id, invoice.requester) == (world["acme"], ACME_2)
    assert [m.to_addrs for m in mails(engine, "client/invoice")] == [ACME_2]


# --- exactly once ---------------------------------------------------------------------------


def test_the_same_order_delivered_twice_makes_one_invoice(engine, desk, world):
    raw = mail(sender=ACME, subject="order", body="BUY 5")
    first = receive(engine, desk, raw)
    again = receive(engine, desk, raw)

    assert not first.duplicate and again.duplicate
    assert len(rows(engine, Invoice)) == 1
    assert len(mails(engine, "client/invoice")) == 1
    assert [s.last for s in rows(engine, InvoiceSequence)] == [1]  # no number used twice


def test_order_by_mail_twice_for_one_message_returns_its_invoice(engine, desk, world):
    """The service's own guard, below the inbound marker: one invoice per Message-ID."""
    for _ in range(2):
        with transaction(engine) as session:
            client = clients.find_client(session, str(world["acme"]))
            invoice, _note = billing.order_by_mail(session, desk, client=client, count=4,
                                                   count_text="4", requester=ACME,
                                                   message_id="once@acme.example")
    assert invoice.number == "INV-2026-0001"
    assert len(rows(engine, Invoice)) == 1 and len(mails(engine, "client/invoice")) == 1


def test_two_contacts_ordering_get_two_invoices_with_consecutive_numbers(engine, desk, world):
    receive(engine, desk, mail(sender=ACME, subject="order", body="BUY 1"))
    receive(engine, desk, mail(sender=ACME_2, subject="order", body="BUY 2"))
    assert [(i.number, i.credits) for i in rows(engine, Invoice)] == [
        ("INV-2026-0001", 1), ("INV-2026-0002", 2)]


# --- refused orders ---------------------------------------------------------------------------

REFUSALS = [
    # (id, sender, body, problem, words the answer must contain)
    ("zero", ACME, "BUY 0", "not_positive", "Please order 1 credit or more (you wrote 0)"),
    ("negative", ACME, "BUY -1", "not_positive", "you wrote -1"),
    ("fraction", ACME, "BUY 1.5", "not_whole", "whole numbers (you wrote 1.5)"),
    ("over-limit", ACME, "BUY 101", "over_limit", "at most 100 credits"),
    ("no-count", ACME, "I'd like to buy more credits.", "not_a_number",
     "could not read how many credits"),
    ("ja-zero", SAKURA, "購入 0", "not_positive", "1クレジット以上でご指定ください（ご指定：0）"),
    ("ja-fraction", SAKURA, "1.5クレジット購入します。", "not_whole", "ご指定：1.5"),
    ("ja-over-limit", SAKURA, "500クレジット購入します。", "over_limit", "100クレジットまで"),
]


@pytest.mark.parametrize(("sender", "body", "problem", "words"), [c[1:] for c in REFUSALS],
                         ids=[c[0] for c in REFUSALS])
def test_a_bad_count_gets_a_clear_refusal_and_no_invoice(engine, desk, world, sender, body,
                                                         problem, words):
    raw = mail(sender=sender, subject="credits", body=body)
    outcome = receive(engine, desk, raw)

    assert outcome.verdict == "buy" and outcome.reason.startswith("order refused")
    assert rows(engine, Invoice) == [] and rows(engine, InvoiceSequence) == []
    [answer] = mails(engine, "client/order_refused")
    assert answer.to_addrs == sender and answer.in_reply_to == message_id_of(raw)
    assert words in answer.body_text
    assert "BUY 5" in answer.body_text
    assert mails(engine, "staff/invoice_issued") == []
    assert rows(engine, Request) == []


# --- unclear wording ---------------------------------------------------------------------------

UNCLEAR = [
    ("question", ACME, "Can we buy 5 credits?", "BUY 5"),
    ("conditional", ACME, "If needed, we'll buy 5 credits.", "BUY 5"),
    ("two-counts", ACME, "BUY 3\nBUY 5", "BUY 5"),
    ("ja-maybe", SAKURA, "5クレジット購入するかもしれません。", "BUY 5"),
    ("ja-question", SAKURA, "購入できますか？", "BUY 5"),
]


@pytest.mark.parametrize(("sender", "body", "line"), [c[1:] for c in UNCLEAR],
                         ids=[c[0] for c in UNCLEAR])
def test_unclear_purchase_wording_is_asked_about_and_creates_nothing(engine, desk, world,
                                                                     sender, body, line):
    outcome = receive(engine, desk, mail(sender=sender, subject="credits", body=body))

    assert outcome.verdict == "ask_buy"
    assert rows(engine, Invoice) == [] and rows(engine, Request) == []
    [answer] = mails(engine, "client/order_unclear")
    assert answer.to_addrs == sender and f"\n    {line}\n" in answer.body_text


def test_a_request_that_also_asks_about_buying_stays_a_request(engine, desk, world):
    outcome = receive(engine, desk, mail(
        sender=ACME, subject="Banner", body="Please update the banner on the top page.\n"
        "Can we buy 5 credits?"))
    assert outcome.verdict == "new_request" and rows(engine, Invoice) == []


# --- a BUY in a reply to a quote ------------------------------------------------------------


@pytest.fixture
def short_quote(engine, desk, world):
    """Acme has 1 credit; REQ is quoted 3: the quote says what is missing."""
    with transaction(engine) as session:
        acme = clients.find_client(session, str(world["acme"]))
        credits.add_lot(session, desk, client=acme, kind=LotKind.GRANT, credits=1)
        request = svc.create_request(session, desk, client=acme, requester=ACME,
                                     subject="New landing page", text="Please.", actor=ACME)
        quote = svc.quote_request(session, desk, request_id=request.id,
                                  terms=svc.QuoteTerms(3, desk.today() + timedelta(days=10)))
        return request.id, quote.message_id


def test_quote_short_of_credits_states_the_tax_inclusive_price_and_the_buy_line(
        engine, short_quote):
    [quote_mail] = mails(engine, "client/quote")
    assert "buy the missing 2 credits for 17,600 yen incl. tax (16,000 yen plus tax)" \
        in quote_mail.body_text
    assert "\n      BUY 2\n" in quote_mail.body_text


def test_buy_in_a_reply_to_a_quote_orders_and_approves_nothing(engine, desk, short_quote):
    request_id, quote_id = short_quote
    raw = reply(sender=ACME, original_subject=f"[REQ-{request_id}] Quote",
                original_body="Reply APPROVE or REJECT.\n  BUY 2", original_id=quote_id,
                answer="BUY 2")
    outcome = receive(engine, desk, raw)

    assert (outcome.verdict, outcome.request_id) == ("buy", request_id)
    assert [i.credits for i in rows(engine, Invoice)] == [2]
    [request] = rows(engine, Request)
    assert Status(request.status) is Status.QUOTED  # the quote is still open
    assert rows(engine, Entry, Entry.kind == EntryKind.DEBIT) == []
    assert mails(engine, "client/approved") == [] and mails(engine, "staff/comment") == []


def test_shortfall_answer_then_buy_then_payment_then_approve(engine, desk, short_quote):
    """The whole purchase by mail: APPROVE short of credits → the answer says
    what to send → BUY 2 → invoice → staff record the payment → APPROVE works."""
    request_id, quote_id = short_quote
    subject = f"[REQ-{request_id}] Quote"
    receive(engine, desk, reply(sender=ACME, original_subject=subject, original_body="...",
                                original_id=quote_id, answer="APPROVE"))
    [short] = mails(engine, "client/insufficient_credits")
    assert "17,600 yen incl. tax" in short.body_text and "\n      BUY 2\n" in short.body_text

    receive(engine, desk, reply(sender=ACME, original_subject=subject,
                                original_body=short.body_text, original_id=short.message_id,
                                answer="BUY 2"))
    [invoice] = rows(engine, Invoice)
    assert (invoice.credits, invoice.total_yen) == (2, 17600)
    with transaction(engine) as session:
        billing.pay_invoice(session, desk, number=invoice.number)

    # APPROVE above the quoted shortfall answer (its "BUY 2" line is quoted history).
    outcome = receive(engine, desk, reply(sender=ACME, original_subject=subject,
                                          original_body=short.body_text,
                                          original_id=short.message_id, answer="APPROVE"))
    assert outcome.verdict == "approve"
    assert Status(rows(engine, Request)[0].status) is Status.APPROVED


def test_japanese_shortfall_states_the_tax_inclusive_price_and_the_buy_line(engine, desk,
                                                                           world):
    with transaction(engine) as session:
        sakura = clients.find_client(session, str(world["sakura"]))
        request = svc.create_request(session, desk, client=sakura, requester=SAKURA,
                                     subject="バナー差し替え", text="お願いします。",
                                     actor=SAKURA)
        svc.quote_request(session, desk, request_id=request.id,
                          terms=svc.QuoteTerms(3, desk.today() + timedelta(days=10)))
    [quote_mail] = mails(engine, "client/quote")
    assert "不足分の3クレジットを26,400円（税込、税抜24,000円）で追加購入いただく" \
        in quote_mail.body_text
    assert "\n      BUY 3\n" in quote_mail.body_text and "「3クレジット購入」" in quote_mail.body_text


# --- who may order ---------------------------------------------------------------------------


def test_forged_order_is_held_and_issues_nothing(engine, clock, world):
    desk = make_desk(clock, policy={"trusted_authserv_id": AUTHSERV})
    raw = (f"Authentication-Results: {AUTHSERV}; spf=fail smtp.mailfrom=acme.example;"
           " dmarc=fail header.from=acme.example\r\n").encode() + mail(
        sender=ACME, subject="order", body="BUY 5")
    outcome = receive(engine, desk, raw)

    assert outcome.verdict == "forged"
    assert rows(engine, Invoice) == [] and mails(engine, "client/invoice") == []


def test_order_from_a_stranger_is_held(engine, desk, world):
    outcome = receive(engine, desk, mail(sender="someone@elsewhere.example", subject="order",
                                         body="BUY 5"))
    assert outcome.verdict == "unknown_sender" and rows(engine, Invoice) == []


def test_order_from_a_deactivated_client_is_held(engine, desk, world):
    with transaction(engine) as session:
        clients.edit_client(session, clients.find_client(session, str(world["acme"])),
                            active=False)
    outcome = receive(engine, desk, mail(sender=ACME, subject="order", body="BUY 5"))
    assert outcome.verdict == "inactive_client" and rows(engine, Invoice) == []


# --- the loop cap never holds an order's answer back -----------------------------------------


def test_order_answers_are_never_suppressed_by_the_loop_cap(engine, clock, world):
    desk = make_desk(clock, policy={"autoreply_limit_per_hour": 1})
    receive(engine, desk, mail(sender=ACME, subject="balance", body="BALANCE"))  # uses the cap
    for body in ("BUY 1", "BUY 0", "BUY 2"):
        receive(engine, desk, mail(sender=ACME, subject="order", body=body))

    answers = mails(engine, "client/invoice") + mails(engine, "client/order_refused")
    assert len(answers) == 3
    assert {OutboxStatus(m.status) for m in answers} == {OutboxStatus.PENDING}
    # ...while an ordinary automatic answer over the cap still is.
    receive(engine, desk, mail(sender=ACME, subject="balance", body="BALANCE"))
    assert OutboxStatus(mails(engine, "client/balance")[-1].status) is OutboxStatus.SUPPRESSED


# --- the digest lists unpaid invoices --------------------------------------------------------


def test_digest_lists_unpaid_invoices_with_number_amount_and_date(engine, desk, clock, world):
    receive(engine, desk, mail(sender=ACME, subject="order", body="BUY 5"))
    receive(engine, desk, mail(sender=ACME, subject="order", body="BUY 1"))
    receive(engine, desk, japanese_request(SAKURA, "購入", "2クレジット購入します。"))
    with transaction(engine) as session:
        billing.pay_invoice(session, desk, number="INV-2026-0002")
    clock.set(datetime(2026, 12, 1, 0, 30, tzinfo=UTC))  # 09:30 in Tokyo, after the digest

    jobs.run_digest(engine, desk)
    digests = {m.to_addrs: m.body_text for m in mails(engine, "client/digest")}
    acme = digests[f"{ACME},{ACME_2}"] if f"{ACME},{ACME_2}" in digests else digests[ACME]
    assert "INV-2026-0001  44,000 yen incl. tax, 5 credits, issued Thu 26 Nov 2026" in acme
    assert "INV-2026-0002" not in acme  # paid
    assert "INV-2026-0003：17,600円（税込）、2クレジット、2026年11月26日（木）発行" in digests[SAKURA]


def test_one_order_received_by_two_processes_at_once_makes_one_invoice_and_no_gap(
        engine, desk, world):
    """IMAP and the LMTP listener (or two pollers) may hand in the same message at
    the same moment: one wins, the other recognises it; the loser's invoice
    number is given back, so the sequence has no gap."""
    raw = mail(sender=ACME, subject="order", body="BUY 2")
    barrier = threading.Barrier(2)
    outcomes = []

    def run():
        barrier.wait()
        outcomes.append(receive(engine, desk, raw))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(o.duplicate for o in outcomes) == [False, True]
    assert not any(o.failed for o in outcomes)
    assert [i.number for i in rows(engine, Invoice)] == ["INV-2026-0001"]
    assert [s.last for s in rows(engine, InvoiceSequence)] == [1]
    assert len(mails(engine, "client/invoice")) == 1
    receive(engine, desk, mail(sender=ACME_2, subject="order", body="BUY 1"))
    assert [i.number for i in rows(engine, Invoice)] == ["INV-2026-0001", "INV-2026-0002"]
