"""The ledger on a real database (SQLite and PostgreSQL): lots, debits, refunds, expiry."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func
from sqlmodel import select

from mailflow.core.ledger import EntryKind, LotKind
from mailflow.db import transaction
from mailflow.errors import InsufficientCredits, MailflowError
from mailflow.models import Entry
from mailflow.services import clients, credits


@pytest.fixture
def acme(engine, desk):
    with transaction(engine) as session:
        return clients.add_client(session, desk, name="Acme", emails=["a@acme.example"]).id


def add(engine, desk, client_id, kind, n, **kw):
    with transaction(engine) as session:
        client = clients.find_client(session, str(client_id))
        return credits.add_lot(session, desk, client=client, kind=kind, credits=n, **kw)


def entry_sum(engine, client_id) -> int:
    with transaction(engine) as session:
        return session.exec(select(func.coalesce(func.sum(Entry.delta), 0))
                            .where(Entry.client_id == client_id)).one()


def available(engine, desk, client_id) -> int:
    with transaction(engine) as session:
        return credits.balance(session, desk, client_id).available


def test_grant_on_a_date_expires_at_tokyo_midnight_90_days_later(engine, desk, acme, clock):
    lot = add(engine, desk, acme, LotKind.GRANT, 5, on=date(2026, 1, 1))
    assert lot.expires_at == datetime(2026, 3, 31, 15, tzinfo=UTC)  # 2026-04-01 00:00 JST
    assert lot.granted_at == datetime(2025, 12, 31, 15, tzinfo=UTC)


def test_purchase_never_expires_and_records_yen(engine, desk, acme):
    lot = add(engine, desk, acme, LotKind.PURCHASE, 3)
    assert lot.expires_at is None
    assert lot.price_yen == 24_000


def test_old_grant_is_written_off_by_an_expiry_entry(engine, desk, acme, clock):
    add(engine, desk, acme, LotKind.GRANT, 5, on=desk.today() - timedelta(days=100))
    add(engine, desk, acme, LotKind.PURCHASE, 3)
    assert available(engine, desk, acme) == 3
    with transaction(engine) as session:
        kinds = [e.kind for e in credits.recent_entries(session, acme)]
    assert sorted(kinds) == sorted([EntryKind.GRANT, EntryKind.EXPIRY, EntryKind.PURCHASE])
    assert entry_sum(engine, acme) == 3  # a balance is the sum of its entries


def test_debit_spans_lots_soonest_expiring_first(engine, desk, acme, clock):
    late = add(engine, desk, acme, LotKind.GRANT, 2, expires_days=60)
    soon = add(engine, desk, acme, LotKind.GRANT, 2, expires_days=10)
    bought = add(engine, desk, acme, LotKind.PURCHASE, 5)
    with transaction(engine) as session:
        draws = credits.debit(session, desk, client_id=acme, credits=5, request_id=None,
                              actor="staff")
    assert [(d.lot_id, d.credits) for d in draws] == [(soon.id, 2), (late.id, 2), (bought.id, 1)]
    assert available(engine, desk, acme) == 4 == entry_sum(engine, acme)


def test_short_debit_takes_nothing(engine, desk, acme):
    add(engine, desk, acme, LotKind.PURCHASE, 2)
    with pytest.raises(InsufficientCredits) as error, transaction(engine) as session:
        credits.debit(session, desk, client_id=acme, credits=3, request_id=None, actor="staff")
    assert (error.value.available, error.value.needed, error.value.shortfall) == (2, 3, 1)
    assert available(engine, desk, acme) == 2


def test_sweep_is_idempotent(engine, desk, acme, clock):
    add(engine, desk, acme, LotKind.GRANT, 4, expires_days=1)
    clock.advance(days=2)
    with transaction(engine) as session:
        assert credits.sweep_expired(session, desk) == 4
    with transaction(engine) as session:
        assert credits.sweep_expired(session, desk) == 0
    assert entry_sum(engine, acme) == 0


def test_bad_amounts_are_refused(engine, desk, acme):
    with pytest.raises(MailflowError, match="positive"):
        add(engine, desk, acme, LotKind.GRANT, 0)
    with pytest.raises(MailflowError, match="expires-days"):
        add(engine, desk, acme, LotKind.GRANT, 1, expires_days=0)
