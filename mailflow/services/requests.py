"""Requests (tickets) and quotes: every transition of the state machine.

Each function checks the transition with the pure state machine first, then
changes rows and queues the messages the change causes, all in the caller's
transaction.  Approval takes the credits in that same transaction.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import date, timedelta

from sqlmodel import Session, select

from mailflow.core.states import Action, Status, next_status
from mailflow.desk import Desk
from mailflow.errors import InsufficientCredits, InvalidTransition, MailflowError, NotFound
from mailflow.models import Client, Entry, Inbound, Outbox, Quote, QuoteStatus, Request
from mailflow.services import bounds
from mailflow.services import credits as ledger
from mailflow.services.clients import client_emails
from mailflow.services.outbox import notify_staff, queue_message, quote_context

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
                   inbound_message_id: str | None = None, auto: bool = False) -> Request:
    """A new ticket, its acknowledgement to the requester and a note to staff."""
    subject = " ".join(subject.split()) or "(no subject)"
    now = desk.now()
    request = Request(client_id=client.id, requester=requester.lower(), subject=subject,
                      text=text, status=Status.RECEIVED, created_at=now, updated_at=now)
    session.add(request)
    session.flush()
    # A new request has no thread yet but the message that opened it.
    queue_message(session, desk, template="client/ack", to=[request.requester],
                  client=client, request=request, auto=auto, in_reply_to=inbound_message_id,
                  thread=False,
                  context={"catalog_groups": catalog_groups(desk, client.lang),
                           "similar": similar_tasks(desk, subject, text, client.lang)})
    notify_staff(session, desk, template="staff/new_request", client=client, request=request,
                 context={"from_addr": request.requester, "text": text}, thread=False)
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


def quote_request(session: Session, desk: Desk, *, request_id: int, terms: QuoteTerms,
                  actor: str = STAFF) -> Quote:
    """Send a quote; a re-quote voids the earlier one (its token stops working)."""
    bounds.check_credits(terms.credits, maximum=desk.settings.credits.max_credits_per_quote,
                         what="a quote", key="max_credits_per_quote")
    if terms.due < desk.today():
        raise MailflowError(f"due date {terms.due.isoformat()} is in the past")
    bounds.check_date(terms.due, today=desk.today(), what="due date", past=False)
    request = lock_request(session, request_id)
    _move(desk, request, Action.QUOTE)
    earlier = current_quote(session, request, fresh=True)
    if earlier is not None and earlier.status == QuoteStatus.OPEN:
        earlier.status = QuoteStatus.VOID
        session.add(earlier)
    today = desk.today()
    valid_until = ledger.start_of_day(
        today + timedelta(days=desk.settings.credits.quote_valid_days + 1), desk.tz)
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
                        context={"quote": quote_context(desk, quote)})
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
    return request


def queue_shortfall(session: Session, desk: Desk, *, request: Request,
                    error: InsufficientCredits, in_reply_to: str | None = None) -> Outbox:
    """Tell the client what is missing: credits, their price, the next allotment."""
    client = session.get(Client, request.client_id)
    quote = current_quote(session, request)
    return queue_message(
        session, desk, template="client/insufficient_credits", to=[request.requester],
        client=client, request=request, in_reply_to=in_reply_to, auto=True,
        context={"quote": quote_context(desk, quote),
                 "shortfall": {"credits": error.shortfall,
                               "yen": error.shortfall * desk.settings.credits.price_yen,
                               "next_allotment": ledger.next_allotment(desk, client),
                               "plan_credits": client.plan_credits}})


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
                   actor: str = STAFF) -> tuple[Request, int]:
    """Cancel an open request; with `refund`, an approved one's credits go back
    to the lots they came from.  Returns the request and the credits refunded."""
    request = lock_request(session, request_id)
    was = Status(request.status)
    _move(desk, request, Action.CANCEL)
    quote = current_quote(session, request, fresh=True)
    if quote is not None and quote.status == QuoteStatus.OPEN:
        quote.status = QuoteStatus.VOID
        session.add(quote)
    refunded = 0
    if refund and was is Status.APPROVED:
        refunded = ledger.refund(session, desk, client_id=request.client_id,
                                 request_id=request.id, actor=actor,
                                 note=f"{desk.tag(request.id)} cancelled")
    elif refund:
        raise MailflowError(f"request {request.id} is {was.value}: nothing was debited,"
                            " so there is nothing to refund")
    session.add(request)
    client = session.get(Client, request.client_id)
    queue_message(session, desk, template="client/cancelled", to=[request.requester],
                  client=client, request=request, context={"refunded": refunded})
    return request, refunded


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
              "subject": m.subject, "message_id": m.message_id, "kind": m.template,
              "status": m.status.value if hasattr(m.status, "value") else m.status}
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
