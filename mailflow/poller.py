"""The IMAP poller: new mail in the support folder → `intake` → moved aside.

Per batch of UIDs: fetch, process (one commit for the batch, a savepoint per
message), then MOVE to the processed or failed folder, then send the outbox.
A crash between commit and MOVE leaves processed mail in the inbox; the next
run recognises it by its UID marker and only moves it.

Where the poller stands (`MailboxState`: UIDVALIDITY and the last UID it
processed) is kept in the database.  The first connection to a mailbox starts
after what is already there (`start: new`) or from the beginning (`start: all`).
On PostgreSQL one poller per mailbox holds an advisory lock.
"""

from __future__ import annotations

import hashlib
import logging
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import select

from mailflow.adapters.imap import FolderState, Mailbox
from mailflow.db import is_postgres, transaction
from mailflow.desk import Desk
from mailflow.intake import DatabaseUnavailable, receive_batch
from mailflow.intake_group import ParseAhead
from mailflow.models import Inbound, InboundStatus, MailboxState
from mailflow.services.inbound import Outcome, Source

log = logging.getLogger("mailflow.poller")

# Messages per commit.  One commit for several messages saves most of the cost
# of committing; a small group keeps the write lock short (on SQLite the outbox
# sender waits for it to record what it sent: the shorter the wait, the smaller
# the window in which a crash can make a message go out twice).
COMMIT_GROUP = 10
#: Messages waiting from which the next groups are parsed in a worker process.
PARSE_AHEAD_FROM = 3 * COMMIT_GROUP
#: Groups in the parse worker's hands while one is handled here: two, so that
#: a group that takes the worker longer than usual does not stall this process.
PARSE_DEPTH = 2


@dataclass
class PollReport:
    processed: int = 0
    failed: int = 0
    duplicates: int = 0
    moved_leftovers: int = 0
    skipped_locked: bool = False
    verdicts: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: Outcome) -> None:
        if outcome.duplicate:
            self.duplicates += 1
        elif outcome.failed:
            self.failed += 1
        else:
            self.processed += 1
        self.verdicts[outcome.verdict] = self.verdicts.get(outcome.verdict, 0) + 1


def mailbox_key(desk: Desk) -> str:
    imap = desk.settings.mailbox.imap
    return f"{imap.username}@{imap.host}:{imap.port}/{imap.folder}"


def _lock_id(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)


@contextmanager
def advisory_lock(engine: Engine, key: str) -> Iterator[bool]:
    """Hold a PostgreSQL session advisory lock named KEY while inside; yields
    whether it was obtained.  SQLite has one writer process: always True."""
    if not is_postgres(engine):
        yield True
        return
    with engine.connect() as connection:
        got = connection.execute(sa.text("SELECT pg_try_advisory_lock(:k)"),
                                 {"k": _lock_id(key)}).scalar()
        connection.commit()
        try:
            yield bool(got)
        finally:
            if got:
                try:
                    connection.execute(sa.text("SELECT pg_advisory_unlock(:k)"),
                                       {"k": _lock_id(key)})
                    connection.commit()
                except sa.exc.DBAPIError:
                    # The server went away (its restart released the lock with
                    # the session); do not let this hide the error in hand.
                    connection.invalidate()


