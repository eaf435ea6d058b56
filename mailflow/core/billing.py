"""Invoice arithmetic for credits bought: pure functions, integer yen, no I/O.

A Japanese qualified invoice (適格請求書) states, per tax rate, the amount
subject to that rate and the tax on it, the tax rounded once per invoice and
rate (never per line).  Prices are either tax-exclusive (the tax is added) or
tax-inclusive (the tax is the included part, total × rate / (1 + rate)).
Money is integer yen; rates are `Decimal`; nothing here touches a float.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from enum import StrEnum

INVOICE_PREFIX = "INV"


class Rounding(StrEnum):
    """How the tax of one rate is rounded to whole yen (once per invoice)."""

    FLOOR = "floor"  # 切り捨て: what most agencies use
    ROUND = "round"  # 四捨五入: half up
    CEIL = "ceil"  # 切り上げ


_MODES = {Rounding.FLOOR: ROUND_FLOOR, Rounding.ROUND: ROUND_HALF_UP,
          Rounding.CEIL: ROUND_CEILING}


def round_yen(amount: Decimal, rounding: Rounding) -> int:
    """A yen amount with fractions, rounded to whole yen as configured."""
    return int(amount.quantize(Decimal(1), rounding=_MODES[Rounding(rounding)]))


@dataclass(frozen=True)
class Item:
    """One invoice line: `quantity` × `unit_price_yen` at `tax_rate` (0.10, 0.08)."""

    quantity: int
    unit_price_yen: int
    tax_rate: Decimal

    @property
    def amount_yen(self) -> int:
        return self.quantity * self.unit_price_yen


@dataclass(frozen=True)
class RateTotal:
    """What a qualified invoice states for one tax rate."""

    tax_rate: Decimal
    amount_yen: int  # the lines' sum on the price basis (excl. or incl. tax)
    net_yen: int  # excluding tax
    tax_yen: int
    gross_yen: int  # including tax


@dataclass(frozen=True)
class InvoiceAmounts:
    """Per-rate totals, and the invoice's subtotal (excl. tax), tax and total."""

    price_includes_tax: bool
    rates: tuple[RateTotal, ...]

    @property
    def subtotal_yen(self) -> int:
        return sum(rate.net_yen for rate in self.rates)

    @property
    def tax_yen(self) -> int:
        return sum(rate.tax_yen for rate in self.rates)

    @property
    def total_yen(self) -> int:
        return sum(rate.gross_yen for rate in self.rates)


def invoice_amounts(items: Iterable[Item], *, price_includes_tax: bool,
                    rounding: Rounding = Rounding.FLOOR) -> InvoiceAmounts:
    """Sum the lines per tax rate, then take the tax of each rate once.

    Tax-exclusive prices: tax = rounding(sum × rate), total = sum + tax.
    Tax-inclusive prices: tax = rounding(sum × rate / (1 + rate)), the rest is net."""
    by_rate: dict[Decimal, int] = {}
    for item in items:
        if item.quantity < 0 or item.unit_price_yen < 0:
            raise ValueError("an invoice line has a quantity and a price of zero or more")
        check_tax_rate(item.tax_rate)
        by_rate[item.tax_rate] = by_rate.get(item.tax_rate, 0) + item.amount_yen
    rates = []
    for rate in sorted(by_rate, reverse=True):
        amount = by_rate[rate]
        if price_includes_tax:
            tax = round_yen(Decimal(amount) * rate / (1 + rate), rounding)
            rates.append(RateTotal(rate, amount, amount - tax, tax, amount))
        else:
            tax = round_yen(Decimal(amount) * rate, rounding)
            rates.append(RateTotal(rate, amount, amount, tax, amount + tax))
    return InvoiceAmounts(price_includes_tax=price_includes_tax, rates=tuple(rates))


def check_tax_rate(rate: Decimal) -> Decimal:
    if not isinstance(rate, Decimal) or not Decimal(0) <= rate < Decimal(1):
        raise ValueError(f"a tax rate is a Decimal from 0 to below 1, like 0.10 (got {rate!r})")
    return rate


def percent(rate: Decimal) -> str:
    """Decimal('0.10') → '10', Decimal('0.08') → '8', Decimal('0.075') → '7.5'."""
    value = (rate * 100).normalize()
    return f"{value:f}"


# -- the registration number (登録番号) -------------------------------------------

_REGISTRATION = re.compile(r"T([0-9]{13})")


def check_digit(base: str) -> int:
    """The check digit (検査用数字) of a 12-digit corporate base number (基礎番号).

    9 − (Σ Pn × Qn mod 9), Pn the n-th digit counted from the least significant,
    Qn = 1 for odd n and 2 for even n (財務省令第七十号 第二条)."""
    if len(base) != 12 or not base.isascii() or not base.isdigit():
        raise ValueError("a base number has 12 digits")
    total = sum(int(digit) * (1 if n % 2 else 2)
                for n, digit in enumerate(reversed(base), start=1))
    return 9 - total % 9


