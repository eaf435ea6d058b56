"""Exactly once (DESIGN §4): `mailflow poll --once` killed with SIGKILL at many
points of its batches, restarted until done — every message processed once,
no request, ledger entry or outgoing message missing or doubled."""

from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta

import pytest
from sqlmodel import select

from mailflow.config import settings_from_mapping
from mailflow.core.ledger import EntryKind, LotKind
from mailflow.db import transaction
from mailflow.desk import Desk
from mailflow.models import Entry, Inbound, Outbox, OutboxStatus, Request
from mailflow.services import clients, credits
from mailflow.services import requests as svc
from tests.integration.procs import env_for, mailflow, write_config
from tests.mails import mail, reply

pytestmark = [pytest.mark.dovecot, pytest.mark.slow]

NEW, APPROVALS, COMMENTS, AUTO, BALANCE, STRANGERS = 30, 20, 8, 8, 4, 4
KILLS = 14


def prepare(engine) -> tuple[list[bytes], dict[str, int]]:
    """Clients, quoted requests, and the mail that will flow in."""
    desk = Desk(settings_from_mapping({"mailbox": {"address": "support@agency.example"},
                                       "staff": {"notify": []}}))
    messages: list[bytes] = []
    with transaction(engine) as session:
        people = []
        for n in range(10):
            client = clients.add_client(session, desk, name=f"Client {n}",
                                        emails=[f"c{n}@client{n}.example"])
            credits.add_lot(session, desk, client=client, kind=LotKind.GRANT, credits=3,
                            expires_days=30)
            credits.add_lot(session, desk, client=client, kind=LotKind.PURCHASE, credits=3)
            people.append((client, f"c{n}@client{n}.example"))
        quotes = []
        for n in range(APPROVALS):
            client, address = people[n % 10]
            request = svc.create_request(session, desk, client=client, requester=address,
                                         subject=f"Quoted {n}")
            quote = svc.quote_request(session, desk, request_id=request.id, terms=svc.QuoteTerms(
                2, desk.today() + timedelta(days=7)))
            quotes.append((quote, address, request.subject))
        for row in session.exec(select(Outbox)):  # those went out before the test
            row.status = OutboxStatus.SENT
            session.add(row)
    for n in range(NEW):
        messages.append(mail(sender=people[n % 10][1], subject=f"New {n}", body=f"Job {n}"))
    for quote, address, subject in quotes:
        messages.append(reply(sender=address, original_subject=subject,
                              original_body="reply APPROVE or REJECT", answer="APPROVE",
                              original_id=quote.message_id))
    for n in range(COMMENTS):
        quote, address, subject = quotes[n]
        messages.append(reply(sender=address, original_subject=subject, original_body="...",
                              answer=f"A question {n}", original_id=quote.message_id))
    for n in range(AUTO):
        messages.append(mail(sender=people[n][1], subject="Out of office", body="away",
                             headers={"Auto-Submitted": "auto-replied"}))
    for n in range(BALANCE):
        messages.append(mail(sender=people[n][1], subject="BALANCE", body=""))
    for n in range(STRANGERS):
        messages.append(mail(sender=f"who{n}@nowhere.example", subject="Hello", body="hi"))
    random.Random(7).shuffle(messages)
    return messages, {"quoted_requests": APPROVALS}


def wait_until_connected(log, process, timeout: float = 60) -> None:
    """Kill only once the run is at work: start-up time varies with machine load."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if b"connected to IMAP" in log.read_bytes():
            return
        time.sleep(0.02)


def wait_for_messages(log, process, count: int, timeout: float = 60) -> None:
    """Wait until the run has logged COUNT processed messages (or ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if len(re.findall(rb"uid \d+: ", log.read_bytes())) >= count:
            return
        time.sleep(0.005)


def test_poll_killed_at_random_points_processes_every_message_exactly_once(
        tmp_path, db_url, engine, dovecot, smtp_server):
    messages, _ = prepare(engine)
    for raw in messages:
        dovecot.append("support", "INBOX", raw)
    config = write_config(tmp_path / "mailflow.yaml", db_url=db_url, imap_port=dovecot.port,
                          smtp_port=smtp_server.port, mailbox__imap__batch_size=4,
                          smtp__claim_timeout_seconds=0, staff__notify=["staff@agency.example"],
                          policy__autoreply_limit_per_hour=100,
                          policy__staff_notice_limit_per_hour=None)
    env = env_for(config, dovecot.password)
    rng = random.Random(20261126)
    progress_at_kill = []
    for _ in range(KILLS):
        log = tmp_path / "poll.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "mailflow", "poll", "--once", "--log-level", "info"],
                env=env, stdout=out, stderr=subprocess.STDOUT)
            wait_until_connected(log, process)
            # Kill after a random number of this run's messages (then a random
            # moment inside the next ones), whatever the speed of the machine.
            wait_for_messages(log, process, rng.randint(0, 8))
            time.sleep(rng.uniform(0.0, 0.05))
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
        progress_at_kill.append(len(re.findall(r"uid \d+: ", log.read_text(errors="replace"))))
        if not dovecot.list_messages("support", "INBOX"):
            break
    mailflow("poll", "--once", env=env)
    mailflow("poll", "--once", env=env)  # nothing left: must change nothing

    total = len(messages)
    assert dovecot.list_messages("support", "INBOX") == []
    folders = (dovecot.list_messages("support", "Processed")
               + dovecot.list_messages("support", "Failed"))
    assert len(folders) == total  # each message moved exactly once
    with transaction(engine) as session:
        inbound = session.exec(select(Inbound)).all()
        assert len(inbound) == total
        assert len({row.message_id for row in inbound}) == total
        requests = session.exec(select(Request)).all()
        subjects = Counter(r.subject for r in requests)
        assert all(subjects[f"New {n}"] == 1 for n in range(NEW))
        assert len(requests) == NEW + APPROVALS
        debits = session.exec(select(Entry).where(Entry.kind == EntryKind.DEBIT)).all()
        per_request = Counter()
        for entry in debits:
            per_request[entry.request_id] -= entry.delta
        assert sorted(per_request.values()) == [2] * APPROVALS
        outbox = session.exec(select(Outbox).where(Outbox.status != OutboxStatus.SENT)).all()
        assert [(o.template, o.status) for o in outbox] == []
        rows = session.exec(select(Outbox)).all()
        templates = Counter(o.template for o in rows)
        assert templates["client/ack"] == NEW + APPROVALS
        assert templates["client/approved"] == APPROVALS
        assert templates["client/balance"] == BALANCE
        assert templates["staff/comment"] == COMMENTS
        expected_ids = {o.message_id for o in rows if o.created_at and o.template and
                        o.status == OutboxStatus.SENT}
    delivered = Counter(c.message()["Message-ID"].strip("<>") for c in smtp_server.messages)
    preexisting = {mid for mid in expected_ids if mid not in delivered}
    # Rows that were already 'sent' before the test (the quotes) are the only ones absent.
    assert all(row_template in ("client/ack", "client/quote", "staff/new_request")
               for row_template in [o.template for o in rows if o.message_id in preexisting])
    assert set(delivered) <= expected_ids
    duplicates = sum(count - 1 for count in delivered.values())
    assert duplicates <= KILLS  # a kill between SMTP accept and the 'sent' mark: rare, same ID
    print(f"\nkills landed after {progress_at_kill} messages of a run; "
          f"{duplicates} duplicate deliveries (same Message-ID) over {len(progress_at_kill)} kills")
    assert len(set(progress_at_kill)) >= 3  # the kills hit different points
