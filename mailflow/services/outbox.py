"""Writing outgoing mail: render a template into an outbox row.

The row is written in the transaction of the change that caused it, with its
Message-ID fixed up front, so a crash never sends without a record and never
records without sending (DESIGN §4).  Sending happens after commit, elsewhere.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import func
from sqlmodel import Session, select

from mailflow.core.billing import order_amounts
from mailflow.core.ledger import summarise
from mailflow.core.loopguard import may_suppress
from mailflow.desk import Desk
from mailflow.models import (
    Client,
    Contact,
    Inbound,
    Outbox,
    OutboxAttachment,
    OutboxStatus,
    Quote,
    Request,
)
from mailflow.services import credits as ledger


@dataclass(frozen=True)
class FileToSend:
    """A file attached to an outgoing message."""

    filename: str
    content_type: str
    data: bytes


def new_message_id(desk: Desk) -> str:
    domain = desk.settings.mailbox.address.rpartition("@")[2] or "mailflow.invalid"
    return f"mailflow.{uuid.uuid4().hex}@{domain}"


def price_context(desk: Desk) -> dict[str, Any]:
    """One credit's price as the mail states it: `yen` and its tax basis `tax`
    (`excl`: tax is added on invoices; `incl`: tax included), `yen_incl_tax`
    (what one credit costs with tax), and `buy_by_mail`: clients may reply
    `BUY n` (the basis comes from `billing.price_includes_tax`)."""
    billing = desk.settings.billing
    yen = desk.settings.credits.price_yen
    gross = order_amounts(1, unit_price_yen=yen, tax_rate=billing.tax_rate,
                          price_includes_tax=billing.price_includes_tax,
                          rounding=billing.rounding).total_yen
    return {"yen": yen, "tax": "incl" if billing.price_includes_tax else "excl",
            "yen_incl_tax": gross, "buy_by_mail": True}


def balance_context(session: Session, desk: Desk, client_id: int) -> dict[str, Any]:
    now = desk.now()
    rows = ledger.lots_with_remaining(session, client_id)
    summary = summarise(ledger.as_balances(rows), now)
    lots = [{"kind": lot.kind.value if hasattr(lot.kind, "value") else lot.kind,
             "remaining": left, "expires_at": lot.expires_at, "credits": lot.credits,
             "granted_at": lot.granted_at}
            for lot, left in rows if left > 0 and (lot.expires_at is None or lot.expires_at > now)]
    next_expiry = None
    if summary.next_expiry_at is not None:
        next_expiry = {"credits": summary.next_expiry_credits,
                       "expires_at": summary.next_expiry_at}
    return {"available": summary.available, "next_expiry": next_expiry,
            "never_expiring": summary.never_expiring,
            "price_yen": desk.settings.credits.price_yen, "price": price_context(desk),
            "lots": lots}


def request_context(desk: Desk, request: Request) -> dict[str, Any]:
    return {"number": request.id, "tag": desk.tag(request.id), "subject": request.subject,
            "status": request.status.value if hasattr(request.status, "value")
            else request.status,
            "text": request.text, "requester": request.requester, "due": request.due,
            "credits": request.credits}


def quote_context(desk: Desk, quote: Quote) -> dict[str, Any]:
    # valid_until is the first moment it is no longer valid; people read the day before.
    last_valid_day = quote.valid_until.astimezone(desk.tz).date() - timedelta(days=1)
    return {"credits": quote.credits, "due": quote.due, "note": quote.note,
            "valid_until": last_valid_day, "token": quote.token}


def _thread_queries(client_visible: bool) -> tuple[sa.Select, sa.Select]:
    inbound = (sa.select(Inbound.message_id, Inbound.received_at)
               .where(Inbound.request_id == sa.bindparam("request_id"),
                      Inbound.message_id.is_not(None)))
    outbound = (sa.select(Outbox.message_id, Outbox.created_at)
                .where(Outbox.request_id == sa.bindparam("request_id")))
    if client_visible:
        client_id = (sa.select(Request.client_id)
                     .where(Request.id == sa.bindparam("request_id")).scalar_subquery())
        inbound = inbound.where(Inbound.from_addr.in_(
            sa.select(Contact.email).where(Contact.client_id == client_id)))
        outbound = outbound.where(Outbox.template.startswith("client/"))
    return inbound, outbound


# Asked for most answers: prebuilt once (see services.inbound._LAST_HOUR).
_THREAD = {visible: _thread_queries(visible) for visible in (False, True)}


def thread_ids(session: Session, request_id: int, *, client_visible: bool = False) -> list[str]:
    """Message-IDs of a request's thread, oldest first (for References).

    `client_visible`: only what the client has seen — messages from the
    client's own addresses and our `client/` mail — never a staff notice or a
    staff member's mail to us, whose Message-IDs would mean nothing to the
    client's mail program (and tell it that there is more to the thread)."""
    session.flush()
    connection = session.connection()
    rows = [row for query in _THREAD[client_visible]
            for row in connection.execute(query, {"request_id": request_id})]
    return [message_id for message_id, _ in sorted(rows, key=lambda row: row[1])]


