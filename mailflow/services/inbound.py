"""One inbound message, whatever brought it (IMAP, LMTP, a test): record it,
classify it, run exactly one use case, queue the answers — in the caller's
transaction, together with the message's processed-marker (DESIGN §3, §4).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

from sqlmodel import Session, select

from mailflow.core.authres import forbids_action
from mailflow.core.autoreply import AutomaticKind, bounce_evidence, classify_automatic
from mailflow.core.classify import (
    Decision,
    Facts,
    Reason,
    Verdict,
    decide,
    request_number_in,
    tokens_in,
)
from mailflow.core.decisions import Command, Reading, read_reply
from mailflow.core.message import InboundMessage, extract_bounced_message_ids, parse_message
from mailflow.core.states import Status
from mailflow.core.trim import trim_reply
from mailflow.desk import Desk
from mailflow.errors import InsufficientCredits
from mailflow.models import (
    Attachment,
    Client,
    Inbound,
    InboundStatus,
    MailboxState,
    Outbox,
    OutboxStatus,
    Quote,
    Request,
)
from mailflow.services import credits as ledger
from mailflow.services import requests as requests_service
from mailflow.services.clients import client_by_address
from mailflow.services.outbox import notify_staff, queue_message, quote_context


@dataclass(frozen=True)
class Source:
    """Where a message came from: an IMAP folder and UID, or a listener."""

    mailbox: str | None = None
    uidvalidity: int | None = None
    uid: int | None = None


@dataclass(frozen=True)
class Outcome:
    status: InboundStatus
    verdict: str
    request_id: int | None = None
    inbound_id: int | None = None
    duplicate: bool = False
    reason: str | None = None

    @property
    def failed(self) -> bool:
        return self.status is InboundStatus.FAILED


def message_key(msg: InboundMessage, raw: bytes) -> str:
    """The Message-ID, or for mail without one a digest of its bytes (so an
    identical copy is still recognised)."""
    return msg.message_id or f"sha256:{hashlib.sha256(raw).hexdigest()}"


def prefetch_processed(session: Session, sources: list[Source]) -> None:
    """Look up the processed-markers of a whole batch of UIDs in one query;
    `find_processed` then asks the database only by Message-ID."""
    by_box: dict[tuple, list[int]] = {}
    for source in sources:
        if source.uid is not None:
            by_box.setdefault((source.mailbox, source.uidvalidity), []).append(source.uid)
    known = session.info.setdefault("processed_uids", {})
    for (mailbox, uidvalidity), uids in by_box.items():
        rows = session.exec(select(Inbound).where(Inbound.mailbox == mailbox,
                                                  Inbound.uidvalidity == uidvalidity,
                                                  Inbound.uid.in_(uids))).all()
        found = {row.uid: row for row in rows}
        for uid in uids:
            known[(mailbox, uidvalidity, uid)] = found.get(uid)


def find_processed(session: Session, source: Source, key: str | None) -> Inbound | None:
    """The processed-marker: by folder UID first, then by Message-ID."""
    if source.uid is not None:
        known = session.info.get("processed_uids", {})
        marker = (source.mailbox, source.uidvalidity, source.uid)
        if marker in known:
            row = known[marker]
        else:
            row = session.exec(select(Inbound).where(Inbound.mailbox == source.mailbox,
                                                     Inbound.uidvalidity == source.uidvalidity,
                                                     Inbound.uid == source.uid)).first()
        if row is not None:
            return row
    if key:
        return session.exec(select(Inbound).where(Inbound.message_id == key)).first()
    return None


def advance_marker(session: Session, desk: Desk, source: Source) -> None:
    if source.uid is None or source.mailbox is None:
        return
    state = session.get(MailboxState, source.mailbox)
    if state is not None and state.uidvalidity == source.uidvalidity \
            and state.last_uid < source.uid:
        state.last_uid = source.uid
        state.updated_at = desk.now()
        session.add(state)


# --- gathering facts ---------------------------------------------------------------

@dataclass
class Context:
    """What the facts were found from; the actions use it too."""

    msg: InboundMessage
    new_text: str
    reading: Reading
    sender: Client | None
    request: Request | None = None
    quote: Quote | None = None

    @property
    def command(self) -> Command | None:
        return self.reading.command


def _linked_request(session: Session, desk: Desk, msg: InboundMessage, tokens: list[str],
                    sender: Client | None) -> Request | None:
    ids = [*msg.in_reply_to, *reversed(msg.references)]
    if ids:
        request_id = session.exec(select(Outbox.request_id).where(
            Outbox.message_id.in_(ids), Outbox.request_id.is_not(None))
            .order_by(Outbox.id.desc())).first()
        if request_id is None:
            request_id = session.exec(select(Inbound.request_id).where(
                Inbound.message_id.in_(ids), Inbound.request_id.is_not(None))
                .order_by(Inbound.id.desc())).first()
        if request_id is not None:
            return session.get(Request, request_id)
    if tokens:
        quote = session.exec(select(Quote).where(Quote.token.in_(tokens))
                             .order_by(Quote.id.desc())).first()
        if quote is not None:
            return session.get(Request, quote.request_id)
    number = request_number_in(msg.subject, desk.settings.credits.subject_tag)
    if number is not None and sender is not None:
        request = session.get(Request, number)
        if request is not None and request.client_id == sender.id:
            return request
    return None


def gather(session: Session, desk: Desk, msg: InboundMessage) -> tuple[Facts, Context]:
    policy = desk.settings.policy
    automatic = classify_automatic(msg, own_address=desk.settings.mailbox.address)
    new_text = trim_reply(msg.text)
    ctx = Context(msg=msg, new_text=new_text, reading=read_reply(new_text, msg.subject),
                  sender=client_by_address(session, msg.from_addr))
    if automatic is not None:
        return Facts(own=automatic.kind is AutomaticKind.OWN, automatic=automatic.reason,
                     bounce=automatic.kind is AutomaticKind.BOUNCE), ctx
    tokens = tokens_in((*msg.to, *msg.cc), msg.text)
    ctx.request = _linked_request(session, desk, msg, tokens, ctx.sender)
    facts = {}
    if ctx.request is not None:
        ctx.quote = requests_service.current_quote(session, ctx.request)
        references = {*msg.in_reply_to, *msg.references}
        refers = ctx.quote is not None and (ctx.quote.message_id in references
                                            or ctx.quote.token in tokens)
        facts = dict(
            request_id=ctx.request.id, request_client_id=ctx.request.client_id,
            request_status=Status(ctx.request.status),
            sender_may_answer=bool(msg.from_addr) and requests_service.may_answer(
                session, desk, ctx.request, msg.from_addr),
            refers_to_current_quote=refers,
            quote_expired=ctx.quote is not None
            and requests_service.quote_is_expired(desk, ctx.quote),
        )
    # A trusted fail, or a trusted verdict that cannot be read: never acted on.
    dmarc_failed = forbids_action(msg.authentication_results, policy.trusted_authserv_id)
    return Facts(command=ctx.command, buy_count=ctx.reading.count,
                 buy_count_text=ctx.reading.count_text,
                 sender_client_id=ctx.sender.id if ctx.sender else None,
                 dmarc_failed=dmarc_failed,
                 require_quote_reference=policy.require_quote_reference, **facts), ctx


# --- acting ----------------------------------------------------------------------

def _answer(session: Session, desk: Desk, ctx: Context, template: str, *,
            private: bool = False, **context) -> Outbox:
    """An automatic answer to the sender.  `private`: the sender is not the
    request's client, so the answer carries none of that request's thread."""
    return queue_message(session, desk, template=template, to=[ctx.msg.from_addr],
                         client=ctx.sender, request=ctx.request, auto=True,
                         in_reply_to=ctx.msg.message_id, context=context,
                         thread=not private)


def _balance_statement(session: Session, desk: Desk, ctx: Context) -> None:
    ledger.sweep_expired(session, desk, ctx.sender.id)
    entries = ledger.statement_entries(session, desk, ctx.sender.id, limit=10)
    queue_message(session, desk, template="client/balance", to=[ctx.msg.from_addr],
                  client=ctx.sender, auto=True, in_reply_to=ctx.msg.message_id,
                  context={"entries": entries})


def _bounce(session: Session, desk: Desk, ctx: Context) -> str:
    """Mark our bounced message — only on a failed-delivery report or a known
    mailer daemon's bounce text: any sender can quote one of our Message-IDs."""
    if bounce_evidence(ctx.msg) is None:
        return "bounce-like mail, but no failed-delivery report: nothing marked"
    ids = extract_bounced_message_ids(ctx.msg)
    rows = session.exec(select(Outbox).where(Outbox.message_id.in_(ids))).all() if ids else []
    for row in rows:
        row.status = OutboxStatus.BOUNCED
        row.last_error = f"bounced: {ctx.msg.subject[:200]}"
        session.add(row)
        notify_staff(session, desk, template="staff/bounce",
                     request=session.get(Request, row.request_id) if row.request_id else None,
                     context={"original": {"to": row.to_addrs, "subject": row.subject,
                                           "message_id": row.message_id},
                              "reason": ctx.msg.subject})
    return f"bounce of {len(rows)} of our messages" if rows else "bounce of unknown mail"


