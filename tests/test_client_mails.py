"""What clients read (issue 10), point by point, on SQLite and PostgreSQL:
the services write the mail, the tests read it as a client would."""

from __future__ import annotations

import email
import email.policy
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import select

from mailflow.config import settings_from_mapping
from mailflow.core.ledger import LotKind
from mailflow.core.states import Status
from mailflow.db import transaction
from mailflow.desk import Desk
from mailflow.errors import InsufficientCredits, InvalidTransition, MailflowError
from mailflow.models import ClientMailState, Outbox, Quote, Request
from mailflow.services import clients, credits
from mailflow.services import requests as svc
from mailflow.services.inbound import handle_message
from tests.mails import reply

TOKYO = ZoneInfo("Asia/Tokyo")


def tokyo(*args) -> datetime:
    return datetime(*args, tzinfo=TOKYO)


def make_desk(clock, **sections) -> Desk:
    data = {"mailbox": {"address": "support@agency.example"},
            "staff": {"notify": ["staff@agency.example"]}, **sections}
    return Desk(settings_from_mapping(data), clock=clock)


def add_client(engine, desk, name="Acme", *, plan=None, lang="en") -> int:
    with transaction(engine) as session:
        return clients.add_client(session, desk, name=name, plan=plan, lang=lang,
                                  emails=[f"{name.lower()}@client.example"]).id


def add_lot(engine, desk, client_id, n, *, kind=LotKind.GRANT, on=None, note=None) -> int:
    with transaction(engine) as session:
        client = clients.find_client(session, str(client_id))
        return credits.add_lot(session, desk, client=client, kind=kind, credits=n, on=on,
                               note=note).id


def new_request(engine, desk, client_id, subject="Replace the banner") -> int:
    with transaction(engine) as session:
        client = clients.find_client(session, str(client_id))
        email_ = clients.client_emails(session, client_id)[0]
        return svc.create_request(session, desk, client=client, requester=email_,
                                  subject=subject).id


def quote(engine, desk, request_id, n, due: date) -> Quote:
    with transaction(engine) as session:
        return svc.quote_request(session, desk, request_id=request_id,
                                 terms=svc.QuoteTerms(n, due))


def approve(engine, desk, request_id):
    with transaction(engine) as session:
        return svc.approve_request(session, desk, request_id=request_id)


def mails(engine, template=None) -> list[Outbox]:
    with transaction(engine) as session:
        query = select(Outbox).order_by(Outbox.id)
        if template:
            query = query.where(Outbox.template == template)
        return list(session.exec(query))


def last(engine, template) -> Outbox:
    return mails(engine, template)[-1]


# --- 1. a quote for more than the balance ------------------------------------------------

@pytest.mark.parametrize("lang", ["en", "ja"])
def test_quote_over_the_balance_gives_the_shortfall_its_price_and_the_real_allotment(
        engine, clock, lang):
    clock.set(tokyo(2026, 11, 26, 10))
    desk = make_desk(clock, schedule={"allotment_cron": "0 0 5 * *"})  # the 5th, not the 1st
    acme = add_client(engine, desk, plan=5, lang=lang)
    add_lot(engine, desk, acme, 1, kind=LotKind.PURCHASE)
    request_id = new_request(engine, desk, acme)
    quote(engine, desk, request_id, 3, date(2026, 12, 20))
    body = last(engine, "client/quote").body_text

    assert "-2" not in body and "To go ahead" not in body and "作業を進める場合" not in body
    if lang == "en":
        assert "1 credit, 2 credits short of this quote" in body
        assert "buy the missing 2 credits for 17,600 yen incl. tax (16,000 yen plus tax)" \
            in body
        assert "\n      BUY 2\n" in body
        assert "adds 5 credits on\n    Sat 5 Dec 2026, while this quote is still valid" in body
    else:
        assert "2クレジット不足しております" in body
        assert "不足分の2クレジットを17,600円（税込、税抜16,000円）で追加購入" in body
        assert "\n      BUY 2\n" in body and "「2クレジット購入」" in body
        assert "2026年12月5日（土）に5クレジットが付与され" in body


