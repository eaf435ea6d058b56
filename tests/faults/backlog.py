"""A realistic backlog for fault tests, and the checks that it was processed
exactly once (DESIGN §4).

`prepare_backlog` makes clients with credits and quoted requests in the
database (their outgoing mail marked sent: it went out before the test), then
builds the inbound mail: new requests, APPROVE replies quoting the current
quote, comments, BALANCE, auto-replies and mail from strangers, shuffled with
a fixed seed.  `check_exactly_once` states what must hold afterwards, whatever
was killed or cut meanwhile.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import func
from sqlmodel import select

from mailflow.config import settings_from_mapping
from mailflow.core.ledger import EntryKind, LotKind
from mailflow.db import transaction
from mailflow.desk import Desk
from mailflow.models import Entry, Inbound, Outbox, OutboxStatus, Request
from mailflow.services import clients, credits
from mailflow.services import requests as svc
from tests.mails import mail, reply

QUOTE_CREDITS = 2


@dataclass
class Backlog:
    messages: list[bytes]
    new: int
    approvals: int
    comments: int
    auto: int
    balance: int
    strangers: int
    quoted_ids: list[int] = field(default_factory=list)
    before_ids: set[str] = field(default_factory=set)  # outbox rows that predate the test

    @property
    def total(self) -> int:
        return len(self.messages)


def prepare_backlog(engine, *, new: int, approvals: int, comments: int, auto: int,
                    balance: int, strangers: int, clients_count: int = 10,
                    seed: int = 7) -> Backlog:
    """Clients, quoted requests and the mail that will flow in (not yet delivered)."""
    assert comments <= approvals, "comments reply to quoted requests"
    desk = Desk(settings_from_mapping({"mailbox": {"address": "support@agency.example"},
                                       "staff": {"notify": []}}))
    per_client = -(-approvals // clients_count) * QUOTE_CREDITS  # enough for every approval
    people: list[str] = []
    owners = []
    quotes = []
    with transaction(engine) as session:
        for n in range(clients_count):
            address = f"c{n}@client{n}.example"
            client = clients.add_client(session, desk, name=f"Client {n}", emails=[address])
            credits.add_lot(session, desk, client=client, kind=LotKind.GRANT, credits=3,
                            expires_days=30)
            credits.add_lot(session, desk, client=client, kind=LotKind.PURCHASE,
                            credits=max(1, per_client))
            people.append(address)
            owners.append(client)
        for n in range(approvals):
            address, client = people[n % clients_count], owners[n % clients_count]
            request = svc.create_request(session, desk, client=client, requester=address,
                                         subject=f"Quoted {n}")
            quote = svc.quote_request(session, desk, request_id=request.id, terms=svc.QuoteTerms(
                QUOTE_CREDITS, desk.today() + timedelta(days=7)))
            quotes.append((request.id, quote.message_id, address, request.subject))
        before = set()
        for row in session.exec(select(Outbox)):  # that mail went out before the test
            row.status = OutboxStatus.SENT
            before.add(row.message_id)
            session.add(row)
    messages: list[bytes] = []
    for n in range(new):
        messages.append(mail(sender=people[n % clients_count], subject=f"New {n}",
                             body=f"Please do job {n}."))
    for _request_id, message_id, address, subject in quotes:
        messages.append(reply(sender=address, original_subject=subject,
                              original_body="Reply APPROVE or REJECT.", answer="APPROVE",
                              original_id=message_id))
    for n in range(comments):
        _request_id, message_id, address, subject = quotes[n]
        messages.append(reply(sender=address, original_subject=subject,
                              original_body="Reply APPROVE or REJECT.",
                              answer=f"A question about the quote, number {n}.",
                              original_id=message_id))
    for n in range(auto):
        messages.append(mail(sender=people[n % clients_count], subject="Out of office",
                             body="I am away.", headers={"Auto-Submitted": "auto-replied"}))
    for n in range(balance):
        messages.append(mail(sender=people[n % clients_count], subject="BALANCE", body=""))
    for n in range(strangers):
        messages.append(mail(sender=f"who{n}@nowhere.example", subject="Hello", body="hi"))
    random.Random(seed).shuffle(messages)
    return Backlog(messages, new, approvals, comments, auto, balance, strangers,
                   quoted_ids=[q[0] for q in quotes], before_ids=before)


def append_all(dovecot, messages: Iterable[bytes], user: str = "support",
               folder: str = "INBOX") -> None:
    """Deliver MESSAGES into the mailbox over one IMAP connection."""
    client = dovecot.client(user)
    try:
        for raw in messages:
            client.append(folder, raw)
    finally:
        client.logout()


def inbox_count(dovecot, user: str = "support") -> int:
    client = dovecot.client(user)
    try:
        return int(client.select_folder("INBOX", readonly=True)[b"EXISTS"])
    finally:
        client.logout()


def unsent_count(engine) -> int:
    with transaction(engine) as session:
        return session.exec(select(func.count()).select_from(Outbox).where(
            Outbox.status != OutboxStatus.SENT)).one()


def wait_until(predicate: Callable[[], bool], *, timeout: float, what: str,
               interval: float = 0.2, alive: Callable[[], None] | None = None) -> None:
    """Poll PREDICATE until true; AssertionError after TIMEOUT seconds.
    ALIVE is called each round and may raise (a process that died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if alive is not None:
            alive()
        time.sleep(interval)
    raise AssertionError(f"not within {timeout:.0f}s: {what}")


def delivered_ids(smtp_server) -> Counter:
    """Message-IDs the capture server accepted, with how often."""
    return Counter(c.message()["Message-ID"].strip().strip("<>") for c in smtp_server.messages)


def check_exactly_once(engine, backlog: Backlog, delivered: Counter, *, max_duplicates: int,
                       dovecot=None) -> int:
    """Every message recorded once, requests created once, one debit per approval,
    every outbox row sent, deliveries ⊆ outbox (duplicates only by the same
    Message-ID, at most MAX_DUPLICATES).  Returns the number of duplicates."""
    total = backlog.total
    with transaction(engine) as session:
        inbound = session.exec(select(Inbound)).all()
        assert len(inbound) == total, f"{len(inbound)} recorded, {total} sent in"
        assert len({row.message_id for row in inbound}) == total
        requests = session.exec(select(Request)).all()
        subjects = Counter(r.subject for r in requests)
        doubled = {s: c for s, c in subjects.items() if c != 1}
        assert doubled == {}, f"requests created more than once: {doubled}"
        assert all(subjects[f"New {n}"] == 1 for n in range(backlog.new))
        assert len(requests) == backlog.new + backlog.approvals
        debits = session.exec(select(Entry).where(Entry.kind == EntryKind.DEBIT)).all()
        per_request: Counter = Counter()
        for entry in debits:
            per_request[entry.request_id] -= entry.delta
        assert sorted(per_request) == sorted(backlog.quoted_ids)
        assert set(per_request.values()) <= {QUOTE_CREDITS}, per_request
        rows = session.exec(select(Outbox)).all()
        unsent = [(o.id, o.template, o.status, o.last_error) for o in rows
                  if o.status != OutboxStatus.SENT]
        assert unsent == [], f"outbox rows not sent: {unsent[:5]}"
        templates = Counter(o.template for o in rows if o.message_id not in backlog.before_ids)
        assert templates["client/ack"] == backlog.new, templates
        assert templates["client/approved"] == backlog.approvals, templates
        assert templates["client/balance"] == backlog.balance, templates
        assert templates["staff/comment"] == backlog.comments, templates
        outbox_ids = {o.message_id for o in rows}
        new_ids = outbox_ids - backlog.before_ids
    assert set(delivered) <= outbox_ids, set(delivered) - outbox_ids
    missing = new_ids - set(delivered)
    assert missing == set(), f"{len(missing)} outgoing messages never delivered"
    duplicates = sum(count - 1 for count in delivered.values())
    assert duplicates <= max_duplicates, f"{duplicates} duplicate deliveries"
    if dovecot is not None:
        assert inbox_count(dovecot) == 0
        moved = (dovecot.list_messages("support", "Processed")
                 + dovecot.list_messages("support", "Failed"))
        assert len(moved) == total, f"{len(moved)} messages in Processed/Failed, {total} sent in"
    return duplicates
