"""The pure credit arithmetic: lots before, a debit, lots after — and invariants."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailflow.core.ledger import (
    Draw,
    LotBalance,
    allocate_debit,
    available_balance,
    expired_remainders,
    expiry_for,
    refund_draws,
    summarise,
)

TOKYO = ZoneInfo("Asia/Tokyo")
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def lot(lot_id: int, remaining: int, *, expires_in_days: int | None, granted_days_ago: int = 10):
    expires = None if expires_in_days is None else NOW + timedelta(days=expires_in_days)
    return LotBalance(lot_id, NOW - timedelta(days=granted_days_ago), expires, remaining)


@pytest.mark.parametrize(
    ("lots", "debit", "draws", "shortfall"),
    [
        pytest.param([lot(1, 5, expires_in_days=10)], 3, [Draw(1, 3)], 0, id="one-lot"),
        pytest.param([lot(1, 5, expires_in_days=None), lot(2, 5, expires_in_days=30)], 3,
                     [Draw(2, 3)], 0, id="expiring-before-never"),
        pytest.param([lot(1, 2, expires_in_days=30), lot(2, 2, expires_in_days=5)], 3,
                     [Draw(2, 2), Draw(1, 1)], 0, id="soonest-first-spans-lots"),
        pytest.param([lot(1, 2, expires_in_days=30, granted_days_ago=5),
                      lot(2, 2, expires_in_days=30, granted_days_ago=9)], 3,
                     [Draw(2, 2), Draw(1, 1)], 0, id="tie-older-grant-first"),
        pytest.param([lot(1, 2, expires_in_days=-1), lot(2, 1, expires_in_days=None)], 2,
                     [], 1, id="expired-lot-not-spent-short"),
        pytest.param([lot(1, 3, expires_in_days=None)], 4, [], 1, id="short-takes-nothing"),
        pytest.param([lot(1, 0, expires_in_days=1), lot(2, 4, expires_in_days=None)], 4,
                     [Draw(2, 4)], 0, id="empty-lot-skipped"),
        pytest.param([lot(1, 1, expires_in_days=0)], 1, [], 1, id="expires-exactly-now"),
    ],
)
def test_allocate_debit_takes_soonest_expiring_first(lots, debit, draws, shortfall):
    allocation = allocate_debit(lots, debit, NOW)
    assert list(allocation.draws) == draws
    assert allocation.shortfall == shortfall


def test_debit_must_be_positive():
    with pytest.raises(ValueError):
        allocate_debit([lot(1, 5, expires_in_days=None)], 0, NOW)


@pytest.mark.parametrize(
    ("granted_on", "days", "zone", "expected_utc"),
    [
        pytest.param(date(2026, 1, 1), 90, "Asia/Tokyo", datetime(2026, 3, 31, 15, tzinfo=UTC),
                     id="tokyo-2026-04-01-midnight"),
        pytest.param(date(2026, 1, 1), 90, "UTC", datetime(2026, 4, 1, tzinfo=UTC), id="utc"),
        pytest.param(date(2026, 1, 1), 90, "America/New_York",
                     datetime(2026, 4, 1, 4, tzinfo=UTC), id="new-york-after-dst-start"),
        pytest.param(date(2026, 12, 20), 14, "Asia/Tokyo", datetime(2027, 1, 2, 15, tzinfo=UTC),
                     id="across-year-end"),
    ],
)
def test_expiry_is_start_of_day_in_agency_zone(granted_on, days, zone, expected_utc):
    assert expiry_for(granted_on, days, ZoneInfo(zone)) == expected_utc


def test_lot_expiring_at_tokyo_midnight_is_available_one_second_before():
    expires = expiry_for(date(2026, 1, 1), 90, TOKYO)
    lots = [LotBalance(1, datetime(2025, 12, 31, 15, tzinfo=UTC), expires, 5)]
    assert available_balance(lots, expires - timedelta(seconds=1)) == 5
    assert available_balance(lots, expires) == 0
    assert expired_remainders(lots, expires) == (Draw(1, 5),)
    assert expired_remainders(lots, expires - timedelta(seconds=1)) == ()


def test_refund_gives_back_to_the_lots_debited_less_earlier_refunds():
    debits = [Draw(1, 2), Draw(2, 1), Draw(1, 1)]
    assert refund_draws(debits) == (Draw(1, 3), Draw(2, 1))
    assert refund_draws(debits, [Draw(1, 3)]) == (Draw(2, 1),)
    assert refund_draws(debits, [Draw(1, 3), Draw(2, 1)]) == ()


def test_summary_names_next_expiry_and_never_expiring_part():
    lots = [lot(1, 2, expires_in_days=5), lot(2, 3, expires_in_days=5),
            lot(3, 4, expires_in_days=40), lot(4, 7, expires_in_days=None),
            lot(5, 9, expires_in_days=-2)]
    summary = summarise(lots, NOW)
    assert summary.available == 16
    assert summary.next_expiry_credits == 5
    assert summary.next_expiry_at == NOW + timedelta(days=5)
    assert summary.never_expiring == 7


# --- properties -------------------------------------------------------------

lots_strategy = st.lists(
    st.builds(lambda i, left, exp, ago: (i, left, exp, ago),
              st.integers(), st.integers(0, 20),
              st.one_of(st.none(), st.integers(-30, 120)), st.integers(0, 200)),
    max_size=8,
).map(lambda raw: [lot(n + 1, left, expires_in_days=exp, granted_days_ago=ago)
                   for n, (_, left, exp, ago) in enumerate(raw)])


@settings(max_examples=300, deadline=None)
@given(lots=lots_strategy, credits=st.integers(1, 60))
def test_debit_never_overdraws_and_is_all_or_nothing(lots, credits):
    before = available_balance(lots, NOW)
    allocation = allocate_debit(lots, credits, NOW)
    taken = sum(d.credits for d in allocation.draws)
    if allocation.ok:
        assert taken == credits
    else:
        assert taken == 0 and allocation.shortfall == credits - before > 0
    remaining = {lot.lot_id: lot.remaining for lot in lots}
    for draw in allocation.draws:
        remaining[draw.lot_id] -= draw.credits
    assert all(value >= 0 for value in remaining.values())
    after = [LotBalance(lt.lot_id, lt.granted_at, lt.expires_at, remaining[lt.lot_id])
             for lt in lots]
    assert available_balance(after, NOW) == before - taken >= 0


@settings(max_examples=300, deadline=None)
@given(lots=lots_strategy, credits=st.integers(1, 60))
def test_no_later_expiring_lot_is_touched_while_an_earlier_one_has_credits(lots, credits):
    allocation = allocate_debit(lots, credits, NOW)
    by_id = {lt.lot_id: lt for lt in lots}
    drawn = {d.lot_id: d.credits for d in allocation.draws}
    for draw in allocation.draws[:-1]:  # every lot but the last drawn is emptied
        assert draw.credits == by_id[draw.lot_id].remaining
    for lot_id in drawn:
        assert by_id[lot_id].is_available(NOW)


@settings(max_examples=200, deadline=None)
@given(lots=lots_strategy, credits=st.integers(1, 60))
def test_refund_of_a_debit_restores_every_lot(lots, credits):
    allocation = allocate_debit(lots, credits, NOW)
    assert {d.lot_id: d.credits for d in refund_draws(allocation.draws)} == \
        {d.lot_id: d.credits for d in allocation.draws}
    assert refund_draws(allocation.draws, allocation.draws) == ()


@settings(max_examples=200, deadline=None)
@given(lots=lots_strategy)
def test_expired_plus_available_accounts_for_every_credit(lots):
    written_off = sum(d.credits for d in expired_remainders(lots, NOW))
    assert written_off + available_balance(lots, NOW) == sum(lt.remaining for lt in lots)


@settings(max_examples=200, deadline=None)
@given(day=st.dates(date(2000, 1, 1), date(2100, 1, 1)), days=st.integers(1, 400),
       zone=st.sampled_from(["Asia/Tokyo", "UTC", "Europe/London", "America/Los_Angeles",
                             "Australia/Lord_Howe", "Pacific/Kiritimati"]))
def test_expiry_is_local_midnight_of_the_right_day(day, days, zone):
    tz = ZoneInfo(zone)
    expires = expiry_for(day, days, tz).astimezone(tz)
    assert expires.date() == day + timedelta(days=days)
    assert (expires.hour, expires.minute) == (0, 0) or expires.hour in (0, 1)  # DST gaps
