"""Requests (tickets) and quotes: every transition of the state machine.

Each function checks the transition with the pure state machine first, then
changes rows and queues the messages the change causes, all in the caller's
transaction.  Approval takes the credits in that same transaction.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, select

from mailflow.core.billing import order_amounts
from mailflow.core.quotes import earliest_due, expiring_before, last_valid_day, shortfall
from mailflow.core.states import Action, Status, next_status
from mailflow.desk import Desk
from mailflow.errors import InsufficientCredits, InvalidTransition, MailflowError, NotFound
from mailflow.models import Client, Entry, Inbound, Outbox, Quote, QuoteStatus, Request
from mailflow.services import bounds
from mailflow.services import credits as ledger
from mailflow.services.clients import client_emails
from mailflow.services.low_balance import check_low_balance
from mailflow.services.outbox import (
    add_participants,
    notice_files,
    notify_staff,
    price_context,
    queue_message,
    quote_context,
)

STAFF = "staff"


def new_token() -> str:
    """128 random bits, lower-case base32: safe in an address's local part and
    unaffected by mail systems that fold case."""
    return base64.b32encode(secrets.token_bytes(16)).decode().rstrip("=").lower()


def get_request(session: Session, request_id: int) -> Request:
    request = session.get(Request, request_id) if bounds.is_row_id(request_id) else None
    if request is None:
        raise NotFound(f"request {request_id} not found")
    return request


def lock_request(session: Session, request_id: int) -> Request:
    """Lock a request's row and read it afresh (DESIGN §4): every change of a
    request's state — a decision, a quote, a cancellation — holds this lock, so
    changes of one request are serialised across processes.  `populate_existing`
    overwrites the copy this transaction may already hold (the identity map would
    otherwise hand back the state read before the lock).  SQLite's BEGIN
    IMMEDIATE admits one writer at a time; there the lock is that."""
    request = session.exec(select(Request).where(Request.id == request_id)
                           .with_for_update().execution_options(populate_existing=True)).first() \
        if bounds.is_row_id(request_id) else None
    if request is None:
        raise NotFound(f"request {request_id} not found")
    return request


def current_quote(session: Session, request: Request, *, fresh: bool = False) -> Quote | None:
    """The request's current quote; `fresh`: read again from the database (after
    `lock_request`, quotes change only under the request's lock)."""
    if not request.current_quote_id:
        return None
    return session.get(Quote, request.current_quote_id, populate_existing=fresh)


def _move(desk: Desk, request: Request, action: Action) -> None:
    request.status = next_status(Status(request.status), action)
    request.updated_at = desk.now()


def catalog_groups(desk: Desk, lang: str) -> list[dict]:
    groups: dict[int, list[str]] = {}
    for item in desk.settings.catalog:
        title = item.title_ja if lang == "ja" and item.title_ja else item.title
        groups.setdefault(item.credits, []).append(title)
    return [{"credits": credits, "titles": titles} for credits, titles in sorted(groups.items())]


def similar_tasks(desk: Desk, subject: str, text: str, lang: str) -> list[dict]:
    """Catalog entries whose key or words appear in the request (a cheap hint)."""
    haystack = f"{subject}\n{text}".lower()
    found = []
    for item in desk.settings.catalog:
        words = [w for w in item.key.split("_") if len(w) > 3]
        if any(word in haystack for word in words):
            title = item.title_ja if lang == "ja" and item.title_ja else item.title
            found.append({"title": title, "credits": item.credits})
    return found[:3]


def create_request(session: Session, desk: Desk, *, client: Client, requester: str,
                   subject: str, text: str = "", actor: str = STAFF,
                   inbound_message_id: str | None = None, auto: bool = False,
                   attachments: Sequence[Any] = (), participants: Sequence[str] = ()
                   ) -> Request:
    """A new ticket, its acknowledgement to the requester and a note to staff.

    `attachments`: the files that came with it (parsed), listed in the staff
    notice and attached to it; `participants`: the addresses on its mail (the
    client's among them are copied on answers)."""
    subject = " ".join(subject.split()) or "(no subject)"
    now = desk.now()
    first = session.exec(select(func.min(Request.id))
                         .where(Request.client_id == client.id)).one()
    request = Request(client_id=client.id, requester=requester.lower(), subject=subject,
                      text=text, status=Status.RECEIVED, created_at=now, updated_at=now)
    session.add(request)
    session.flush()
    add_participants(session, request, participants, desk.settings.mailbox.address)
    # A new request has no thread yet but the message that opened it.
    queue_message(session, desk, template="client/ack", to=[request.requester],
                  client=client, request=request, auto=auto, in_reply_to=inbound_message_id,
                  thread=False,
                  context={"catalog_groups": catalog_groups(desk, client.lang)
                           if first is None else [],
                           "first_request": desk.tag(first) if first is not None else None,
                           "similar": similar_tasks(desk, subject, text, client.lang)})
    listing, files = notice_files(desk, attachments)
    notify_staff(session, desk, template="staff/new_request", client=client, request=request,
                 context={"from_addr": request.requester, "text": text,
                          "attachments": listing}, thread=False, attachments=files)
    return request


