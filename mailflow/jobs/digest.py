"""Job 5, digest: each active client's summary since its previous digest.

    One meaning for `digest --dry-run`, `digest` and `jobs run`: the digest
    due now is the one of the latest `schedule.digest_cron` fire time, and
    each client's covers the time since its previous digest
    (``ClientMailState.digest_through``) or, for its first, since the client
    was created; a client created after the fire time gets none yet.  It
    lists the open requests with their state and dates, what was closed and
    used in the period, the lots with their last usable days, credits
    expiring within ``schedule.expiry_warning_days`` first of all, and two
    small charts (credits by month of expiry; credits used per month over the
    six months up to the day before the digest) as PNG, drawn once per
    distinct data set (`mailflow.chart`).

    Commits in chunks of clients (``DIGEST_CHUNK``) so memory stays bounded.
    Each client's message is written with a ``job_run`` row
    ``("digest-sent", "<period>/<client id>")`` and its ``digest_through`` in
    the same transaction; a ``("digest", "<period>")`` row closes the period
    after the last chunk.  A rerun of a period that crashed half-way sends
    only to the clients not yet marked.  The data of a chunk comes from a
    handful of grouped queries (contacts, states, requests, usage, lots with
    their remainders), not from queries per client, and its outbox rows —
    the rows ``queue_message(template="client/digest", auto=False)`` would
    write: same renderer, same context keys, same columns — go in with one
    INSERT per chunk.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, insert, or_, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from mailflow.chart import chart_data_uri
from mailflow.core.billing import format_invoice_number
from mailflow.core.ledger import EntryKind, LotBalance, start_of_day, summarise
from mailflow.core.states import ACTIVE, Status
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
from mailflow.models import (
    Client,
    ClientMailState,
    Contact,
    Entry,
    Invoice,
    InvoiceStatus,
    JobRun,
    Lot,
    Outbox,
    OutboxStatus,
    Quote,
    Request,
)
from mailflow.poller import advisory_lock
from mailflow.render import Rendered, last_usable_day
from mailflow.services.outbox import new_message_id, price_context

DIGEST_CHUNK = 500             # clients per transaction
DIGEST_SENT_JOB = "digest-sent"  # job_run rows ("digest-sent", "<period>/<client id>")
USAGE_MONTHS = 6               # months in the usage chart
CLOSED = (Status.COMPLETED, Status.REJECTED, Status.EXPIRED, Status.CANCELLED)


@dataclass(frozen=True)
class DigestPeriod:
    """The digest due now: its key and end (the fire time).  `start` is the
    fire before, the start of the period of a client that had the previous
    digest; a client's own start is in its message's context."""

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
    price_terms = price_context(desk)
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
            "price": price_terms,
            "lots": [{"kind": str(lot.kind), "remaining": left, "expires_at": lot.expires_at,
                      "credits": lot.credits, "granted_at": lot.granted_at}
                     for lot, left in pairs
                     if left > 0 and (lot.expires_at is None or lot.expires_at > now)],
        }
    return result


def _starts(session: Session, clients: Sequence[Client]) -> dict[int, datetime]:
    """Where each client's period starts: the end of its previous digest, or
    its creation — one query."""
    ids = [client.id for client in clients]
    rows = session.exec(select(ClientMailState.client_id, ClientMailState.digest_through)
                        .where(ClientMailState.client_id.in_(ids),
                               ClientMailState.digest_through.is_not(None)))
    through = {client_id: at for client_id, at in rows}
    return {client.id: through.get(client.id) or client.created_at for client in clients}


def _digest_requests(session: Session, desk: Desk, end: datetime,
                     starts: dict[int, datetime]) -> dict[int, dict[str, list[dict]]]:
    """Per client: open requests as they stand (with their quote's validity),
    and those closed in its period — one query."""
    earliest = min(starts.values())
    rows = session.exec(
        select(Request, Quote.valid_until)
        .outerjoin(Quote, Quote.id == Request.current_quote_id)
        .where(Request.client_id.in_(list(starts)), Request.created_at < end,
               or_(Request.status.in_(list(ACTIVE)),
                   and_(Request.status.in_(list(CLOSED)), Request.updated_at >= earliest,
                        Request.updated_at < end)))
        .order_by(Request.id))
    grouped: dict[int, dict[str, list[dict]]] = defaultdict(lambda: {"open": [], "closed": []})
    for request, valid_until in rows:
        status = Status(request.status)
        item = {"tag": desk.tag(request.id), "number": request.id, "subject": request.subject,
                "status": status.value, "credits": request.credits, "due": request.due,
                "received": request.created_at,
                "valid_until": valid_until if status is Status.QUOTED else None}
        if status in ACTIVE:
            grouped[request.client_id]["open"].append(item)
        elif request.updated_at >= starts[request.client_id]:
            grouped[request.client_id]["closed"].append({**item, "closed": request.updated_at})
    return grouped


def _usage_months(desk: Desk, end: datetime) -> list[date]:
    """The first days of the `USAGE_MONTHS` calendar months up to the day before `end`."""
    last = (end.astimezone(desk.tz) - timedelta(days=1)).date().replace(day=1)
    months = [last]
    for _ in range(USAGE_MONTHS - 1):
        months.append((months[-1] - timedelta(days=1)).replace(day=1))
    return months[::-1]


def _digest_usage(session: Session, desk: Desk, end: datetime, starts: dict[int, datetime],
                  months: list[date]) -> dict[int, dict[str, Any]]:
    """Per client: credits used in its period by request (debits less refunds),
    and per month of the usage chart — one query."""
    since = min(min(starts.values()), start_of_day(months[0], desk.tz))
    rows = session.exec(
        select(Entry.client_id, Entry.request_id, Entry.at, Entry.delta, Request.subject)
        .outerjoin(Request, Request.id == Entry.request_id)
        .where(Entry.client_id.in_(list(starts)),
               Entry.kind.in_([EntryKind.DEBIT, EntryKind.REFUND]),
               Entry.at >= since, Entry.at < end)
        .order_by(Entry.id))
    usage: dict[int, dict[str, Any]] = defaultdict(
        lambda: {"requests": {}, "months": dict.fromkeys(months, 0)})
    for client_id, request_id, at, delta, subject in rows:
        data = usage[client_id]
        month = at.astimezone(desk.tz).date().replace(day=1)
        if month in data["months"]:
            data["months"][month] -= delta
        if at >= starts[client_id]:
            item = data["requests"].setdefault(request_id, {
                "tag": desk.tag(request_id) if request_id else None, "subject": subject,
                "credits": 0})
            item["credits"] -= delta
    return usage


def _unpaid_invoices(session: Session, desk: Desk, client_ids: Sequence[int]
                     ) -> dict[int, list[dict]]:
    """Each client's unpaid (issued) invoices, oldest first, in one query."""
    rows = session.exec(select(Invoice.client_id, Invoice.year, Invoice.seq, Invoice.credits,
                               Invoice.total_yen, Invoice.issued_at, Invoice.due)
                        .where(Invoice.client_id.in_(client_ids),
                               Invoice.status == InvoiceStatus.ISSUED)
                        .order_by(Invoice.year, Invoice.seq)).all()
    unpaid: dict[int, list[dict]] = defaultdict(list)
    for client_id, year, seq, credits, total, issued_at, due in rows:
        unpaid[client_id].append({
            "number": format_invoice_number(year, seq), "credits": credits,
            "total_yen": total, "issued_on": issued_at.astimezone(desk.tz).date(),
            "due": due})
    return unpaid


def _expiry_months(desk: Desk, lots: list[dict]) -> list[dict]:
    """Credits by the month of their last usable day (never-expiring ones apart)."""
    months: dict[date, int] = defaultdict(int)
    for lot in lots:
        if lot["expires_at"] is not None:
            months[last_usable_day(lot["expires_at"], desk.tz).replace(day=1)] += lot["remaining"]
    return [{"month": month, "credits": credits} for month, credits in sorted(months.items())]


def digest_chart(expiry: list[dict], usage: list[dict]) -> dict[str, Any]:
    """The chart data and its two images (None: nothing to draw)."""
    def bars(items: list[dict]) -> list[tuple[str, int]]:
        return [(item["month"].strftime("%Y-%m"), item["credits"]) for item in items]

    return {"expiry": expiry, "usage": usage,
            "expiry_image": chart_data_uri("expiry", bars(expiry)) if expiry else None,
            "usage_image": chart_data_uri("usage", bars(usage))}


@dataclass
class DigestMessage:
    client: Client
    to: list[str]
    context: dict[str, Any]


def digest_messages(session: Session, desk: Desk, period: DigestPeriod,
                    clients: Sequence[Client]) -> list[DigestMessage]:
    """The digests of a chunk of clients (only those with a contact, created
    before the period's end), data only."""
    clients = [client for client in clients if client.created_at < period.end]
    if not clients:
        return []
    ids = [client.id for client in clients]
    emails = _emails_by_client(session, ids)
    starts = _starts(session, clients)
    requests = _digest_requests(session, desk, period.end, starts)
    months = _usage_months(desk, period.end)
    usage = _digest_usage(session, desk, period.end, starts, months)
    balances = _balances(session, desk, ids)
    unpaid = _unpaid_invoices(session, desk, ids)
    now = desk.now()
    warning_days = desk.settings.schedule.expiry_warning_days
    soon = now + timedelta(days=warning_days)
    messages = []
    for client in clients:
        if not emails.get(client.id):
            continue
        balance = balances[client.id]
        lists = requests.get(client.id) or {"open": [], "closed": []}
        used = usage.get(client.id) or {"requests": {}, "months": dict.fromkeys(months, 0)}
        spent = [item for item in used["requests"].values() if item["credits"]]
        expiring = [{"credits": lot["remaining"], "expires_at": lot["expires_at"]}
                    for lot in balance["lots"]
                    if lot["expires_at"] is not None and lot["expires_at"] <= soon]
        chart = digest_chart(
            _expiry_months(desk, balance["lots"]),
            [{"month": month, "credits": credits} for month, credits in used["months"].items()])
        messages.append(DigestMessage(client, emails[client.id], {
            "client": {"name": client.name, "lang": client.lang},
            "balance": balance,
            "period": {"start": starts[client.id], "end": period.end}, **lists,
            "used": spent, "spent": sum(item["credits"] for item in spent),
            "expiring_soon": expiring, "warning_days": warning_days, "chart": chart,
            "unpaid": unpaid.get(client.id, [])}))
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


def _eligible(end: datetime):
    has_contact = exists().where(Contact.client_id == Client.id)
    return and_(Client.active.is_(True), has_contact, Client.created_at < end)


def _eligible_clients(end: datetime, after_id: int, limit: int):
    return (select(Client).where(_eligible(end), Client.id > after_id)
            .order_by(Client.id).limit(limit))


def count_digest_clients(session: Session, end: datetime) -> int:
    return session.exec(select(func.count()).select_from(Client).where(_eligible(end))).one()


def run_digest(engine: Engine, desk: Desk, *, dry_run: bool = False,
               progress: Callable[[int, int], None] | None = None,
               collect: bool = False, chunk: int = DIGEST_CHUNK) -> JobReport:
    """Queue the digest of the period due now for every active client with a contact.

    `dry_run` renders the messages into `report.results` (with their text) and
    writes nothing.  `collect` keeps one result per client.  `progress(done,
    total)` is called after each chunk.  The same clients, periods and texts
    whether previewed, run by hand or by the scheduler (`jobs run`): a client
    created after the fire time waits for the next digest."""
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
            total = count_digest_clients(session, period.end)
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
            clients = list(session.exec(_eligible_clients(period.end, last_id, chunk)))
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
                # One statement each for the chunk: the markers, the messages and
                # where each client's next period starts commit together, or none does.
                session.execute(insert(JobRun), marks)
                session.execute(insert(Outbox), rows)
                _record_through(session, [row["client_id"] for row in rows], period.end)
            already = len(clients) - len(pending)
            report.done["already_sent"] += already
            if collect:
                report.results.extend(
                    {"client_id": client.id, "client": client.name, "status": "already sent"}
                    for client in clients if markers[client.id] in sent)
        seen += len(clients)
        if progress is not None:
            progress(seen, max(total, seen))


def _record_through(session: Session, client_ids: list[int], end: datetime) -> None:
    """Each client's next digest starts at `end`: one UPDATE and one INSERT a chunk."""
    have = set(session.exec(select(ClientMailState.client_id)
                            .where(ClientMailState.client_id.in_(client_ids))))
    if have:
        session.execute(update(ClientMailState),
                        [{"client_id": cid, "digest_through": end} for cid in have])
    new = [{"client_id": cid, "digest_through": end, "low_balance_at": None}
           for cid in client_ids if cid not in have]
    if new:
        session.execute(insert(ClientMailState), new)


class _read_only:
    """A session whose work is always rolled back (dry runs)."""

    def __init__(self, engine: Engine) -> None:
        self.session = Session(engine, expire_on_commit=False)

    def __enter__(self) -> Session:
        return self.session

    def __exit__(self, *exc_info) -> None:
        self.session.rollback()
        self.session.close()
