"""One inbound message, whatever brought it (IMAP, LMTP, a test): record it,
classify it, run exactly one use case, queue the answers — in the caller's
transaction, together with the message's processed-marker (DESIGN §3, §4).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy import func
from sqlmodel import Session, select

from mailflow.core.authres import forbids_action
from mailflow.core.autoreply import (
    NEVER_A_PERSON,
    AutomaticKind,
    bounce_evidence,
    copy_relayed_by_list,
    list_senders,
    vacation_subject,
)
from mailflow.core.classify import (
    Decision,
    Facts,
    Reason,
    Verdict,
    decide,
    request_number_in,
    tokens_in,
)
from mailflow.core.decisions import Command, Reading
from mailflow.core.loopguard import Correspondent, Seen, looks_automatic, text_digest
from mailflow.core.message import (
    InboundMessage,
    content_digest,
    extract_bounced_message_ids,
    first_header,
    parse_message,
)
from mailflow.core.preread import Preread, preread
from mailflow.core.staffmail import command_lines
from mailflow.core.states import Status
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
from mailflow.services import billing
from mailflow.services import credits as ledger
from mailflow.services import requests as requests_service
from mailflow.services import staff as staff_service
from mailflow.services.clients import client_by_address
from mailflow.services.outbox import (
    add_participants,
    notice_files,
    notify_staff,
    queue_message,
    quote_context,
    suspect_loop,
)


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
        known_keys = session.info.get("processed_keys", {})  # intake_group.prefetch_group
        if key in known_keys:
            return known_keys[key]
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
    tokens: tuple[str, ...] = ()
    relayed_by: str | None = None       # the list's From, when a list relayed a client's mail
    list_mail: bool = False

    @property
    def command(self) -> Command | None:
        return self.reading.command


def referenced_ids(msg: InboundMessage) -> list[str]:
    """The Message-IDs a reply names, nearest first: In-Reply-To, then References
    from the newest (the last) backwards."""
    return list(dict.fromkeys([*msg.in_reply_to, *reversed(msg.references)]))


def _known_ids(table) -> sa.Select:
    return sa.select(table.message_id, table.request_id).where(
        table.message_id.in_(sa.bindparam("ids", expanding=True)),
        table.request_id.is_not(None))


# Asked for every reply: prebuilt (see _LAST_HOUR below).
_KNOWN_IDS = {Outbox: _known_ids(Outbox), Inbound: _known_ids(Inbound)}


def _first_known(session: Session, table, ids: list[str]) -> int | None:
    """The request of the first of IDS (in their order) that TABLE knows."""
    found = dict(session.connection().execute(_KNOWN_IDS[table], {"ids": ids}).all())
    return next((found[i] for i in ids if i in found), None)


def _linked_request(session: Session, desk: Desk, msg: InboundMessage, tokens: tuple[str, ...],
                    sender: Client | None) -> Request | None:
    """The request a message belongs to (DESIGN §3 rule 3), in this order: the
    nearest Message-ID it names that we sent (or received and linked), then a
    quote token, then the subject tag from one of the request's client's addresses."""
    ids = referenced_ids(msg)
    if ids:
        request_id = _first_known(session, Outbox, ids)
        if request_id is None:
            request_id = _first_known(session, Inbound, ids)
        if request_id is not None:
            return session.get(Request, request_id)
    if tokens:
        found = {q.token: q for q in session.exec(select(Quote).where(Quote.token.in_(tokens)))}
        quote = next((found[t] for t in tokens if t in found), None)
        if quote is not None:
            return session.get(Request, quote.request_id)
    number = request_number_in(msg.subject, desk.settings.credits.subject_tag)
    if number is not None and sender is not None:
        request = session.get(Request, number)
        if request is not None and request.client_id == sender.id:
            return request
    return None


def _named_quote(session: Session, msg: InboundMessage, request: Request,
                 tokens: tuple[str, ...]) -> Quote | None:
    """The quote of REQUEST a message answers: the nearest quote mail it names
    (In-Reply-To, then References newest first), else the first of its tokens."""
    quotes = session.exec(select(Quote).where(Quote.request_id == request.id)).all()
    by_message = {q.message_id: q for q in quotes if q.message_id}
    named = next((by_message[i] for i in referenced_ids(msg) if i in by_message), None)
    if named is None:
        by_token = {q.token: q for q in quotes}
        named = next((by_token[t] for t in tokens if t in by_token), None)
    return named


def _request_facts(session: Session, desk: Desk, ctx: Context, *, fresh: bool = False) -> dict:
    """The facts about the linked request's state; `fresh` after its lock."""
    msg, request = ctx.msg, ctx.request
    ctx.quote = requests_service.current_quote(session, request, fresh=fresh)
    named = _named_quote(session, msg, request, ctx.tokens) if ctx.quote is not None else None
    return dict(
        request_id=request.id, request_client_id=request.client_id,
        request_status=Status(request.status),
        sender_may_answer=bool(msg.from_addr) and requests_service.may_answer(
            session, desk, request, msg.from_addr),
        refers_to_current_quote=named is not None and named.id == ctx.quote.id,
        refers_to_old_quote=named is not None and named.id != ctx.quote.id,
        quote_expired=ctx.quote is not None
        and requests_service.quote_is_expired(desk, ctx.quote),
    )