def queue_message(session: Session, desk: Desk, *, template: str, to: Iterable[str],
                  context: Mapping[str, Any], client: Client | None = None,
                  request: Request | None = None, auto: bool = False,
                  in_reply_to: str | None = None, lang: str | None = None,
                  reply_to: str | None = None, thread: bool = True,
                  attachments: Sequence[FileToSend] = (), held: str | None = None) -> Outbox:
    """Render `template` for `to` and write it to the outbox; returns the row.

    The balance footer shows the client's balance as it stands in this
    transaction, i.e. after the change that caused the message.  `thread`:
    refer to the request's earlier messages in References (off when the
    recipient is not the request's client).  Client mail to a request's
    requester Cc's the request's other addresses of the same client
    (`policy.cc_client_contacts`, `copied_contacts`).  `held`: write the row
    `suppressed` with this reason (it is kept and listed, never sent)."""
    session.flush()
    full: dict[str, Any] = {
        "client": {"name": client.name, "lang": client.lang} if client else None,
        "support": {"address": desk.settings.mailbox.address,
                    "display_name": desk.settings.mailbox.display_name},
        "balance": balance_context(session, desk, client.id) if client else None,
        "now": desk.now(),
        "request": request_context(desk, request) if request else None,
    }
    full.update(context)
    language = lang or (client.lang if client else desk.settings.language)
    rendered = desk.renderer.render(template, language, full)
    references: list[str] = []
    if thread and request is not None and request.id is not None:
        references = thread_ids(session, request.id,
                                client_visible=not template.startswith("staff/"))
    if in_reply_to and in_reply_to not in references:
        references.append(in_reply_to)
    parent = in_reply_to or (references[-1] if references else None)
    recipients = ",".join(dict.fromkeys(a.lower() for a in to))
    cc = []
    if template.startswith("client/") and request is not None \
            and request.requester in recipients.split(","):
        cc = [a for a in copied_contacts(session, desk, request)
              if a not in recipients.split(",")]
    if held is None and auto:
        held = loop_guard(session, desk, recipients, template)
    status = OutboxStatus.SUPPRESSED if held else OutboxStatus.PENDING
    row = Outbox(message_id=new_message_id(desk), template=template,
                 request_id=request.id if request else None,
                 client_id=client.id if client else None,
                 to_addrs=recipients, cc_addrs=",".join(cc) or None,
                 subject=rendered.subject, body_text=rendered.text, body_html=rendered.html,
                 in_reply_to=parent, references=" ".join(references[-20:]) or None,
                 reply_to=reply_to, auto=auto, status=status, last_error=held,
                 next_attempt_at=desk.now(), created_at=desk.now())
    for file in attachments:
        row.attachments.append(OutboxAttachment(filename=file.filename,
                                                content_type=file.content_type, data=file.data))
    session.add(row)
    session.flush()
    if held and auto:
        _tell_staff_of_suppressed(session, desk, row)
    return row


def copied_contacts(session: Session, desk: Desk, request: Request) -> list[str]:
    """The addresses an answer to REQUEST copies: those that took part in its mail
    (`Request.cc_addrs`) and are still addresses of its client, never another's."""
    if not desk.settings.policy.cc_client_contacts or not request.cc_addrs:
        return []
    contacts = set(session.exec(select(Contact.email)
                                .where(Contact.client_id == request.client_id)).all())
    return [a for a in request.cc_addrs.split(",")
            if a and a in contacts and a != request.requester]


