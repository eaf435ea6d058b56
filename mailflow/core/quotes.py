"""A quote's terms as the client reads them: pure functions, no I/O.

- how long a quote stays valid (DESIGN §2: the earlier of `quote_valid_days`
  after sending and `min_lead_days` before the completion date);
- what a client short of credits can do: the shortfall, and whether the next
  plan allotment arrives in time to cover it;
- which credits a quote would use that stop being usable before it expires.

Days are calendar days in the agency's zone; instants are aware datetimes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from mailflow.core.ledger import LotBalance, allocate_debit, available_balance


def last_valid_day(sent_on: date, due: date, *, valid_days: int, lead_days: int) -> date | None:
    """The last day a quote sent on `sent_on` can be approved, or None when the
    completion date is too close to quote at all (it would be valid on no day)."""
    last = min(sent_on + timedelta(days=valid_days), due - timedelta(days=lead_days))
    return last if last >= sent_on else None


def earliest_due(sent_on: date, *, lead_days: int) -> date:
    """The first completion date a quote sent on `sent_on` may promise."""
    return sent_on + timedelta(days=lead_days)


@dataclass(frozen=True)
class Shortfall:
    """What is missing to approve `needed` credits, and whether waiting helps.

    `allotment_at`: the next plan allotment (None: no plan, or none before the
    quote expires is known); `waiting_covers`: that allotment arrives while the
    quote is still valid and, with what is left then, covers the quote."""

    needed: int
    available: int
    credits: int
    allotment_at: datetime | None
    allotment_credits: int | None
    waiting_covers: bool


def shortfall(lots: Sequence[LotBalance], needed: int, now: datetime, *, valid_until: datetime,
              allotment_at: datetime | None, allotment_credits: int | None) -> Shortfall | None:
    """None when the available balance covers `needed`; else what is missing.

    Waiting counts only credits still usable at the allotment instant: lots
    that expire before it do not help."""
    available = available_balance(lots, now)
    if available >= needed:
        return None
    covers = False
    if allotment_at is not None and allotment_credits and allotment_at < valid_until:
        covers = available_balance(lots, allotment_at) + allotment_credits >= needed
    return Shortfall(needed=needed, available=available, credits=needed - available,
                     allotment_at=allotment_at, allotment_credits=allotment_credits,
                     waiting_covers=covers)


@dataclass(frozen=True)
class Expiring:
    """Credits a quote would use that stop being usable at `expires_at`."""

    credits: int
    expires_at: datetime


def expiring_before(lots: Sequence[LotBalance], needed: int, now: datetime,
                    until: datetime) -> tuple[Expiring, ...]:
    """The credits a debit of `needed` at `now` would take from lots that expire
    before `until` (the quote's end): approved later, the quote cannot use them.
    Nothing when the balance does not cover `needed` now."""
    allocation = allocate_debit(lots, needed, now)
    if not allocation.ok:
        return ()
    expires = {lot.lot_id: lot.expires_at for lot in lots}
    by_instant: dict[datetime, int] = {}
    for draw in allocation.draws:
        at = expires[draw.lot_id]
        if at is not None and at < until:
            by_instant[at] = by_instant.get(at, 0) + draw.credits
    return tuple(Expiring(credits, at) for at, credits in sorted(by_instant.items()))