def _is_spam(msg: InboundMessage, desk: Desk) -> bool:
    marker = desk.settings.policy.spam_marker
    if marker is None:
        return False
    value = first_header(msg, marker[0])
    return value is not None and value.strip().lower().startswith(marker[1])


def _on_behalf_of(session: Session, msg: InboundMessage) -> tuple[InboundMessage, Client | None]:
    """List or group mail: the message as from the first client address among
    its From and the author the relay names (answers go there, never to the list)."""
    for address in list_senders(msg):
        client = client_by_address(session, address)
        if client is not None:
            return (msg if address == (msg.from_addr or "").lower()
                    else replace(msg, from_addr=address)), client
    return msg, None


def gather(session: Session, desk: Desk, msg: InboundMessage,
           read: Preread | None = None) -> tuple[Facts, Context]:
    """The facts the rules decide on, and the context acting needs.  READ: what
    the parse worker already read off MSG (`core.preread`), else read here."""
    policy = desk.settings.policy
    own = desk.settings.mailbox.address
    if read is None or not read.matches(own):
        read = preread(msg, own)
    automatic = read.automatic
    list_mail = automatic is not None and automatic.kind is AutomaticKind.LIST
    relayed_by, sender = None, None
    if list_mail:
        original_from = msg.from_addr
        msg, sender = _on_behalf_of(session, msg)
        relayed_by = original_from if msg.from_addr != original_from else None
    else:
        sender = client_by_address(session, msg.from_addr)
    # List mail is read as from the client's own address: the same text and subject.
    new_text = read.new_text
    ctx = Context(msg=msg, new_text=new_text, reading=read.reading,
                  sender=sender, relayed_by=relayed_by, list_mail=list_mail)
    if automatic is not None and automatic.kind in NEVER_A_PERSON:
        if automatic.kind is AutomaticKind.AUTO_REPLY:
            # Recorded with its request, so that `show` lists it for staff.
            ctx.request = _linked_request(session, desk, msg, (), sender)
        return Facts(own=automatic.kind is AutomaticKind.OWN, automatic=automatic.reason,
                     bounce=automatic.kind is AutomaticKind.BOUNCE), ctx
    ctx.tokens = tuple(tokens_in((*msg.to, *msg.cc), msg.text))
    ctx.request = _linked_request(session, desk, msg, ctx.tokens, ctx.sender)
    facts = _request_facts(session, desk, ctx) if ctx.request is not None else {}
    facts.update(_staff_facts(session, desk, msg, new_text))
    # A trusted fail, or a trusted verdict that cannot be read: never acted on.
    dmarc_failed = forbids_action(msg.authentication_results, policy.trusted_authserv_id)
    return Facts(command=ctx.command, buy_count=ctx.reading.count,
                 buy_count_text=ctx.reading.count_text, buy_unclear=ctx.reading.buy_unclear,
                 sender_client_id=ctx.sender.id if ctx.sender else None,
                 dmarc_failed=dmarc_failed,
                 require_quote_reference=policy.require_quote_reference,
                 list_mail=list_mail, relayed=relayed_by is not None,
                 spam=_is_spam(msg, desk), **facts), ctx


# --- the loop guard's question: does the correspondent look automatic? -----------------

_RECENT = 30  # earlier messages of one correspondent looked at
_TEXT_COMPARED = 20_000  # characters of each text compared