class Poller:
    def __init__(self, engine: Engine, desk: Desk, mailbox: Mailbox, *,
                 after_batch: Callable[[], object] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> None:
        self.engine = engine
        self.desk = desk
        self.mailbox = mailbox
        self.key = mailbox_key(desk)
        self.after_batch = after_batch
        self.progress = progress

    def _state(self, folder: FolderState, *, first_start: str) -> int:
        """The last processed UID, creating or resetting the marker as needed."""
        with transaction(self.engine) as session:
            state = session.get(MailboxState, self.key)
            if state is None:
                last = folder.uidnext - 1 if first_start == "new" else 0
                state = MailboxState(mailbox=self.key, uidvalidity=folder.uidvalidity,
                                     last_uid=last, updated_at=self.desk.now())
                log.info("first connection to %s: starting after UID %s (start: %s)",
                         self.key, last, first_start)
            elif state.uidvalidity != folder.uidvalidity:
                log.warning("UIDVALIDITY of %s changed (%s → %s): rescanning; Message-IDs "
                            "keep processed mail from being processed twice",
                            self.key, state.uidvalidity, folder.uidvalidity)
                state.uidvalidity, state.last_uid = folder.uidvalidity, 0
            session.add(state)
            return state.last_uid

    def _leftovers(self, folder: FolderState, uids: list[int]) -> dict[str, list[int]]:
        """Processed mail still in the folder (a crash between commit and MOVE)."""
        if not uids:
            return {}
        moves: dict[str, list[int]] = {}
        with transaction(self.engine) as session:
            for chunk_start in range(0, len(uids), 500):
                chunk = uids[chunk_start:chunk_start + 500]
                rows = session.exec(select(Inbound.uid, Inbound.status).where(
                    Inbound.mailbox == self.key, Inbound.uidvalidity == folder.uidvalidity,
                    Inbound.uid.in_(chunk))).all()
                for uid, status in rows:
                    moves.setdefault(self._destination(status), []).append(uid)
        return moves

    def _destination(self, status: InboundStatus | str) -> str:
        imap = self.desk.settings.mailbox.imap
        return imap.failed_folder if status == InboundStatus.FAILED else imap.processed_folder

    def poll_once(self, *, since: date | None = None, answers: bool = True,
                  start: str | None = None) -> PollReport:
        """Process all mail waiting now; returns what happened."""
        report = PollReport()
        try:
            with advisory_lock(self.engine, f"poller:{self.key}") as got:
                if not got:
                    report.skipped_locked = True
                    log.info("another instance is polling %s", self.key)
                    return report
                self._poll_locked(report, since=since, answers=answers,
                                  start=start or self.desk.settings.mailbox.imap.start)
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as error:
            raise DatabaseUnavailable(str(error).strip().splitlines()[0]) from error
        return report

    def _poll_locked(self, report: PollReport, *, since: date | None, answers: bool,
                     start: str) -> None:
        box = self.mailbox
        if not box.connected:
            box.connect()
        box.ensure_folders()
        folder = box.select()
        last_uid = self._state(folder, first_start=start)
        present = box.search_uids(0)
        leftovers = self._leftovers(folder, [u for u in present if u <= last_uid])
        for destination, uids in leftovers.items():
            box.move(uids, destination)
            report.moved_leftovers += len(uids)
        if since is not None:
            wanted = set(box.search_since(since))
            todo = [u for u in present if u in wanted and u not in
                    {x for uids in leftovers.values() for x in uids}]
        else:
            todo = [u for u in present if u > last_uid]
        # A backlog is parsed one group ahead in a worker process; a few
        # messages (the usual IDLE wake-up) are not worth the hand-over.
        ahead = ParseAhead(self.desk) if len(todo) >= PARSE_AHEAD_FROM else None
        try:
            self._drain(report, box, folder, todo, answers=answers, ahead=ahead)
        finally:
            if ahead is not None:
                ahead.close()

    def _batches(self, box: Mailbox, folder: FolderState,
                 todo: list[int]) -> Iterator[tuple[int, list[tuple[Source, bytes]]]]:
        """The waiting mail fetched batch by batch (`mailbox.imap.batch_size`):
        (how many of TODO are fetched by the end of it, the batch)."""
        batch_size = self.desk.settings.mailbox.imap.batch_size
        for start_index in range(0, len(todo), batch_size):
            fetched = box.fetch(todo[start_index:start_index + batch_size])
            yield (min(start_index + batch_size, len(todo)),
                   [(Source(self.key, folder.uidvalidity, uid), raw) for uid, raw in fetched])

    def _drain(self, report: PollReport, box: Mailbox, folder: FolderState, todo: list[int],
               *, answers: bool, ahead: ParseAhead | None) -> None:
        """Handle the waiting mail in commit groups, in arrival order; each
        batch is moved out of the inbox once all its groups are committed.

        With a parse worker (AHEAD) the next PARSE_DEPTH groups are always in
        its hands while a group is handled here, across batch boundaries: the
        next batch is fetched before the last group of this one is handled (a
        fetch changes nothing in the mailbox), so the worker never waits for
        the main process, nor the main process for a batch's first group.
        Until the worker has started, the groups are parsed here."""
        batches = self._batches(box, folder, todo)
        # Groups fetched, not yet handled: (the batch's end in TODO, the batch,
        # the group, whether it is the batch's last, whether the worker has it).
        window: deque[tuple[int, list, list, bool, bool]] = deque()
        wanted = PARSE_DEPTH + 1 if ahead is not None else 1
        outcomes: list[Outcome] = []
        while True:
            while len(window) < wanted:
                batch = next(batches, None)
                if batch is None:
                    break
                end, items = batch
                groups = [items[i:i + COMMIT_GROUP]
                          for i in range(0, len(items), COMMIT_GROUP)] or [[]]
                for index, group in enumerate(groups):
                    handed = ahead is not None and bool(group) and ahead.ready()
                    if handed:
                        ahead.submit([raw for _, raw in group])
                    window.append((end, items, group, index == len(groups) - 1, handed))
            if not window:
                return
            end, items, group, last, handed = window.popleft()
            if group:
                done = ahead.result([raw for _, raw in group]) if handed else None
                parsed, read = done if done is not None else (None, None)
                outcomes += receive_batch(self.engine, self.desk, group, answers=answers,
                                          parsed=parsed, read=read)
                if self.after_batch:
                    self.after_batch()  # the sender starts on this group's answers now
            if last:
                self._move(report, box, items, outcomes)
                outcomes = []
                if self.progress:
                    self.progress(end, len(todo))

    def _move(self, report: PollReport, box: Mailbox, items: list[tuple[Source, bytes]],
              outcomes: list[Outcome]) -> None:
        """Move a handled batch out of the inbox: to processed, or to failed."""
        moves: dict[str, list[int]] = {}
        for (source, _raw), outcome in zip(items, outcomes, strict=True):
            report.add(outcome)
            moves.setdefault(self._destination(outcome.status), []).append(source.uid)
            tag = self.desk.tag(outcome.request_id) if outcome.request_id else None
            log.info("uid %s: %s%s%s", source.uid, outcome.verdict,
                     f" {tag}" if tag else "",
                     " (already processed)" if outcome.duplicate else "",
                     extra={"uid": source.uid, "verdict": outcome.verdict, "request": tag,
                            "status": str(outcome.status), "duplicate": outcome.duplicate})
        for destination, uids in moves.items():
            box.move(uids, destination)
