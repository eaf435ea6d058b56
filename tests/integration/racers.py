"""Two real processes answering one quote at the same moment.

`race()` starts two Python processes (spawned, so each has its own interpreter,
engine and connections); for every trial both wait at a barrier and then hand
their message to `intake.receive`, the door every inbound message passes.
`quoted_requests()` and `check_one_outcome()` prepare the requests and state
what must hold afterwards: one outcome per request, the ledger agreeing with it.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta

from sqlmodel import select

from mailflow.config import settings_from_mapping
from mailflow.core.ledger import EntryKind, LotKind
from mailflow.core.states import Status
from mailflow.db import create_db_engine, transaction
from mailflow.desk import Desk
from mailflow.models import Entry, Inbound, InboundStatus, Outbox, OutboxStatus, Request
from mailflow.services import clients, credits
from mailflow.services import requests as svc
from tests.mails import reply

SUPPORT = "support@agency.example"
CLIENT = "race@client.example"
CONFIG = {"mailbox": {"address": SUPPORT}, "staff": {"notify": ["staff@agency.example"]},
          "policy": {"autoreply_limit_per_hour": 10_000,
                     "staff_notice_limit_per_hour": None}}
QUOTED = 3  # credits per quote
CONFIRMATIONS = ("client/approved", "client/rejected")


def _racer(db_url: str, raws: list[bytes], barrier, results) -> None:
    """One process: for each trial, wait for the other, then receive the message."""
    from mailflow.intake import receive  # imported in the child, after the spawn

    engine = create_db_engine(db_url)
    desk = Desk(settings_from_mapping(CONFIG))
    try:
        for raw in raws:
            barrier.wait(timeout=60)
            try:
                outcome = receive(engine, desk, raw)
                results.put((outcome.verdict, outcome.status.value, outcome.reason))
            except Exception as error:  # reported to the test, which fails on it
                results.put(("error", "error", repr(error)))
    finally:
        engine.dispose()


def race(db_url: str, first: list[bytes], second: list[bytes]) -> list[tuple]:
    """Run trial k as first[k] against second[k] in two processes; the outcomes."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    results = context.Queue()
    processes = [context.Process(target=_racer, args=(db_url, raws, barrier, results))
                 for raws in (first, second)]
    for process in processes:
        process.start()
    outcomes: list[tuple] = []
    deadline = time.monotonic() + 120
    try:
        while len(outcomes) < len(first) + len(second):
            try:
                outcomes.append(results.get(timeout=1))
            except queue.Empty:
                dead = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
                assert not dead and time.monotonic() < deadline, \
                    f"racers exited {dead} after {len(outcomes)} outcomes"
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join(timeout=10)
    assert [process.exitcode for process in processes] == [0, 0]
    return outcomes


@dataclass
class Quoted:
    client_id: int
    start_balance: int
    requests: list[int] = field(default_factory=list)
    quote_ids: list[str] = field(default_factory=list)   # the quote mails' Message-IDs
    subjects: list[str] = field(default_factory=list)


def quoted_requests(engine, count: int, *, balance: int = 1000) -> Quoted:
    """One client holding BALANCE credits, COUNT requests each quoted 3 credits;
    the mail so far counts as sent."""
    desk = Desk(settings_from_mapping(CONFIG))
    with transaction(engine) as session:
        client = clients.add_client(session, desk, name="Race", emails=[CLIENT])
        credits.add_lot(session, desk, client=client, kind=LotKind.PURCHASE, credits=balance)
        made = Quoted(client_id=client.id, start_balance=balance)
        for n in range(count):
            request = svc.create_request(session, desk, client=client, requester=CLIENT,
                                         subject=f"Race job {n}")
            quote = svc.quote_request(session, desk, request_id=request.id, terms=svc.QuoteTerms(
                QUOTED, desk.today() + timedelta(days=10)))
            made.requests.append(request.id)
            made.quote_ids.append(quote.message_id)
            made.subjects.append(request.subject)
        for row in session.exec(select(Outbox)):
            row.status = OutboxStatus.SENT
            session.add(row)
    return made


def answer(made: Quoted, n: int, word: str) -> bytes:
    """The client's reply with WORD to the quote of request number N (a new Message-ID)."""
    return reply(sender=CLIENT, original_subject=made.subjects[n], answer=word,
                 original_body="Reply APPROVE or REJECT.", original_id=made.quote_ids[n])


def check_one_outcome(engine, made: Quoted) -> tuple[Counter, list[str]]:
    """Each request ended in one outcome: approved with one debit of the quote and
    one `approved` mail, or rejected with no debit and one `rejected` mail; the
    balance is the start less the approved quotes.  Returns the outcomes and the
    broken requests (each with what is wrong)."""
    desk = Desk(settings_from_mapping(CONFIG))
    broken: list[str] = []
    ends: Counter = Counter()
    with transaction(engine) as session:
        for request_id in made.requests:
            request = session.get(Request, request_id)
            debited = -sum(e.delta for e in session.exec(select(Entry).where(
                Entry.request_id == request_id, Entry.kind == EntryKind.DEBIT)))
            sent = Counter(session.exec(select(Outbox.template).where(
                Outbox.request_id == request_id, Outbox.template.in_(CONFIRMATIONS))))
            status = Status(request.status)
            ends[status.value] += 1
            expected = {Status.APPROVED: (QUOTED, {"client/approved": 1}),
                        Status.REJECTED: (0, {"client/rejected": 1})}.get(status)
            if expected is None or (debited, dict(sent)) != expected:
                broken.append(f"request {request_id}: {status.value}, debited {debited}, "
                              f"confirmations {dict(sent)}")
        available = credits.balance(session, desk, made.client_id).available
        wanted = made.start_balance - QUOTED * ends[Status.APPROVED.value]
        if available != wanted:
            broken.append(f"balance {available}, expected {wanted}")
        failed = session.exec(select(Inbound.reason).where(
            Inbound.status == InboundStatus.FAILED)).all()
        broken += [f"message failed: {reason}" for reason in failed]
    return ends, broken


def loser_answers(engine, made: Quoted) -> Counter:
    """How many `already_answered` notes each request's losing message got."""
    with transaction(engine) as session:
        return Counter(session.exec(select(Outbox.request_id).where(
            Outbox.template == "client/already_answered",
            Outbox.request_id.in_(made.requests))))