# Asked for every message: prebuilt with bind parameters and run on the
# transaction's connection, so neither the statement nor its cache key is
# built again each time (0.37 -> 0.06 ms a query in a micro-benchmark).
_LAST_HOUR = (
    sa.select(Inbound.classification, Inbound.subject, Inbound.text_digest,
              sa.case((Inbound.text_digest.is_(None),  # recorded before 0013
                       func.substr(Inbound.text, 1, _TEXT_COMPARED)), else_=None))
    .where(Inbound.from_addr == sa.bindparam("address"),
           Inbound.received_at >= sa.bindparam("since"))
    .order_by(Inbound.received_at.desc()).limit(_RECENT))
_OUR_LAST_MAIL = (sa.select(func.max(Outbox.sent_at))
                  .where(Outbox.to_addrs == sa.bindparam("address"),
                         Outbox.sent_at <= sa.bindparam("written")))


def correspondent(session: Session, desk: Desk, ctx: Context) -> Correspondent:
    """What the last hour of a correspondent's mail looked like (core.loopguard).

    Reads the digests stored with each message (`Inbound.text_digest`), not the
    texts: a backlog from one sender costs the same per message as a quiet day."""
    msg = ctx.msg
    connection = session.connection()
    rows = connection.execute(_LAST_HOUR, {"address": msg.from_addr,
                                           "since": desk.now() - timedelta(hours=1)}).all()
    # A comment is stored trimmed, anything else whole: the current message
    # matches an earlier one by either of its texts.
    whole = stored_text_digest(msg.text)
    trimmed = stored_text_digest(ctx.new_text)
    earlier = []
    for classification, subject, digest, old_text in rows:
        if digest is None and old_text is not None:
            digest = stored_text_digest(old_text)
        earlier.append(Seen(digest=trimmed if digest == whole else digest,
                            vacation_subject=vacation_subject(subject),
                            automatic=classification in ("automatic",
                                                         Verdict.LIST_HELD.value)))
    ours = None
    if msg.date is not None:
        ours = connection.execute(_OUR_LAST_MAIL, {"address": msg.from_addr.lower(),
                                                   "written": msg.date}).scalar()
    current = Seen(digest=trimmed, automatic=ctx.list_mail,
                   vacation_subject=vacation_subject(msg.subject), written_at=msg.date)
    return Correspondent(current=current, earlier=earlier, our_last_mail_at=ours)


def stored_text_digest(text: str) -> str | None:
    """The loop guard's digest of a text as `Inbound.text_digest` keeps it."""
    return text_digest(text[:_TEXT_COMPARED])


_STAFF_NOTICE_IDS = (sa.select(Outbox.id)
                     .where(Outbox.message_id.in_(sa.bindparam("ids", expanding=True)),
                            Outbox.template.startswith("staff/")).limit(1))


def _staff_facts(session: Session, desk: Desk, msg: InboundMessage, new_text: str) -> dict:
    """Whether a staff member wrote it, whether it answers one of our staff
    notices, and whether its new text has staff command lines (§3 rule 8)."""
    ids = referenced_ids(msg)
    to_notice = bool(ids) and session.connection().execute(
        _STAFF_NOTICE_IDS, {"ids": ids}).first() is not None
    return dict(staff_sender=desk.settings.staff.member_by_address(msg.from_addr) is not None,
                replies_to_staff_notice=to_notice,
                staff_commands=bool(command_lines(new_text)))


_DECISIONS = (Command.APPROVE, Command.REJECT)


def decide_locked(session: Session, desk: Desk, facts: Facts, ctx: Context) -> Decision:
    """Decisions on one request are serialised (DESIGN §3 rule 6): lock the
    request, read its state afresh and decide again.  What `gather` read before
    the lock may be stale — another process may have approved, rejected or
    re-quoted it meanwhile, and then this message is answered with that."""
    if ctx.request is None or ctx.command not in _DECISIONS:
        return decide(facts)
    ctx.request = requests_service.lock_request(session, ctx.request.id)
    with session.no_autoflush:
        facts = replace(facts, **_request_facts(session, desk, ctx, fresh=True))
    return decide(facts)


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