@dataclass(frozen=True)
class QuoteTerms:
    credits: int
    due: date
    note: str | None = None


def terms_from_task(desk: Desk, key: str, due: date, note: str | None) -> QuoteTerms:
    item = desk.settings.catalog_item(key)
    if item is None:
        known = ", ".join(i.key for i in desk.settings.catalog)
        raise MailflowError(f"no catalog task {key!r} (known: {known})")
    return QuoteTerms(credits=item.credits, due=due, note=note)


def quote_last_day(desk: Desk, today: date, due: date) -> date:
    """The last day a quote sent today for `due` can be approved (DESIGN §2), or
    a `MailflowError` saying which completion date is the earliest possible."""
    lead = desk.settings.credits.min_lead_days
    last = last_valid_day(today, due, valid_days=desk.settings.credits.quote_valid_days,
                          lead_days=lead)
    if last is None:
        raise MailflowError(
            f"due date {due.isoformat()} is too close: a quote is valid until"
            f" {lead} day{'s' * (lead != 1)} before the completion date"
            f" (credits.min_lead_days), so the earliest due date today is"
            f" {earliest_due(today, lead_days=lead).isoformat()}")
    return last


def quote_terms(session: Session, desk: Desk, client: Client, quote: Quote) -> dict:
    """What a quote (and a short approval) tells beyond the quote itself: the
    price with its tax basis, what is missing and how to get it, and credits
    the quote would use that expire before it does."""
    now = desk.now()
    lots = ledger.lot_balances(session, client.id)
    price = price_context(desk)
    allotment = ledger.next_allotment(session, desk, client)
    short = shortfall(lots, quote.credits, now, valid_until=quote.valid_until,
                      allotment_at=allotment.at if allotment else None,
                      allotment_credits=allotment.credits if allotment else None)
    short_context = None
    if short is not None:
        billing = desk.settings.billing
        amounts = order_amounts(short.credits, unit_price_yen=price["yen"],
                                tax_rate=billing.tax_rate,
                                price_includes_tax=billing.price_includes_tax,
                                rounding=billing.rounding)
        short_context = {
            "credits": short.credits, "yen": short.credits * price["yen"],
            "yen_incl_tax": amounts.total_yen,
            "buy_by_mail": price["buy_by_mail"],
            "allotment": ({"at": short.allotment_at, "credits": short.allotment_credits,
                           "in_time": short.allotment_at < quote.valid_until}
                          if short.allotment_at else None),
            "waiting_covers": short.waiting_covers}
    expiring = expiring_before(lots, quote.credits, now, quote.valid_until)
    return {"price": price, "yen": quote.credits * price["yen"], "shortfall": short_context,
            "expiring": [{"credits": e.credits, "expires_at": e.expires_at} for e in expiring]}


def quote_request(session: Session, desk: Desk, *, request_id: int, terms: QuoteTerms,
                  actor: str = STAFF) -> Quote:
    """Send a quote; a re-quote voids the earlier one (its token stops working)."""
    bounds.check_credits(terms.credits, maximum=desk.settings.credits.max_credits_per_quote,
                         what="a quote", key="max_credits_per_quote")
    today = desk.today()
    if terms.due < today:
        raise MailflowError(f"due date {terms.due.isoformat()} is in the past")
    bounds.check_date(terms.due, today=today, what="due date", past=False)
    last_day = quote_last_day(desk, today, terms.due)
    request = lock_request(session, request_id)
    _move(desk, request, Action.QUOTE)
    earlier = current_quote(session, request, fresh=True)
    if earlier is not None and earlier.status == QuoteStatus.OPEN:
        earlier.status = QuoteStatus.VOID
        session.add(earlier)
    valid_until = ledger.start_of_day(last_day + timedelta(days=1), desk.tz)
    quote = Quote(request_id=request.id, credits=terms.credits, due=terms.due, note=terms.note,
                  token=new_token(), valid_until=valid_until, created_at=desk.now(),
                  actor=actor)
    session.add(quote)
    session.flush()
    request.current_quote_id = quote.id
    request.credits = terms.credits
    request.due = terms.due
    session.add(request)
    client = session.get(Client, request.client_id)
    reply_to = None
    if desk.settings.mailbox.reply_token:
        local, _, domain = desk.settings.mailbox.address.partition("@")
        reply_to = f"{local}+{quote.token}@{domain}"
    row = queue_message(session, desk, template="client/quote", to=[request.requester],
                        client=client, request=request, reply_to=reply_to,
                        context={"quote": quote_context(desk, quote),
                                 **quote_terms(session, desk, client, quote)})
    quote.message_id = row.message_id
    session.add(quote)
    session.flush()
    return quote


