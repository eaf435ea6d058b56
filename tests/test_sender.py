"""The outbox sender against a capturing aiosmtpd server, on SQLite and PostgreSQL:
claim, send, record, back off, fail for good, and never send a row twice."""

from __future__ import annotations

import email
import email.policy
import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from click.testing import CliRunner
from sqlmodel import select

from mailflow.cli import cli
from mailflow.config import SmtpSettings, settings_from_mapping
from mailflow.db import create_db_engine, transaction
from mailflow.desk import Desk
from mailflow.models import Outbox, OutboxStatus
from mailflow.sender import backoff, claim, send_due
from tests.servers.dovecot import free_port
from tests.servers.smtp import SmtpServer

SUPPORT = "support@agency.example"


def make_settings(smtp: SmtpSettings, **smtp_changes):
    return settings_from_mapping({
        "mailbox": {"address": SUPPORT, "display_name": "Agency Support"},
        "smtp": {**smtp.model_dump(), **smtp_changes},
        "staff": {"notify": ["staff@agency.example"]},
    })


@pytest.fixture
def sender_desk(clock, smtp_settings) -> Desk:
    return Desk(make_settings(smtp_settings), clock=clock)


def add_row(engine, desk: Desk, n: int = 1, **changes) -> Outbox:
    fields = dict(
        message_id=f"mailflow.test{n}.{datetime.now().timestamp()}@agency.example",
        template="client/ack", to_addrs="a@acme.example", subject=f"[REQ-{n}] Received",
        body_text=f"Request {n} received.\n\n5 credits available\n",
        body_html=f"<p>Request {n} received.</p>", auto=True,
        status=OutboxStatus.PENDING, next_attempt_at=desk.now(), created_at=desk.now())
    fields.update(changes)
    with transaction(engine) as session:
        row = Outbox(**fields)
        session.add(row)
        session.flush()
        return row


def get(engine, row_id: int) -> Outbox:
    with transaction(engine) as session:
        return session.get(Outbox, row_id)


def all_rows(engine) -> list[Outbox]:
    with transaction(engine) as session:
        return list(session.exec(select(Outbox).order_by(Outbox.id)))


def message_ids(smtp_server) -> list[str]:
    return [c.message()["Message-ID"].strip("<>") for c in smtp_server.messages]


def test_pending_row_is_delivered_as_the_row_describes_it(engine, sender_desk, smtp_server):
    row = add_row(engine, sender_desk, message_id="fixed.1@agency.example",
                  to_addrs="a@acme.example,boss@acme.example",
                  in_reply_to="client.1@acme.example",
                  references="first@agency.example client.1@acme.example")
    report = send_due(engine, sender_desk)
    assert (report.sent, report.retrying, report.failed) == (1, 0, 0)
    (captured,) = smtp_server.messages
    assert captured.envelope_from == SUPPORT
    assert captured.recipients == ("a@acme.example", "boss@acme.example")
    message = captured.message()
    assert message["Message-ID"] == "<fixed.1@agency.example>"
    assert message["In-Reply-To"] == "<client.1@acme.example>"
    assert message["References"] == "<first@agency.example> <client.1@acme.example>"
    assert message["Auto-Submitted"] == "auto-replied"
    (sender,) = message["From"].addresses
    assert (sender.display_name, sender.addr_spec) == ("Agency Support", SUPPORT)
    assert [a.addr_spec for a in message["To"].addresses] == ["a@acme.example",
                                                               "boss@acme.example"]
    assert message["Subject"] == "[REQ-1] Received"
    assert message.get_content_type() == "multipart/alternative"
    assert message.get_body(("plain",)).get_content().startswith("Request 1 received.")
    assert "<p>Request 1 received.</p>" in message.get_body(("html",)).get_content()
    sent = get(engine, row.id)
    assert (sent.status, sent.attempts, sent.sent_at) == (OutboxStatus.SENT, 1,
                                                          sender_desk.now())
    assert send_due(engine, sender_desk).sent == 0  # once only


def test_staff_written_message_has_no_auto_submitted_and_text_only(engine, sender_desk,
                                                                   smtp_server):
    add_row(engine, sender_desk, template="client/quote", auto=False, body_html=None,
            reply_to="support+token@agency.example")
    send_due(engine, sender_desk)
    message = smtp_server.messages[0].message()
    assert "Auto-Submitted" not in message
    assert message["Reply-To"] == "support+token@agency.example"
    assert message.get_content_type() == "text/plain"


