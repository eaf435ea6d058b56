"""`credits adjust` arithmetic: lots before, a correction, lots after — and the
rule that no lot ever goes below zero."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailflow.core.ledger import Draw, LotBalance, allocate_adjustment, available_balance
from tests.core.test_ledger import NOW, lot, lots_strategy


@pytest.mark.parametrize(
    ("lots", "delta", "draws", "shortfall"),
    [
        pytest.param([lot(1, 5, expires_in_days=10)], 3, [], 0, id="positive-draws-nothing"),
        pytest.param([], 2, [], 0, id="positive-with-no-lots"),
        pytest.param([lot(1, 5, expires_in_days=10)], -3, [Draw(1, 3)], 0, id="negative-one-lot"),
        pytest.param([lot(1, 4, expires_in_days=None), lot(2, 1, expires_in_days=20),
                      lot(3, 2, expires_in_days=5)], -4,
                     [Draw(3, 2), Draw(2, 1), Draw(1, 1)], 0,
                     id="negative-soonest-expiring-first-never-last"),
        pytest.param([lot(1, 2, expires_in_days=30, granted_days_ago=3),
                      lot(2, 2, expires_in_days=30, granted_days_ago=8)], -1,
                     [Draw(2, 1)], 0, id="negative-tie-older-grant-first"),
        pytest.param([lot(1, 3, expires_in_days=None)], -4, [], 1,
                     id="negative-more-than-available-takes-nothing"),
        pytest.param([lot(1, 5, expires_in_days=-1), lot(2, 1, expires_in_days=None)], -2,
                     [], 1, id="negative-expired-lot-does-not-count"),
        pytest.param([lot(1, 0, expires_in_days=3), lot(2, 2, expires_in_days=9)], -2,
                     [Draw(2, 2)], 0, id="negative-empty-lot-skipped"),
    ],
)
def test_allocate_adjustment(lots, delta, draws, shortfall):
    allocation = allocate_adjustment(lots, delta, NOW)
    assert (list(allocation.draws), allocation.shortfall) == (draws, shortfall)


def test_an_adjustment_of_zero_is_refused():
    with pytest.raises(ValueError):
        allocate_adjustment([lot(1, 5, expires_in_days=None)], 0, NOW)


@settings(max_examples=300, deadline=None)
@given(lots=lots_strategy, delta=st.integers(-60, -1))
def test_a_negative_adjustment_never_takes_a_lot_below_zero(lots, delta):
    before = available_balance(lots, NOW)
    allocation = allocate_adjustment(lots, delta, NOW)
    remaining = {lt.lot_id: lt.remaining for lt in lots}
    for draw in allocation.draws:
        remaining[draw.lot_id] -= draw.credits
    assert all(value >= 0 for value in remaining.values())
    taken = sum(d.credits for d in allocation.draws)
    assert taken == (-delta if allocation.ok else 0)
    assert allocation.shortfall == max(0, -delta - before)
    after = [LotBalance(lt.lot_id, lt.granted_at, lt.expires_at, remaining[lt.lot_id])
             for lt in lots]
    assert available_balance(after, NOW) == before - taken
