"""Job 1, allotment: each plan client's monthly `plan` lot.

The exception to one period per run
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
"""

from __future__ import annotations

from datetime import datetime

from apscheduler.triggers.cron import CronTrigger
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from mailflow.core.ledger import LotKind, expiry_for
from mailflow.db import transaction
from mailflow.desk import Desk
from mailflow.jobs.schedule import (
    _MAX_STEPS,
    MAX_CHUNKS,
    JobReport,
    _mark,
    cron_trigger,
    latest_fire,
    log,
    period_key,
    previous_fire,
)
from mailflow.models import Client, JobRun, Lot
from mailflow.poller import advisory_lock
from mailflow.services import credits as ledger

MAX_ALLOTMENT_CATCHUP = 12     # months
ALLOTMENT_CHUNK = 500


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
