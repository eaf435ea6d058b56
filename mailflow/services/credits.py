"""The credit ledger on the database: lots, entries, balances.

The arithmetic lives in `mailflow.core.ledger`; this module reads lots with
their remainders, asks the core what to write, and appends entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import func
from sqlmodel import Session, select

from mailflow.core.ledger import (
    BalanceSummary,
    Draw,
    EntryKind,
    LotBalance,
    LotKind,
    allocate_adjustment,
    allocate_debit,
    expired_remainders,
    expiry_for,
    refund_draws,
    start_of_day,
    summarise,
)
from mailflow.desk import Desk
from mailflow.errors import InsufficientCredits, MailflowError
from mailflow.models import Client, ClientMailState, Entry, Lot, Request
from mailflow.services import bounds


def lock_client(session: Session, client_id: int) -> Client:
    """Serialise balance changes of one client (row lock on PostgreSQL; SQLite's
    BEGIN IMMEDIATE already admits one writer).  What was read before the lock
    may be stale: the transaction's cache of lots is dropped and the client row
    is read afresh (`populate_existing`), not handed back from the identity map."""
    forget_lots(session, client_id)
    return session.exec(select(Client).where(Client.id == client_id).with_for_update()
                        .execution_options(populate_existing=True)).one()


def forget_lots(session: Session, client_id: int) -> None:
    session.info.get("lots", {}).pop(client_id, None)


def _remaining_by_lot(client_id: int):
    return (select(Entry.lot_id, func.coalesce(func.sum(Entry.delta), 0).label("left"))
            .where(Entry.client_id == client_id).group_by(Entry.lot_id).subquery())


def lots_with_remaining(session: Session, client_id: int) -> list[tuple[Lot, int]]:
    """Every lot of a client with what is left of it, in one query.

    Cached for the transaction (every message of a batch ends with the
    client's balance); every ledger write below forgets the client's entry."""
    cache = session.info.setdefault("lots", {})
    if client_id not in cache:
        remaining = _remaining_by_lot(client_id)
        rows = session.exec(select(Lot, func.coalesce(remaining.c.left, 0))
                            .outerjoin(remaining, remaining.c.lot_id == Lot.id)
                            .where(Lot.client_id == client_id).order_by(Lot.id))
        cache[client_id] = [(lot, int(left)) for lot, left in rows]
    return cache[client_id]


def as_balances(lots: list[tuple[Lot, int]]) -> list[LotBalance]:
    return [LotBalance(lot.id, lot.granted_at, lot.expires_at, left) for lot, left in lots]


def lot_balances(session: Session, client_id: int) -> list[LotBalance]:
    return as_balances(lots_with_remaining(session, client_id))


def balance(session: Session, desk: Desk, client_id: int) -> BalanceSummary:
    return summarise(lot_balances(session, client_id), desk.now())


def _granted_at(desk: Desk, on: date | None) -> tuple[datetime, date]:
    if on is None:
        return desk.now(), desk.today()
    return start_of_day(on, desk.tz), on


def add_lot(session: Session, desk: Desk, *, client: Client, kind: LotKind, credits: int,
            on: date | None = None, expires_days: int | None = None,
            never_expires: bool = False, note: str | None = None, actor: str = "staff",
            period: str | None = None, entry_kind: EntryKind | None = None) -> Lot:
    """A new lot and its opening entry (of `entry_kind`, default the lot's own
    kind).  Plan and grant lots expire `credits.expiry_days` after the grant day
    unless told otherwise; purchases never."""
    if kind is not LotKind.PLAN:  # a plan's size was checked when it was set
        bounds.check_credits(credits, maximum=desk.settings.credits.max_credits_per_grant,
                             what=f"a {kind.value}", key="max_credits_per_grant")
    if expires_days is not None:
        bounds.check_days(expires_days, what="--expires-days")
    if on is not None:  # a future date would make credits spendable before it
        bounds.check_date(on, today=desk.today(), what=f"the {kind.value} date", future=False)
    granted_at, granted_on = _granted_at(desk, on)
    if kind is LotKind.PURCHASE or never_expires:
        expires_at = None
    else:
        expires_at = expiry_for(granted_on, expires_days or desk.settings.credits.expiry_days,
                                desk.tz)
    price = credits * desk.settings.credits.price_yen if kind is LotKind.PURCHASE else None
    lock_client(session, client.id)
    lot = Lot(client_id=client.id, kind=kind, credits=credits, granted_at=granted_at,
              expires_at=expires_at, price_yen=price, period=period, note=note, actor=actor)
    session.add(lot)
    session.flush()
    entry_kind = entry_kind or (EntryKind.PURCHASE if kind is LotKind.PURCHASE
                                else EntryKind.GRANT)
    session.add(Entry(client_id=client.id, lot_id=lot.id, delta=credits, kind=entry_kind,
                      actor=actor, at=granted_at, note=note or f"{kind.value} lot"))
    session.flush()
    forget_lots(session, client.id)
    # Credits came in: no low-balance notice here (an imported balance that is
    # already expired is history, not news).
    sweep_expired(session, desk, client.id, notify=False)
    clear_low_balance(session, desk, client.id)
    return lot


def debit(session: Session, desk: Desk, *, client_id: int, credits: int, request_id: int,
          actor: str, note: str | None = None) -> tuple[Draw, ...]:
    """Take `credits` for a request, soonest-expiring lots first — all or nothing."""
    lock_client(session, client_id)
    sweep_expired(session, desk, client_id, notify=False)  # the debit's caller checks
    now = desk.now()
    allocation = allocate_debit(lot_balances(session, client_id), credits, now)
    if not allocation.ok:
        have = credits - allocation.shortfall
        raise InsufficientCredits(
            f"client has {have} credit{'s' * (have != 1)}, quote needs {credits}"
            f" (short by {allocation.shortfall}:"
            f" {allocation.shortfall * desk.settings.credits.price_yen:,} yen)",
            available=have, needed=credits)
    for draw in allocation.draws:
        session.add(Entry(client_id=client_id, lot_id=draw.lot_id, delta=-draw.credits,
                          kind=EntryKind.DEBIT, request_id=request_id, actor=actor, at=now,
                          note=note))
    session.flush()
    forget_lots(session, client_id)
    return allocation.draws


@dataclass(frozen=True)
class Adjustment:
    """What `adjust` wrote: the lot a positive correction opened, or the draws
    of a negative one, and the available balance after it."""

    delta: int
    lot: Lot | None
    draws: tuple[Draw, ...]
    available: int


def adjust(session: Session, desk: Desk, *, client: Client, delta: int, reason: str,
           actor: str = "staff", expires_days: int | None = None,
           never_expires: bool = False) -> Adjustment:
    """A staff correction: `adjustment` entries with the reason as their note.

    A positive one opens a `grant` lot of its own (expiring like a grant unless
    told otherwise); a negative one draws like a debit, soonest-expiring lots
    first, and is refused whole if it would take more than is available."""
    reason = reason.strip()
    if not reason:
        raise MailflowError("an adjustment needs a --reason")
    if delta == 0:
        raise MailflowError("an adjustment of 0 credits changes nothing")
    if delta > 0:
        lot = add_lot(session, desk, client=client, kind=LotKind.GRANT, credits=delta,
                      expires_days=expires_days, never_expires=never_expires, note=reason,
                      actor=actor, entry_kind=EntryKind.ADJUSTMENT)
        return Adjustment(delta, lot, (), balance(session, desk, client.id).available)
    if expires_days is not None or never_expires:
        raise MailflowError("--expires-days and --never-expires apply to a positive adjustment")
    bounds.check_credits(-delta, maximum=desk.settings.credits.max_credits_per_grant,
                         what="an adjustment", key="max_credits_per_grant")
    lock_client(session, client.id)
    sweep_expired(session, desk, client.id)
    now = desk.now()
    allocation = allocate_adjustment(lot_balances(session, client.id), delta, now)
    if not allocation.ok:
        have = -delta - allocation.shortfall
        raise InsufficientCredits(
            f"{client.name} has {have} credit{'s' * (have != 1)} available,"
            f" the adjustment takes {-delta}", available=have, needed=-delta)
    for draw in allocation.draws:
        session.add(Entry(client_id=client.id, lot_id=draw.lot_id, delta=-draw.credits,
                          kind=EntryKind.ADJUSTMENT, actor=actor, at=now, note=reason))
    session.flush()
    forget_lots(session, client.id)
    return Adjustment(delta, None, allocation.draws, balance(session, desk, client.id).available)


@dataclass(frozen=True)
class Refund:
    """What a refund gave back: `credits` in all, of which `written_off` went to
    lots that had expired meanwhile and were written off at once (each with the
    instant it expired, in `expired`); the rest is usable again."""

    credits: int
    written_off: int
    expired: tuple[tuple[int, datetime], ...] = ()

    @property
    def usable(self) -> int:
        return self.credits - self.written_off


def refund(session: Session, desk: Desk, *, client_id: int, request_id: int, actor: str,
           note: str | None = None) -> Refund:
    """Give a request's debits back to the lots they came from.

    A refund onto a lot that has expired meanwhile is written off at once, by
    an `expiry` entry written (and dated) now, after the refund: the statement
    then reads in the order things happened."""
    lock_client(session, client_id)
    entries = session.exec(select(Entry).where(Entry.request_id == request_id,
                                               Entry.kind.in_([EntryKind.DEBIT,
                                                               EntryKind.REFUND]))).all()
    debits = [Draw(e.lot_id, -e.delta) for e in entries if e.kind == EntryKind.DEBIT]
    earlier = [Draw(e.lot_id, e.delta) for e in entries if e.kind == EntryKind.REFUND]
    now = desk.now()
    draws = refund_draws(debits, earlier)
    lots = {lot.id: lot for lot, _ in lots_with_remaining(session, client_id)}
    expired: list[tuple[int, datetime]] = []
    for draw in draws:
        session.add(Entry(client_id=client_id, lot_id=draw.lot_id, delta=draw.credits,
                          kind=EntryKind.REFUND, request_id=request_id, actor=actor, at=now,
                          note=note))
    session.flush()
    for draw in draws:
        expires_at = lots[draw.lot_id].expires_at
        if expires_at is not None and expires_at <= now:
            session.add(Entry(client_id=client_id, lot_id=draw.lot_id, delta=-draw.credits,
                              kind=EntryKind.EXPIRY, request_id=request_id, actor="system",
                              at=now, note="refund onto an expired lot"))
            expired.append((draw.credits, expires_at))
    session.flush()
    forget_lots(session, client_id)
    clear_low_balance(session, desk, client_id)
    return Refund(credits=sum(draw.credits for draw in draws),
                  written_off=sum(credits for credits, _ in expired), expired=tuple(expired))


def sweep_expired(session: Session, desk: Desk, client_id: int | None = None, *,
                  notify: bool = True) -> int:
    """Write `expiry` entries for the remainders of expired lots; returns credits written off.

    Idempotent: a swept lot has nothing left, so a second sweep writes nothing.
    A client whose balance an expiry leaves low gets the low-balance notice
    (`notify=False`: the caller checks, after the debit it sweeps for)."""
    now = desk.now()
    clients = [client_id] if client_id is not None else list(session.exec(
        select(Lot.client_id).where(Lot.expires_at <= now).distinct()
        .order_by(Lot.client_id)))
    total = 0
    for cid in clients:
        if client_id is None:
            # Lock each client, in id order like every other multi-client job,
            # so two instances never deadlock and never write a lot off twice.
            lock_client(session, cid)
        lots = lot_balances(session, cid)
        expires = {lot.lot_id: lot.expires_at for lot in lots}
        written = 0
        for draw in expired_remainders(lots, now):
            session.add(Entry(client_id=cid, lot_id=draw.lot_id, delta=-draw.credits,
                              kind=EntryKind.EXPIRY, actor="system", at=expires[draw.lot_id],
                              note="expired"))
            written += draw.credits
            forget_lots(session, cid)
        total += written
        if written and notify:
            session.flush()
            # The notice writes mail (services.outbox, which reads this module).
            from mailflow.services.low_balance import check_low_balance

            check_low_balance(session, desk, cid)
    session.flush()
    return total


def clear_low_balance(session: Session, desk: Desk, client_id: int) -> None:
    """After credits came in: a client back above `policy.low_balance_credits`
    may be told again the next time its balance falls low."""
    state = session.get(ClientMailState, client_id)
    if state is None or state.low_balance_at is None:
        return
    if balance(session, desk, client_id).available > desk.settings.policy.low_balance_credits:
        state.low_balance_at = None
        session.add(state)
        session.flush()


def recent_entries(session: Session, client_id: int, limit: int = 20) -> list[Entry]:
    """The newest entries first, in the order they were written (entry id): an
    expiry dated at its lot's expiry instant but written later lists after
    what happened before it was written."""
    return list(session.exec(select(Entry).where(Entry.client_id == client_id)
                             .order_by(Entry.id.desc()).limit(limit)))


#: Statement line kinds (the client-visible words are in `templates/*/_labels.j2`).
STATEMENT_KINDS = ("plan", "grant", "purchase", "debit", "refund", "expiry", "refund_expired",
                   "adjustment")


def statement_entries(session: Session, desk: Desk, client_id: int,
                      limit: int = 10) -> list[dict]:
    """The client's statement lines, newest first: client-visible facts only
    (what kind of line, the request and its subject), never staff notes."""
    rows = session.exec(
        select(Entry, Lot.kind, Request.subject)
        .join(Lot, Lot.id == Entry.lot_id)
        .outerjoin(Request, Request.id == Entry.request_id)
        .where(Entry.client_id == client_id).order_by(Entry.id.desc()).limit(limit))
    lines = []
    for entry, lot_kind, subject in rows:
        kind = EntryKind(entry.kind).value
        if kind == EntryKind.GRANT:
            kind = "plan" if lot_kind == LotKind.PLAN else "grant"
        elif kind == EntryKind.EXPIRY and entry.request_id is not None:
            kind = "refund_expired"
        lines.append({"at": entry.at, "delta": entry.delta, "kind": kind,
                      "request_tag": desk.tag(entry.request_id) if entry.request_id else None,
                      "subject": subject})
    return lines


@dataclass(frozen=True)
class Allotment:
    """A plan client's next monthly credits: when, and how many."""

    at: datetime
    credits: int


def next_allotment(session: Session, desk: Desk, client: Client) -> Allotment | None:
    """When the allotment job next grants this client plan credits
    (`schedule.allotment_cron`, at most once a month), or None without a plan."""
    if not client.plan_credits or not client.active:
        return None
    # The schedule lives with the jobs, which use this module: import on use.
    from mailflow.jobs.schedule import cron_trigger, period_key

    trigger = cron_trigger(desk.settings.schedule.allotment_cron, desk.tz,
                           key="schedule.allotment_cron")
    granted = set(session.exec(select(Lot.period).where(Lot.client_id == client.id,
                                                        Lot.kind == LotKind.PLAN,
                                                        Lot.period.is_not(None))))
    fire = trigger.get_next_fire_time(None, desk.now())
    for _ in range(24):  # a month already granted: look from the next month on
        if fire is None:
            return None
        if period_key("allotment", fire, desk.tz) not in granted:
            return Allotment(at=fire, credits=client.plan_credits)
        local = fire.astimezone(desk.tz)
        next_month = (local.replace(day=1) + timedelta(days=32)).replace(day=1)
        fire = trigger.get_next_fire_time(None, start_of_day(next_month.date(), desk.tz))
    return None