def from_staff_notify_address(desk: Desk, address: str | None) -> bool:
    """Our own staff notification addresses (`staff.notify`): whatever comes from
    there in answer to our notices (a staff mailbox's responder without
    `Auto-Submitted`) must never start another notice — that is a loop."""
    return bool(address) and address.lower() in {a.lower() for a in desk.settings.staff.notify}


def _hold(session: Session, desk: Desk, ctx: Context, reason: str,
          kind: str = "unknown_sender") -> str:
    """Hold the message for staff and tell them — unless it came from our own
    staff notification address (issue 9.3): then it is only recorded."""
    if from_staff_notify_address(desk, ctx.msg.from_addr):
        return "; recorded without a notice: from our own staff notification address"
    notify_staff(session, desk, template="staff/held", context={
        "from_addr": ctx.msg.from_addr or "(none)", "subject": ctx.msg.subject,
        "reason": reason, "kind": kind})
    return ""


def _unknown_sender(session: Session, desk: Desk, ctx: Context) -> str:
    quiet = _hold(session, desk, ctx, "unknown sender")
    if quiet:
        return "held: unknown sender" + quiet
    if desk.settings.policy.unknown_sender != "reply" or not ctx.msg.from_addr:
        return "held: unknown sender"
    since = desk.now() - timedelta(days=1)
    answered = session.exec(select(Outbox.id).where(
        Outbox.template == "client/unknown_sender", Outbox.to_addrs == ctx.msg.from_addr,
        Outbox.created_at >= since).limit(1)).first()
    if answered is None:
        queue_message(session, desk, template="client/unknown_sender",
                      to=[ctx.msg.from_addr], auto=True, in_reply_to=ctx.msg.message_id,
                      context={})
        return "held: unknown sender, answered once"
    return "held: unknown sender, already answered today"


def _already_answered(session: Session, desk: Desk, ctx: Context,
                      verdict: Verdict) -> tuple[InboundStatus, str]:
    """A decision on a quote already answered — by an earlier reply, or by another
    one processed at the same moment — is told what actually happened.  The same
    answer again gets at most one note a day per request (never mail ping-pong);
    the other answer always gets one, and staff see it: the client may have
    changed their mind."""
    outcome = Status(ctx.request.status).value
    if verdict is Verdict.ALREADY_DECIDED:
        notify_staff(session, desk, template="staff/comment",
                     client=session.get(Client, ctx.request.client_id), request=ctx.request,
                     context={"from_addr": ctx.msg.from_addr,
                              "text": ctx.new_text or ctx.msg.text})
    elif session.exec(select(Outbox.id).where(
            Outbox.template == "client/already_answered",
            Outbox.request_id == ctx.request.id,
            Outbox.created_at >= desk.now() - timedelta(days=1)).limit(1)).first() is not None:
        return InboundStatus.IGNORED, f"already {outcome}; told so today already"
    _answer(session, desk, ctx, "client/already_answered", outcome=outcome,
            asked="approved" if ctx.command is Command.APPROVE else "rejected",
            quote=quote_context(desk, ctx.quote) if ctx.quote else None)
    return InboundStatus.PROCESSED, f"already {outcome}"


