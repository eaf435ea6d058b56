"""Requests and quotes through the whole state machine, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import threading
from datetime import timedelta

import pytest
from sqlmodel import select

from mailflow.core.ledger import EntryKind, LotKind
from mailflow.core.states import Status
from mailflow.db import create_db_engine, transaction
from mailflow.errors import InsufficientCredits, InvalidTransition, MailflowError
from mailflow.models import Entry, Outbox, Quote, QuoteStatus
from mailflow.services import clients, credits
from mailflow.services import requests as svc


@pytest.fixture
def acme(engine, desk):
    with transaction(engine) as session:
        client = clients.add_client(session, desk, name="Acme",
                                    emails=["a@acme.example", "b@acme.example"], plan=2)
        return client.id


def buy(engine, desk, client_id, n):
    with transaction(engine) as session:
        client = clients.find_client(session, str(client_id))
        credits.add_lot(session, desk, client=client, kind=LotKind.PURCHASE, credits=n)


def new_request(engine, desk, client_id, subject="Replace banner"):
    with transaction(engine) as session:
        client = clients.find_client(session, str(client_id))
        return svc.create_request(session, desk, client=client, requester="a@acme.example",
                                  subject=subject).id


def quote(engine, desk, request_id, n=2, days=7):
    with transaction(engine) as session:
        return svc.quote_request(session, desk, request_id=request_id,
                                 terms=svc.QuoteTerms(n, desk.today() + timedelta(days=days)))


def outbox(engine) -> list[Outbox]:
    with transaction(engine) as session:
        return list(session.exec(select(Outbox).order_by(Outbox.id)))


def footer_available(body: str) -> int:
    return int(re.findall(r"(-?\d+) credits? available", body)[-1])


def test_new_request_acknowledges_client_and_tells_staff(engine, desk, acme):
    buy(engine, desk, acme, 3)
    request_id = new_request(engine, desk, acme)
    ack, staff = outbox(engine)
    assert ack.template == "client/ack" and ack.to_addrs == "a@acme.example"
    assert f"[REQ-{request_id}]" in ack.subject
    assert footer_available(ack.body_text) == 3
    assert staff.template == "staff/new_request" and staff.to_addrs == "staff@agency.example"


def test_requote_voids_the_earlier_quote(engine, desk, acme):
    request_id = new_request(engine, desk, acme)
    first = quote(engine, desk, request_id, 2)
    second = quote(engine, desk, request_id, 3)
    with transaction(engine) as session:
        assert session.get(Quote, first.id).status == QuoteStatus.VOID
        assert session.get(Quote, second.id).status == QuoteStatus.OPEN
        request = svc.get_request(session, request_id)
        assert (request.status, request.credits, request.current_quote_id) == \
            (Status.QUOTED, 3, second.id)
    assert first.token != second.token and len(second.token) >= 26
    quote_mail = [m for m in outbox(engine) if m.template == "client/quote"]
    assert [m.message_id for m in quote_mail] == [first.message_id, second.message_id]
    assert second.token in quote_mail[-1].body_text


def test_approve_takes_credits_once_and_confirms_with_balance_after(engine, desk, acme):
    buy(engine, desk, acme, 5)
    request_id = new_request(engine, desk, acme)
    quote(engine, desk, request_id, 2)
    with transaction(engine) as session:
        svc.approve_request(session, desk, request_id=request_id)
    with pytest.raises(InvalidTransition, match="approved"), transaction(engine) as session:
        svc.approve_request(session, desk, request_id=request_id)
    with transaction(engine) as session:
        debits = session.exec(select(Entry).where(Entry.request_id == request_id)).all()
        assert [(e.kind, e.delta) for e in debits] == [(EntryKind.DEBIT, -2)]
        assert credits.balance(session, desk, acme).available == 3
    confirmation = outbox(engine)[-1]
    assert confirmation.template == "client/approved"
    assert footer_available(confirmation.body_text) == 3


def test_short_balance_takes_nothing_and_names_shortfall_in_yen(engine, desk, acme):
    buy(engine, desk, acme, 3)
    request_id = new_request(engine, desk, acme)
    quote(engine, desk, request_id, 4)
    with pytest.raises(InsufficientCredits, match=r"short by 1 credit \(8,000 yen\)"), \
            transaction(engine) as session:
        svc.approve_request(session, desk, request_id=request_id)
    with transaction(engine) as session:
        assert svc.get_request(session, request_id).status == Status.QUOTED
        assert credits.balance(session, desk, acme).available == 3
        request = svc.get_request(session, request_id)
        error = InsufficientCredits("", available=3, needed=4)
        row = svc.queue_shortfall(session, desk, request=request, error=error)
    assert "8,000" in row.body_text and row.template == "client/insufficient_credits"


def test_reject_then_nothing_more(engine, desk, acme):
    request_id = new_request(engine, desk, acme)
    quote(engine, desk, request_id)
    with transaction(engine) as session:
        svc.reject_request(session, desk, request_id=request_id)
    for action in (svc.approve_request, svc.reject_request, svc.complete_request):
        with pytest.raises(InvalidTransition), transaction(engine) as session:
            action(session, desk, request_id=request_id)
    assert outbox(engine)[-1].template == "client/rejected"


def test_quote_expires_after_validity(engine, desk, acme, clock):
    buy(engine, desk, acme, 5)
    request_id = new_request(engine, desk, acme)
    quote(engine, desk, request_id, 1, days=30)
    clock.advance(days=desk.settings.credits.quote_valid_days + 1)
    with pytest.raises(InvalidTransition, match="expired"), transaction(engine) as session:
        svc.approve_request(session, desk, request_id=request_id)
    with transaction(engine) as session:
        assert svc.expire_quote(session, desk, request_id=request_id).status == Status.EXPIRED
    quote(engine, desk, request_id, 1)  # an expired request may be quoted again
    with transaction(engine) as session:
        assert svc.approve_request(session, desk, request_id=request_id).status == \
            Status.APPROVED


def test_cancel_of_approved_with_refund_returns_credits_to_their_lots(engine, desk, acme):
    buy(engine, desk, acme, 5)
    request_id = new_request(engine, desk, acme)
    quote(engine, desk, request_id, 4)
    with transaction(engine) as session:
        svc.approve_request(session, desk, request_id=request_id)
    with transaction(engine) as session:
        request, refunded = svc.cancel_request(session, desk, request_id=request_id, refund=True)
        assert (request.status, refunded.credits, refunded.usable) == (Status.CANCELLED, 4, 4)
        assert credits.balance(session, desk, acme).available == 5
        lots = {e.lot_id for e in session.exec(select(Entry).where(
            Entry.request_id == request_id))}
        assert len(lots) == 1
    assert outbox(engine)[-1].template == "client/cancelled"


def test_refund_without_a_debit_is_refused(engine, desk, acme):
    request_id = new_request(engine, desk, acme)
    with pytest.raises(MailflowError, match="nothing to refund"), transaction(engine) as session:
        svc.cancel_request(session, desk, request_id=request_id, refund=True)


def test_complete_sends_completion(engine, desk, acme):
    buy(engine, desk, acme, 2)
    request_id = new_request(engine, desk, acme)
    quote(engine, desk, request_id, 2)
    with transaction(engine) as session:
        svc.approve_request(session, desk, request_id=request_id)
    with transaction(engine) as session:
        svc.complete_request(session, desk, request_id=request_id, note="Banner replaced")
    last = outbox(engine)[-1]
    assert last.template == "client/completed" and "Banner replaced" in last.body_text


def test_quote_in_the_past_or_unknown_task_is_refused(engine, desk, acme):
    request_id = new_request(engine, desk, acme)
    with pytest.raises(MailflowError, match="in the past"), transaction(engine) as session:
        svc.quote_request(session, desk, request_id=request_id,
                          terms=svc.QuoteTerms(1, desk.today() - timedelta(days=1)))
    with pytest.raises(MailflowError, match="no catalog task 'nope'"):
        svc.terms_from_task(desk, "nope", desk.today(), None)
    assert svc.terms_from_task(desk, "landing_page", desk.today(), None).credits == 5


def test_unknown_request_is_not_found(engine, desk):
    with pytest.raises(MailflowError, match="request 99 not found"), \
            transaction(engine) as session:
        svc.approve_request(session, desk, request_id=99)


def test_racing_approvals_never_overdraw(db_url, desk, acme, engine):
    """Eight requests of 2 credits each race for 5 credits: exactly two win
    (a row lock on PostgreSQL, BEGIN IMMEDIATE on SQLite)."""
    buy(engine, desk, acme, 5)
    ids = [new_request(engine, desk, acme, f"Task {n}") for n in range(8)]
    for request_id in ids:
        quote(engine, desk, request_id, 2)
    racers = create_db_engine(db_url)
    outcomes: list[str] = []
    barrier = threading.Barrier(len(ids))

    def approve(request_id: int) -> None:
        barrier.wait()
        try:
            with transaction(racers) as session:
                svc.approve_request(session, desk, request_id=request_id)
            outcomes.append("approved")
        except InsufficientCredits:
            outcomes.append("short")

    threads = [threading.Thread(target=approve, args=(i,)) for i in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    racers.dispose()
    assert sorted(outcomes) == ["approved"] * 2 + ["short"] * 6
    with transaction(engine) as session:
        assert credits.balance(session, desk, acme).available == 1
