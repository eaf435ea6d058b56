"""Job 5, digest: each active client's balance digest of the period.

    Commits in chunks of clients (``DIGEST_CHUNK``) so memory stays bounded.
    Each client's message is written with a ``job_run`` row
    ``("digest-sent", "<period>/<client id>")`` in the same transaction; a
    ``("digest", "<period>")`` row closes the period after the last chunk.  A
    rerun of a period that crashed half-way sends only to the clients not yet
    marked.  The data of a chunk comes from a handful of grouped queries
    (contacts, requests, spending, lots with their remainders), not from
    queries per client, and its outbox rows — the rows ``queue_message(
    template="client/digest", auto=False)`` would write: same renderer, same
    context keys, same columns — go in with one INSERT per chunk.  Calling
    ``queue_message`` per client would read each balance again (three queries)
    and flush each row on its own: about 3.8 ms of CPU per digest that way,
    1.5 ms (mostly Jinja) with the bulk path — 10,000 clients in about 15 s of
    CPU on SQLite.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, insert, or_
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from mailflow.core.ledger import EntryKind, LotBalance, summarise
from mailflow.core.states import Status
from mailflow.db import transaction
from mailflow.desk import Desk
from mailflow.jobs.schedule import (
    MAX_CHUNKS,
    JobReport,
    _emails_by_client,
    _is_done,
    _mark,
    _marked,
    cron_trigger,
    latest_fire,
    log,
    period_key,
    previous_fire,
)
from mailflow.models import Client, Contact, Entry, JobRun, Lot, Outbox, OutboxStatus, Request
from mailflow.poller import advisory_lock
from mailflow.render import Rendered
from mailflow.services.outbox import new_message_id

DIGEST_CHUNK = 500             # clients per transaction
DIGEST_SENT_JOB = "digest-sent"  # job_run rows ("digest-sent", "<period>/<client id>")


@dataclass(frozen=True)
class DigestPeriod:
    key: str
    start: datetime
    end: datetime


def digest_period(desk: Desk) -> DigestPeriod | None:
    """The digest period due now: from the fire before the latest one to the latest."""
    trigger = cron_trigger(desk.settings.schedule.digest_cron, desk.tz,
                           key="schedule.digest_cron")
    end = latest_fire(trigger, desk.now())
    if end is None:
        return None
    start = previous_fire(trigger, end) or end - timedelta(days=31)
    return DigestPeriod(period_key("digest", end, desk.tz), start, end)


def _balances(session: Session, desk: Desk, client_ids: Sequence[int]) -> dict[int, dict]:
    """The balance footer context of many clients from two grouped queries
    (the same data `services.outbox.balance_context` reads per client)."""
    if not client_ids:
        return {}
    remaining = (select(Entry.lot_id, func.sum(Entry.delta).label("left"))
                 .where(Entry.client_id.in_(client_ids)).group_by(Entry.lot_id).subquery())
    rows = session.exec(select(Lot, func.coalesce(remaining.c.left, 0))
                        .outerjoin(remaining, remaining.c.lot_id == Lot.id)
                        .where(Lot.client_id.in_(client_ids)).order_by(Lot.id))
    lots: dict[int, list[tuple[Lot, int]]] = defaultdict(list)
    for lot, left in rows:
        lots[lot.client_id].append((lot, int(left)))
    now = desk.now()
    price = desk.settings.credits.price_yen
    result: dict[int, dict] = {}
    for client_id in client_ids:
        pairs = lots.get(client_id, [])
        summary = summarise([LotBalance(lot.id, lot.granted_at, lot.expires_at, left)
                             for lot, left in pairs], now)
        result[client_id] = {
            "available": summary.available,
            "next_expiry": ({"credits": summary.next_expiry_credits,
                             "expires_at": summary.next_expiry_at}
                            if summary.next_expiry_at is not None else None),
            "never_expiring": summary.never_expiring, "price_yen": price,
            "lots": [{"kind": str(lot.kind), "remaining": left, "expires_at": lot.expires_at,
                      "credits": lot.credits, "granted_at": lot.granted_at}
                     for lot, left in pairs
                     if left > 0 and (lot.expires_at is None or lot.expires_at > now)],
        }
    return result


def _digest_requests(session: Session, desk: Desk, period: DigestPeriod,
                     client_ids: Sequence[int]) -> dict[int, dict[str, list[dict]]]:
    """Per client: open and approved requests as they stand, and those completed
    (or whose quote expired) in the period — one query."""
    in_period = and_(Request.updated_at >= period.start, Request.updated_at < period.end)
    rows = session.exec(
        select(Request).where(
            Request.client_id.in_(client_ids), Request.created_at < period.end,
            or_(Request.status.in_([Status.RECEIVED, Status.QUOTED, Status.APPROVED]),
                and_(Request.status.in_([Status.COMPLETED, Status.EXPIRED]), in_period)))
        .order_by(Request.id))
    grouped: dict[int, dict[str, list[dict]]] = defaultdict(
        lambda: {"open": [], "approved": [], "completed": []})
    lists = {Status.RECEIVED: "open", Status.QUOTED: "open", Status.EXPIRED: "open",
             Status.APPROVED: "approved", Status.COMPLETED: "completed"}
    for request in rows:
        status = Status(request.status)
        grouped[request.client_id][lists[status]].append(
            {"tag": desk.tag(request.id), "number": request.id, "subject": request.subject,
             "status": status.value, "credits": request.credits, "due": request.due})
    return grouped


def _digest_spent(session: Session, period: DigestPeriod,
                  client_ids: Sequence[int]) -> dict[int, int]:
    """Credits used in the period: debits less refunds, per client — one query."""
    rows = session.exec(
        select(Entry.client_id, func.sum(Entry.delta))
        .where(Entry.client_id.in_(client_ids),
               Entry.kind.in_([EntryKind.DEBIT, EntryKind.REFUND]),
               Entry.at >= period.start, Entry.at < period.end)
        .group_by(Entry.client_id))
    return {client_id: -int(total or 0) for client_id, total in rows}


@dataclass
class DigestMessage:
    client: Client
    to: list[str]
    context: dict[str, Any]


def digest_messages(session: Session, desk: Desk, period: DigestPeriod,
                    clients: Sequence[Client]) -> list[DigestMessage]:
    """The digests of a chunk of clients (only those with a contact), data only."""
    ids = [client.id for client in clients]
    emails = _emails_by_client(session, ids)
    requests = _digest_requests(session, desk, period, ids)
    spent = _digest_spent(session, period, ids)
    balances = _balances(session, desk, ids)
    shown = {"start": period.start.astimezone(desk.tz).date(),
             "end": (period.end - timedelta(microseconds=1)).astimezone(desk.tz).date()}
    messages = []
    for client in clients:
        if not emails.get(client.id):
            continue
        lists = requests.get(client.id) or {"open": [], "approved": [], "completed": []}
        messages.append(DigestMessage(client, emails[client.id], {
            "client": {"name": client.name, "lang": client.lang},
            "balance": balances[client.id],
            "period": shown, **lists, "spent": spent.get(client.id, 0)}))
    return messages


def render_digest(desk: Desk, message: DigestMessage) -> Rendered:
    """The message exactly as `queue_message` would render it (same context keys)."""
    context = {"support": {"address": desk.settings.mailbox.address,
                           "display_name": desk.settings.mailbox.display_name},
               "now": desk.now(), "request": None, **message.context}
    return desk.renderer.render("client/digest", message.client.lang, context)


def _outbox_row(desk: Desk, message: DigestMessage, rendered: Rendered) -> dict[str, Any]:
    """The outbox row `queue_message(template="client/digest", auto=False)` writes."""
    now = desk.now()
    return {"message_id": new_message_id(desk), "template": "client/digest",
            "request_id": None, "client_id": message.client.id,
            "to_addrs": ",".join(dict.fromkeys(address.lower() for address in message.to)),
            "subject": rendered.subject, "body_text": rendered.text,
            "body_html": rendered.html, "in_reply_to": None, "references": None,
            "reply_to": None, "auto": False, "status": OutboxStatus.PENDING.value,
            "attempts": 0, "next_attempt_at": now, "claimed_at": None, "last_error": None,
            "created_at": now, "sent_at": None}


def _eligible_clients(after_id: int, limit: int):
    has_contact = exists().where(Contact.client_id == Client.id)
    return (select(Client).where(Client.active.is_(True), Client.id > after_id, has_contact)
            .order_by(Client.id).limit(limit))


def count_digest_clients(session: Session) -> int:
    has_contact = exists().where(Contact.client_id == Client.id)
    return session.exec(select(func.count()).select_from(Client)
                        .where(Client.active.is_(True), has_contact)).one()


def run_digest(engine: Engine, desk: Desk, *, dry_run: bool = False,
               progress: Callable[[int, int], None] | None = None,
               collect: bool = False, chunk: int = DIGEST_CHUNK,
               baseline_if_first: bool = False) -> JobReport:
    """Queue the digest of the period due now for every active client with a contact.

    `dry_run` renders the messages into `report.results` (with their text) and
    writes nothing.  `collect` keeps one result per client.  `progress(done,
    total)` is called after each chunk.  `baseline_if_first` (catch-up at
    start, `jobs run`): on a desk that never sent a digest, the period due now
    is recorded as done without sending — a fresh install does not mail a
    summary of the time before it existed; digests start with the next period."""
    job = "digest"
    period = digest_period(desk)
    if period is None:
        return JobReport(job, skipped=True, reason="not due yet")
    report = JobReport(job, period.key)
    report.done = {"queued": 0, "already_sent": 0}
    # A preview takes no lock: holding it would make a real run elsewhere skip.
    with advisory_lock(engine, f"job:{job}") if not dry_run else nullcontext(True) as got:
        if not got:
            report.skipped, report.reason = True, "running in another instance"
            return report
        with transaction(engine) as session:
            if _is_done(session, job, period.key):
                report.skipped, report.reason = True, "already done"
                return report
            never = session.exec(select(JobRun.id).where(
                JobRun.job.in_([job, "digest-sent"]))).first() is None
            if baseline_if_first and never and not dry_run:
                _mark(session, desk, job, period.key)
                report.skipped = True
                report.reason = "first run: this period is the baseline, nothing sent"
                return report
            total = count_digest_clients(session)
        try:
            _digest_chunks(engine, desk, period, report, dry_run=dry_run, progress=progress,
                           collect=collect or dry_run, total=total, chunk=chunk)
            if not dry_run:
                with transaction(engine) as session:
                    _mark(session, desk, job, period.key)
        except IntegrityError:
            report.skipped, report.reason = True, "done by another instance"
            return report
    log.info("job digest period %s: %s", period.key, report.done)
    return report


def _digest_chunks(engine: Engine, desk: Desk, period: DigestPeriod, report: JobReport, *,
                   dry_run: bool, progress: Callable[[int, int], None] | None, collect: bool,
                   total: int, chunk: int) -> None:
    last_id = 0
    seen = 0
    for _ in range(MAX_CHUNKS):
        session_scope = _read_only(engine) if dry_run else transaction(engine)
        with session_scope as session:
            clients = list(session.exec(_eligible_clients(last_id, chunk)))
            if not clients:
                break
            last_id = clients[-1].id
            markers = {client.id: f"{period.key}/{client.id}" for client in clients}
            sent = _marked(session, DIGEST_SENT_JOB, list(markers.values()))
            pending = [client for client in clients if markers[client.id] not in sent]
            rows, marks = [], []
            for message in digest_messages(session, desk, period, pending):
                rendered = render_digest(desk, message)
                result = {"client_id": message.client.id, "client": message.client.name,
                          "to": message.to, "lang": message.client.lang,
                          "subject": rendered.subject}
                if dry_run:
                    result.update(status="preview", text=rendered.text)
                else:
                    row = _outbox_row(desk, message, rendered)
                    rows.append(row)
                    marks.append({"job": DIGEST_SENT_JOB, "period": markers[message.client.id],
                                  "ran_at": desk.now()})
                    result.update(status="queued", message_id=row["message_id"])
                report.done["queued"] += 1
                if collect:
                    report.results.append(result)
            if rows:
                # One statement each for the chunk: the markers and the messages
                # commit together, or neither does.
                session.execute(insert(JobRun), marks)
                session.execute(insert(Outbox), rows)
            already = len(clients) - len(pending)
            report.done["already_sent"] += already
            if collect:
                report.results.extend(
                    {"client_id": client.id, "client": client.name, "status": "already sent"}
                    for client in clients if markers[client.id] in sent)
        seen += len(clients)
        if progress is not None:
            progress(seen, max(total, seen))


class _read_only:
    """A session whose work is always rolled back (dry runs)."""

    def __init__(self, engine: Engine) -> None:
        self.session = Session(engine, expire_on_commit=False)

    def __enter__(self) -> Session:
        return self.session

    def __exit__(self, *exc_info) -> None:
        self.session.rollback()
        self.session.close()