def _open_quote(session: Session, desk: Desk, request: Request) -> Quote:
    quote = current_quote(session, request, fresh=True)
    if quote is None or quote.status != QuoteStatus.OPEN:
        raise InvalidTransition(f"request {request.id} has no open quote")
    return quote


def quote_is_expired(desk: Desk, quote: Quote) -> bool:
    return desk.now() >= quote.valid_until


def shortfall_message(desk: Desk, error: InsufficientCredits) -> str:
    short = error.shortfall
    price = short * desk.settings.credits.price_yen
    return (f"client has {error.available} credit{'s' * (error.available != 1)},"
            f" quote needs {error.needed}: short by {short} credit{'s' * (short != 1)}"
            f" ({price:,} yen)")


def approve_request(session: Session, desk: Desk, *, request_id: int, actor: str = STAFF,
                    in_reply_to: str | None = None, auto: bool = False) -> Request:
    """Take the quoted credits and move to approved, or raise `InsufficientCredits`
    having taken nothing.  The caller decides whether the shortfall is mailed."""
    request = lock_request(session, request_id)
    if Status(request.status) is not Status.QUOTED:
        next_status(Status(request.status), Action.APPROVE)  # raises with the reason
    quote = _open_quote(session, desk, request)
    if quote_is_expired(desk, quote):
        raise InvalidTransition(f"the quote for request {request.id} expired on "
                                f"{quote_context(desk, quote)['valid_until'].isoformat()}")
    try:
        draws = ledger.debit(session, desk, client_id=request.client_id, credits=quote.credits,
                             request_id=request.id, actor=actor,
                             note=f"{desk.tag(request.id)} approved")
    except InsufficientCredits as error:
        raise InsufficientCredits(shortfall_message(desk, error), available=error.available,
                                  needed=error.needed) from None
    _move(desk, request, Action.APPROVE)
    quote.status = QuoteStatus.APPROVED
    session.add_all([request, quote])
    client = session.get(Client, request.client_id)
    queue_message(session, desk, template="client/approved", to=[request.requester],
                  client=client, request=request, in_reply_to=in_reply_to, auto=auto,
                  context={"quote": quote_context(desk, quote),
                           "debited": sum(d.credits for d in draws)})
    if actor != STAFF:
        notify_staff(session, desk, template="staff/answered", client=client, request=request,
                     context={"quote": quote_context(desk, quote), "answer": "approved",
                              "by": actor})
    check_low_balance(session, desk, request.client_id)
    return request


def queue_shortfall(session: Session, desk: Desk, *, request: Request,
                    error: InsufficientCredits, in_reply_to: str | None = None) -> Outbox:
    """Tell the client what is missing: credits, their price, how to buy, and
    whether the next allotment comes in time (the same facts as the quote)."""
    client = session.get(Client, request.client_id)
    quote = current_quote(session, request)
    return queue_message(
        session, desk, template="client/insufficient_credits", to=[request.requester],
        client=client, request=request, in_reply_to=in_reply_to, auto=True,
        context={"quote": quote_context(desk, quote),
                 **quote_terms(session, desk, client, quote)})


def reject_request(session: Session, desk: Desk, *, request_id: int, actor: str = STAFF,
                   in_reply_to: str | None = None, auto: bool = False) -> Request:
    request = lock_request(session, request_id)
    if Status(request.status) is not Status.QUOTED:
        next_status(Status(request.status), Action.REJECT)
    quote = _open_quote(session, desk, request)
    _move(desk, request, Action.REJECT)
    quote.status = QuoteStatus.REJECTED
    session.add_all([request, quote])
    client = session.get(Client, request.client_id)
    queue_message(session, desk, template="client/rejected", to=[request.requester],
                  client=client, request=request, in_reply_to=in_reply_to, auto=auto,
                  context={"quote": quote_context(desk, quote)})
    if actor != STAFF:
        notify_staff(session, desk, template="staff/answered", client=client, request=request,
                     context={"quote": quote_context(desk, quote), "answer": "rejected",
                              "by": actor})
    return request


def complete_request(session: Session, desk: Desk, *, request_id: int, note: str | None = None,
                     actor: str = STAFF) -> Request:
    request = lock_request(session, request_id)
    _move(desk, request, Action.COMPLETE)
    session.add(request)
    client = session.get(Client, request.client_id)
    queue_message(session, desk, template="client/completed", to=[request.requester],
                  client=client, request=request, context={"note": note})
    return request


