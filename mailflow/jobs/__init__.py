"""Scheduled jobs: plan allotment, expiry, quote expiry, staff reminders, digest.

Each job is a function ``(engine, desk) -> JobReport`` that does the work of
the latest period that is due at ``desk.now()`` and nothing else.

- ``schedule``: cron expressions, periods, the frame every job runs in
  (one ``job_run`` row per period, the advisory lock), and ``JobReport``;
- one module per job: ``allotment``, ``expiry``, ``quotes``, ``reminders``,
  ``digest``;
- here: the jobs in the order they run (``job_crons``), for ``serve``'s
  scheduler (``scheduled_jobs``) and for start-up catch-up or cron
  (``run_due``).

``from mailflow import jobs; jobs.run_digest(...)`` reaches every public name.
"""

from __future__ import annotations

from collections.abc import Callable

from apscheduler.triggers.cron import CronTrigger
from sqlalchemy.engine import Engine

from mailflow.config import Settings
from mailflow.desk import Desk
from mailflow.jobs.allotment import ALLOTMENT_CHUNK, MAX_ALLOTMENT_CATCHUP, run_allotment
from mailflow.jobs.digest import (
    DIGEST_CHUNK,
    DIGEST_SENT_JOB,
    DigestMessage,
    DigestPeriod,
    count_digest_clients,
    digest_messages,
    digest_period,
    render_digest,
    run_digest,
)
from mailflow.jobs.expiry import EXPIRY_CRON, WARNING_JOB, run_expiry, warn_expiring
from mailflow.jobs.quotes import QUOTES_CRON, run_quotes
from mailflow.jobs.reminders import REMINDER_DAYS, REMINDERS_CRON, reminder_items, run_reminders
from mailflow.jobs.schedule import (
    MAX_CHUNKS,
    JobReport,
    _weekday_field,
    cron_trigger,
    last_runs,
    latest_fire,
    log,
    period_key,
    previous_fire,
)

__all__ = [
    "ALLOTMENT_CHUNK", "DIGEST_CHUNK", "DIGEST_SENT_JOB", "WARNING_JOB", "EXPIRY_CRON", "MAX_ALLOTMENT_CATCHUP", "MAX_CHUNKS", "QUOTES_CRON",
    "REMINDERS_CRON", "REMINDER_DAYS", "DigestMessage", "DigestPeriod", "JobFunc", "JobReport",
    "_weekday_field", "count_digest_clients", "cron_trigger", "digest_messages",
    "digest_period", "job_crons", "last_runs", "latest_fire", "period_key", "previous_fire",
    "render_digest", "reminder_items", "run_allotment", "run_digest", "run_due", "run_expiry",
    "run_quotes", "run_reminders", "scheduled_jobs", "warn_expiring",
]

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
            reports.append(run(engine, desk))
        except Exception as error:
            log.exception("job %s failed", name)
            reports.append(JobReport(name, skipped=True, reason="failed",
                                     error=f"{type(error).__name__}: {error}"))
    return reports