def test_quote_says_plainly_when_waiting_cannot_cover_it_in_time(engine, clock):
    clock.set(tokyo(2026, 11, 26, 10))
    desk = make_desk(clock)  # allotment on the 1st: 1 Dec
    acme = add_client(engine, desk, plan=5)
    request_id = new_request(engine, desk, acme)
    quote(engine, desk, request_id, 3, date(2026, 11, 30))  # valid through 29 Nov
    body = last(engine, "client/quote").body_text
    assert "Valid until:      Sun 29 Nov 2026" in body
    assert "(5 credits on Tue 1 Dec 2026)\n    arrive after this quote expires" in body
    assert "waiting cannot cover it in time" in body


def test_short_approval_by_mail_tells_the_same_facts(engine, clock):
    clock.set(tokyo(2026, 11, 26, 10))
    desk = make_desk(clock)
    acme = add_client(engine, desk, plan=2)
    request_id = new_request(engine, desk, acme)
    q = quote(engine, desk, request_id, 4, date(2026, 12, 20))
    raw = reply(sender="acme@client.example", original_subject="[REQ-1] Quote",
                original_body="quote", original_id=q.message_id, answer="APPROVE")
    with transaction(engine) as session:
        handle_message(session, desk, raw)
    body = last(engine, "client/insufficient_credits").body_text
    assert "your balance is\n0 credits, 4 credits short" in body
    assert "buy the missing 4 credits for 35,200 yen incl. tax (32,000 yen plus tax)" in body
    assert "\n      BUY 4\n" in body
    assert "(2 credits on Tue 1 Dec 2026)\n    will not be enough on their own" in body
    assert "reply APPROVE again" in body


# --- 2. quote validity, redate ------------------------------------------------------------

def test_quote_validity_ends_min_lead_days_before_the_due_date(engine, clock):
    clock.set(tokyo(2026, 3, 20, 10))
    desk = make_desk(clock)
    acme = add_client(engine, desk)
    add_lot(engine, desk, acme, 5, kind=LotKind.PURCHASE)
    request_id = new_request(engine, desk, acme)
    q = quote(engine, desk, request_id, 1, date(2026, 3, 22))
    assert q.valid_until == tokyo(2026, 3, 22)  # the last day to approve: 21 March
    assert "Valid until:      Sat 21 Mar 2026" in last(engine, "client/quote").body_text
    clock.set(tokyo(2026, 3, 30, 10))
    with pytest.raises(InvalidTransition, match="expired"):
        approve(engine, desk, request_id)


@pytest.mark.parametrize(("lead", "due", "ok"), [
    pytest.param(1, date(2026, 3, 21), True, id="tomorrow-with-1-day-lead"),
    pytest.param(1, date(2026, 3, 20), False, id="today-with-1-day-lead"),
    pytest.param(0, date(2026, 3, 20), True, id="today-without-lead"),
    pytest.param(3, date(2026, 3, 22), False, id="two-days-with-3-day-lead"),
])
def test_a_due_date_too_close_to_quote_is_a_clear_staff_error(engine, clock, lead, due, ok):
    clock.set(tokyo(2026, 3, 20, 10))
    desk = make_desk(clock, credits={"min_lead_days": lead})
    request_id = new_request(engine, desk, add_client(engine, desk))
    if ok:
        quote(engine, desk, request_id, 1, due)
        return
    earliest = (date(2026, 3, 20) + timedelta(days=lead)).isoformat()
    with pytest.raises(MailflowError, match=f"too close.*earliest due date today is {earliest}"):
        quote(engine, desk, request_id, 1, due)


def test_quote_warns_when_credits_it_would_use_expire_before_it_does(engine, clock):
    clock.set(tokyo(2026, 11, 26, 10))
    desk = make_desk(clock)
    acme = add_client(engine, desk)
    add_lot(engine, desk, acme, 2, on=date(2026, 9, 1))  # usable through 29 Nov
    add_lot(engine, desk, acme, 5, kind=LotKind.PURCHASE)
    request_id = new_request(engine, desk, acme)
    quote(engine, desk, request_id, 3, date(2026, 12, 20))
    body = last(engine, "client/quote").body_text
    assert "this quote would use 2 credits usable only through\nSun 29 Nov 2026" in body