def act(session: Session, desk: Desk, decision: Decision, ctx: Context) -> tuple[
        InboundStatus, str | None]:
    """Run the one use case the decision names; returns the status and a note."""
    verdict, msg = decision.verdict, ctx.msg
    actor = msg.from_addr or "unknown"
    if ctx.request is not None and ctx.sender is not None \
            and ctx.sender.id == ctx.request.client_id:
        add_participants(session, ctx.request, _addresses(msg), desk.settings.mailbox.address)
    match verdict:
        case Verdict.OWN | Verdict.AUTOMATIC:
            return InboundStatus.IGNORED, None
        case Verdict.DUPLICATE_ANSWER | Verdict.ALREADY_DECIDED:
            return _already_answered(session, desk, ctx, verdict)
        case Verdict.BOUNCE:
            return InboundStatus.IGNORED, _bounce(session, desk, ctx)
        case Verdict.NEW_REQUEST:
            ctx.request = requests_service.create_request(
                session, desk, client=ctx.sender, requester=msg.from_addr,
                subject=msg.subject, text=msg.text, actor=actor,
                inbound_message_id=msg.message_id, auto=True,
                attachments=msg.attachments, participants=_addresses(msg))
        case Verdict.BALANCE:
            _balance_statement(session, desk, ctx)
        case Verdict.BUY:
            # An order for the sender's own client; a quote it replies to stays open.
            _, note = billing.order_by_mail(
                session, desk, client=ctx.sender, count=ctx.reading.count,
                count_text=ctx.reading.count_text, requester=msg.from_addr,
                message_id=msg.message_id,
                note=(ctx.new_text or msg.text) if ctx.reading.more_text else None)
            return InboundStatus.PROCESSED, note
        case Verdict.ASK_BUY:
            _answer(session, desk, ctx, "client/order_unclear",
                    **billing.order_unclear_context(desk, ctx.reading.count,
                                                    ctx.reading.count_text))
            if ctx.request is not None:
                notify_staff(session, desk, template="staff/comment",
                             client=session.get(Client, ctx.request.client_id),
                             request=ctx.request,
                             context={"from_addr": msg.from_addr,
                                      "text": ctx.new_text or msg.text})
            return InboundStatus.PROCESSED, "unclear purchase, client asked: " + ", ".join(
                r for r in ctx.reading.reasons if r not in ("greeting", "closing"))
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
            return InboundStatus.PROCESSED, _comment(session, desk, ctx, decision)
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
        case Verdict.STAFF_MAIL:
            return InboundStatus.PROCESSED, staff_service.handle_staff_mail(
                session, desk, request=ctx.request, sender=msg.from_addr, text=ctx.new_text,
                attachments=msg.attachments, message_id=msg.message_id)
        case Verdict.STAFF_REFUSED:
            lines = command_lines(ctx.new_text)
            reason = (f"staff command{'s' * (len(lines) != 1)} "
                      + ", ".join(repr(line) for line in lines[:3]) if lines
                      else "a reply to a staff notice")
            reason += f" from {msg.from_addr or '(none)'}, not in staff.members: nothing done"
            # From our own staff.notify address (a responder answering our
            # notice) it is recorded without a new notice: that would loop (9.3).
            return InboundStatus.HELD, reason + _hold(session, desk, ctx, reason,
                                                      kind="staff_command")
        case Verdict.LIST_HELD:
            return InboundStatus.HELD, "held: list or group mail on behalf of no client" + \
                _hold(session, desk, ctx, "list or group mail on behalf of no client",
                      kind="list")
        case Verdict.SPAM:
            spam_header = desk.settings.policy.spam_header
            return InboundStatus.HELD, "held: spam (policy.spam_header)" + _hold(
                session, desk, ctx, f"our spam filter's verdict ({spam_header})", kind="spam")
    if ctx.relayed_by:
        return InboundStatus.PROCESSED, f"list mail relayed by {ctx.relayed_by}"
    return InboundStatus.PROCESSED, None


def _addresses(msg: InboundMessage) -> list[str]:
    return [a for a in (msg.from_addr, *msg.to, *msg.cc) if a]


def _comment(session: Session, desk: Desk, ctx: Context, decision: Decision) -> str | None:
    """A reply with no decision: staff get the trimmed text; the client gets one
    receipt a day per request that, while a quote is open, repeats how to
    approve and until when (DESIGN §3 rule 5)."""
    msg = ctx.msg
    notes = []
    if decision.reason is Reason.RELAYED:
        notes.append(f"a decision relayed by {ctx.relayed_by}: not acted on, staff told")
    elif ctx.relayed_by:
        notes.append(f"list mail relayed by {ctx.relayed_by}")
    receipted = session.exec(select(Outbox.id).where(
        Outbox.template == "client/comment_received", Outbox.request_id == ctx.request.id,
        Outbox.created_at >= desk.now() - timedelta(days=1)).limit(1)).first()
    if receipted is not None:
        notes.append("receipt already sent today")
    else:
        quote = ctx.quote if ctx.request.status == Status.QUOTED and ctx.quote is not None \
            and not requests_service.quote_is_expired(desk, ctx.quote) else None
        _answer(session, desk, ctx, "client/comment_received",
                quote=quote_context(desk, quote) if quote else None,
                relayed=decision.reason is Reason.RELAYED)
    listing, files = notice_files(desk, msg.attachments)
    notify_staff(session, desk, template="staff/comment",
                 client=session.get(Client, ctx.request.client_id), request=ctx.request,
                 attachments=files,
                 context={"from_addr": msg.from_addr, "text": ctx.new_text or msg.text,
                          "attachments": listing})
    return "; ".join(notes) or None