def _hold(session: Session, desk: Desk, ctx: Context, reason: str,
          kind: str = "unknown_sender") -> None:
    notify_staff(session, desk, template="staff/held", context={
        "from_addr": ctx.msg.from_addr or "(none)", "subject": ctx.msg.subject,
        "reason": reason, "kind": kind})


def _unknown_sender(session: Session, desk: Desk, ctx: Context) -> str:
    _hold(session, desk, ctx, "unknown sender")
    if desk.settings.policy.unknown_sender != "reply" or not ctx.msg.from_addr:
        return "held: unknown sender"
    since = desk.now() - timedelta(days=1)
    answered = session.exec(select(Outbox.id).where(
        Outbox.template == "client/unknown_sender", Outbox.to_addrs == ctx.msg.from_addr,
        Outbox.created_at >= since)).first()
    if answered is None:
        queue_message(session, desk, template="client/unknown_sender",
                      to=[ctx.msg.from_addr], auto=True, in_reply_to=ctx.msg.message_id,
                      context={})
        return "held: unknown sender, answered once"
    return "held: unknown sender, already answered today"


def act(session: Session, desk: Desk, decision: Decision, ctx: Context) -> tuple[
        InboundStatus, str | None]:
    """Run the one use case the decision names; returns the status and a note."""
    verdict, msg = decision.verdict, ctx.msg
    actor = msg.from_addr or "unknown"
    match verdict:
        case Verdict.OWN | Verdict.AUTOMATIC | Verdict.DUPLICATE_ANSWER:
            return InboundStatus.IGNORED, None
        case Verdict.BOUNCE:
            return InboundStatus.IGNORED, _bounce(session, desk, ctx)
        case Verdict.NEW_REQUEST:
            ctx.request = requests_service.create_request(
                session, desk, client=ctx.sender, requester=msg.from_addr,
                subject=msg.subject, text=msg.text, actor=actor,
                inbound_message_id=msg.message_id, auto=True)
        case Verdict.BALANCE:
            _balance_statement(session, desk, ctx)
        case Verdict.APPROVE:
            try:
                requests_service.approve_request(session, desk, request_id=ctx.request.id,
                                                 actor=actor, in_reply_to=msg.message_id,
                                                 auto=True)
            except InsufficientCredits as error:
                requests_service.queue_shortfall(session, desk, request=ctx.request,
                                                 error=error, in_reply_to=msg.message_id)
                return InboundStatus.PROCESSED, f"short of credits: {error}"
        case Verdict.REJECT:
            requests_service.reject_request(session, desk, request_id=ctx.request.id,
                                            actor=actor, in_reply_to=msg.message_id, auto=True)
        case Verdict.QUOTE_EXPIRED:
            requests_service.expire_quote(session, desk, request_id=ctx.request.id)
        case Verdict.ASK_WHICH:
            # Nothing changes; the client is asked for the one word, and staff see
            # what was written (it may be a question or a condition for them).
            _answer(session, desk, ctx, "client/ambiguous_reply",
                    quote=quote_context(desk, ctx.quote) if ctx.quote else None,
                    both=ctx.reading.mentions_both)
            notify_staff(session, desk, template="staff/comment",
                         client=session.get(Client, ctx.request.client_id),
                         request=ctx.request,
                         context={"from_addr": msg.from_addr, "text": ctx.new_text or msg.text})
            return InboundStatus.PROCESSED, "unclear decision, client asked: " + ", ".join(
                r for r in ctx.reading.reasons if r not in ("greeting", "closing"))
        case Verdict.COMMENT:
            notify_staff(session, desk, template="staff/comment",
                         client=session.get(Client, ctx.request.client_id),
                         request=ctx.request,
                         context={"from_addr": msg.from_addr, "text": ctx.new_text or msg.text})
        case Verdict.NOT_AUTHORISED:
            reason = decision.reason or Reason.NO_QUOTE_REFERENCE
            quote = quote_context(desk, ctx.quote) if ctx.quote else None
            if reason is Reason.NOT_CLIENT:  # a stranger learns nothing of the request
                quote = None
            _answer(session, desk, ctx, "client/not_authorised", reason=reason.value,
                    quote=quote, private=reason is Reason.NOT_CLIENT)
            return InboundStatus.PROCESSED, f"not authorised: {reason.value}"
        case Verdict.FORGED:
            _hold(session, desk, ctx, "DMARC check failed: the sender address is forged",
                  kind="forged")
            return InboundStatus.HELD, "forged sender (DMARC fail)"
        case Verdict.UNKNOWN_SENDER:
            return InboundStatus.HELD, _unknown_sender(session, desk, ctx)
    return InboundStatus.PROCESSED, None


