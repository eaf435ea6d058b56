"""Job 2, expiry: write off expired remainders and warn before lots expire.

    ``sweep_expired`` for all clients, then one ``credits_expiring`` message per
    client for its lots that expire within ``schedule.expiry_warning_days`` and
    were not warned about yet; each warned lot gets a ``job_run`` row
    ``("expiry-warning", "lot:<id>")`` in the same transaction, so no lot is
    warned twice.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from mailflow.desk import Desk
from mailflow.jobs.schedule import JobReport, _emails_by_client, _marked, _run_period
from mailflow.models import Client, Entry, JobRun, Lot
from mailflow.services import credits as ledger
from mailflow.services.outbox import queue_message

EXPIRY_CRON = "5 0 * * *"      # daily, just after lots expire at local midnight
WARNING_JOB = "expiry-warning"  # job_run rows ("expiry-warning", "lot:<id>")


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