# Mail no human wrote is recorded and ignored, whatever its size.
_NEVER_ANSWERED = frozenset({Verdict.OWN, Verdict.AUTOMATIC, Verdict.BOUNCE})


def _from_inactive_client(decision: Decision, ctx: Context) -> bool:
    """Mail a person wrote from a deactivated client's address (`clients edit
    --deactivate`) is held; automatic mail and forgeries keep their own paths."""
    return (ctx.sender is not None and not ctx.sender.active
            and decision.verdict not in (*_NEVER_ANSWERED, Verdict.FORGED))


def _hold_inactive(session: Session, desk: Desk, ctx: Context) -> str:
    notify_staff(session, desk, template="staff/held", client=ctx.sender, request=ctx.request,
                 context={"from_addr": ctx.msg.from_addr, "subject": ctx.msg.subject,
                          "reason": f"client {ctx.sender.name} is deactivated",
                          "kind": "inactive_client", "client_id": ctx.sender.id})
    return f"held: client {ctx.sender.name} is deactivated"


# --- the entry --------------------------------------------------------------------

def _already_done(marker: Inbound) -> Outcome:
    return Outcome(status=InboundStatus(marker.status), verdict=marker.classification,
                   request_id=marker.request_id, inbound_id=marker.id, duplicate=True)


def claim_rerun(session: Session, marker: Inbound, source: Source) -> Inbound | None:
    """A message that failed runs again when a new copy of it arrives: staff moved
    it back to the inbox (a new UID), it was delivered again, or `mailflow
    inbound retry` handed in its stored bytes.  Exactly once: the marker is
    locked and must still say failed.  The very copy that failed (its own folder
    UID, still in the inbox after a crash) is not a new copy.  Returns the
    locked marker to reuse, or None: the message is done."""
    if marker.status != InboundStatus.FAILED:
        return None
    if source.uid is not None and (marker.mailbox, marker.uidvalidity, marker.uid) == \
            (source.mailbox, source.uidvalidity, source.uid):
        return None
    return session.exec(select(Inbound).where(Inbound.id == marker.id,
                                              Inbound.status == InboundStatus.FAILED)
                        .with_for_update().execution_options(populate_existing=True)).first()


def _marker(desk: Desk, rerun: Inbound | None, key: str, source: Source, msg: InboundMessage,
            **values) -> Inbound:
    """The processed-marker: a new row, or the failed one a re-run reuses (it then
    points at the new copy's folder UID, when there is one)."""
    row = rerun or Inbound(message_id=key, received_at=desk.now())
    if rerun is None or source.uid is not None:
        values.update(mailbox=source.mailbox, uidvalidity=source.uidvalidity, uid=source.uid)
    values = {"from_addr": msg.from_addr, "subject": msg.subject[:1000], "text": msg.text,
              **values}
    values["text_digest"] = stored_text_digest(values["text"])
    for name, value in values.items():
        setattr(row, name, value)
    return row


def identify(session: Session, source: Source, msg: InboundMessage,
             raw: bytes) -> tuple[str, str, Inbound | None, str | None]:
    """The key to record MSG under, its content digest, the marker of the same
    message if it was seen before, and a note.

    Duplicates are recognised by Message-ID together with the content digest
    (DESIGN §3): the same message again (same digest, or a marker from before
    digests were kept) is the marker found; a different message reusing a known
    Message-ID (web forms, some mailers) is recorded under its digest and
    processed as itself.  A list's copy of a known message (a footer added, the
    subject tagged) is the same message: the client wrote to us and the list."""
    key, digest = message_key(msg, raw), content_digest(msg)
    existing = find_processed(session, source, key)
    same_copy = existing is not None and source.uid is not None and \
        (existing.mailbox, existing.uidvalidity, existing.uid) == \
        (source.mailbox, source.uidvalidity, source.uid)
    if existing is None or same_copy or existing.digest in (None, digest) \
            or copy_relayed_by_list(msg):
        return key, digest, existing, None
    key = f"sha256:{digest}"
    note = (f"Message-ID <{msg.message_id}> was already used by inbound #{existing.id}, "
            "a different message: processed as itself")
    return key, digest, find_processed(session, Source(), key), note