# Mail no human wrote is recorded and ignored, whatever its size.
_NEVER_ANSWERED = frozenset({Verdict.OWN, Verdict.AUTOMATIC, Verdict.BOUNCE})


# --- the entry --------------------------------------------------------------------

def handle_message(session: Session, desk: Desk, raw: bytes, *, source: Source = Source(),
                   answers: bool = True, mark: bool = True) -> Outcome:
    """Record, classify and act on one raw message, in the caller's transaction.

    A message already recorded (same folder UID, or same Message-ID) is
    recognised and nothing happens again.  With `answers=False` (history
    import) the message is recorded and linked but nothing is changed or sent.
    `mark=False`: the caller advances the folder's marker once for a batch.
    """
    max_bytes = int(desk.settings.policy.max_message_mb * 1024 * 1024)
    msg = parse_message(raw, max_bytes=max_bytes)
    key = message_key(msg, raw)
    existing = find_processed(session, source, key)
    if existing is not None:
        return Outcome(status=InboundStatus(existing.status), verdict=existing.classification,
                       request_id=existing.request_id, inbound_id=existing.id, duplicate=True)
    with session.no_autoflush:  # reads only; the previous message is flushed already
        facts, ctx = gather(session, desk, msg)
    decision = decide(facts)
    oversize = msg.size > max_bytes and decision.verdict not in _NEVER_ANSWERED
    if not answers:
        status, note, verdict = InboundStatus.PROCESSED, "history import: recorded only", \
            f"history:{decision.verdict.value}"
    elif oversize:
        # Only its headers were read: acting on it would act on half a message.
        note = (f"{msg.size / 1048576:.1f} MB, over policy.max_message_mb "
                f"({desk.settings.policy.max_message_mb:g}): held for staff; the original "
                "stays in the mailbox")
        _hold(session, desk, ctx, note, kind="oversize")
        status, verdict = InboundStatus.HELD, "oversize"
    else:
        status, note = act(session, desk, decision, ctx)
        verdict = decision.verdict.value
    keep_raw = status in (InboundStatus.HELD, InboundStatus.FAILED) and not oversize
    row = Inbound(message_id=key, mailbox=source.mailbox, uidvalidity=source.uidvalidity,
                  uid=source.uid, from_addr=msg.from_addr, subject=msg.subject[:1000],
                  text=msg.text, status=status, classification=verdict,
                  reason="; ".join(filter(None, [note, *msg.defects[:3]])) or None,
                  request_id=ctx.request.id if ctx.request else None,
                  raw=raw if keep_raw else None, received_at=desk.now())
    session.add(row)
    session.flush()
    for attachment in msg.attachments:
        session.add(Attachment(inbound_id=row.id, filename=attachment.filename,
                               content_type=attachment.content_type, size=attachment.size,
                               data=attachment.data or None))
    if mark:
        advance_marker(session, desk, source)
    session.flush()
    return Outcome(status=status, verdict=verdict, request_id=row.request_id,
                   inbound_id=row.id, reason=row.reason)