def add_participants(session: Session, request: Request, addresses: Iterable[str],
                     own_address: str) -> None:
    """Remember the client's addresses seen on REQUEST's mail (From, To, Cc), so
    that answers copy them; addresses of other clients or strangers are not kept."""
    wanted = {a.lower() for a in addresses if a} - {request.requester, own_address.lower()}
    if not wanted:
        return
    contacts = set(session.exec(select(Contact.email).where(
        Contact.client_id == request.client_id, Contact.email.in_(wanted))).all())
    known = [a for a in (request.cc_addrs or "").split(",") if a]
    merged = list(dict.fromkeys([*known, *sorted(contacts)]))
    if merged != known and len(",".join(merged)) <= 2000:
        request.cc_addrs = ",".join(merged)
        session.add(request)


# --- the loop guard (DESIGN §3 rule 10) ---------------------------------------------

def suspect_loop(session: Session, address: str, reason: str) -> None:
    """Mark ADDRESS, for this transaction, as a correspondent that looks automatic
    (`core.loopguard.looks_automatic`): only then does the hourly cap apply to
    the answers written to it."""
    session.info.setdefault("loop_suspects", {})[address.lower()] = reason


def loop_guard(session: Session, desk: Desk, recipients: str, template: str) -> str | None:
    """Why an automatic answer to RECIPIENTS must not be sent, or None.

    The cap holds back answers only to a correspondent that looks automatic
    (marked by `suspect_loop`), and never a decision's confirmation: a person
    in an ordinary conversation always gets every answer."""
    reason = session.info.get("loop_suspects", {}).get(recipients)
    if reason is None or not may_suppress(template):
        return None
    if over_autoreply_limit(session, desk, recipients):
        limit = desk.settings.policy.autoreply_limit_per_hour
        return f"loop guard: {limit} automatic answers in the last hour to a correspondent " \
               f"that looks automatic ({reason})"
    return None


def _tell_staff_of_suppressed(session: Session, desk: Desk, row: Outbox) -> None:
    """Staff hear of held-back answers once per address per day: when this is the
    first one to that address for a day."""
    earlier = session.exec(select(Outbox.id).where(
        Outbox.to_addrs == row.to_addrs, Outbox.status == OutboxStatus.SUPPRESSED,
        Outbox.auto.is_(True), Outbox.id != row.id,
        Outbox.created_at >= desk.now() - timedelta(days=1)).limit(1)).first()
    if earlier is None:
        notify_staff(session, desk, template="staff/answers_suppressed",
                     request=session.get(Request, row.request_id) if row.request_id else None,
                     context={"address": row.to_addrs, "reason": row.last_error,
                              "held": {"id": row.id, "subject": row.subject,
                                       "template": row.template}})


def over_autoreply_limit(session: Session, desk: Desk, recipients: str) -> bool:
    """Whether RECIPIENTS had `policy.autoreply_limit_per_hour` automatic answers
    in the last hour (suppressed ones not counted); counts this one if not.

    Counts once per address and transaction, then in memory: a batch of
    messages from one sender asks the database once."""
    counts = session.info.setdefault("auto_answers", {})
    limit = desk.settings.policy.autoreply_limit_per_hour
    if recipients not in counts:
        since = desk.now() - timedelta(hours=1)
        counts[recipients] = _count_up_to(session, limit, select(Outbox.id).where(
            Outbox.to_addrs == recipients, Outbox.auto.is_(True), Outbox.created_at >= since,
            Outbox.status != OutboxStatus.SUPPRESSED))
    if counts[recipients] >= limit:
        return True
    counts[recipients] += 1
    return False


def _count_up_to(session: Session, limit: int, rows: sa.Select) -> int:
    """How many ROWS there are, counting no further than LIMIT: a cap only
    asks whether it is reached, and an hour of a busy kind can hold thousands."""
    return session.exec(select(func.count()).select_from(rows.limit(limit).subquery())).one()


def notice_files(desk: Desk, found: Sequence[Any]) -> tuple[list[dict], list[FileToSend]]:
    """What a staff notice says of a message's attachments (name, type, size,
    whether attached) and the files it carries: in order, as long as their total
    stays within `policy.max_message_mb`.  FOUND: parsed attachments
    (`core.message.Attachment`: filename, content_type, size, data)."""
    budget = int(desk.settings.policy.max_message_mb * 1024 * 1024)
    listing: list[dict] = []
    files: list[FileToSend] = []
    for n, item in enumerate(found, start=1):
        name = item.filename or f"attachment-{n}"
        attach = bool(item.data) and len(item.data) <= budget
        if attach:
            budget -= len(item.data)
            files.append(FileToSend(name, item.content_type, item.data))
        listing.append({"name": name, "type": item.content_type, "size": item.size,
                        "attached": attach})
    return listing, files


