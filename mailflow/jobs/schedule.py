"""The schedule every job runs on: cron expressions, periods, and the frame
that runs a job once per period.

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
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from mailflow.db import transaction
from mailflow.desk import Desk
from mailflow.errors import ConfigError
from mailflow.models import Contact, JobRun
from mailflow.poller import advisory_lock

log = logging.getLogger("mailflow.jobs")

MAX_CHUNKS = 100_000           # bounds every chunk loop (50 million clients)


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


def last_runs(session: Session, names: Iterable[str]) -> dict[str, JobRun]:
    result = {}
    for name in names:
        row = session.exec(select(JobRun).where(JobRun.job == name)
                           .order_by(JobRun.id.desc()).limit(1)).first()
        if row is not None:
            result[name] = row
    return result