def test_redate_moves_an_approved_request_and_tells_the_client(engine, clock):
    clock.set(tokyo(2026, 11, 26, 10))
    desk = make_desk(clock)
    acme = add_client(engine, desk, lang="ja")
    add_lot(engine, desk, acme, 3, kind=LotKind.PURCHASE)
    request_id = new_request(engine, desk, acme)
    quote(engine, desk, request_id, 1, date(2026, 12, 3))
    with pytest.raises(InvalidTransition, match="only an approved request"):
        with transaction(engine) as session:
            svc.redate_request(session, desk, request_id=request_id, due=date(2026, 12, 10))
    approve(engine, desk, request_id)
    with transaction(engine) as session:
        svc.redate_request(session, desk, request_id=request_id, due=date(2026, 12, 10),
                           note="プラグインの更新が遅れております。")
        assert session.get(Request, request_id).due == date(2026, 12, 10)
    mail = last(engine, "client/redated")
    assert mail.subject == "[REQ-1] 完了予定日変更のお知らせ：Replace the banner"
    assert "変更前：2026年12月3日（木）" in mail.body_text
    assert "変更後：2026年12月10日（木）" in mail.body_text
    with pytest.raises(MailflowError, match="in the past"), transaction(engine) as session:
        svc.redate_request(session, desk, request_id=request_id, due=date(2026, 11, 1))


# --- 3. re-quoting rejected and expired requests -------------------------------------------

def test_a_rejected_request_can_be_quoted_again_as_the_rejection_mail_promises(engine, clock):
    clock.set(tokyo(2026, 11, 26, 10))
    desk = make_desk(clock)
    acme = add_client(engine, desk)
    request_id = new_request(engine, desk, acme)
    first = quote(engine, desk, request_id, 3, date(2026, 12, 20))
    with transaction(engine) as session:
        svc.reject_request(session, desk, request_id=request_id)
    rejected = last(engine, "client/rejected")
    assert "reply with what should change" in rejected.body_text
    # The client does: a comment, forwarded to staff.
    raw = reply(sender="acme@client.example", original_subject=rejected.subject,
                original_body=rejected.body_text, original_id=rejected.message_id,
                answer="Could you do it for 2 credits without the animation?")
    with transaction(engine) as session:
        handle_message(session, desk, raw)
    assert "without the animation" in last(engine, "staff/comment").body_text
    second = quote(engine, desk, request_id, 2, date(2026, 12, 20))
    with transaction(engine) as session:
        assert session.get(Request, request_id).status == Status.QUOTED
        assert session.get(Quote, first.id).status == "rejected"
    assert second.token != first.token


def test_an_expired_quote_can_be_quoted_again(engine, clock):
    clock.set(tokyo(2026, 11, 26, 10))
    desk = make_desk(clock)
    request_id = new_request(engine, desk, add_client(engine, desk))
    quote(engine, desk, request_id, 1, date(2026, 12, 20))
    clock.set(tokyo(2026, 12, 15, 10))
    with transaction(engine) as session:
        svc.expire_quote(session, desk, request_id=request_id)
    quote(engine, desk, request_id, 1, date(2026, 12, 24))
    with transaction(engine) as session:
        assert session.get(Request, request_id).status == Status.QUOTED


# --- 4. refund and statement agree ------------------------------------------------------