def test_temporary_failure_backs_off_then_sends_once(engine, sender_desk, smtp_server, clock):
    row = add_row(engine, sender_desk)
    smtp_server.refuse("DATA", 451)
    report = send_due(engine, sender_desk)
    assert (report.sent, report.retrying) == (0, 1)
    waiting = get(engine, row.id)
    assert waiting.status == OutboxStatus.PENDING
    assert waiting.attempts == 1
    assert waiting.next_attempt_at > clock() and waiting.next_attempt_at == clock() + backoff(1)
    assert "451" in waiting.last_error
    smtp_server.accept_all()
    assert send_due(engine, sender_desk).sent == 0  # not before the backoff has passed
    assert smtp_server.messages == []
    clock.advance(seconds=backoff(1).total_seconds() + 1)
    assert send_due(engine, sender_desk).sent == 1
    assert send_due(engine, sender_desk).sent == 0
    assert message_ids(smtp_server) == [row.message_id]
    done = get(engine, row.id)
    assert (done.status, done.attempts, done.last_error) == (OutboxStatus.SENT, 2, None)


def test_backoff_grows_and_is_capped():
    assert [backoff(n).total_seconds() for n in (1, 2, 3)] == [30, 60, 120]
    assert backoff(12) == backoff(50) == backoff(10_000) == timedelta(hours=2)


def test_permanent_failure_is_kept_shown_and_can_be_retried(engine, db_url, clock, smtp_server,
                                                            smtp_settings, tmp_path):
    clock.set(datetime.now(UTC))  # the CLI runs on the real clock
    desk = Desk(make_settings(smtp_settings), clock=clock)
    row = add_row(engine, desk)
    smtp_server.refuse("RCPT", 550, times=1)
    report = send_due(engine, desk)
    assert (report.sent, report.failed) == (1, 1)  # staff were told, in the same run
    (notice,) = [c.message() for c in smtp_server.messages]
    assert notice["To"] == "staff@agency.example" and "550" in notice.get_body().get_content()
    failed = get(engine, row.id)
    assert (failed.status, failed.attempts) == (OutboxStatus.FAILED, 1)
    assert "550" in failed.last_error
    clock.advance(hours=3)
    assert send_due(engine, desk).sent == 0  # a failed row is not retried by itself

    config = tmp_path / "mailflow.yaml"
    config.write_text(yaml.safe_dump({"database_url": db_url,
                                      "mailbox": {"address": SUPPORT},
                                      "smtp": smtp_settings.model_dump()}))
    runner = CliRunner()
    shown = runner.invoke(cli, ["--config", str(config), "outbox", "--json"])
    assert shown.exit_code == 0, shown.output
    (listed,) = [r for r in json.loads(shown.output) if r["status"] == "failed"]
    assert listed["id"] == row.id and listed["status"] == "failed"
    assert listed["attempts"] == 1 and "550" in listed["last_error"]
    assert listed["to"] == "a@acme.example" and listed["body"].startswith("Request 1")

    retried = runner.invoke(cli, ["--config", str(config), "outbox", "--retry"])
    assert retried.exit_code == 0, retried.output
    assert "1 failed message queued again" in retried.output
    again = get(engine, row.id)
    assert (again.status, again.attempts) == (OutboxStatus.PENDING, 0)
    assert send_due(engine, desk).sent == 1
    assert message_ids(smtp_server)[1:] == [row.message_id]


def test_max_attempts_temporary_failures_make_it_failed(engine, clock, smtp_server,
                                                        smtp_settings):
    desk = Desk(make_settings(smtp_settings, max_attempts=3), clock=clock)
    row = add_row(engine, desk)
    smtp_server.refuse("RCPT", 451, recipients=["a@acme.example"])
    outcomes = []
    for _ in range(5):  # bounded: more rounds than attempts
        report = send_due(engine, desk)
        outcomes.append((report.retrying, report.failed))
        clock.advance(hours=3)
    assert outcomes == [(1, 0), (1, 0), (0, 1), (0, 0), (0, 0)]
    final = get(engine, row.id)
    assert (final.status, final.attempts) == (OutboxStatus.FAILED, 3)
    assert "451" in final.last_error
    assert [c.recipients for c in smtp_server.messages] == [("staff@agency.example",)]


def test_server_down_loses_nothing_and_burns_no_attempts(engine, clock, smtp_settings):
    closed = smtp_settings.model_copy(update={"port": free_port()})
    desk = Desk(make_settings(closed, max_attempts=1), clock=clock)
    rows = [add_row(engine, desk, n) for n in range(1, 4)]
    report = send_due(engine, desk)
    assert report.sent == 0 and report.failed == 0
    after = all_rows(engine)
    assert [r.status for r in after] == [OutboxStatus.PENDING] * 3
    assert [r.attempts for r in after] == [0, 0, 0]  # even with max_attempts: 1
    assert "connect" in after[0].last_error
    assert all(r.next_attempt_at > clock() for r in after)
    # The server comes back: everything goes out once.
    with SmtpServer(port=closed.port) as server:
        clock.advance(minutes=1)
        assert send_due(engine, desk).sent == 3
        assert sorted(message_ids(server)) == sorted(r.message_id for r in rows)