def registration_problem(number: str) -> str | None:
    """Why NUMBER is not a qualified-invoice registration number, or None.

    `T` + 13 digits whose first digit is the check digit of the other 12
    (a corporation's is `T` + its corporate number)."""
    match = _REGISTRATION.fullmatch(number)
    if match is None:
        return "must be T followed by 13 digits, like T9234567890123"
    digits = match.group(1)
    expected = check_digit(digits[1:])
    if int(digits[0]) != expected:
        return (f"check digit is wrong ({digits[0]}, the other 12 digits give {expected});"
                " copy the number from your registration notice")
    return None


# -- invoice numbers -----------------------------------------------------------------

_NUMBER = re.compile(rf"{INVOICE_PREFIX}-([0-9]{{4}})-([0-9]{{4,}})")


def format_invoice_number(year: int, seq: int) -> str:
    """(2026, 1) → 'INV-2026-0001' (a 10,000th invoice in a year gets five digits)."""
    if seq < 1:
        raise ValueError("invoice sequence numbers start at 1")
    return f"{INVOICE_PREFIX}-{year:04d}-{seq:04d}"


def parse_invoice_number(text: str) -> tuple[int, int] | None:
    """'INV-2026-0001' (any case, full-width too) → (2026, 1); None if it is not one."""
    normal = unicodedata.normalize("NFKC", text).strip().upper()
    match = _NUMBER.fullmatch(normal)
    if match is None:
        return None
    seq = int(match.group(2))
    return (int(match.group(1)), seq) if seq >= 1 else None


def due_date(issued_on: date, payment_terms_days: int) -> date:
    return issued_on + timedelta(days=payment_terms_days)


# -- orders (`BUY n`) ------------------------------------------------------------------


class OrderProblem(StrEnum):
    """Why a `BUY n` cannot become an invoice: each has its own answer."""

    NOT_A_NUMBER = "not_a_number"
    NOT_WHOLE = "not_whole"
    NOT_POSITIVE = "not_positive"
    OVER_LIMIT = "over_limit"


@dataclass(frozen=True)
class OrderCheck:
    """The outcome of reading a quantity: credits to invoice, or the problem."""

    credits: int | None
    problem: OrderProblem | None = None
    max_credits: int | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def message(self) -> str:
        """One line for a person (the CLI; staff notices)."""
        return {
            None: "",
            OrderProblem.NOT_A_NUMBER: "the number of credits must be a whole number, like BUY 5",
            OrderProblem.NOT_WHOLE: "credits are bought in whole numbers (BUY 1, BUY 2, ...)",
            OrderProblem.NOT_POSITIVE: "the number of credits to buy must be 1 or more",
            OrderProblem.OVER_LIMIT: f"one order can buy at most {self.max_credits} credits",
        }[self.problem]


def order_quantity(count: int | None, count_text: str | None) -> int | str:
    """What a `BUY n` asks for, as `check_order` reads it: the integer the reply
    reader found ('五' and 'five' are 5), else the count as written ('1.5'),
    else '' (no count at all: not a number, the client is asked for one)."""
    if count is not None and not isinstance(count, bool):
        return count
    return (count_text or "").strip()


def order_amounts(credits: int, *, unit_price_yen: int, tax_rate: Decimal,
                  price_includes_tax: bool, rounding: Rounding = Rounding.FLOOR
                  ) -> InvoiceAmounts:
    """What an invoice for CREDITS would state (the shortfall answer quotes its
    tax-inclusive total before any invoice exists): the same arithmetic."""
    return invoice_amounts([Item(credits, unit_price_yen, tax_rate)],
                           price_includes_tax=price_includes_tax, rounding=rounding)


_QUANTITY = re.compile(r"([+-]?)([0-9]+)(?:\.([0-9]+))?")


def check_order(quantity: str | int, *, max_credits: int) -> OrderCheck:
    """Read the quantity of `BUY n` ('5', '５', '-1', '1.5') against the per-order limit.

    '2.0' is 2; a fraction, a sign, zero and anything above `max_credits` are refused."""
    if isinstance(quantity, bool):
        return OrderCheck(None, OrderProblem.NOT_A_NUMBER)
    if isinstance(quantity, int):
        sign, whole, fraction = ("-" if quantity < 0 else ""), str(abs(quantity)), None
    else:
        match = _QUANTITY.fullmatch(unicodedata.normalize("NFKC", str(quantity)).strip())
        if match is None:
            return OrderCheck(None, OrderProblem.NOT_A_NUMBER)
        sign, whole, fraction = match.groups()
    if fraction and fraction.strip("0"):
        return OrderCheck(None, OrderProblem.NOT_WHOLE)
    credits = int(whole) * (-1 if sign == "-" else 1)
    if credits <= 0:
        return OrderCheck(None, OrderProblem.NOT_POSITIVE)
    if credits > max_credits:
        return OrderCheck(None, OrderProblem.OVER_LIMIT, max_credits)
    return OrderCheck(credits, None, max_credits)