def test_refund_onto_expired_credits_says_what_is_usable_and_the_statement_agrees(
        engine, clock):
    clock.set(tokyo(2026, 3, 10, 10))
    desk = make_desk(clock)
    acme = add_client(engine, desk)
    add_lot(engine, desk, acme, 3, on=date(2026, 1, 1))  # usable through 31 March
    add_lot(engine, desk, acme, 1, kind=LotKind.PURCHASE)
    request_id = new_request(engine, desk, acme)
    quote(engine, desk, request_id, 4, date(2026, 4, 20))
    approve(engine, desk, request_id)
    clock.set(tokyo(2026, 4, 5, 10))
    with transaction(engine) as session:
        _, refund = svc.cancel_request(session, desk, request_id=request_id, refund=True)
    assert (refund.credits, refund.written_off, refund.usable) == (4, 3, 1)
    body = last(engine, "client/cancelled").body_text
    assert "We have returned the 4 credits taken for it to your balance." in body
    assert "Of these, 3 credits had been usable only through Tue 31 Mar 2026" in body
    assert "1 credit of the returned credits can be used again." in body
    assert "Your balance on Sun 5 Apr 2026: 1 credit available" in body
    with transaction(engine) as session:
        lines = credits.statement_entries(session, desk, acme)
    # Newest first, in the order written: the write-off after the refund it follows.
    assert [(line["kind"], line["delta"]) for line in lines[:3]] == [
        ("refund_expired", -3), ("refund", 1), ("refund", 3)]
    assert sum(line["delta"] for line in lines) == 1


# --- 5. statements: client-visible words only ----------------------------------------------

@pytest.mark.parametrize("lang", ["en", "ja"])
def test_statement_shows_client_words_never_staff_notes(engine, clock, lang):
    clock.set(tokyo(2026, 11, 26, 10))
    desk = make_desk(clock)
    acme = add_client(engine, desk, lang=lang)
    with transaction(engine) as session:
        client = clients.find_client(session, str(acme))
        credits.add_lot(session, desk, client=client, kind=LotKind.PLAN, credits=5,
                        note="sandbox: this month's plan", period="2026-11")
    add_lot(engine, desk, acme, 1, note="apology for the outage (internal)")
    request_id = new_request(engine, desk, acme, "Replace the spring banner")
    quote(engine, desk, request_id, 2, date(2026, 12, 20))
    approve(engine, desk, request_id)
    raw = reply(sender="acme@client.example", original_subject="Balance",
                original_body="", original_id="none@x", answer="BALANCE",
                references=[])
    with transaction(engine) as session:
        handle_message(session, desk, raw)
    body = last(engine, "client/balance").body_text
    for internal in ("sandbox", "apology", "approved)", "plan lot", "無償"):
        assert internal not in body
    if lang == "en":
        assert "-2  used: [REQ-1] Replace the spring banner" in body
        assert "+5  monthly plan" in body and "+1  goodwill grant" in body
    else:
        assert "-2  ご利用 [REQ-1]「Replace the spring banner」" in body
        assert "+5  月次プラン付与" in body and "+1  特別付与" in body


# --- 6. dates: the last usable day ----------------------------------------------------------

@pytest.mark.parametrize(("lang", "expected"), [
    ("en", "Next to expire: 5 credits, usable through Fri 26 Feb 2027"),
    ("ja", "次に期限を迎える分：5クレジット（2027年2月26日（金）まで有効）"),
])
def test_footer_shows_the_last_usable_day(engine, clock, lang, expected):
    clock.set(tokyo(2026, 11, 29, 10))
    desk = make_desk(clock)
    acme = add_client(engine, desk, lang=lang)
    add_lot(engine, desk, acme, 5)  # granted 29 Nov: expires 27 Feb 2027 00:00 Tokyo
    new_request(engine, desk, acme)
    assert expected in last(engine, "client/ack").body_text


# --- 7. small things -------------------------------------------------------------------------

def test_the_catalog_comes_with_the_first_request_only(engine, clock):
    desk = make_desk(clock)
    acme = add_client(engine, desk)
    new_request(engine, desk, acme, "First")
    new_request(engine, desk, acme, "Second")
    first, second = mails(engine, "client/ack")
    assert "Make global changes to design theme" in first.body_text
    assert "Make global changes to design theme" not in second.body_text
    assert "listed in our reply to your first request, [REQ-1]." in second.body_text


def test_client_mail_references_only_what_the_client_saw(engine, clock):
    desk = make_desk(clock)
    acme = add_client(engine, desk)
    request_id = new_request(engine, desk, acme)
    quote(engine, desk, request_id, 1, desk.today() + timedelta(days=10))
    staff_ids = {m.message_id for m in mails(engine, "staff/new_request")}
    client_ids = {m.message_id for m in mails(engine) if m.template.startswith("client/")}
    q = last(engine, "client/quote")
    references = set(q.references.split())
    assert references and references <= client_ids and not references & staff_ids
    # Staff notices keep the whole thread.
    with transaction(engine) as session:
        from mailflow.services.outbox import thread_ids

        assert staff_ids <= set(thread_ids(session, request_id))


