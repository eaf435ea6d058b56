"""Scheduled jobs: plan allotment, expiry, quote expiry, staff reminders, digest.

Each job is a function ``(engine, desk) -> JobReport`` that does the work of
the latest period that is due at ``desk.now()`` and nothing else:

Periods
    A job's cron expression (standard crontab, read in the agency's zone) gives
    fire times; the period due now is the latest fire time at or before now.
    Its key is stored in ``job_run`` (unique ``(job, period)``) in the same
    transaction as the job's effects, so a second run of the same period — after
    a restart, or from a second instance — does nothing.  A run missed while the
    service was down is therefore caught up once, by whichever run comes next
    (``run_due`` at start-up, the scheduler, or ``mailflow jobs run``); earlier
    missed periods are not replayed: the expiry sweep, quote expiry and
    reminders work from the current state anyway, and a digest covers the
    period that ends at the latest fire time.

Allotment (the exception)
    Plan credits are owed per month, so every missed month is granted, oldest
    first, each as of its own fire day (so it expires when it would have had
    the job run on time).  A month whose credits would already have expired is
    not granted (at most ``MAX_ALLOTMENT_CATCHUP`` months); on the very first
    run (no allotment ever recorded) only the current month is granted.  A
    month's credits go to the plan clients that existed at its fire time, as if
    the job had run on time: a client added on the 5th gets credits from the
    next 1st (what `next_allotment` tells clients), and an agency that starts
    mid-month and imports its balances gets no second allotment for the month.
    The period key is the month (``2026-12``): an allotment cron that
    fires more often than monthly grants once a month.  ``Lot(client_id,
    period)`` is unique too, and it is the per-client marker: allotments commit
    in chunks of clients, and a run that crashed half-way grants only the rest.

Expiry
    ``sweep_expired`` for all clients, then one ``credits_expiring`` message per
    client for its lots that expire within ``schedule.expiry_warning_days`` and
    were not warned about yet; each warned lot gets a ``job_run`` row
    ``("expiry-warning", "lot:<id>")`` in the same transaction, so no lot is
    warned twice.

Digest
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

Two instances
    On PostgreSQL a job runs under an advisory lock ``job:<name>``; an instance
    that cannot take it skips the job.  Without the lock the unique keys would
    still stop the second one (it would fail and roll back).  SQLite has a
    single writer (``BEGIN IMMEDIATE``), and every chunk reads its markers
    inside its own write transaction.

Weekday numbers in cron expressions mean what they mean in crontab (0 and 7 =
Sunday), although APScheduler 3 counts from Monday: ``cron_trigger`` translates.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import and_, exists, func, insert, or_
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from mailflow.config import Settings
from mailflow.core.ledger import EntryKind, LotBalance, LotKind, expiry_for, summarise
from mailflow.core.states import Status
from mailflow.db import transaction
from mailflow.desk import Desk
from mailflow.errors import ConfigError
from mailflow.models import (
    Client,
    Contact,
    Entry,
    JobRun,
    Lot,
    Outbox,
    OutboxStatus,
    Quote,
    QuoteStatus,
    Request,
)
from mailflow.poller import advisory_lock
from mailflow.render import Rendered
from mailflow.services import credits as ledger
from mailflow.services.outbox import new_message_id, notify_staff, queue_message
from mailflow.services.requests import expire_quote

log = logging.getLogger("mailflow.jobs")

EXPIRY_CRON = "5 0 * * *"      # daily, just after lots expire at local midnight
QUOTES_CRON = "0 * * * *"      # hourly
REMINDERS_CRON = "0 9 * * *"   # daily, at the start of the working day
REMINDER_DAYS = 2              # approved work due within this many days (or overdue)
MAX_ALLOTMENT_CATCHUP = 12     # months
DIGEST_CHUNK = 500             # clients per transaction
ALLOTMENT_CHUNK = 500
MAX_CHUNKS = 100_000           # bounds every chunk loop (50 million clients)

WARNING_JOB = "expiry-warning"  # job_run rows ("expiry-warning", "lot:<id>")
DIGEST_SENT_JOB = "digest-sent"  # job_run rows ("digest-sent", "<period>/<client id>")


@dataclass
class JobReport:
    """What one run of a job did.  ``skipped``: nothing was due or done (see ``reason``)."""

    job: str
    period: str | None = None
    done: dict[str, int] = field(default_factory=dict)
    skipped: bool = False
    reason: str | None = None
    periods: list[str] = field(default_factory=list)   # allotment: every month granted
    results: list[dict[str, Any]] = field(default_factory=list)  # digest, when collected
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data = {"job": self.job, "period": self.period, "done": dict(self.done),
                "skipped": self.skipped, "reason": self.reason, "error": self.error}
        if self.periods:
            data["periods"] = list(self.periods)
        return data


class _AlreadyDone(Exception):
    """Raised inside a job's transaction to roll it back: the period is done."""


