"""Job 3, quotes: a quote past its validity expires (`client/quote_expired`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from mailflow.core.states import Status
from mailflow.desk import Desk
from mailflow.jobs.schedule import JobReport, _run_period, log
from mailflow.models import Quote, QuoteStatus, Request
from mailflow.services.requests import expire_quote

QUOTES_CRON = "0 * * * *"      # hourly


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
