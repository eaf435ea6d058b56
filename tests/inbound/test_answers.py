"""An answer for every person, no loops with machines (issue 8 points 3–6,
issue 9 point 3), through handle_message on SQLite and PostgreSQL.

- the loop guard caps answers only to correspondents that look automatic;
  people in an ordinary conversation and decision confirmations are never
  suppressed; what is suppressed is listed and told to staff once a day;
- vacation replies without automatic headers are recorded with their request;
- list and group mail on behalf of a client is its request or comment (answered
  at the client's own address), else held; a postmaster@ person is a person;
- duplicates by Message-ID and content; leading blank lines; spam header;
- comments get one receipt a day per request, stored trimmed, raw kept;
- staff notices: Auto-Submitted, a cap per kind with one summary, and our own
  staff notification address never starts another notice.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime

import pytest
from sqlmodel import select

from mailflow.config import settings_from_mapping
from mailflow.core.ledger import LotKind
from mailflow.core.states import Status
from mailflow.db import transaction
from mailflow.desk import Desk
from mailflow.models import Inbound, InboundStatus, Outbox, OutboxStatus, Request
from mailflow.sender import build_email
from mailflow.services import clients, credits
from mailflow.services import requests as svc
from mailflow.services.inbound import handle_message, stored_text_digest
from mailflow.services.outbox import list_outbox

CLIENT = "tanaka@acme.example"
STAFF = "staff@agency.example"
SUPPORT = "support@agency.example"


def make_mail(*, sender: str = CLIENT, subject: str = "Banner", body: str = "Please help.",
              date: datetime | None = None, message_id: str | None = None,
              in_reply_to: str | None = None, headers: dict[str, str] | None = None) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = SUPPORT
    message["Subject"] = subject
    message["Date"] = format_datetime(date or datetime(2026, 11, 26, 1, 0, tzinfo=UTC))
    message["Message-ID"] = message_id or f"<{uuid.uuid4().hex}@acme.example>"
    if in_reply_to:
        message["In-Reply-To"] = f"<{in_reply_to.strip('<>')}>"
        message["References"] = f"<{in_reply_to.strip('<>')}>"
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(body)
    return bytes(message)


@pytest.fixture
def make_desk(engine, clock):
    def make(**policy) -> Desk:
        settings = settings_from_mapping({"mailbox": {"address": SUPPORT},
                                          "staff": {"notify": [STAFF]}, "policy": policy})
        desk = Desk(settings, clock=clock)
        with transaction(engine) as session:
            client = clients.add_client(session, desk, name="Acme", emails=[CLIENT])
            credits.add_lot(session, desk, client=client, kind=LotKind.PURCHASE, credits=50)
        return desk
    return make


def receive(engine, desk, raw: bytes):
    with transaction(engine) as session:
        return handle_message(session, desk, raw)


def outbox(engine, **where) -> list[Outbox]:
    with transaction(engine) as session:
        query = select(Outbox).order_by(Outbox.id)
        for name, value in where.items():
            query = query.where(getattr(Outbox, name) == value)
        return list(session.exec(query))


def statuses_to(engine, address: str) -> list[tuple[str, str]]:
    return [(row.template, row.status) for row in outbox(engine, to_addrs=address)]


def quote(engine, desk, request_id: int, credits_: int = 2):
    with transaction(engine) as session:
        q = svc.quote_request(session, desk, request_id=request_id, terms=svc.QuoteTerms(
            credits_, desk.today() + timedelta(days=10)))
        return q.message_id, q.token


# --- the loop guard never silences a person ------------------------------------------------

def test_person_in_an_ordinary_conversation_gets_every_answer(engine, make_desk, clock):
    """Eight different requests and comments within an hour (limit 5): all answered."""
    desk = make_desk(autoreply_limit_per_hour=5)
    for n in range(8):
        receive(engine, desk, make_mail(subject=f"Job {n}", body=f"Please do job number {n}."))
        clock.advance(minutes=6)
    answers = statuses_to(engine, CLIENT)
    assert answers == [("client/ack", OutboxStatus.PENDING)] * 8


def test_approval_confirmation_after_five_exchanges_is_sent(engine, make_desk, clock):
    desk = make_desk(autoreply_limit_per_hour=5)
    first = receive(engine, desk, make_mail(subject="Banner", body="Please replace it."))
    for n in range(5):  # five more exchanges, some of them identical "ping"s
        receive(engine, desk, make_mail(subject=f"Other {n}", body="Same words again."))
        clock.advance(minutes=2)
    quote_id, _ = quote(engine, desk, first.request_id)
    outcome = receive(engine, desk, make_mail(subject="Re: Banner", body="APPROVE",
                                              in_reply_to=quote_id))
    assert outcome.verdict == "approve"
    approved = outbox(engine, template="client/approved")
    assert [row.status for row in approved] == [OutboxStatus.PENDING]


# Machines: each row is one correspondent writing seven times within an hour.
MACHINES = [
    ("same-text-again", lambda n: make_mail(subject=f"Notice {n}", body="I am away.")),
    ("vacation-phrase-in-subject", lambda n: make_mail(
        subject=f"Re: job {n} - out of office reply follows", body=f"Text {n}")),
    ("list-mail", lambda n: make_mail(subject=f"[web:{n}] update", body=f"Digest {n}",
                                      headers={"Precedence": "list"})),
]


@pytest.mark.parametrize("build", [m[1] for m in MACHINES], ids=[m[0] for m in MACHINES])
def test_correspondent_that_looks_automatic_is_capped(engine, make_desk, clock, build):
    desk = make_desk(autoreply_limit_per_hour=5)
    for n in range(7):
        receive(engine, desk, build(n))
        clock.advance(minutes=1)
    answers = outbox(engine, to_addrs=CLIENT)
    assert [row.status for row in answers] == [OutboxStatus.PENDING] * 5 + \
        [OutboxStatus.SUPPRESSED] * 2
    assert "loop guard" in answers[-1].last_error
    # listed by plain `outbox` (not only --all), and staff told once (not twice)
    with transaction(engine) as session:
        listed = [row.id for row in list_outbox(session, include_sent=False)]
    assert {answers[-1].id, answers[-2].id} <= set(listed)
    told = outbox(engine, template="staff/answers_suppressed")
    assert len(told) == 1 and CLIENT in told[0].body_text
    clock.advance(days=1, minutes=1)  # a day later, staff are told again
    for n in range(7, 14):
        receive(engine, desk, build(n))
    assert len(outbox(engine, template="staff/answers_suppressed")) == 2


def test_answer_written_within_seconds_of_ours_looks_automatic(engine, make_desk, clock):
    desk = make_desk(autoreply_limit_per_hour=2)
    for n in range(4):
        receive(engine, desk, make_mail(subject=f"Job {n}", body=f"Request {n}"))
        with transaction(engine) as session:  # our answer went out now
            for row in session.exec(select(Outbox).where(Outbox.sent_at.is_(None))):
                row.sent_at, row.status = clock(), OutboxStatus.SENT
                session.add(row)
        clock.advance(seconds=5)
        receive(engine, desk, make_mail(subject=f"Re: Job {n}", body=f"Auto text {n} {n}",
                                        date=clock()))  # no person answers in 5 seconds
        clock.advance(minutes=3)
    assert OutboxStatus.SUPPRESSED in [row.status for row in outbox(engine, to_addrs=CLIENT)]


def test_suppressed_answer_is_shown_with_its_request(engine, make_desk, clock):
    desk = make_desk(autoreply_limit_per_hour=1)
    for _ in range(3):
        outcome = receive(engine, desk, make_mail(subject="Same", body="Same text"))
    with transaction(engine) as session:
        thread = svc.request_thread(session, outcome.request_id)
    assert [m["status"] for m in thread if m["direction"] == "out"
            and m["kind"] == "client/ack"] == [OutboxStatus.SUPPRESSED]


# --- vacation replies, lists, postmaster ------------------------------------------------

VACATIONS = ["Out of Office: Re: [REQ-1] Banner", "Automatic reply: [REQ-1] Banner",
             "自動応答: Re: [REQ-1] バナー", "【自動返信】Re: [REQ-1] バナー", "不在のお知らせ",
             "[不在] Re: [REQ-1] バナー"]


@pytest.mark.parametrize("subject", VACATIONS)
def test_vacation_reply_without_headers_is_recorded_with_its_request(engine, make_desk,
                                                                      subject):
    desk = make_desk()
    first = receive(engine, desk, make_mail(subject="Banner"))
    ack = outbox(engine, template="client/ack")[0]
    before = len(outbox(engine))
    outcome = receive(engine, desk, make_mail(subject=subject, in_reply_to=ack.message_id,
                                              body="I am out of the office until Monday."))
    assert (outcome.status, outcome.verdict) == (InboundStatus.IGNORED, "automatic")
    assert outcome.request_id == first.request_id  # `show` lists it
    assert len(outbox(engine)) == before  # no answer, no new request
    with transaction(engine) as session:
        assert len(session.exec(select(Request)).all()) == 1


def test_person_writing_about_absence_is_answered(engine, make_desk):
    desk = make_desk()
    outcome = receive(engine, desk, make_mail(subject="Out of office next week?",
                                              body="Can you update our hours page?"))
    assert outcome.verdict == "new_request"


GROUP = {"X-Original-From": f"Tanaka <{CLIENT}>", "X-Google-Group-Id": "4711",
         "List-Id": "<web.acme.example>", "Precedence": "list"}


def test_group_mail_on_behalf_of_a_client_is_a_request_answered_to_the_client(engine,
                                                                              make_desk):
    desk = make_desk()
    outcome = receive(engine, desk, make_mail(sender="'Tanaka' via Web <web@googlegroups.com>",
                                              subject="New page", headers=GROUP))
    assert outcome.verdict == "new_request"
    assert [r.to_addrs for r in outbox(engine, template="client/ack")] == [CLIENT]
    assert outbox(engine, to_addrs="web@googlegroups.com") == []
    assert len(outbox(engine, template="staff/new_request")) == 1


def test_list_mail_from_the_clients_own_address_is_a_request(engine, make_desk):
    desk = make_desk()
    outcome = receive(engine, desk, make_mail(subject="[acme-web:12] トップページ",
                                              headers={"List-Id": "<web.acme.example>",
                                                       "Precedence": "bulk"}))
    assert outcome.verdict == "new_request"
    assert [r.to_addrs for r in outbox(engine, template="client/ack")] == [CLIENT]


def test_relayed_approve_is_a_comment_not_a_decision(engine, make_desk):
    desk = make_desk()
    first = receive(engine, desk, make_mail(subject="Banner"))
    quote_id, _ = quote(engine, desk, first.request_id)
    outcome = receive(engine, desk, make_mail(sender="web@googlegroups.com", body="APPROVE",
                                              subject="Re: Banner", in_reply_to=quote_id,
                                              headers=GROUP))
    assert outcome.verdict == "comment" and "relayed" in outcome.reason
    with transaction(engine) as session:
        assert session.get(Request, first.request_id).status == Status.QUOTED
    receipt = outbox(engine, template="client/comment_received")[-1]
    assert receipt.to_addrs == CLIENT and "mailing list" in receipt.body_text


def test_list_mail_of_no_client_is_held_with_a_notice(engine, make_desk):
    desk = make_desk()
    outcome = receive(engine, desk, make_mail(sender="news@vendor.example", subject="News",
                                              headers={"List-Id": "<news.vendor.example>"}))
    assert (outcome.status, outcome.verdict) == (InboundStatus.HELD, "list_held")
    assert outbox(engine, to_addrs="news@vendor.example") == []
    assert "list" in outbox(engine, template="staff/held")[0].subject.lower()


@pytest.mark.parametrize("subject", ["Question about our mail server", "Re: 配信エラーについて",
                                     "Returned mail from our printer?"])
def test_postmaster_writing_an_ordinary_mail_is_a_person(engine, make_desk, subject):
    desk = make_desk()
    with transaction(engine) as session:
        clients.add_client(session, desk, name="Beta", emails=["postmaster@beta.example"])
    outcome = receive(engine, desk, make_mail(sender="postmaster@beta.example",
                                              subject=subject, body="Could you check SPF?"))
    assert outcome.verdict == "new_request"


# --- duplicates, blank lines, spam ---------------------------------------------------------

def test_the_same_message_again_is_skipped(engine, make_desk, clock):
    desk = make_desk()
    raw = make_mail(message_id="<same@acme.example>")
    first = receive(engine, desk, raw)
    clock.advance(minutes=1)
    again = receive(engine, desk, b"Received: from relay2\r\n" + raw)  # another route
    assert again.duplicate and again.inbound_id == first.inbound_id
    assert len(outbox(engine, template="client/ack")) == 1


def test_a_different_message_reusing_a_message_id_is_processed_as_itself(engine, make_desk):
    desk = make_desk()
    first = receive(engine, desk, make_mail(message_id="<form@site.example>",
                                            subject="Form: banner", body="Banner please."))
    other = receive(engine, desk, make_mail(message_id="<form@site.example>",
                                            subject="Form: footer", body="Footer please."))
    assert not other.duplicate and other.request_id != first.request_id
    assert "already used" in other.reason
    assert len(outbox(engine, template="client/ack")) == 2
    again = receive(engine, desk, make_mail(message_id="<form@site.example>",
                                            subject="Form: footer", body="Footer please."))
    assert again.duplicate and again.inbound_id == other.inbound_id


def test_a_lists_copy_of_a_message_we_had_directly_is_the_same_message(engine, make_desk):
    """The client wrote to us and to their group: the group's copy (subject tagged,
    footer added, same Message-ID) is no second request."""
    desk = make_desk()
    direct = receive(engine, desk, make_mail(message_id="<cc@acme.example>", subject="Banner",
                                             body="Please replace it."))
    copy = receive(engine, desk, make_mail(
        message_id="<cc@acme.example>", subject="[web] Banner", headers=GROUP,
        sender="'Tanaka' via Web <web@googlegroups.com>",
        body="Please replace it.\n\n--\nYou received this message because you are "
             "subscribed to the Google Groups \"Web\" group."))
    assert copy.duplicate and copy.inbound_id == direct.inbound_id
    assert len(outbox(engine, template="client/ack")) == 1


@pytest.mark.parametrize("prefix", [b"\r\n", b"\n\n", b"\r\n\r\n\r\n", b" \r\n\t\r\n"])
def test_raw_bytes_that_begin_with_blank_lines_are_read(engine, make_desk, prefix):
    desk = make_desk()
    outcome = receive(engine, desk, prefix + make_mail(subject="Banner", body="Please."))
    assert outcome.verdict == "new_request"
    with transaction(engine) as session:
        assert session.get(Request, outcome.request_id).subject == "Banner"


@pytest.mark.parametrize(("header", "value", "held"), [
    ("X-Spam-Flag", "YES", True), ("X-Spam-Flag", "yes", True), ("X-Spam-Flag", "NO", False),
])
def test_spam_header_holds_and_never_answers(engine, make_desk, header, value, held):
    desk = make_desk(spam_header="X-Spam-Flag: YES")
    outcome = receive(engine, desk, make_mail(headers={header: value}))
    assert (outcome.verdict == "spam") is held
    assert bool(outbox(engine, to_addrs=CLIENT)) is not held


# --- comments -------------------------------------------------------------------------

def test_comment_gets_one_receipt_a_day_with_the_quote(engine, make_desk, clock):
    desk = make_desk()
    first = receive(engine, desk, make_mail(subject="Banner"))
    quote_id, token = quote(engine, desk, first.request_id)
    body = "Could you also use the blue logo?\n\nOn Thu, Support wrote:\n> APPROVE or REJECT\n"
    for _ in range(2):
        outcome = receive(engine, desk, make_mail(subject="Re: Banner", body=body,
                                                  in_reply_to=quote_id))
        assert outcome.verdict == "comment"
        clock.advance(hours=2)
    receipts = outbox(engine, template="client/comment_received")
    assert len(receipts) == 1 and token in receipts[0].body_text
    assert "APPROVE" in receipts[0].body_text
    assert len(outbox(engine, template="staff/comment")) == 2
    with transaction(engine) as session:
        stored = session.get(Inbound, outcome.inbound_id)
        assert stored.text.strip() == "Could you also use the blue logo?"
        assert b"On Thu, Support wrote:" in stored.raw
    clock.advance(days=1)
    receive(engine, desk, make_mail(subject="Re: Banner", body="And the footer.",
                                    in_reply_to=quote_id))
    assert len(outbox(engine, template="client/comment_received")) == 2


# --- staff notices (issue 9.3) ------------------------------------------------------------

def test_staff_notices_are_auto_generated(engine, make_desk):
    desk = make_desk()
    receive(engine, desk, make_mail(subject="Banner"))
    notice = outbox(engine, template="staff/new_request")[0]
    ack = outbox(engine, template="client/ack")[0]
    assert build_email(desk, notice)["Auto-Submitted"] == "auto-generated"
    assert build_email(desk, ack)["Auto-Submitted"] == "auto-replied"


def test_staff_notices_are_capped_per_kind_with_one_summary(engine, make_desk, clock):
    desk = make_desk(staff_notice_limit_per_hour=5)
    for n in range(12):
        receive(engine, desk, make_mail(sender=f"stranger{n}@else.example", subject=f"Hi {n}"))
    held = outbox(engine, template="staff/held")
    assert [r.status for r in held] == [OutboxStatus.PENDING] * 5 + [OutboxStatus.SUPPRESSED] * 7
    assert len(outbox(engine, template="staff/notices_held")) == 1
    receive(engine, desk, make_mail(subject="A client's request"))  # another kind: sent
    assert outbox(engine, template="staff/new_request")[0].status == OutboxStatus.PENDING
    clock.advance(hours=1, minutes=1)
    receive(engine, desk, make_mail(sender="late@else.example", subject="Later"))
    assert outbox(engine, template="staff/held")[-1].status == OutboxStatus.PENDING


def test_staff_responder_answering_our_notices_is_never_notified_again(engine, make_desk):
    desk = make_desk()
    receive(engine, desk, make_mail(sender="stranger@else.example", subject="Hi"))
    for round_ in range(8):  # the staff mailbox's responder answers every notice
        notice = outbox(engine, to_addrs=STAFF)[-1]
        receive(engine, desk, make_mail(sender=STAFF, subject=f"Re: {notice.subject}",
                                        body=f"Thanks, we will look at it. ({round_})",
                                        in_reply_to=notice.message_id))
    assert len(outbox(engine, to_addrs=STAFF)) == 1
    with transaction(engine) as session:
        recorded = session.exec(select(Inbound).where(Inbound.from_addr == STAFF)).all()
    assert len(recorded) == 8 and all(r.status == InboundStatus.HELD for r in recorded)


def test_staff_notice_cap_holds_within_one_commit_group(engine, make_desk):
    """The cap is counted once per transaction, then in memory: twelve strangers
    in one commit group give what twelve transactions give (5 sent, 7 held, one
    summary), and one query for the count, not twelve."""
    from mailflow.intake import receive_batch
    from mailflow.services.inbound import Source

    desk = make_desk(staff_notice_limit_per_hour=5)
    items = [(Source("support@127.0.0.1:143/INBOX", 1, n),
              make_mail(sender=f"stranger{n}@else.example", subject=f"Hi {n}"))
             for n in range(1, 13)]
    counted: list[str] = []

    def count(_conn, _cursor, statement, *_args):
        if "count(*)" in statement.lower() and "outbox.template" in statement:
            counted.append(statement)

    from sqlalchemy import event
    event.listen(engine, "before_cursor_execute", count)
    try:
        outcomes = receive_batch(engine, desk, items)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert [o.verdict for o in outcomes] == ["unknown_sender"] * 12
    held = outbox(engine, template="staff/held")
    assert [r.status for r in held] == [OutboxStatus.PENDING] * 5 + [OutboxStatus.SUPPRESSED] * 7
    assert len(outbox(engine, template="staff/notices_held")) == 1
    assert len(counted) == 1


def test_same_text_again_is_seen_in_mail_recorded_before_digests_were_kept(engine, make_desk,
                                                                          clock):
    """Rows from before migration 0013 have no text digest: their text is read."""
    desk = make_desk(autoreply_limit_per_hour=1)
    receive(engine, desk, make_mail(subject="Notice 1", body="I am away  until\nMonday."))
    with transaction(engine) as session:
        for row in session.exec(select(Inbound)):
            assert row.text_digest is not None
            row.text_digest = None
            session.add(row)
    clock.advance(minutes=1)
    receive(engine, desk, make_mail(subject="Notice 2", body="I am away until Monday."))
    assert [status for _, status in statuses_to(engine, CLIENT)] == \
        [OutboxStatus.PENDING, OutboxStatus.SUPPRESSED]


def test_a_comments_digest_is_of_its_trimmed_text(engine, make_desk, clock):
    """The stored digest is of the stored text: a comment's trimmed text (the
    quoted history differs from mail to mail; what the person wrote does not)."""
    desk = make_desk(autoreply_limit_per_hour=1)
    first = receive(engine, desk, make_mail(subject="Banner", body="Please replace it."))
    ack = outbox(engine, template="client/ack")[0]
    body = "Any news?\n\nOn Thu, Nov 26, 2026 support wrote:\n> We received your request."
    for _ in range(2):
        clock.advance(minutes=1)
        outcome = receive(engine, desk, make_mail(subject="Re: Banner", body=body,
                                                  in_reply_to=ack.message_id))
        assert outcome.verdict == "comment" and outcome.request_id == first.request_id
    with transaction(engine) as session:
        comments = session.exec(select(Inbound).where(Inbound.classification == "comment")).all()
    assert {row.text for row in comments} == {"Any news?"}
    assert {row.text_digest for row in comments} == {stored_text_digest("Any news?")}