def record_failure(session: Session, desk: Desk, raw: bytes, *, source: Source,
                   reason: str, mark: bool = True) -> Outcome:
    """Keep a message that could not be processed, with the reason, and tell staff."""
    msg = parse_message(raw, max_bytes=int(desk.settings.policy.max_message_mb * 1024 * 1024))
    key = message_key(msg, raw)
    existing = find_processed(session, source, key)
    if existing is not None:
        return Outcome(status=InboundStatus(existing.status), verdict=existing.classification,
                       request_id=existing.request_id, inbound_id=existing.id, duplicate=True)
    row = Inbound(message_id=key, mailbox=source.mailbox, uidvalidity=source.uidvalidity,
                  uid=source.uid, from_addr=msg.from_addr, subject=msg.subject[:1000],
                  text=msg.text, status=InboundStatus.FAILED, classification="failed",
                  reason=reason[:2000], raw=raw, received_at=desk.now())
    session.add(row)
    notify_staff(session, desk, template="staff/failed", context={
        "from_addr": msg.from_addr or "(none)", "subject": msg.subject, "reason": reason,
        "folder": desk.settings.mailbox.imap.failed_folder})
    if mark:
        advance_marker(session, desk, source)
    session.flush()
    return Outcome(status=InboundStatus.FAILED, verdict="failed", inbound_id=row.id,
                   reason=reason)