def test_login_refused_keeps_mail_pending(engine, clock, smtp_settings, monkeypatch):
    """A wrong SMTP password is the server's problem, not the message's: nothing fails."""
    monkeypatch.setenv("MAILFLOW_TEST_SMTP_PASSWORD", "wrong")
    with SmtpServer(users={"support": "right"}) as server:
        settings = smtp_settings.model_copy(update={
            "port": server.port, "username": "support",
            "password_env": "MAILFLOW_TEST_SMTP_PASSWORD"})
        desk = Desk(make_settings(settings), clock=clock)
        for n in (1, 2):
            add_row(engine, desk, n)
        for _ in range(3):
            assert send_due(engine, desk).failed == 0
            clock.advance(minutes=5)
        assert [(r.status, r.attempts) for r in all_rows(engine)] == \
            [(OutboxStatus.PENDING, 0)] * 2
        assert "535" in all_rows(engine)[0].last_error
        monkeypatch.setenv("MAILFLOW_TEST_SMTP_PASSWORD", "right")
        assert send_due(engine, desk).sent == 2
        assert len(server.messages) == 2


def test_a_row_that_cannot_become_a_message_does_not_block_the_rest(engine, sender_desk,
                                                                    smtp_server):
    bad = add_row(engine, sender_desk, 1, to_addrs="")  # nobody to send it to
    good = add_row(engine, sender_desk, 2)
    report = send_due(engine, sender_desk)
    assert (report.sent, report.failed) == (2, 1)  # the good one, and staff told
    assert get(engine, bad.id).status == OutboxStatus.FAILED
    assert "no recipients" in get(engine, bad.id).last_error
    notice = all_rows(engine)[-1]
    assert notice.template == "staff/bounce" and "no recipients" in notice.body_text
    assert message_ids(smtp_server) == [good.message_id, notice.message_id]


def test_a_line_break_in_a_stored_subject_never_becomes_a_header(engine, sender_desk,
                                                                 smtp_server):
    add_row(engine, sender_desk, 1, subject="broken\r\nBcc: victim@elsewhere.example")
    assert send_due(engine, sender_desk).sent == 1
    (captured,) = smtp_server.messages
    message = captured.message()
    assert message["Bcc"] is None and "victim" not in "".join(captured.recipients)
    assert message["Subject"] == "broken Bcc: victim@elsewhere.example"


def test_stale_claim_is_resent_after_the_claim_timeout_with_same_message_id(
        engine, sender_desk, smtp_server, clock):
    row = add_row(engine, sender_desk)
    (claimed,) = claim(engine, sender_desk, 10)  # ... and the sender dies here
    assert get(engine, row.id).status == OutboxStatus.SENDING
    assert send_due(engine, sender_desk).sent == 0
    clock.advance(seconds=sender_desk.settings.smtp.model_dump().get(
        "claim_timeout_seconds", 300) - 1)
    assert send_due(engine, sender_desk).sent == 0  # another sender may still be at it
    clock.advance(seconds=2)
    assert send_due(engine, sender_desk).sent == 1
    assert message_ids(smtp_server) == [claimed.message_id] == [row.message_id]
    assert get(engine, row.id).status == OutboxStatus.SENT


