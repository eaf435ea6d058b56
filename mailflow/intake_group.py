"""The batch path of `intake.receive_batch`: what a commit group can read in
a few set-based queries before its messages are handled one by one.

`handle_message` asks, per message, for the processed-marker by Message-ID,
the sender's client, the client's lots with what is left of them (the
balance footer of every answer) and the count of automatic answers to the
sender in the last hour.  Each of those already goes through a per-transaction
cache in `session.info` (`processed_keys`, `client_by_address`, `lots`,
`auto_answers`), which the services keep right as they write (a ledger write
forgets the client's lots; an answer counts itself).  `prefetch_group` fills
those caches for the whole group with one query each, at the start of the
transaction: what each message would have read first, read earlier in the
same transaction, so it is the same data.  A Message-ID that comes twice in
the group is not cached (the second must find the first's row), and the
caller forgets each message's key once it is handled.

`parse_group` parses the group's messages up front (`handle_message` takes
them parsed); a message our parser refuses is left to `handle_message`, which
parses it again and fails it the usual way.  `ParseAhead` does the same in a
worker process for the next group while this one is handled and committed,
and there also reads each message as far as no database is needed
(`core.preread`: automatic or not, the trimmed reply and its command), so the
main process, which holds the transaction, does only what needs it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter, defaultdict, deque
from collections.abc import Sequence
from datetime import timedelta
from types import MappingProxyType

from sqlalchemy import func
from sqlmodel import Session, select

from mailflow.core.message import InboundMessage, parse_message
from mailflow.core.preread import Preread, preread
from mailflow.desk import Desk
from mailflow.models import Client, Contact, Entry, Inbound, Lot, Outbox, OutboxStatus

log = logging.getLogger("mailflow.intake")

#: Values per IN (...) list: well under SQLite's and PostgreSQL's limits.
CHUNK = 500


def max_bytes(desk: Desk) -> int:
    return int(desk.settings.policy.max_message_mb * 1024 * 1024)


def parse_one(raw: bytes, limit: int) -> InboundMessage | None:
    try:
        return parse_message(raw, max_bytes=limit)
    except Exception:  # handle_message meets it again and fails it on the usual path
        return None


def parse_group(desk: Desk, raws: Sequence[bytes]) -> list[InboundMessage | None]:
    limit = max_bytes(desk)
    return [parse_one(raw, limit) for raw in raws]


def _chunks(values: list, size: int = CHUNK):
    for start in range(0, len(values), size):
        yield values[start:start + size]


def prefetch_group(session: Session, desk: Desk, keys: Sequence[str],
                   senders: Sequence[str | None]) -> None:
    """Fill the transaction's caches for a group: processed-markers by
    Message-ID (KEYS), clients by address, their lots, and automatic answers
    in the last hour to each address (SENDERS)."""
    counted = Counter(keys)
    unique_keys = [key for key in counted if key and counted[key] == 1]
    processed = session.info.setdefault("processed_keys", {})
    for chunk in _chunks(unique_keys):
        found = {row.message_id: row for row in
                 session.exec(select(Inbound).where(Inbound.message_id.in_(chunk)))}
        for key in chunk:
            processed[key] = found.get(key)

    addresses = sorted({a.lower() for a in senders if a})
    by_address = session.info.setdefault("client_by_address", {})
    wanted = [a for a in addresses if a not in by_address]
    client_ids: set[int] = set()
    for chunk in _chunks(wanted):
        rows = session.exec(select(Contact.email, Client)
                            .join(Client, Contact.client_id == Client.id)
                            .where(Contact.email.in_(chunk)))
        found = {email: client for email, client in rows}
        for address in chunk:
            by_address[address] = found.get(address)
    client_ids = {c.id for a in addresses if (c := by_address.get(a)) is not None}

    lots_cache = session.info.setdefault("lots", {})
    wanted_ids = sorted(cid for cid in client_ids if cid not in lots_cache)
    for chunk in _chunks(wanted_ids):
        remaining = (select(Entry.lot_id, func.coalesce(func.sum(Entry.delta), 0).label("left"))
                     .where(Entry.client_id.in_(chunk)).group_by(Entry.lot_id).subquery())
        lots: dict[int, list] = defaultdict(list)
        for lot, left in session.exec(select(Lot, func.coalesce(remaining.c.left, 0))
                                      .outerjoin(remaining, remaining.c.lot_id == Lot.id)
                                      .where(Lot.client_id.in_(chunk)).order_by(Lot.id)):
            lots[lot.client_id].append((lot, int(left)))
        for cid in chunk:
            lots_cache[cid] = lots.get(cid, [])

    counts = session.info.setdefault("auto_answers", {})
    wanted = [a for a in addresses if a not in counts]
    since = desk.now() - timedelta(hours=1)
    for chunk in _chunks(wanted):
        rows = session.exec(select(Outbox.to_addrs, func.count()).where(
            Outbox.to_addrs.in_(chunk), Outbox.auto.is_(True), Outbox.created_at >= since,
            Outbox.status != OutboxStatus.SUPPRESSED).group_by(Outbox.to_addrs))
        found = dict(rows.all())
        for address in chunk:
            counts[address] = int(found.get(address, 0))


def forget_key(session: Session, key: str | None) -> None:
    """After a message is handled: its Message-ID is looked up in the database again."""
    if key:
        session.info.get("processed_keys", {}).pop(key, None)


# --- parsing ahead in another process ------------------------------------------------

def _parse_for_transfer(raws: list[bytes], limit: int,
                        own_address: str) -> list[tuple[dict, Preread | None] | None]:
    """In the worker: each message parsed, as plain fields (the headers'
    read-only view does not pickle; the raw bytes the parent has already),
    with what is read off it without the database (None if that failed: the
    main process then reads it, and fails it, on the usual path)."""
    out: list[tuple[dict, Preread | None] | None] = []
    for raw in raws:
        msg = parse_one(raw, limit)
        if msg is None:
            out.append(None)
            continue
        fields = {f.name: getattr(msg, f.name) for f in dataclasses.fields(msg)
                  if f.name != "raw"}
        fields["headers"] = dict(msg.headers)
        try:
            read = preread(msg, own_address)
        except Exception:
            read = None
        out.append((fields, read))
    return out


def _ready() -> bool:
    return True


def _from_transfer(fields: dict | None, raw: bytes) -> InboundMessage | None:
    if fields is None:
        return None
    return InboundMessage(**{**fields, "headers": MappingProxyType(fields["headers"]),
                             "raw": raw})


class ParseAhead:
    """Parses the next commit groups in a worker process (`forkserver`: no
    copy of this process's threads or connections) while the current group
    is handled and committed here, on the other core, and reads each message
    as far as no database is needed (`core.preread`).  Order is unchanged:
    results come back in the order the groups were handed over, and the
    groups are still handled one after another, in arrival order.

        with ParseAhead(desk) as ahead:
            if ahead.ready():                # the worker has started
                ahead.submit(next_raws)      # returns at once
            parsed, read = ahead.result(next_raws) or (None, None)
    """

    def __init__(self, desk: Desk) -> None:
        import concurrent.futures
        import multiprocessing

        self.limit = max_bytes(desk)
        self.own_address = desk.settings.mailbox.address
        self._pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("forkserver"))
        self._pending: deque = deque()
        # The worker takes a second or so to start (a new interpreter that
        # imports the parser); until it has, the caller parses by itself.
        self._started = self._pool.submit(_ready)

    def ready(self) -> bool:
        """Whether the worker is up: hand it work from then on."""
        return self._started.done()

    def submit(self, raws: list[bytes]) -> None:
        """Hand RAWS to the worker (queued behind what it has already)."""
        try:
            future = self._pool.submit(_parse_for_transfer, raws, self.limit,
                                       self.own_address)
        except Exception:  # a broken pool: parse here instead
            log.warning("parse worker unavailable; parsing in the main process", exc_info=True)
            future = None
        self._pending.append(future)

    def result(self, raws: list[bytes]) -> tuple[list[InboundMessage | None],
                                                  list[Preread | None]] | None:
        """The messages submitted first of those not yet taken (RAWS), parsed,
        and what was read off each; None if the worker failed (the caller
        parses them itself)."""
        pending = self._pending.popleft() if self._pending else None
        if pending is None:
            return None
        try:
            fields = pending.result(timeout=300)
        except Exception:
            log.warning("parse worker failed; parsing in the main process", exc_info=True)
            return None
        parsed = [_from_transfer(f[0] if f else None, raw)
                  for f, raw in zip(fields, raws, strict=True)]
        return parsed, [f[1] if f else None for f in fields]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ParseAhead:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