# --- cron -----------------------------------------------------------------

_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_CATCH_WINDOWS = (timedelta(hours=1), timedelta(days=1), timedelta(days=8),
                  timedelta(days=32), timedelta(days=370), timedelta(days=5 * 366 + 2))
_MAX_STEPS = 10_000


def _weekday_field(value: str) -> str:
    """Crontab weekday numbers (0/7 = Sunday) as names APScheduler 3 reads right."""
    if value == "*" or not any(ch.isdigit() for ch in value):
        return value
    days: list[int] = []
    for item in value.split(","):
        part, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if part == "*":
            low, high = 0, 6
        elif "-" in part:
            low_text, high_text = part.split("-", 1)
            low, high = _day_number(low_text), _day_number(high_text)
            if high < low:  # "5-0", "fri-sun" with Sunday as 0
                high += 7
        else:
            low = high = _day_number(part)
            if step_text:
                high = 6
        days.extend(day % 7 for day in range(low, high + 1, step))
    return ",".join(_WEEKDAYS[day] for day in sorted(set(days)))


def _day_number(text: str) -> int:
    text = text.strip().lower()
    if text.isdigit():
        number = int(text)
        if not 0 <= number <= 7:
            raise ValueError(f"weekday {text!r} is not 0-7")
        return number % 7
    if text[:3] in _WEEKDAYS:
        return _WEEKDAYS.index(text[:3])
    raise ValueError(f"unknown weekday {text!r}")


def cron_trigger(expr: str, tz: ZoneInfo | str, *, key: str = "cron") -> CronTrigger:
    """A trigger for a 5-field crontab expression in zone `tz`; a bad expression
    is a `ConfigError` naming `key` (the config key it came from)."""
    fields = expr.split()
    try:
        if len(fields) == 5:
            fields[4] = _weekday_field(fields[4])
        return CronTrigger.from_crontab(" ".join(fields), timezone=tz)
    except ValueError as error:
        raise ConfigError(f"{key}: {expr!r} is not a valid cron expression ({error})") from None


def latest_fire(trigger: CronTrigger, now: datetime) -> datetime | None:
    """The last fire time at or before `now` (None if none in the last five years)."""
    for window in _CATCH_WINDOWS:
        fire = trigger.get_next_fire_time(None, now - window)
        if fire is None or fire > now:
            continue
        for _ in range(_MAX_STEPS):
            following = trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))
            if following is None or following > now:
                return fire
            fire = following
        return fire
    return None


def previous_fire(trigger: CronTrigger, fire: datetime) -> datetime | None:
    return latest_fire(trigger, fire - timedelta(microseconds=1))


def period_key(job: str, fire: datetime, tz: ZoneInfo) -> str:
    local = fire.astimezone(tz)
    if job == "allotment":
        return local.strftime("%Y-%m")
    return local.strftime("%Y-%m-%dT%H:%M")


# --- the frame every job runs in -------------------------------------------

def _is_done(session: Session, job: str, period: str) -> bool:
    return session.exec(select(JobRun.id).where(JobRun.job == job,
                                                JobRun.period == period)).first() is not None


def _mark(session: Session, desk: Desk, job: str, period: str) -> None:
    session.add(JobRun(job=job, period=period, ran_at=desk.now()))
    session.flush()


