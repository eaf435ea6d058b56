"""Credit arithmetic: pure functions over lots, no I/O.

A lot is credits granted at one time.  Its remaining credits are the sum of
the ledger entries written against it; a lot counts towards the available
balance while it has not expired.  Spending takes the lot that expires soonest
first, never-expiring lots last, ties by grant time — the booking shape of
beancount: the function *returns* the shortfall instead of raising.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo


class LotKind(StrEnum):
    PLAN = "plan"
    GRANT = "grant"
    PURCHASE = "purchase"


class EntryKind(StrEnum):
    GRANT = "grant"
    PURCHASE = "purchase"
    DEBIT = "debit"
    REFUND = "refund"
    EXPIRY = "expiry"
    ADJUSTMENT = "adjustment"


@dataclass(frozen=True)
class LotBalance:
    """A lot as the arithmetic sees it: when it lives, and what is left."""

    lot_id: int
    granted_at: datetime
    expires_at: datetime | None
    remaining: int

    def is_available(self, now: datetime) -> bool:
        return self.expires_at is None or self.expires_at > now


@dataclass(frozen=True)
class Draw:
    """Credits taken from one lot by a debit."""

    lot_id: int
    credits: int


@dataclass(frozen=True)
class Allocation:
    """The outcome of booking a debit: what to take, or how much is missing."""

    draws: tuple[Draw, ...]
    shortfall: int

    @property
    def ok(self) -> bool:
        return self.shortfall == 0


def spending_key(lot: LotBalance) -> tuple:
    """Soonest expiry first; never-expiring lots last; ties by grant time, then id."""
    never = lot.expires_at is None
    return (never, lot.expires_at or datetime.max.replace(tzinfo=lot.granted_at.tzinfo),
            lot.granted_at, lot.lot_id)


def available_balance(lots: Iterable[LotBalance], now: datetime) -> int:
    """Credits that can be spent at `now`: remainders of lots not yet expired."""
    return sum(lot.remaining for lot in lots if lot.remaining > 0 and lot.is_available(now))


def allocate_debit(lots: Iterable[LotBalance], credits: int, now: datetime) -> Allocation:
    """Book `credits` against the lots in spending order.

    All or nothing: if the available balance is short, no draws are returned and
    `shortfall` says how many credits are missing.
    """
    if credits <= 0:
        raise ValueError("a debit takes a positive number of credits")
    usable = sorted((lot for lot in lots if lot.remaining > 0 and lot.is_available(now)),
                    key=spending_key)
    have = sum(lot.remaining for lot in usable)
    if have < credits:
        return Allocation(draws=(), shortfall=credits - have)
    draws: list[Draw] = []
    left = credits
    for lot in usable:
        take = min(lot.remaining, left)
        draws.append(Draw(lot.lot_id, take))
        left -= take
        if left == 0:
            break
    return Allocation(draws=tuple(draws), shortfall=0)


def allocate_adjustment(lots: Iterable[LotBalance], delta: int, now: datetime) -> Allocation:
    """Book a staff correction of `delta` credits (`credits adjust`).

    A negative correction draws like a debit: soonest-expiring lots first, all
    or nothing, the shortfall returned — no lot ever goes below zero.  A
    positive one draws nothing: it opens a lot of its own, so no lot ever holds
    more than it was granted.
    """
    if delta == 0:
        raise ValueError("an adjustment changes the balance by a non-zero number of credits")
    if delta > 0:
        return Allocation(draws=(), shortfall=0)
    return allocate_debit(lots, -delta, now)


def refund_draws(debits: Sequence[Draw], refunded: Sequence[Draw] = ()) -> tuple[Draw, ...]:
    """What to give back: each lot gets what the debits took from it, less earlier refunds."""
    owed: dict[int, int] = {}
    for draw in debits:
        owed[draw.lot_id] = owed.get(draw.lot_id, 0) + draw.credits
    for draw in refunded:
        owed[draw.lot_id] = owed.get(draw.lot_id, 0) - draw.credits
    return tuple(Draw(lot_id, credits) for lot_id, credits in owed.items() if credits > 0)


def expired_remainders(lots: Iterable[LotBalance], now: datetime) -> tuple[Draw, ...]:
    """Lots whose expiry has passed with credits left: these get an `expiry` entry."""
    return tuple(Draw(lot.lot_id, lot.remaining) for lot in lots
                 if lot.remaining > 0 and lot.expires_at is not None and lot.expires_at <= now)


def start_of_day(day: date, tz: ZoneInfo) -> datetime:
    """Midnight at the start of `day` in the zone `tz`, as an aware datetime."""
    return datetime.combine(day, time.min, tzinfo=tz)


def expiry_for(granted_on: date, days: int, tz: ZoneInfo) -> datetime:
    """A lot granted on `granted_on` lasting `days` expires at the start of the day
    `days` later, in the agency's zone: 2026-01-01 + 90 days → 2026-04-01 00:00 Tokyo."""
    return start_of_day(granted_on + timedelta(days=days), tz)


@dataclass(frozen=True)
class BalanceSummary:
    """What the balance footer says."""

    available: int
    next_expiry_credits: int
    next_expiry_at: datetime | None
    never_expiring: int


def summarise(lots: Iterable[LotBalance], now: datetime) -> BalanceSummary:
    """Available credits, the soonest-expiring group of them, and the never-expiring part."""
    live = [lot for lot in lots if lot.remaining > 0 and lot.is_available(now)]
    expiring = sorted((lot for lot in live if lot.expires_at is not None),
                      key=lambda lot: lot.expires_at)
    next_at = expiring[0].expires_at if expiring else None
    next_credits = sum(lot.remaining for lot in expiring if lot.expires_at == next_at)
    return BalanceSummary(
        available=sum(lot.remaining for lot in live),
        next_expiry_credits=next_credits,
        next_expiry_at=next_at,
        never_expiring=sum(lot.remaining for lot in live if lot.expires_at is None),
    )