def cancel_request(session: Session, desk: Desk, *, request_id: int, refund: bool = False,
                   actor: str = STAFF) -> tuple[Request, ledger.Refund | None]:
    """Cancel an open request; with `refund`, an approved one's credits go back
    to the lots they came from (those that expired meanwhile are written off at
    once, and the mail says so).  Returns the request and the refund."""
    request = lock_request(session, request_id)
    was = Status(request.status)
    _move(desk, request, Action.CANCEL)
    quote = current_quote(session, request, fresh=True)
    if quote is not None and quote.status == QuoteStatus.OPEN:
        quote.status = QuoteStatus.VOID
        session.add(quote)
    returned = None
    if refund and was is Status.APPROVED:
        returned = ledger.refund(session, desk, client_id=request.client_id,
                                 request_id=request.id, actor=actor,
                                 note=f"{desk.tag(request.id)} cancelled")
    elif refund:
        raise MailflowError(f"request {request.id} is {was.value}: nothing was debited,"
                            " so there is nothing to refund")
    session.add(request)
    client = session.get(Client, request.client_id)
    queue_message(session, desk, template="client/cancelled", to=[request.requester],
                  client=client, request=request,
                  context={"refund": {
                      "credits": returned.credits, "usable": returned.usable,
                      "written_off": returned.written_off,
                      "expired": [{"credits": credits, "expires_at": at}
                                  for credits, at in returned.expired]}
                      if returned and returned.credits else None})
    return request, returned


def redate_request(session: Session, desk: Desk, *, request_id: int, due: date,
                   note: str | None = None, actor: str = STAFF) -> Request:
    """Move an approved request's completion date; the client is told (`client/redated`)."""
    if due < desk.today():
        raise MailflowError(f"due date {due.isoformat()} is in the past")
    bounds.check_date(due, today=desk.today(), what="due date", past=False)
    request = lock_request(session, request_id)
    if Status(request.status) is not Status.APPROVED:
        next_status(Status(request.status), Action.REDATE)  # raises with the reason
    if due == request.due:
        raise MailflowError(f"request {request.id} is already due on {due.isoformat()}")
    before = request.due
    _move(desk, request, Action.REDATE)
    request.due = due
    session.add(request)
    client = session.get(Client, request.client_id)
    queue_message(session, desk, template="client/redated", to=[request.requester],
                  client=client, request=request,
                  context={"before": before, "due": due, "note": note})
    return request


def expire_quote(session: Session, desk: Desk, *, request_id: int) -> Request:
    request = lock_request(session, request_id)
    _move(desk, request, Action.EXPIRE)
    quote = current_quote(session, request, fresh=True)
    if quote is not None:
        quote.status = QuoteStatus.EXPIRED
        session.add(quote)
    session.add(request)
    client = session.get(Client, request.client_id)
    queue_message(session, desk, template="client/quote_expired", to=[request.requester],
                  client=client, request=request, auto=True,
                  context={"quote": quote_context(desk, quote) if quote else None})
    return request


def list_requests(session: Session, *, status: Status | None = None,
                  client_id: int | None = None) -> list[Request]:
    query = select(Request).order_by(Request.id)
    if status is not None:
        query = query.where(Request.status == status)
    if client_id is not None:
        query = query.where(Request.client_id == client_id)
    return list(session.exec(query))


def request_thread(session: Session, request_id: int) -> list[dict]:
    """Inbound and outbound messages of a request, oldest first."""
    inbound = session.exec(select(Inbound).where(Inbound.request_id == request_id)).all()
    outbound = session.exec(select(Outbox).where(Outbox.request_id == request_id)).all()
    rows = [{"direction": "in", "at": m.received_at, "from": m.from_addr, "to": None,
             "subject": m.subject, "message_id": m.message_id,
             "kind": m.classification} for m in inbound]
    rows += [{"direction": "out", "at": m.created_at, "from": None, "to": m.to_addrs,
              "cc": m.cc_addrs, "subject": m.subject, "message_id": m.message_id,
              "kind": m.template,
              "status": m.status.value if hasattr(m.status, "value") else m.status,
              "attachments": [a.filename for a in m.attachments],
              # What staff wrote to the client (`reply`) is shown as written.
              "text": m.body_text if m.template == "client/reply" else None}
             for m in outbound]
    return sorted(rows, key=lambda row: row["at"])


def request_entries(session: Session, request_id: int) -> list[Entry]:
    return list(session.exec(select(Entry).where(Entry.request_id == request_id)
                             .order_by(Entry.id)))


def may_answer(session: Session, desk: Desk, request: Request, address: str) -> bool:
    """Whether `address` may approve or reject (policy.approve_from)."""
    address = address.lower()
    if desk.settings.policy.approve_from == "requester":
        return address == request.requester
    return address in client_emails(session, request.client_id)