def _run_period(engine: Engine, desk: Desk, job: str, cron: str,
                body: Callable[[Session, Desk, datetime], dict[str, int]]) -> JobReport:
    """Run `body` once for the period due now: lock, check, mark and work in one
    transaction."""
    fire = latest_fire(cron_trigger(cron, desk.tz), desk.now())
    if fire is None:
        return JobReport(job, skipped=True, reason="not due yet")
    period = period_key(job, fire, desk.tz)
    with advisory_lock(engine, f"job:{job}") as got:
        if not got:
            return JobReport(job, period, skipped=True, reason="running in another instance")
        try:
            with transaction(engine) as session:
                if _is_done(session, job, period):
                    raise _AlreadyDone
                _mark(session, desk, job, period)
                done = body(session, desk, fire)
        except _AlreadyDone:
            return JobReport(job, period, skipped=True, reason="already done")
        except IntegrityError:
            return JobReport(job, period, skipped=True, reason="done by another instance")
    log.info("job %s period %s: %s", job, period, done)
    return JobReport(job, period, done=done)


def _chunks(items: Sequence, size: int = 500) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _emails_by_client(session: Session, client_ids: Sequence[int]) -> dict[int, list[str]]:
    emails: dict[int, list[str]] = defaultdict(list)
    for chunk in _chunks(client_ids):
        for client_id, email in session.exec(select(Contact.client_id, Contact.email)
                                             .where(Contact.client_id.in_(chunk))
                                             .order_by(Contact.id)):
            emails[client_id].append(email)
    return emails


