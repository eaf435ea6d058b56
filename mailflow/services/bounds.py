"""Sane ranges for the numbers and dates staff type (credits, days, dates).

Every use case checks its input here before it touches the database, so a
typo gets one line (`OutOfRange`: exit 2 on the command line) instead of a
database integer overflow or a date past year 9999.
"""

from __future__ import annotations

from datetime import date, timedelta

from mailflow.config import MAX_STORED_INTEGER
from mailflow.errors import OutOfRange

YEARS = 10
SPAN = timedelta(days=3652)  # ten years, leap days included
MAX_DAYS = SPAN.days


def check_credits(credits: int, *, maximum: int, what: str, key: str) -> int:
    """1 ≤ CREDITS ≤ MAXIMUM (the config key `credits.KEY`)."""
    if not 1 <= credits <= maximum:
        raise OutOfRange(f"{what} must be a positive number of credits up to {maximum:,} "
                         f"(config credits.{key}), not {_shown(credits)}")
    return credits


def check_days(days: int, *, what: str) -> int:
    if not 1 <= days <= MAX_DAYS:
        raise OutOfRange(f"{what} must be 1 to {MAX_DAYS:,} days ({YEARS} years), "
                         f"not {_shown(days)}")
    return days


def check_date(value: date, *, today: date, what: str, future: bool = True,
               past: bool = True) -> date:
    """VALUE within ten years of TODAY (only up to TODAY when not FUTURE, only
    from TODAY when not PAST)."""
    earliest = today - SPAN if past else today
    latest = today + SPAN if future else today
    if not earliest <= value <= latest:
        raise OutOfRange(f"{what} {value.isoformat()} is out of range: it must be from "
                         f"{earliest.isoformat()} to {latest.isoformat()}")
    return value


def is_row_id(number: int) -> bool:
    """Whether NUMBER can be a row's id at all (a larger one would overflow the
    query's parameter, not just find nothing)."""
    return 1 <= number <= MAX_STORED_INTEGER  # ids are PostgreSQL `integer`s


def _shown(number: int) -> str:
    text = f"{number:,}"
    return text if len(text) <= 30 else f"{text[:12]}… ({len(str(abs(number)))} digits)"
