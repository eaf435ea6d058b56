"""For any interleaving of decision messages, at most one debit per quote, and
the end state is the one processing them one after another would give
(issue 9, DESIGN §3 rule 6 and §4).

Hypothesis chooses two or three messages — APPROVE or REJECT; answering the
current quote, an earlier (void) quote of the same request, or another
request's quote; or an exact copy of the previous message — and the order of
their steps.  Each message is handled in its own transaction.  A step is either
*peek* (its transaction reads the request and its quote, as `gather` does, or
as an earlier message of the same poller batch does) or *run* (handle the
message and commit).  On PostgreSQL every message peeks first and then runs,
and the other messages' steps may fall in between: a transaction may read the
request, another one run to its commit, then the first act on what it read
before — the interleaving in which a stale copy of the request gave two
outcomes.  On
SQLite every transaction starts with BEGIN IMMEDIATE, so nothing can happen
between a peek and the run of the same transaction: there hypothesis chooses
only the order of the messages.  (Real processes racing: the tests in
tests/integration/test_decision_races.py.)"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import Session, select

from mailflow.core.ledger import EntryKind, LotKind
from mailflow.core.message import parse_message
from mailflow.db import is_postgres, transaction
from mailflow.models import Entry, Inbound, InboundStatus, Outbox, OutboxStatus, Request
from mailflow.services import clients, credits
from mailflow.services import requests as svc
from mailflow.services.inbound import gather, handle_message
from tests.mails import reply

PROPERTY = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
CREDITS = 3
_names = itertools.count()


@dataclass(frozen=True)
class Spec:
    word: str     # APPROVE | REJECT
    target: str   # current | old | other
    copy: bool    # the same bytes as the message before it


specs = st.lists(st.builds(Spec, st.sampled_from(["APPROVE", "REJECT"]),
                           st.sampled_from(["current", "current", "current", "old", "other"]),
                           st.sampled_from([False, False, False, True])),
                 min_size=2, max_size=3)


@dataclass
class World:
    client_id: int
    main: int           # a request quoted twice: its first quote is void
    other: int          # another request of the same client, quoted once
    quote_ids: dict     # target -> the quote mail's Message-ID


def make_world(engine, desk) -> World:
    n = next(_names)
    address = f"c{n}@client.example"
    with transaction(engine) as session:
        client = clients.add_client(session, desk, name=f"Client {n}", emails=[address])
        credits.add_lot(session, desk, client=client, kind=LotKind.PURCHASE, credits=100)
        ids, quote_ids = [], {}
        for name in ("main", "other"):
            request = svc.create_request(session, desk, client=client, requester=address,
                                         subject=f"{name} job {n}")
            ids.append(request.id)
            terms = svc.QuoteTerms(CREDITS, desk.today() + timedelta(days=10))
            first = svc.quote_request(session, desk, request_id=request.id, terms=terms)
            if name == "main":
                quote_ids["old"] = first.message_id
                quote_ids["current"] = svc.quote_request(session, desk, request_id=request.id,
                                                         terms=terms).message_id
            else:
                quote_ids["other"] = first.message_id
        for row in session.exec(select(Outbox).where(Outbox.client_id == client.id)):
            row.status = OutboxStatus.SENT
            session.add(row)
    return World(client.id, ids[0], ids[1], quote_ids)


def messages(world: World, plan: list[Spec], engine) -> list[bytes]:
    with transaction(engine) as session:
        address = clients.client_emails(session, world.client_id)[0]
    raws: list[bytes] = []
    for spec in plan:
        if spec.copy and raws:
            raws.append(raws[-1])
        else:
            raws.append(reply(sender=address, original_subject="Quote", answer=spec.word,
                              original_body="Reply APPROVE or REJECT.",
                              original_id=world.quote_ids[spec.target]))
    return raws


def expected(world: World, plan: list[Spec], raws: list[bytes], order: list[int]) -> dict:
    """Processing the messages one after another in ORDER: each request's status."""
    status = {world.main: "quoted", world.other: "quoted"}
    seen: set[bytes] = set()
    for i in order:
        if raws[i] in seen:  # the same message again: recognised, nothing happens
            continue
        seen.add(raws[i])
        spec = next(s for s, raw in zip(plan, raws, strict=True) if raw == raws[i])
        if spec.target == "old":  # a reply to a void quote decides nothing
            continue
        request = world.other if spec.target == "other" else world.main
        if status[request] == "quoted":
            status[request] = "approved" if spec.word == "APPROVE" else "rejected"
    return status


@pytest.mark.slow
@PROPERTY
@given(plan=specs, data=st.data())
def test_any_interleaving_of_decisions_debits_each_quote_at_most_once(engine, desk, plan,
                                                                      data):
    world = make_world(engine, desk)
    raws = messages(world, plan, engine)
    # Each message is read (gather) before it is acted on, in its own transaction.
    steps = {i: ["peek", "run"] if is_postgres(engine) else ["run"] for i in range(len(raws))}
    sessions = {i: Session(engine, expire_on_commit=False) for i in steps}
    order: list[int] = []
    read: dict[int, object] = {}
    try:
        while any(steps.values()):
            i = data.draw(st.sampled_from(sorted(i for i, left in steps.items() if left)),
                          label="next step of message")
            step = steps[i].pop(0)
            if step == "peek":  # what it read stays in the transaction (held, as
                with sessions[i].no_autoflush:  # `handle_message` holds it until it acts)
                    read[i] = gather(sessions[i], desk, parse_message(raws[i]))
            else:
                handle_message(sessions[i], desk, raws[i])
                sessions[i].commit()
                order.append(i)
    finally:
        for session in sessions.values():
            session.close()

    want = expected(world, plan, raws, order)
    with transaction(engine) as session:
        for request_id, status in want.items():
            request = session.get(Request, request_id)
            debits = [-e.delta for e in session.exec(select(Entry).where(
                Entry.request_id == request_id, Entry.kind == EntryKind.DEBIT))]
            confirmations = Counter(session.exec(select(Outbox.template).where(
                Outbox.request_id == request_id,
                Outbox.template.in_(["client/approved", "client/rejected"]))))
            assert sum(debits) <= CREDITS, f"request {request_id} debited {debits}"
            assert (request.status, sum(debits)) == \
                (status, CREDITS if status == "approved" else 0), (plan, order)
            assert dict(confirmations) == ({} if status == "quoted"
                                           else {f"client/{status}": 1}), (plan, order)
        assert credits.balance(session, desk, world.client_id).available == \
            100 - CREDITS * list(want.values()).count("approved")
        assert session.exec(select(Inbound.id).where(
            Inbound.status == InboundStatus.FAILED)).first() is None
