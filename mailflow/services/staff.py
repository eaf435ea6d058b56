"""The staff side of a request: replies to the client, owners, internal notes,
the request's attachments, and staff mail (DESIGN §3 rule 8).

Everything runs in the caller's transaction; nothing here commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from sqlalchemy import func, or_
from sqlmodel import Session, select

from mailflow.core.staffmail import StaffAction, StaffCommand, read_staff_mail
from mailflow.core.states import Status
from mailflow.desk import Desk
from mailflow.errors import MailflowError, NotFound
from mailflow.models import Attachment, Client, Inbound, Outbox, Request, RequestNote
from mailflow.services import bounds
from mailflow.services.outbox import FileToSend, queue_message
from mailflow.services.requests import (
    STAFF,
    QuoteTerms,
    complete_request,
    get_request,
    lock_request,
    quote_request,
)

#: Open states: a request in one of these still needs staff.
OPEN = (Status.RECEIVED, Status.QUOTED, Status.APPROVED, Status.EXPIRED, Status.REJECTED)


def reply_to_client(session: Session, desk: Desk, *, request_id: int, text: str,
                    files: Sequence[FileToSend] = (), actor: str = STAFF,
                    in_reply_to: str | None = None) -> Outbox:
    """Write to the client in the request's thread (balance footer included):
    to the requester, with the request's other client addresses in Cc."""
    text = text.strip("\n")
    if not text.strip():
        raise MailflowError("nothing to send: the text is empty")
    request = get_request(session, request_id)
    client = session.get(Client, request.client_id)
    limit = int(desk.settings.policy.max_message_mb * 1024 * 1024)
    size = sum(len(f.data) for f in files)
    if size > limit:
        raise MailflowError(f"attachments are {size / 1048576:.1f} MB, over"
                            f" policy.max_message_mb ({desk.settings.policy.max_message_mb:g})")
    request.updated_at = desk.now()
    session.add(request)
    return queue_message(session, desk, template="client/reply", to=[request.requester],
                         client=client, request=request, in_reply_to=in_reply_to,
                         context={"text": text, "files": [f.filename for f in files],
                                  "by": actor},
                         attachments=files)


# --- owners -------------------------------------------------------------------------

def staff_name(desk: Desk, name: str) -> str:
    """The configured spelling of staff member NAME, or `NotFound`."""
    member = desk.settings.staff.member(name)
    if member is None:
        known = ", ".join(m.name for m in desk.settings.staff.members) or "none configured"
        raise NotFound(f"staff member {name!r} not found (staff.members: {known})")
    return member.name


def assign_request(session: Session, desk: Desk, *, request_id: int, name: str) -> Request:
    """Make staff member NAME the request's owner: its notices go to them."""
    owner = staff_name(desk, name)
    request = lock_request(session, request_id)
    request.owner = owner
    request.updated_at = desk.now()
    session.add(request)
    return request


def find_requests(session: Session, *, status: Status | None = None,
                  client_id: int | None = None, owner: str | None = None,
                  search: str | None = None, due_before: date | None = None
                  ) -> list[Request]:
    """Requests by status, client, owner, words of the subject or text (any
    script: a plain substring match, case-insensitive for Latin letters) and
    due date (strictly before)."""
    query = select(Request).order_by(Request.id)
    if status is not None:
        query = query.where(Request.status == status)
    if client_id is not None:
        query = query.where(Request.client_id == client_id)
    if owner is not None:
        query = query.where(func.lower(Request.owner) == owner.lower())
    if due_before is not None:
        query = query.where(Request.due.is_not(None), Request.due < due_before)
    for word in (search or "").split():
        pattern = "%" + word.lower().replace("\\", "\\\\").replace("%", "\\%") \
            .replace("_", "\\_") + "%"
        query = query.where(or_(func.lower(Request.subject).like(pattern, escape="\\"),
                                func.lower(Request.text).like(pattern, escape="\\")))
    return list(session.exec(query))


def days_left(desk: Desk, request: Request) -> int | None:
    """Days until the due date (negative: late); None without a date or once done."""
    if request.due is None or Status(request.status) not in OPEN:
        return None
    return (request.due - desk.today()).days


# --- notes --------------------------------------------------------------------------

def add_note(session: Session, desk: Desk, *, request_id: int, text: str,
             author: str = STAFF) -> RequestNote:
    """An internal note: shown in `show`, never sent to the client."""
    if not text.strip():
        raise MailflowError("the note is empty")
    get_request(session, request_id)
    note = RequestNote(request_id=request_id, author=author, text=text.strip(), at=desk.now())
    session.add(note)
    session.flush()
    return note


def request_notes(session: Session, request_id: int) -> list[RequestNote]:
    return list(session.exec(select(RequestNote).where(RequestNote.request_id == request_id)
                             .order_by(RequestNote.id)))


# --- attachments --------------------------------------------------------------------

@dataclass(frozen=True)
class StoredFile:
    number: int  # 1, 2, ... in the order received
    filename: str
    content_type: str
    size: int
    received_at: object
    from_addr: str | None
    attachment_id: int