def test_two_senders_never_send_a_row_twice(db_url, clock, smtp_server, smtp_settings):
    """SKIP LOCKED on PostgreSQL; BEGIN IMMEDIATE claims on SQLite."""
    first = create_db_engine(db_url)
    second = create_db_engine(db_url)
    try:
        desk = Desk(make_settings(smtp_settings), clock=clock)
        rows = [add_row(first, desk, n) for n in range(1, 61)]
        reports, errors = [], []

        def run(engine):
            try:
                reports.append(send_due(engine, desk, limit=3))
            except Exception as error:  # pragma: no cover - shown by the assert below
                errors.append(error)

        threads = [threading.Thread(target=run, args=(e,)) for e in (first, second, first)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors and not any(t.is_alive() for t in threads)
        ids = message_ids(smtp_server)
        assert len(ids) == len(set(ids)) == len(rows)
        assert set(ids) == {r.message_id for r in rows}
        assert sum(r.sent for r in reports) == len(rows)
        assert sum(1 for r in reports if r.sent) >= 2  # both really took part
        assert {r.status for r in all_rows(first)} == {OutboxStatus.SENT}
    finally:
        first.dispose()
        second.dispose()


# --- internationalised addresses, and a message that fails alone (issue 9, point 8) ----

@pytest.fixture(params=[True, False], ids=["smtputf8", "no-smtputf8"])
def utf8_server(request):
    """A capturing server that offers SMTPUTF8, or one that does not."""
    with SmtpServer(smtputf8=request.param) as server:
        yield server


def utf8_desk(clock, server: SmtpServer, **staff) -> Desk:
    smtp = SmtpSettings(host=server.host, port=server.port, timeout_seconds=5)
    settings = make_settings(smtp)
    if staff:
        settings = settings.model_copy(update={
            "staff": settings.staff.model_copy(update=staff)})
    return Desk(settings, clock=clock)


def test_an_idn_domain_is_sent_as_punycode_with_or_without_smtputf8(engine, clock, utf8_server):
    desk = utf8_desk(clock, utf8_server)
    row = add_row(engine, desk, to_addrs="info@例え.jp")
    assert send_due(engine, desk).sent == 1
    (captured,) = utf8_server.messages
    assert captured.recipients == ("info@xn--r8jz45g.jp",)
    assert "SMTPUTF8" not in captured.mail_options and captured.raw.isascii()
    assert [a.addr_spec for a in captured.message()["To"].addresses] == ["info@xn--r8jz45g.jp"]
    assert get(engine, row.id).to_addrs == "info@例え.jp"  # stored as given


def test_a_non_ascii_local_part_goes_out_with_smtputf8_or_fails_alone(engine, clock,
                                                                      utf8_server):
    desk = utf8_desk(clock, utf8_server)
    first = add_row(engine, desk, 1)
    stranger = add_row(engine, desk, 2, to_addrs="jörg@evil.example",
                       template="client/unknown_sender", request_id=None)
    last = add_row(engine, desk, 3)
    report = send_due(engine, desk)
    rows = all_rows(engine)
    if utf8_server.smtputf8:
        assert (report.sent, report.failed) == (3, 0)
        captured = next(c for c in utf8_server.messages if c.recipients == ("jörg@evil.example",))
        assert "SMTPUTF8" in captured.mail_options
        assert b"\r\nTo: j\xc3\xb6rg@evil.example\r\n" in captured.raw  # RFC 6532: UTF-8 as is
        received = email.message_from_string(captured.raw.decode(), policy=email.policy.default)
        assert [a.addr_spec for a in received["To"].addresses] == ["jörg@evil.example"]
        assert len(rows) == 3
        return
    # Without SMTPUTF8 the one message fails, visibly, and the rest go out.
    failed = get(engine, stranger.id)
    assert (failed.status, failed.attempts) == (OutboxStatus.FAILED, 1)
    assert "SMTPUTF8" in failed.last_error
    assert {get(engine, r.id).status for r in (first, last)} == {OutboxStatus.SENT}
    (notice,) = rows[3:]
    assert notice.recipients == ["staff@agency.example"] and notice.template == "staff/bounce"
    assert "jörg@evil.example" in notice.body_text and "SMTPUTF8" in notice.body_text
    assert report.sent + report.failed == 4  # the notice went out in the same run
    assert notice.message_id in message_ids(utf8_server)


def test_a_staff_notice_that_cannot_be_sent_causes_no_further_notice(engine, clock):
    with SmtpServer(smtputf8=False) as server:
        desk = utf8_desk(clock, server, notify=["スタッフ@agency.example"])
        add_row(engine, desk, to_addrs="jörg@evil.example")
        report = send_due(engine, desk)
        rows = all_rows(engine)
        assert (report.sent, report.failed) == (0, 2)  # the message, then its notice
        assert [r.template for r in rows] == ["client/ack", "staff/bounce"]
        assert {r.status for r in rows} == {OutboxStatus.FAILED}
        assert send_due(engine, desk).sent == 0 and len(all_rows(engine)) == 2


def test_one_unsendable_row_among_many_never_stalls_the_rest(engine, clock):
    with SmtpServer(smtputf8=False) as server:
        desk = utf8_desk(clock, server)
        rows = [add_row(engine, desk, n, to_addrs=address) for n, address in enumerate(
            ["a@acme.example", "jörg@evil.example", "b@beta.example", "info@例え.jp",
             "c@gamma.example", "d@delta.example", "ｊｏｅ@evil.example"], start=1)]
        send_due(engine, desk, limit=3)
        status = {r.to_addrs: get(engine, r.id).status for r in rows}
        assert [a for a, s in status.items() if s != OutboxStatus.SENT] == [
            "jörg@evil.example", "ｊｏｅ@evil.example"]
        assert {status["jörg@evil.example"], status["ｊｏｅ@evil.example"]} == {
            OutboxStatus.FAILED}
        assert len(server.messages) == 5 + 2  # five client mails, two staff notices
