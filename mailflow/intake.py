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

from mailflow.core.message import InboundMessage
from mailflow.core.preread import Preread
from mailflow.db import transaction
from mailflow.desk import Desk
from mailflow.errors import InvalidTransition, MailflowError, NotFound
from mailflow.intake_group import forget_key, parse_group, prefetch_group
from mailflow.models import Inbound, InboundStatus
from mailflow.services.inbound import (
    Outcome,
    Source,
    advance_marker,
    handle_message,
    message_key,
    prefetch_processed,
    record_failure,
)

log = logging.getLogger("mailflow.intake")

_OUTAGE = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)


class DatabaseUnavailable(Exception):
    """The database cannot take the message now; leave it where it is and retry."""


def _reason(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0][:500] if str(error) else ''}"


# PostgreSQL's deadlock_detected and serialization_failure: the transaction
# lost to another one and was rolled back; running it again is the cure.
_LOST_TO_ANOTHER = frozenset({"40P01", "40001"})
ATTEMPTS = 3


def collided(error: BaseException) -> bool:
    """Whether ERROR means another writer got in the way: it recorded the same
    message meanwhile (a unique key), or won a deadlock over two requests' or
    clients' row locks.  Trying again resolves either."""
    if isinstance(error, sqlalchemy.exc.IntegrityError):
        return True
    return getattr(getattr(error, "orig", None), "sqlstate", None) in _LOST_TO_ANOTHER


def receive(engine: Engine, desk: Desk, raw: bytes, *, source: Source = Source(),
            answers: bool = True) -> Outcome:
    """Process one message to the end: committed, or recorded as failed."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with transaction(engine) as session:
                return handle_message(session, desk, raw, source=source, answers=answers)
        except sqlalchemy.exc.DBAPIError as error:
            # Another process recorded the same message meanwhile (the next
            # attempt recognises it as a duplicate), or won a deadlock.
            if not collided(error):
                if isinstance(error, _OUTAGE):
                    raise DatabaseUnavailable(_reason(error)) from error
                log.exception("message failed: uid=%s", source.uid)
                return _keep_aside(engine, desk, raw, source, _reason(error))
            if attempt == ATTEMPTS:
                return _keep_aside(engine, desk, raw, source, _reason(error))
            log.info("message collided with another writer (%s); trying again",
                     _reason(error))
        except Exception as error:  # a defect of ours or of the message: keep it aside
            log.exception("message failed: uid=%s", source.uid)
            return _keep_aside(engine, desk, raw, source, _reason(error))
    raise AssertionError("unreachable")  # pragma: no cover


def retry(engine: Engine, desk: Desk, inbound_id: int) -> Outcome:
    """`mailflow inbound retry ID`: run a failed message's stored bytes through
    the normal path once more (after its cause is fixed).  Exactly once: a second
    retry, or the same message moved back to the inbox meanwhile, finds it done.
    The copy in the mailbox's failed folder stays there."""
    with transaction(engine) as session:
        row = session.get(Inbound, inbound_id)
        if row is None:
            raise NotFound(f"inbound message {inbound_id} not found")
        if row.status != InboundStatus.FAILED:
            raise InvalidTransition(f"inbound message {inbound_id} is {row.status}, not "
                                    "failed: only a failed message can be run again")
        if row.raw is None:
            raise MailflowError(f"inbound message {inbound_id}: its bytes were not kept; "
                                "move the original back to the inbox instead")
        raw = row.raw
    return receive(engine, desk, raw)


def _keep_aside(engine: Engine, desk: Desk, raw: bytes, source: Source, reason: str) -> Outcome:
    """Record the failure; if even that fails, say so in the log and return a
    failed outcome anyway: the caller moves the mail to the failed folder, so
    it is kept there and nothing loops on it."""
    try:
        with transaction(engine) as session:
            return record_failure(session, desk, raw, source=source, reason=reason)
    except _OUTAGE as error:
        raise DatabaseUnavailable(_reason(error)) from error
    except Exception as error:
        log.critical("cannot record the failed message (uid=%s, %s): %s; it is kept only "
                     "in the failed folder", source.uid, reason, _reason(error))
        return Outcome(status=InboundStatus.FAILED, verdict="failed",
                       reason=f"{reason}; not recorded: {_reason(error)}")


def receive_batch(engine: Engine, desk: Desk, items: Sequence[tuple[Source, bytes]], *,
                  answers: bool = True,
                  parsed: Sequence[InboundMessage | None] | None = None,
                  read: Sequence[Preread | None] | None = None) -> list[Outcome]:
    """Process several messages in one transaction: one commit for the lot
    (the expensive part of a commit is its fsync), the same result as one by
    one.  If any message fails, or the batch collides with another writer,
    the whole batch rolls back and each message is processed on its own with
    `receive()` — failures are rare, so the common case pays for no savepoints.

    The group's messages are parsed first (or come PARSED, e.g. by a worker
    while the previous group committed) and what they will all read is read
    in a few set-based queries (`intake_group.prefetch_group`).  READ: what was
    read off each PARSED message with it (`core.preread`), if anything."""
    outcomes: list[Outcome] = []
    if parsed is None:
        parsed = parse_group(desk, [raw for _, raw in items])
    if read is None:
        read = [None] * len(items)
    keys = [message_key(msg, raw) if msg is not None else None
            for (_, raw), msg in zip(items, parsed, strict=True)]
    try:
        with transaction(engine) as session:
            prefetch_processed(session, [source for source, _ in items])
            prefetch_group(session, desk, [key for key in keys if key],
                           [msg.from_addr for msg in parsed if msg is not None])
            for (source, raw), msg, key, known in zip(items, parsed, keys, read, strict=True):
                outcomes.append(handle_message(session, desk, raw, source=source,
                                               answers=answers, mark=False, parsed=msg,
                                               read=known))
                forget_key(session, key)
            marked = [source for source, _ in items if source.uid is not None]
            if marked:
                advance_marker(session, desk, max(marked, key=lambda s: s.uid))
        return outcomes
    except sqlalchemy.exc.DBAPIError as error:
        if not collided(error) and isinstance(error, _OUTAGE):
            raise DatabaseUnavailable(_reason(error)) from error
        log.warning("batch failed or collided with another writer (%s); processing one "
                    "by one", _reason(error))
    except Exception:
        log.warning("a message of the batch failed; processing the batch one by one")
    return [receive(engine, desk, raw, source=source, answers=answers)
            for source, raw in items]