# --- 9. low balance ------------------------------------------------------------------------

def low_mails(engine) -> list[Outbox]:
    return mails(engine, "client/low_balance")


def test_low_balance_is_told_once_until_the_balance_rises_again(engine, clock):
    clock.set(tokyo(2026, 11, 26, 10))
    desk = make_desk(clock)  # policy.low_balance_credits: 2
    acme = add_client(engine, desk, plan=3)
    add_lot(engine, desk, acme, 5, kind=LotKind.PURCHASE)
    for credits_ in (2, 1, 1):  # 5 → 3 → 2 → 1
        request_id = new_request(engine, desk, acme)
        quote(engine, desk, request_id, credits_, date(2026, 12, 20))
        approve(engine, desk, request_id)
    (notice,) = low_mails(engine)
    assert notice.subject == "Your credit balance is low: 2 credits left"
    assert notice.to_addrs == "acme@client.example"
    assert "Your monthly plan adds 3 credits on Tue 1 Dec 2026." in notice.body_text
    with transaction(engine) as session:
        assert session.get(ClientMailState, acme).low_balance_at is not None

    add_lot(engine, desk, acme, 4, kind=LotKind.PURCHASE)  # 5: above again
    with transaction(engine) as session:
        assert session.get(ClientMailState, acme).low_balance_at is None
    request_id = new_request(engine, desk, acme)
    quote(engine, desk, request_id, 3, date(2026, 12, 20))
    approve(engine, desk, request_id)  # 2 again
    assert len(low_mails(engine)) == 2


def test_an_expiry_that_leaves_the_balance_low_is_told(engine, clock):
    clock.set(tokyo(2026, 11, 26, 10))
    desk = make_desk(clock)
    acme = add_client(engine, desk)
    add_lot(engine, desk, acme, 4, on=date(2026, 9, 1))  # usable through 29 Nov
    add_lot(engine, desk, acme, 1, kind=LotKind.PURCHASE)
    assert low_mails(engine) == []
    clock.set(tokyo(2026, 11, 30, 0, 10))
    with transaction(engine) as session:
        assert credits.sweep_expired(session, desk) == 4
    (notice,) = low_mails(engine)
    assert "down to 1 credit." in notice.body_text
    with transaction(engine) as session:
        credits.sweep_expired(session, desk)
    assert len(low_mails(engine)) == 1


def test_short_approval_changes_nothing_and_sends_no_low_balance(engine, clock):
    desk = make_desk(clock)
    acme = add_client(engine, desk)
    request_id = new_request(engine, desk, acme)
    quote(engine, desk, request_id, 1, desk.today() + timedelta(days=10))
    with pytest.raises(InsufficientCredits):
        approve(engine, desk, request_id)
    assert low_mails(engine) == []


# --- 8. digests: one meaning, a chart every mail program shows --------------------------------

def digest_world(engine, clock) -> Desk:
    """Acme (created in October) with open, closed and used requests; Newcomer created
    after the 1 December digest time."""
    desk = make_desk(clock)
    clock.set(tokyo(2026, 10, 20, 10))
    acme = add_client(engine, desk, plan=3)
    add_lot(engine, desk, acme, 4)
    add_lot(engine, desk, acme, 2, kind=LotKind.PURCHASE)
    clock.set(tokyo(2026, 11, 10, 10))
    used = new_request(engine, desk, acme, "Replace the banner")
    quote(engine, desk, used, 2, date(2026, 12, 10))
    approve(engine, desk, used)
    clock.set(tokyo(2026, 11, 25, 10))
    waiting = new_request(engine, desk, acme, "New landing page")
    quote(engine, desk, waiting, 5, date(2026, 12, 20))  # valid through 9 December
    clock.set(tokyo(2026, 12, 1, 9, 30))
    add_client(engine, desk, "Newcomer")
    return desk


