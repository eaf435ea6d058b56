"""Sane ranges for what staff type, enforced by the use cases themselves (issue 9,
point 7): too many credits, days or years is one `OutOfRange` line, never a
database integer overflow or a date past year 9999; a grant dated in the
future is refused (its credits would be spendable before that date).  Both
databases.  (The command line's exit 2 for these: tests/test_cli_bounds.py.)"""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlmodel import func, select

from mailflow.config import settings_from_mapping
from mailflow.core.ledger import LotKind
from mailflow.db import transaction
from mailflow.desk import Desk
from mailflow.errors import ConfigError, MailflowError, OutOfRange
from mailflow.models import Client, Entry, Lot, Quote
from mailflow.services import clients, credits
from mailflow.services import requests as svc

TODAY = date(2026, 11, 26)  # the `clock` fixture's day in Tokyo
HUGE = [pytest.param(10**20, id="10^20"), pytest.param(2**63, id="2^63"),
        pytest.param(2**63 - 1, id="2^63-1"), pytest.param(2**31, id="2^31")]


@pytest.fixture
def acme(engine, desk):
    with transaction(engine) as session:
        client = clients.add_client(session, desk, name="Acme", emails=["a@acme.example"])
        request = svc.create_request(session, desk, client=client,
                                     requester="a@acme.example", subject="Banner")
        return client.id, request.id


def written(engine) -> tuple[int, int, int]:
    with transaction(engine) as session:
        return tuple(session.exec(select(func.count()).select_from(table)).one()
                     for table in (Lot, Entry, Quote))


def grant(engine, desk, client_id, credits_=1, **kwargs):
    with transaction(engine) as session:
        client = session.get(Client, client_id)
        return credits.add_lot(session, desk, client=client, kind=kwargs.pop("kind",
                                                                             LotKind.GRANT),
                               credits=credits_, **kwargs)


def quote(engine, desk, request_id, credits_=1, due=TODAY + timedelta(days=7)):
    with transaction(engine) as session:
        return svc.quote_request(session, desk, request_id=request_id,
                                 terms=svc.QuoteTerms(credits_, due))


@pytest.mark.parametrize("amount", HUGE)
def test_a_quote_for_more_than_the_maximum_is_one_line(engine, desk, acme, amount):
    with pytest.raises(OutOfRange, match=r"a quote must be a positive number of "
                                         r"credits up to 100 \(config "
                                         r"credits.max_credits_per_quote\)"):
        quote(engine, desk, acme[1], amount)
    assert written(engine) == (0, 0, 0)


@pytest.mark.parametrize("kind", [LotKind.GRANT, LotKind.PURCHASE])
@pytest.mark.parametrize("amount", HUGE)
def test_a_grant_or_purchase_over_the_maximum_is_one_line(engine, desk, acme, kind, amount):
    with pytest.raises(OutOfRange, match="credits.max_credits_per_grant"):
        grant(engine, desk, acme[0], amount, kind=kind)
    assert written(engine) == (0, 0, 0)


@pytest.mark.parametrize(("kwargs", "message"), [
    pytest.param(dict(expires_days=1_000_000_000), "--expires-days must be 1 to 3,652 days",
                 id="expires-days-10^9"),
    pytest.param(dict(expires_days=0), "--expires-days must be 1", id="expires-days-0"),
    pytest.param(dict(on=date(9999, 12, 31)), "the grant date 9999-12-31 is out of range",
                 id="on-9999-12-31"),
    pytest.param(dict(on=date(1, 1, 1)), "the grant date 0001-01-01 is out of range",
                 id="on-0001-01-01"),
    pytest.param(dict(on=TODAY - timedelta(days=3653)), "is out of range: it must be from "
                 "2016-11-26 to 2026-11-26", id="on-just-over-ten-years-ago"),
    pytest.param(dict(on=date(2099, 1, 1)), "the grant date 2099-01-01 is out of range",
                 id="on-in-2099"),
    pytest.param(dict(on=TODAY + timedelta(days=1)), "is out of range", id="on-tomorrow"),
])
def test_grant_days_and_dates_out_of_range_are_one_line(engine, desk, acme, kwargs, message):
    with pytest.raises(OutOfRange, match=message.replace("(", r"\(")):
        grant(engine, desk, acme[0], **kwargs)
    assert written(engine) == (0, 0, 0)


def test_edges_of_the_ranges_are_accepted(engine, desk, acme):
    client_id, request_id = acme
    grant(engine, desk, client_id, 10_000, on=TODAY - timedelta(days=3652))
    grant(engine, desk, client_id, 1, on=TODAY, expires_days=3652)
    grant(engine, desk, client_id, 10_000, kind=LotKind.PURCHASE)
    quote(engine, desk, request_id, 100, due=TODAY + timedelta(days=3652))
    assert written(engine) == (3, 4, 1)  # the first lot expired long ago: written off


def test_a_due_date_past_ten_years_is_one_line(engine, desk, acme):
    with pytest.raises(OutOfRange, match="due date 9999-12-31 is out of range"):
        quote(engine, desk, acme[1], due=date(9999, 12, 31))
    with pytest.raises(MailflowError, match="in the past"):
        quote(engine, desk, acme[1], due=date(1, 1, 1))
    assert written(engine) == (0, 0, 0)


def test_a_plan_over_the_maximum_is_refused(engine, desk):
    with transaction(engine) as session, pytest.raises(OutOfRange, match="a monthly plan"):
        clients.add_client(session, desk, name="Big", emails=["b@big.example"], plan=2**63)


def test_the_maximums_are_configurable(engine, clock, acme):
    desk = Desk(settings_from_mapping({"credits": {"max_credits_per_quote": 3,
                                                   "max_credits_per_grant": 50}}), clock=clock)
    quote(engine, desk, acme[1], 3)
    with pytest.raises(OutOfRange, match="up to 3 "):
        quote(engine, desk, acme[1], 4)
    grant(engine, desk, acme[0], 50)
    with pytest.raises(OutOfRange, match="up to 50 "):
        grant(engine, desk, acme[0], 51)


@pytest.mark.parametrize(("credits_", "message"), [
    pytest.param({"max_credits_per_grant": 0}, "greater than or equal to 1", id="zero"),
    pytest.param({"max_credits_per_quote": 10**7}, "less than or equal to 1000000", id="huge"),
    pytest.param({"max_credits_per_grant": 1_000_000}, "more yen than one lot can record",
                 id="price-overflows"),
])
def test_a_maximum_out_of_its_own_range_is_a_config_error(credits_, message):
    with pytest.raises(ConfigError, match=message):
        settings_from_mapping({"credits": credits_})