def _marked(session: Session, job: str, periods: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(periods):
        found.update(session.exec(select(JobRun.period).where(JobRun.job == job,
                                                              JobRun.period.in_(chunk))))
    return found


# --- 1. allotment -----------------------------------------------------------

def run_allotment(engine: Engine, desk: Desk) -> JobReport:
    """Grant each active plan client its monthly `plan` lot; missed months catch up."""
    job = "allotment"
    trigger = cron_trigger(desk.settings.schedule.allotment_cron, desk.tz,
                           key="schedule.allotment_cron")
    now = desk.now()
    latest = latest_fire(trigger, now)
    if latest is None:
        return JobReport(job, skipped=True, reason="not due yet")
    with advisory_lock(engine, f"job:{job}") as got:
        if not got:
            return JobReport(job, period_key(job, latest, desk.tz), skipped=True,
                             reason="running in another instance")
        with transaction(engine) as session:
            done_periods = set(session.exec(select(JobRun.period).where(JobRun.job == job)))
        owed = _owed_allotments(desk, trigger, latest, done_periods)
        report = JobReport(job, period_key(job, latest, desk.tz))
        if not owed:
            report.skipped, report.reason = True, "already done"
            return report
        for fire, period in owed:
            try:
                granted = _grant_period(engine, desk, fire, period)
            except IntegrityError:
                report.reason = "done by another instance"
                report.skipped = not report.periods
                break
            report.periods.append(period)
            report.done["lots"] = report.done.get("lots", 0) + granted
        report.done.setdefault("lots", 0)
    log.info("job allotment periods %s: %s", report.periods, report.done)
    return report


def _owed_allotments(desk: Desk, trigger: CronTrigger, latest: datetime,
                     done: set[str]) -> list[tuple[datetime, str]]:
    """(fire time, month) still owed, oldest first."""
    latest_period = period_key("allotment", latest, desk.tz)
    if latest_period in done:
        return []
    if not done:  # first run ever: only the current month
        return [(latest, latest_period)]
    owed: dict[str, datetime] = {}
    fire: datetime | None = latest
    now = desk.now()
    for _ in range(_MAX_STEPS):
        if fire is None:
            break
        period = period_key("allotment", fire, desk.tz)
        if period in done:
            break
        expires = expiry_for(fire.astimezone(desk.tz).date(),
                             desk.settings.credits.expiry_days, desk.tz)
        if fire != latest and expires <= now:
            break  # its credits would already be gone
        owed[period] = fire  # several fires in one month: the earliest wins
        if len(owed) > MAX_ALLOTMENT_CATCHUP:
            owed.pop(period)
            break
        fire = previous_fire(trigger, fire)
    return sorted(((fire, period) for period, fire in owed.items()), key=lambda pair: pair[0])


def _grant_period(engine: Engine, desk: Desk, fire: datetime, period: str) -> int:
    """Plan lots for `period` to the plan clients that existed at its fire time,
    committed per chunk of clients; the `Lot.period` unique key marks each client
    done.  Closes the period with its job_run row."""
    granted = 0
    grant_day = fire.astimezone(desk.tz).date()
    last_id = 0
    for _ in range(MAX_CHUNKS):
        with transaction(engine) as session:
            clients = list(session.exec(
                select(Client).where(Client.active.is_(True), Client.plan_credits > 0,
                                     Client.created_at <= fire, Client.id > last_id)
                .order_by(Client.id).limit(ALLOTMENT_CHUNK)))
            if not clients:
                break
            ids = [client.id for client in clients]
            have = set(session.exec(select(Lot.client_id).where(Lot.period == period,
                                                                Lot.client_id.in_(ids))))
            for client in clients:
                if client.id in have:
                    continue
                ledger.add_lot(session, desk, client=client, kind=LotKind.PLAN,
                               credits=client.plan_credits, on=grant_day, period=period,
                               actor="system", note=f"plan allotment {period}")
                granted += 1
            last_id = ids[-1]
    with transaction(engine) as session:
        _mark(session, desk, "allotment", period)
    return granted


# --- 2. expiry ----------------------------------------------------------------

def run_expiry(engine: Engine, desk: Desk) -> JobReport:
    """Write off expired remainders; warn each client once per lot about to expire."""
    return _run_period(engine, desk, "expiry", EXPIRY_CRON, _expiry_body)


def _expiry_body(session: Session, desk: Desk, fire: datetime) -> dict[str, int]:
    written_off = ledger.sweep_expired(session, desk)
    warned_lots, messages = warn_expiring(session, desk)
    return {"written_off": written_off, "warned_lots": warned_lots, "messages": messages}


def warn_expiring(session: Session, desk: Desk) -> tuple[int, int]:
    """`credits_expiring` to each client with lots expiring within the warning
    window that were not warned about yet.  Returns (lots, messages)."""
    days = desk.settings.schedule.expiry_warning_days
    if days <= 0:
        return 0, 0
    now = desk.now()
    left = func.sum(Entry.delta)
    rows = list(session.exec(
        select(Lot.id, Lot.client_id, Lot.expires_at, left)
        .join(Entry, Entry.lot_id == Lot.id).join(Client, Client.id == Lot.client_id)
        .where(Client.active.is_(True), Lot.expires_at > now,
               Lot.expires_at <= now + timedelta(days=days))
        .group_by(Lot.id, Lot.client_id, Lot.expires_at).having(left > 0)
        .order_by(Lot.client_id, Lot.expires_at, Lot.id)))
    warned = _marked(session, WARNING_JOB, [f"lot:{row[0]}" for row in rows])
    by_client: dict[int, list[tuple[int, datetime, int]]] = defaultdict(list)
    for lot_id, client_id, expires_at, remaining in rows:
        if f"lot:{lot_id}" not in warned:
            by_client[client_id].append((lot_id, expires_at, int(remaining)))
    emails = _emails_by_client(session, list(by_client))
    lots = messages = 0
    for client_id, items in by_client.items():
        if not emails.get(client_id):
            continue
        client = session.get(Client, client_id)
        queue_message(session, desk, template="client/credits_expiring", to=emails[client_id],
                      client=client,
                      context={"expiring": [{"credits": remaining, "expires_at": expires_at}
                                            for _, expires_at, remaining in items]})
        for lot_id, _, _ in items:
            session.add(JobRun(job=WARNING_JOB, period=f"lot:{lot_id}", ran_at=now))
        lots += len(items)
        messages += 1
    session.flush()
    return lots, messages


# --- 3. quotes ------------------------------------------------------------------

def run_quotes(engine: Engine, desk: Desk) -> JobReport:
    """Quoted requests whose quote passed its validity → expired (`quote_expired`)."""
    return _run_period(engine, desk, "quotes", QUOTES_CRON, _quotes_body)


def _quotes_body(session: Session, desk: Desk, fire: datetime) -> dict[str, int]:
    ids = list(session.exec(
        select(Request.id).join(Quote, Quote.id == Request.current_quote_id)
        .where(Request.status == Status.QUOTED, Quote.status == QuoteStatus.OPEN,
               Quote.valid_until <= desk.now()).order_by(Request.id)))
    expired = failed = 0
    for request_id in ids:
        try:
            with session.begin_nested():
                expire_quote(session, desk, request_id=request_id)
            expired += 1
        except Exception:  # one bad request must not hold back the others
            log.exception("expiring the quote of request %s failed", request_id)
            failed += 1
    return {"expired": expired, "failed": failed}


# --- 4. reminders ------------------------------------------------------------------

def run_reminders(engine: Engine, desk: Desk) -> JobReport:
    """One staff message listing approved requests due within two days or overdue."""
    return _run_period(engine, desk, "reminders", REMINDERS_CRON, _reminders_body)


def reminder_items(session: Session, desk: Desk) -> list[dict[str, Any]]:
    today = desk.today()
    rows = session.exec(
        select(Request, Client.name).join(Client, Client.id == Request.client_id)
        .where(Request.status == Status.APPROVED,
               Request.due <= today + timedelta(days=REMINDER_DAYS))
        .order_by(Request.due, Request.id))
    return [{"tag": desk.tag(request.id), "number": request.id, "client": name,
             "subject": request.subject, "due": request.due, "overdue": request.due < today}
            for request, name in rows]


def _reminders_body(session: Session, desk: Desk, fire: datetime) -> dict[str, int]:
    items = reminder_items(session, desk)
    sent = 0
    if items and notify_staff(session, desk, template="staff/reminder",
                              context={"items": items}) is not None:
        sent = 1
    return {"requests": len(items), "messages": sent}


# --- 5. digest --------------------------------------------------------------------

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


# --- the schedule -------------------------------------------------------------------

JobFunc = Callable[[Engine, Desk], JobReport]


def job_crons(settings: Settings) -> list[tuple[str, str, JobFunc]]:
    """(name, crontab expression, function), in the order they run when due together:
    credits first, so the digest shows them."""
    return [
        ("allotment", settings.schedule.allotment_cron, run_allotment),
        ("expiry", EXPIRY_CRON, run_expiry),
        ("quotes", QUOTES_CRON, run_quotes),
        ("reminders", REMINDERS_CRON, run_reminders),
        ("digest", settings.schedule.digest_cron, run_digest),
    ]


def scheduled_jobs(settings: Settings) -> list[tuple[str, CronTrigger, JobFunc]]:
    """For `serve`: register each with APScheduler, calling `func(engine, desk)`."""
    return [(name, cron_trigger(expr, settings.tz, key=f"schedule.{name}_cron"), run)
            for name, expr, run in job_crons(settings)]


def run_due(engine: Engine, desk: Desk) -> list[JobReport]:
    """Run every job whose period due now is not done (start-up catch-up, cron).
    One failing job does not stop the others; its report carries the error."""
    reports = []
    for name, _, run in job_crons(desk.settings):
        try:
            if run is run_digest:
                reports.append(run_digest(engine, desk, baseline_if_first=True))
            else:
                reports.append(run(engine, desk))
        except Exception as error:
            log.exception("job %s failed", name)
            reports.append(JobReport(name, skipped=True, reason="failed",
                                     error=f"{type(error).__name__}: {error}"))
    return reports


def last_runs(session: Session, names: Iterable[str]) -> dict[str, JobRun]:
    result = {}
    for name in names:
        row = session.exec(select(JobRun).where(JobRun.job == name)
                           .order_by(JobRun.id.desc()).limit(1)).first()
        if row is not None:
            result[name] = row
    return result
