"""The edge every inbound message passes: one transaction per message (or one
per batch with a savepoint per message), failures kept aside, never lost.

`receive()` returns only after the message's effects and its processed-marker
are committed; the caller acknowledges (IMAP move, LMTP 250) after that.
If the database itself is unavailable, `DatabaseUnavailable` is raised and the
message must stay where it is (still in the inbox, or a 4xx to the sender).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy.exc
from sqlalchemy.engine import Engine

from mailflow.db import transaction
from mailflow.desk import Desk
from mailflow.services.inbound import Outcome, Source, handle_message, record_failure

log = logging.getLogger("mailflow.intake")

_OUTAGE = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)


class DatabaseUnavailable(Exception):
    """The database cannot take the message now; leave it where it is and retry."""


def _reason(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0][:500] if str(error) else ''}"


def receive(engine: Engine, desk: Desk, raw: bytes, *, source: Source = Source(),
            answers: bool = True) -> Outcome:
    """Process one message to the end: committed, or recorded as failed."""
    for attempt in (1, 2):
        try:
            with transaction(engine) as session:
                return handle_message(session, desk, raw, source=source, answers=answers)
        except sqlalchemy.exc.IntegrityError:
            # Another process recorded the same message meanwhile: the second
            # attempt recognises it as a duplicate.
            if attempt == 2:
                raise
        except _OUTAGE as error:
            raise DatabaseUnavailable(_reason(error)) from error
        except Exception as error:  # a defect of ours or of the message: keep it aside
            log.exception("message failed: uid=%s", source.uid)
            return _keep_aside(engine, desk, raw, source, _reason(error))
    raise AssertionError("unreachable")  # pragma: no cover


def _keep_aside(engine: Engine, desk: Desk, raw: bytes, source: Source, reason: str) -> Outcome:
    try:
        with transaction(engine) as session:
            return record_failure(session, desk, raw, source=source, reason=reason)
    except _OUTAGE as error:
        raise DatabaseUnavailable(_reason(error)) from error


def receive_batch(engine: Engine, desk: Desk, items: Sequence[tuple[Source, bytes]], *,
                  answers: bool = True) -> list[Outcome]:
    """Process several messages in one transaction, a savepoint each: one commit
    for the lot (the expensive part of a commit is its fsync), the same result
    as one by one.  A message that fails is rolled back to its savepoint and
    recorded as failed; if the batch itself cannot commit, each message is
    retried on its own."""
    outcomes: list[Outcome] = []
    try:
        with transaction(engine) as session:
            for source, raw in items:
                savepoint = session.begin_nested()
                try:
                    outcome = handle_message(session, desk, raw, source=source, answers=answers)
                    savepoint.commit()
                except _OUTAGE:
                    raise
                except Exception as error:
                    savepoint.rollback()
                    log.exception("message failed: uid=%s", source.uid)
                    failure = session.begin_nested()
                    outcome = record_failure(session, desk, raw, source=source,
                                             reason=_reason(error))
                    failure.commit()
                outcomes.append(outcome)
        return outcomes
    except _OUTAGE as error:
        raise DatabaseUnavailable(_reason(error)) from error
    except sqlalchemy.exc.IntegrityError:
        log.warning("batch collided with another writer; processing one by one")
    return [receive(engine, desk, raw, source=source, answers=answers)
            for source, raw in items]