def request_files(session: Session, request_id: int) -> list[StoredFile]:
    """The files that came with the request's inbound mail, numbered from 1."""
    rows = session.exec(
        select(Attachment, Inbound.received_at, Inbound.from_addr)
        .join(Inbound, Attachment.inbound_id == Inbound.id)
        .where(Inbound.request_id == request_id)
        .order_by(Inbound.received_at, Attachment.id)).all()
    return [StoredFile(number=n, filename=a.filename or f"attachment-{n}",
                       content_type=a.content_type, size=a.size, received_at=at,
                       from_addr=sender, attachment_id=a.id)
            for n, (a, at, sender) in enumerate(rows, start=1)]


def request_file(session: Session, request_id: int, number: int) -> tuple[StoredFile, bytes]:
    """File NUMBER of the request and its bytes, or `NotFound`."""
    get_request(session, request_id)
    files = request_files(session, request_id)
    if not bounds.is_row_id(number) or number > len(files):
        raise NotFound(f"request {request_id} has no attachment {number}"
                       f" ({len(files)} attachment{'s' * (len(files) != 1)})")
    found = files[number - 1]
    data = session.get(Attachment, found.attachment_id).data
    if data is None:
        raise MailflowError(f"attachment {number} of request {request_id} was not kept"
                            " (it was over policy.max_message_mb); see the original mail")
    return found, data


# --- staff by mail (DESIGN §3 rule 8) -------------------------------------------------

def _run(session: Session, desk: Desk, request: Request, member: str,
         command: StaffCommand) -> dict:
    """Carry out one staff command; returns what was done (for the answer)."""
    match command.action:
        case StaffAction.QUOTE:
            due = command.due or request.due
            if due is None:
                raise MailflowError(f"{desk.tag(request.id)} has no due date yet:"
                                    " QUOTE n DUE date")
            terms = QuoteTerms(credits=command.credits, due=due, note=command.text)
            quote = quote_request(session, desk, request_id=request.id, terms=terms,
                                  actor=member)
            return {"what": "quoted", "credits": quote.credits, "due": quote.due}
        case StaffAction.COMPLETE:
            complete_request(session, desk, request_id=request.id, note=command.text,
                             actor=member)
            return {"what": "completed"}
        case StaffAction.NOTE:
            add_note(session, desk, request_id=request.id, text=command.text, author=member)
            return {"what": "note"}
        case StaffAction.ASSIGN:
            owner = assign_request(session, desk, request_id=request.id,
                                   name=command.text).owner
            return {"what": "assigned", "owner": owner}
    raise AssertionError(command.action)  # pragma: no cover


def describe(done: dict) -> str:
    """One thing done, in the words of the log and the English answer."""
    match done["what"]:
        case "quoted":
            return (f"quoted {done['credits']} credit{'s' * (done['credits'] != 1)},"
                    f" due {done['due'].isoformat()}")
        case "completed":
            return "completed; the client is told"
        case "note":
            return "note added"
        case "assigned":
            return f"assigned to {done['owner']}"
        case _:
            files = done["files"]
            return (f"sent to {done['to']}" + (f" (cc {done['cc']})" if done["cc"] else "")
                    + (f" with {files} file{'s' * (files != 1)}" if files else ""))


def _tell(session: Session, desk: Desk, request: Request, to: str, in_reply_to: str | None,
          *, done: list[dict], problem: str | None) -> None:
    queue_message(session, desk, template="staff/command_result", to=[to],
                  client=session.get(Client, request.client_id), request=request,
                  lang=desk.settings.language, auto=True, in_reply_to=in_reply_to,
                  context={"done": done, "problem": problem})


def handle_staff_mail(session: Session, desk: Desk, *, request: Request, sender: str,
                      text: str, attachments: Sequence = (),
                      message_id: str | None = None) -> str:
    """A staff member's reply to a staff notice: run its command lines, send the
    rest of its new text (with its attachments) to the client, and answer the
    member with one line: what was done, or the exact problem — then nothing
    was done at all (the commands and the message are one unit)."""
    member = desk.settings.staff.member_by_address(sender)
    name = member.name if member else sender
    reading = read_staff_mail(text, desk.today())
    files = [FileToSend(a.filename or f"attachment-{n}", a.content_type, a.data)
             for n, a in enumerate(attachments, start=1) if a.data]
    problem = None
    if reading.errors:
        problem = "; ".join(f"{e.line!r}: {e.problem}" for e in reading.errors)
    elif not reading.commands and not reading.message:
        problem = ("nothing to do: no text for the client and no command line"
                   " (QUOTE, COMPLETE, NOTE, ASSIGN)")
    done: list[dict] = []
    if problem is None:
        try:
            with session.begin_nested():
                for command in reading.commands:
                    done.append(_run(session, desk, request, name, command))
                if reading.message:
                    row = reply_to_client(session, desk, request_id=request.id,
                                          text=reading.message, files=files, actor=name)
                    done.append({"what": "sent", "to": row.to_addrs, "cc": row.cc_addrs,
                                 "files": len(files)})
        except MailflowError as error:
            problem, done = str(error), []
    _tell(session, desk, request, sender, message_id, done=done, problem=problem)
    if problem is not None:
        return f"staff mail from {name} refused: {problem}"
    return f"staff mail from {name}: " + "; ".join(describe(d) for d in done)