def handle_message(session: Session, desk: Desk, raw: bytes, *, source: Source = Source(),
                   answers: bool = True, mark: bool = True,
                   parsed: InboundMessage | None = None,
                   read: Preread | None = None) -> Outcome:
    """Record, classify and act on one raw message, in the caller's transaction.

    A message already recorded (same folder UID, or same Message-ID and
    content) is recognised and nothing happens again.  With `answers=False`
    (history import) the message is recorded and linked but nothing is changed
    or sent.  `mark=False`: the caller advances the folder's marker once for a
    batch.  `parsed`: RAW already parsed by `parse_message` (a batch parses ahead),
    and `read`: what was read off it there (`core.preread`).
    """
    max_bytes = int(desk.settings.policy.max_message_mb * 1024 * 1024)
    msg = parsed if parsed is not None else parse_message(raw, max_bytes=max_bytes)
    key, digest, existing, reused = identify(session, source, msg, raw)
    rerun = claim_rerun(session, existing, source) if existing and answers else None
    if existing is not None and rerun is None:
        return _already_done(existing)
    with session.no_autoflush:  # reads only; the previous message is flushed already
        facts, ctx = gather(session, desk, msg, read if parsed is not None else None)
    msg = ctx.msg  # list mail: as from the client's own address
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
        note += _hold(session, desk, ctx, note, kind="oversize")
        status, verdict = InboundStatus.HELD, "oversize"
    elif _from_inactive_client(decision, ctx):
        status, verdict, note = InboundStatus.HELD, "inactive_client", _hold_inactive(
            session, desk, ctx)
    else:
        if decision.verdict not in _NEVER_ANSWERED and msg.from_addr:
            with session.no_autoflush:
                machine = looks_automatic(correspondent(session, desk, ctx))
            if machine is not None:
                suspect_loop(session, msg.from_addr, machine)
        decision = decide_locked(session, desk, facts, ctx)
        status, note = act(session, desk, decision, ctx)
        verdict = decision.verdict.value
        if decision.verdict is Verdict.AUTOMATIC and note is None:
            note = facts.automatic
    comment = answers and verdict == Verdict.COMMENT.value and bool(ctx.new_text)
    # A comment is stored as its trimmed text; the original stays (`show ID --raw N`).
    keep_raw = (status in (InboundStatus.HELD, InboundStatus.FAILED) and not oversize) \
        or comment
    row = _marker(desk, rerun, key, source, msg, status=status, classification=verdict,
                  reason="; ".join(filter(None, [note, reused, *msg.defects[:3]])) or None,
                  request_id=ctx.request.id if ctx.request else None,
                  raw=raw if keep_raw else None, digest=digest,
                  **({"text": ctx.new_text} if comment else {}))
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


def failed_messages(session: Session) -> list[Inbound]:
    """Messages that could not be processed and have not run again since (all of
    them: staff's to-do list is never cut short), oldest first."""
    return list(session.exec(select(Inbound).where(Inbound.status == InboundStatus.FAILED)
                             .order_by(Inbound.id)))


def record_failure(session: Session, desk: Desk, raw: bytes, *, source: Source,
                   reason: str, mark: bool = True) -> Outcome:
    """Keep a message that could not be processed, with the reason, and tell staff."""
    msg = parse_message(raw, max_bytes=int(desk.settings.policy.max_message_mb * 1024 * 1024))
    key, digest, existing, _ = identify(session, source, msg, raw)
    rerun = claim_rerun(session, existing, source) if existing else None
    if existing is not None and rerun is None:
        return _already_done(existing)
    # A message run again that failed again: the marker says why now, staff hear again.
    row = _marker(desk, rerun, key, source, msg, status=InboundStatus.FAILED,
                  classification="failed", reason=reason[:2000], raw=raw, request_id=None,
                  digest=digest)
    session.add(row)
    session.flush()
    notify_staff(session, desk, template="staff/failed", context={
        "from_addr": msg.from_addr or "(none)", "subject": msg.subject, "reason": reason,
        "folder": desk.settings.mailbox.imap.failed_folder, "inbound_id": row.id})
    if mark:
        advance_marker(session, desk, source)
    session.flush()
    return Outcome(status=InboundStatus.FAILED, verdict="failed", inbound_id=row.id,
                   reason=reason)