def staff_recipients(desk: Desk, request: Request | None) -> list[str]:
    """Who hears about REQUEST: its owner's addresses, else `staff.notify`."""
    if request is not None and request.owner:
        member = desk.settings.staff.member(request.owner)
        if member is not None and member.emails:
            return list(member.emails)
    return list(desk.settings.staff.notify)


def notify_staff(session: Session, desk: Desk, *, template: str, context: Mapping[str, Any],
                 client: Client | None = None, request: Request | None = None,
                 thread: bool = True, to: Sequence[str] | None = None,
                 attachments: Sequence[FileToSend] = ()) -> Outbox | None:
    """A staff notice: to the request's owner when there is one, else to
    `staff.notify` (`to` overrides both).  Notices of one kind are capped per
    hour (`policy.staff_notice_limit_per_hour`): past the cap they are written
    `suppressed` (listed by `mailflow outbox`, never sent), and staff get one
    `staff/notices_held` summary instead of a flood (issue 9.3)."""
    recipients = list(to) if to is not None else staff_recipients(desk, request)
    if not recipients:
        return None
    held = _staff_notice_cap(session, desk, template)
    row = queue_message(session, desk, template=template, to=recipients, context=context,
                        client=client, request=request, lang=desk.settings.language,
                        thread=thread, attachments=attachments, held=held)
    if held and _first_held_this_hour(session, desk, row):
        queue_message(session, desk, template="staff/notices_held", to=recipients,
                      context={"kind": template, "limit": desk.settings.policy
                               .staff_notice_limit_per_hour, "first": {
                                   "id": row.id, "subject": row.subject}},
                      lang=desk.settings.language)
    return row


def _staff_notice_cap(session: Session, desk: Desk, template: str) -> str | None:
    """Why a staff notice of this kind is held back (the hourly cap), or None.

    Counts once per kind and transaction, then in memory (a commit group of
    messages asks the database once, as `over_autoreply_limit` does)."""
    limit = desk.settings.policy.staff_notice_limit_per_hour
    if limit is None or template == "staff/notices_held":
        return None
    counts = session.info.setdefault("staff_notices", {})
    if template not in counts:
        counts[template] = _count_up_to(session, limit, select(Outbox.id).where(
            Outbox.template == template, Outbox.status != OutboxStatus.SUPPRESSED,
            Outbox.created_at >= desk.now() - timedelta(hours=1)))
    if counts[template] >= limit:
        return f"staff notice cap: {limit} notices of this kind in the last hour"
    counts[template] += 1
    return None


def _first_held_this_hour(session: Session, desk: Desk, row: Outbox) -> bool:
    held = session.info.setdefault("staff_notices_held", set())
    if row.template in held:
        return False
    held.add(row.template)
    earlier = session.exec(select(Outbox.id).where(
        Outbox.template == row.template, Outbox.status == OutboxStatus.SUPPRESSED,
        Outbox.id != row.id,
        Outbox.created_at >= desk.now() - timedelta(hours=1)).limit(1)).first()
    return earlier is None


def _outbox_query(query, include_sent: bool):
    if not include_sent:
        query = query.where(Outbox.status.in_([OutboxStatus.PENDING, OutboxStatus.SENDING,
                                               OutboxStatus.FAILED, OutboxStatus.SUPPRESSED]))
    return query


def list_outbox(session: Session, *, include_sent: bool = True, limit: int = 200,
                offset: int = 0) -> list[Outbox]:
    """One page of the outbox, oldest first (`count_outbox` says how many in all)."""
    query = _outbox_query(select(Outbox), include_sent).order_by(Outbox.id)
    return list(session.exec(query.offset(offset).limit(limit)))


def count_outbox(session: Session, *, include_sent: bool = True) -> int:
    return session.exec(_outbox_query(select(func.count()).select_from(Outbox),
                                      include_sent)).one()


def retry_failed(session: Session, desk: Desk) -> int:
    rows = session.exec(select(Outbox).where(Outbox.status == OutboxStatus.FAILED)).all()
    for row in rows:
        row.status = OutboxStatus.PENDING
        row.attempts = 0
        row.next_attempt_at = desk.now()
        session.add(row)
    session.flush()
    return len(rows)
