"""`mailflow serve` as a real process against Dovecot and aiosmtpd."""

from __future__ import annotations

import time

import pytest
from sqlmodel import select

from mailflow.config import settings_from_mapping
from mailflow.core.ledger import LotKind
from mailflow.db import transaction
from mailflow.desk import Desk
from mailflow.models import Inbound, Outbox, OutboxStatus, Request
from mailflow.services import clients, credits
from tests.integration.procs import ServeProcess, env_for, write_config
from tests.mails import mail

pytestmark = pytest.mark.dovecot


@pytest.fixture
def served(tmp_path, db_url, engine, dovecot, smtp_server):
    desk = Desk(settings_from_mapping({}))
    with transaction(engine) as session:
        acme = clients.add_client(session, desk, name="Acme", emails=["a@acme.example"])
        credits.add_lot(session, desk, client=acme, kind=LotKind.PURCHASE, credits=4)
    config = write_config(tmp_path / "mailflow.yaml", db_url=db_url, imap_port=dovecot.port,
                          smtp_port=smtp_server.port, mailbox__imap__start="new")
    process = ServeProcess(env_for(config, dovecot.password), tmp_path / "serve.log")
    yield process
    process.kill()


def test_serve_answers_a_new_request_without_waiting_for_a_poll_interval(
        served, dovecot, smtp_server, engine):
    served.wait_for_log("first connection to")  # connected and listening (IDLE)
    time.sleep(0.3)
    started = time.monotonic()
    dovecot.append("support", "INBOX", mail(sender="a@acme.example", subject="New banner",
                                            body="Please add a banner."))
    smtp_server.wait_for(2, timeout=15)  # the acknowledgement and the note to staff
    elapsed = time.monotonic() - started
    assert elapsed < 10  # poll_seconds is 30: the answer came from IDLE, not a poll
    ack = next(c.message() for c in smtp_server.messages if "a@acme.example" in c.recipients)
    assert "[REQ-1]" in ack["Subject"]
    assert "uid 1: new_request [REQ-1]" in served.text()
    assert served.terminate() == 0
    with transaction(engine) as session:
        assert session.exec(select(Request)).one().subject == "New banner"
        assert session.exec(select(Inbound)).one().uid == 1
        statuses = {row.status for row in session.exec(select(Outbox))}
    assert statuses == {OutboxStatus.SENT}
    assert dovecot.list_messages("support", "INBOX") == []


def test_serve_sends_what_a_staff_shell_queued(served, smtp_server, engine):
    served.wait_for_log("mailflow serving")
    desk = Desk(settings_from_mapping({"staff": {"notify": []}}))
    with transaction(engine) as session:
        from mailflow.services import requests as svc

        client = clients.find_client(session, "Acme")
        svc.create_request(session, desk, client=client, requester="a@acme.example",
                           subject="By phone")
    smtp_server.wait_for(1, timeout=15)
    assert "By phone" in smtp_server.messages[0].message()["Subject"]
    assert served.terminate() == 0


def test_sigterm_during_a_backlog_leaves_nothing_half_done(served, dovecot, smtp_server,
                                                           engine):
    served.wait_for_log("mailflow serving")
    for n in range(40):
        dovecot.append("support", "INBOX", mail(sender="a@acme.example",
                                                subject=f"Request {n}", body="x"))
    time.sleep(0.8)
    assert served.terminate() == 0
    with transaction(engine) as session:
        done = session.exec(select(Inbound)).all()
        requests = session.exec(select(Request)).all()
        sending = session.exec(select(Outbox).where(
            Outbox.status == OutboxStatus.SENDING)).all()
    assert len(done) == len(requests)  # every recorded message made its request
    assert sending == []
    left = len(dovecot.list_messages("support", "INBOX"))
    assert left + len(done) == 40  # the rest waits in the inbox, untouched
