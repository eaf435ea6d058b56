"""Invoice arithmetic: tax per rate rounded once, both price bases, registration
numbers, invoice numbers and `BUY n` quantities."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailflow.core.billing import (
    InvoiceAmounts,
    Item,
    OrderProblem,
    Rounding,
    check_digit,
    check_order,
    due_date,
    format_invoice_number,
    invoice_amounts,
    order_amounts,
    order_quantity,
    parse_invoice_number,
    percent,
    registration_problem,
    round_yen,
)

TEN = Decimal("0.10")
EIGHT = Decimal("0.08")


def one_line(credits: int, price: int, rate: Decimal = TEN, *, includes: bool = False,
             rounding: Rounding = Rounding.FLOOR) -> InvoiceAmounts:
    return invoice_amounts([Item(credits, price, rate)], price_includes_tax=includes,
                           rounding=rounding)


# --- rounding -----------------------------------------------------------------------

ROUNDING = [
    # amount, rounding, expected
    pytest.param("80.5", Rounding.FLOOR, 80, id="floor-half"),
    pytest.param("80.5", Rounding.ROUND, 81, id="round-half-goes-up"),
    pytest.param("80.4999", Rounding.ROUND, 80, id="round-below-half"),
    pytest.param("80.01", Rounding.CEIL, 81, id="ceil-any-fraction"),
    pytest.param("80", Rounding.CEIL, 80, id="ceil-whole-stays"),
    pytest.param("0.9", Rounding.FLOOR, 0, id="floor-below-one"),
]


@pytest.mark.parametrize(("amount", "rounding", "expected"), ROUNDING)
def test_round_yen(amount, rounding, expected):
    assert round_yen(Decimal(amount), rounding) == expected


# --- one line, tax-exclusive prices ---------------------------------------------------

EXCLUSIVE = [
    # credits, unit price, rate, rounding, subtotal, tax, total
    pytest.param(1, 8000, TEN, Rounding.FLOOR, 8000, 800, 8800, id="one-credit-10pc"),
    pytest.param(5, 8000, TEN, Rounding.FLOOR, 40000, 4000, 44000, id="five-credits-10pc"),
    pytest.param(100, 8000, TEN, Rounding.FLOOR, 800000, 80000, 880000, id="max-order-10pc"),
    pytest.param(3, 8000, EIGHT, Rounding.FLOOR, 24000, 1920, 25920, id="three-credits-8pc"),
    pytest.param(1, 8005, TEN, Rounding.FLOOR, 8005, 800, 8805, id="fraction-floored"),
    pytest.param(1, 8005, TEN, Rounding.ROUND, 8005, 801, 8806, id="fraction-half-up"),
    pytest.param(1, 8004, TEN, Rounding.ROUND, 8004, 800, 8804, id="fraction-below-half"),
    pytest.param(1, 8001, TEN, Rounding.CEIL, 8001, 801, 8802, id="fraction-ceiled"),
    pytest.param(1, 8013, EIGHT, Rounding.FLOOR, 8013, 641, 8654, id="8pc-floor"),
    pytest.param(1, 8013, EIGHT, Rounding.ROUND, 8013, 641, 8654, id="8pc-round-down"),
    pytest.param(1, 8019, EIGHT, Rounding.ROUND, 8019, 642, 8661, id="8pc-round-up"),
    pytest.param(2, 0, TEN, Rounding.FLOOR, 0, 0, 0, id="free-credits"),
    pytest.param(1, 9, TEN, Rounding.CEIL, 9, 1, 10, id="tiny-price-ceiled"),
    pytest.param(1, 8000, Decimal("0"), Rounding.FLOOR, 8000, 0, 8000, id="zero-rate"),
]


@pytest.mark.parametrize(("credits", "price", "rate", "rounding", "subtotal", "tax", "total"),
                         EXCLUSIVE)
def test_tax_exclusive_price_adds_tax_rounded_once(credits, price, rate, rounding, subtotal,
                                                    tax, total):
    amounts = one_line(credits, price, rate, rounding=rounding)
    assert (amounts.subtotal_yen, amounts.tax_yen, amounts.total_yen) == (subtotal, tax, total)
    assert amounts.rates[0].amount_yen == subtotal


# --- one line, tax-inclusive prices ---------------------------------------------------

INCLUSIVE = [
    # credits, unit price (incl. tax), rate, rounding, subtotal (excl.), tax, total
    pytest.param(1, 8800, TEN, Rounding.FLOOR, 8000, 800, 8800, id="exact-10pc"),
    pytest.param(1, 8000, TEN, Rounding.FLOOR, 7273, 727, 8000, id="8000-incl-floor"),
    pytest.param(1, 8000, TEN, Rounding.ROUND, 7273, 727, 8000, id="8000-incl-round"),
    pytest.param(1, 8000, TEN, Rounding.CEIL, 7272, 728, 8000, id="8000-incl-ceil"),
    pytest.param(3, 8000, TEN, Rounding.FLOOR, 21819, 2181, 24000, id="three-incl-floor"),
    pytest.param(3, 8000, TEN, Rounding.ROUND, 21818, 2182, 24000, id="three-incl-round"),
    pytest.param(1, 8000, EIGHT, Rounding.FLOOR, 7408, 592, 8000, id="8pc-incl-floor"),
    pytest.param(1, 8000, EIGHT, Rounding.CEIL, 7407, 593, 8000, id="8pc-incl-ceil"),
    pytest.param(1, 1, TEN, Rounding.FLOOR, 1, 0, 1, id="one-yen-floor"),
    pytest.param(1, 1, TEN, Rounding.CEIL, 0, 1, 1, id="one-yen-ceil"),
]


@pytest.mark.parametrize(("credits", "price", "rate", "rounding", "subtotal", "tax", "total"),
                         INCLUSIVE)
def test_tax_inclusive_price_includes_its_tax(credits, price, rate, rounding, subtotal, tax,
                                              total):
    amounts = one_line(credits, price, rate, includes=True, rounding=rounding)
    assert (amounts.subtotal_yen, amounts.tax_yen, amounts.total_yen) == (subtotal, tax, total)


def test_tax_is_rounded_once_per_rate_not_per_line():
    # Three lines of 8,005 yen: per line 800.5 floors to 800 three times (2,400);
    # once per invoice 2,401.5 floors to 2,401.
    lines = [Item(1, 8005, TEN)] * 3
    assert invoice_amounts(lines, price_includes_tax=False).tax_yen == 2401


def test_each_rate_has_its_own_total_and_tax():
    amounts = invoice_amounts([Item(1, 8005, TEN), Item(1, 1005, EIGHT), Item(1, 8005, TEN)],
                              price_includes_tax=False, rounding=Rounding.FLOOR)
    assert [(r.tax_rate, r.net_yen, r.tax_yen) for r in amounts.rates] == [
        (TEN, 16010, 1601), (EIGHT, 1005, 80)]
    assert amounts.total_yen == 16010 + 1601 + 1005 + 80


@pytest.mark.parametrize("rate", [TEN, EIGHT], ids=["10pc", "8pc"])
@pytest.mark.parametrize("includes", [False, True], ids=["excl", "incl"])
@pytest.mark.parametrize("rounding", list(Rounding), ids=[r.value for r in Rounding])
def test_every_quantity_up_to_the_limit_adds_up(rate, includes, rounding):
    for credits in range(1, 101):
        amounts = one_line(credits, 8000, rate, includes=includes, rounding=rounding)
        assert amounts.subtotal_yen + amounts.tax_yen == amounts.total_yen
        exact = Decimal(credits * 8000) * rate / ((1 + rate) if includes else 1)
        assert abs(amounts.tax_yen - exact) < 1


@given(st.integers(1, 1000), st.integers(0, 10**6), st.sampled_from([TEN, EIGHT]),
       st.booleans(), st.sampled_from(list(Rounding)))
def test_amounts_always_add_up(credits, price, rate, includes, rounding):
    amounts = one_line(credits, price, rate, includes=includes, rounding=rounding)
    assert amounts.subtotal_yen + amounts.tax_yen == amounts.total_yen
    assert amounts.tax_yen >= 0 and amounts.subtotal_yen >= 0
    line = credits * price
    assert (amounts.total_yen if includes else amounts.subtotal_yen) == line


@pytest.mark.parametrize("rate", [Decimal("-0.1"), Decimal("1"), 0.1],
                         ids=["negative", "hundred-percent", "float"])
def test_bad_tax_rate_is_refused(rate):
    with pytest.raises(ValueError):
        one_line(1, 8000, rate)


@pytest.mark.parametrize(("rate", "shown"), [(TEN, "10"), (EIGHT, "8"),
                                             (Decimal("0.075"), "7.5"), (Decimal("0"), "0")],
                         ids=["10", "8", "7.5", "0"])
def test_percent(rate, shown):
    assert percent(rate) == shown


# --- registration numbers -------------------------------------------------------------

# Published corporate numbers (法人番号公表サイト), with T they are registration numbers.
REAL_NUMBERS = [
    pytest.param("7000012050002", id="national-tax-agency"),
    pytest.param("1180301018771", id="toyota-motor"),
    pytest.param("7010705000725", id="japan-federation-of-cpta"),
    pytest.param("4011001098993", id="foundingbase"),
    pytest.param("2120901007402", id="tax-office-blog-example"),
]


@pytest.mark.parametrize("number", REAL_NUMBERS)
def test_check_digit_matches_published_corporate_numbers(number):
    assert check_digit(number[1:]) == int(number[0])
    assert registration_problem(f"T{number}") is None


REGISTRATION = [
    pytest.param("T9234567890123", None, id="valid-example"),
    pytest.param("T1234567890123", "check digit is wrong (1, the other 12 digits give 9)",
                 id="the-nta-leaflet-sample-fails-the-check"),
    pytest.param("T7000012050003", "check digit is wrong", id="last-digit-mistyped"),
    pytest.param("T7000012500002", "check digit is wrong", id="two-digits-swapped"),
    pytest.param("7000012050002", "must be T followed by 13 digits", id="no-T"),
    pytest.param("t7000012050002", "must be T followed by 13 digits", id="lower-case-t"),
    pytest.param("T700001205000", "must be T followed by 13 digits", id="12-digits"),
    pytest.param("T70000120500021", "must be T followed by 13 digits", id="14-digits"),
    pytest.param("T7000-0120-5000", "must be T followed by 13 digits", id="hyphens"),
    pytest.param("T７０００012050002", "must be T followed by 13 digits", id="full-width"),
    pytest.param("", "must be T followed by 13 digits", id="empty"),
]


@pytest.mark.parametrize(("number", "problem"), REGISTRATION)
def test_registration_number(number, problem):
    found = registration_problem(number)
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.startswith(problem)


def test_check_digit_is_never_zero():
    assert {check_digit(f"{n:012d}") for n in range(0, 2000, 7)} <= set(range(1, 10))


# --- invoice numbers -------------------------------------------------------------------

NUMBERS = [
    pytest.param(2026, 1, "INV-2026-0001", id="first"),
    pytest.param(2026, 42, "INV-2026-0042", id="padded"),
    pytest.param(2027, 9999, "INV-2027-9999", id="four-digits-full"),
    pytest.param(2027, 10000, "INV-2027-10000", id="grows-past-four-digits"),
]


@pytest.mark.parametrize(("year", "seq", "text"), NUMBERS)
def test_invoice_number_round_trip(year, seq, text):
    assert format_invoice_number(year, seq) == text
    assert parse_invoice_number(text) == (year, seq)


@pytest.mark.parametrize(("text", "parsed"), [
    pytest.param(" inv-2026-0007 ", (2026, 7), id="lower-case-and-spaces"),
    pytest.param("ＩＮＶ－２０２６－０００７", (2026, 7), id="full-width"),
    pytest.param("INV-2026-7", None, id="unpadded"),
    pytest.param("INV-2026-0000", None, id="zero"),
    pytest.param("REQ-2026-0001", None, id="other-prefix"),
    pytest.param("2026-0001", None, id="no-prefix"),
])
def test_parse_invoice_number(text, parsed):
    assert parse_invoice_number(text) == parsed


def test_sequence_starts_at_one():
    with pytest.raises(ValueError):
        format_invoice_number(2026, 0)


def test_due_date_counts_calendar_days():
    assert due_date(date(2026, 12, 3), 30) == date(2027, 1, 2)


# --- BUY n --------------------------------------------------------------------------------

ORDERS = [
    pytest.param("5", 5, None, id="five"),
    pytest.param("１０", 10, None, id="full-width-digits"),
    pytest.param(" 3 ", 3, None, id="spaces"),
    pytest.param("2.0", 2, None, id="whole-with-decimals"),
    pytest.param("+4", 4, None, id="plus-sign"),
    pytest.param("100", 100, None, id="at-the-limit"),
    pytest.param(7, 7, None, id="an-int"),
    pytest.param("0", None, OrderProblem.NOT_POSITIVE, id="zero"),
    pytest.param("-1", None, OrderProblem.NOT_POSITIVE, id="negative"),
    pytest.param("-0", None, OrderProblem.NOT_POSITIVE, id="minus-zero"),
    pytest.param(-3, None, OrderProblem.NOT_POSITIVE, id="negative-int"),
    pytest.param("1.5", None, OrderProblem.NOT_WHOLE, id="fraction"),
    pytest.param("0.5", None, OrderProblem.NOT_WHOLE, id="half"),
    pytest.param("101", None, OrderProblem.OVER_LIMIT, id="over-the-limit"),
    pytest.param("99999999999999999999", None, OrderProblem.OVER_LIMIT, id="huge"),
    pytest.param("five", None, OrderProblem.NOT_A_NUMBER, id="word"),
    pytest.param("1,000", None, OrderProblem.NOT_A_NUMBER, id="thousands-comma"),
    pytest.param("1e3", None, OrderProblem.NOT_A_NUMBER, id="exponent"),
    pytest.param("", None, OrderProblem.NOT_A_NUMBER, id="empty"),
    pytest.param(True, None, OrderProblem.NOT_A_NUMBER, id="a-bool"),
]


@pytest.mark.parametrize(("quantity", "credits", "problem"), ORDERS)
def test_check_order(quantity, credits, problem):
    checked = check_order(quantity, max_credits=100)
    assert (checked.credits, checked.problem) == (credits, problem)
    assert checked.ok == (problem is None)
    assert bool(checked.message) == (problem is not None)


def test_over_limit_message_names_the_limit():
    assert "at most 20 credits" in check_order("21", max_credits=20).message


ORDER_QUANTITIES = [
    # (id, count, count_text, quantity, credits, problem): the reply reader's
    # reading of `BUY n` → what check_order decides
    ("digits", 5, "5", 5, 5, None),
    ("kanji", 5, "五", 5, 5, None),
    ("word", 5, "five", 5, 5, None),
    ("zero", 0, "0", 0, None, OrderProblem.NOT_POSITIVE),
    ("negative", -1, "-1", -1, None, OrderProblem.NOT_POSITIVE),
    ("fraction", None, "1.5", "1.5", None, OrderProblem.NOT_WHOLE),
    ("whole-fraction", None, "2.0", "2.0", 2, None),
    ("over-limit", 101, "101", 101, None, OrderProblem.OVER_LIMIT),
    ("no-count", None, None, "", None, OrderProblem.NOT_A_NUMBER),
]


@pytest.mark.parametrize(("count", "count_text", "quantity", "credits", "problem"),
                         [c[1:] for c in ORDER_QUANTITIES], ids=[c[0] for c in ORDER_QUANTITIES])
def test_a_buy_reading_maps_to_an_order(count, count_text, quantity, credits, problem):
    assert order_quantity(count, count_text) == quantity
    checked = check_order(order_quantity(count, count_text), max_credits=100)
    assert (checked.credits, checked.problem) == (credits, problem)


@pytest.mark.parametrize(("includes", "credits", "total", "tax"),
                         [(False, 2, 17600, 1600), (True, 2, 16000, 1454), (False, 3, 26400, 2400)])
def test_order_amounts_state_the_tax_inclusive_total(includes, credits, total, tax):
    amounts = order_amounts(credits, unit_price_yen=8000, tax_rate=Decimal("0.10"),
                            price_includes_tax=includes)
    assert (amounts.total_yen, amounts.tax_yen) == (total, tax)