def test_digest_dry_run_digest_and_jobs_run_mean_the_same(engine, clock):
    from mailflow import jobs

    desk = digest_world(engine, clock)
    jobs.run_allotment(engine, desk)  # `jobs run` grants December's plan credits first
    preview = jobs.run_digest(engine, desk, dry_run=True)
    assert [r["client"] for r in preview.results] == ["Acme"]  # Newcomer waits
    (reports,) = [r for r in jobs.run_due(engine, desk) if r.job == "digest"]
    assert reports.done == {"queued": 1, "already_sent": 0}
    (sent,) = mails(engine, "client/digest")
    assert sent.body_text == preview.results[0]["text"]
    body = sent.body_text
    assert "from Tue 20 Oct 2026 to Tue 1 Dec 2026" in body
    assert "[REQ-2] New landing page - awaiting your answer: 5 credits, due Sun 20 Dec 2026," \
           " quote valid until Wed 9 Dec 2026" in body
    assert "[REQ-1] Replace the banner - in progress: 2 credits, due Thu 10 Dec 2026" in body
    assert "Credits used in this period: 2 credits\n  2 credits  [REQ-1] Replace the banner" \
        in body
    assert "  - 2 credits from a goodwill grant, usable through Sun 17 Jan 2027" in body
    assert "Credits used per month:\n  Jun 2026  0\n" in body and "  Nov 2026  2\n" in body
    clock.set(tokyo(2027, 1, 1, 9, 30))
    jobs.run_digest(engine, desk)
    january = mails(engine, "client/digest")
    assert len(january) == 3  # Acme's second, Newcomer's first
    assert "from Tue 1 Dec 2026 to Fri 1 Jan 2027" in january[1].body_text


def test_digest_warns_prominently_of_credits_expiring_soon(engine, clock):
    from mailflow import jobs

    desk = make_desk(clock)
    clock.set(tokyo(2026, 9, 15, 10))
    acme = add_client(engine, desk, lang="ja")
    add_lot(engine, desk, acme, 3)  # usable through 13 Dec
    clock.set(tokyo(2026, 12, 1, 9, 30))
    jobs.run_digest(engine, desk)
    body = last(engine, "client/digest").body_text
    head = body.split("対応中・ご回答待ちのご依頼")[0]
    assert "【14日以内に有効期限を迎えるクレジット】\n  ・3クレジット（2026年12月13日（日）まで有効）" in head


def test_digest_chart_goes_out_inline_as_png_referenced_by_cid(engine, clock, smtp_server):
    from mailflow import jobs
    from mailflow.sender import send_due

    desk = digest_world(engine, clock)
    jobs.run_digest(engine, desk)
    sender_desk = make_desk(clock, smtp={"host": smtp_server.host, "port": smtp_server.port,
                                         "timeout_seconds": 5})
    assert send_due(engine, sender_desk).sent >= 1
    (captured,) = [c for c in smtp_server.messages
                   if c.message()["X-Mailflow-Template"] == "client/digest"]
    message = email.message_from_bytes(captured.raw, policy=email.policy.default)
    assert message.get_content_type() == "multipart/alternative"
    plain, related = message.get_payload()
    assert plain.get_content_type() == "text/plain"
    assert related.get_content_type() == "multipart/related"
    html, *images = related.get_payload()
    assert html.get_content_type() == "text/html" and len(images) == 2  # expiry, usage
    markup = html.get_content()
    assert "data:" not in markup
    for image in images:
        assert image.get_content_type() == "image/png"
        assert image.get_content_disposition() == "inline"
        assert image.get_content().startswith(b"\x89PNG\r\n\x1a\n")
        assert f'src="cid:{image["Content-ID"].strip("<>")}"' in markup


def test_a_chart_is_drawn_once_per_distinct_data_set():
    from mailflow.chart import bar_chart_png, chart_data_uri

    bar_chart_png.cache_clear()
    bars = [("2026-06", 0), ("2026-07", 3)]
    first = chart_data_uri("usage", bars)
    assert chart_data_uri("usage", list(bars)) == first
    assert bar_chart_png.cache_info().misses == 1
    assert chart_data_uri("usage", [("2026-06", 1), ("2026-07", 3)]) != first
