"""Job 4, reminders: one staff message of approved work due soon or overdue."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from mailflow.core.states import Status
from mailflow.desk import Desk
from mailflow.jobs.schedule import JobReport, _run_period
from mailflow.models import Client, Request
from mailflow.services.outbox import notify_staff

REMINDERS_CRON = "0 9 * * *"   # daily, at the start of the working day
REMINDER_DAYS = 2              # approved work due within this many days (or overdue)


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
