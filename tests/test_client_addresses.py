"""The desk's own addresses are never a client's (issue 9, point 9b): the support
mailbox (any +tag variant, any case) and staff addresses are refused with one
line; other addresses of the same domain are fine.  Both databases."""

from __future__ import annotations

import pytest
from sqlmodel import func, select

from mailflow.db import transaction
from mailflow.errors import MailflowError
from mailflow.models import Client
from mailflow.services import clients


@pytest.mark.parametrize(("address", "what"), [
    pytest.param("support@agency.example", "the support mailbox", id="mailbox"),
    pytest.param("Support@AGENCY.example", "the support mailbox", id="mailbox-any-case"),
    pytest.param("support+abc123@agency.example", "the support mailbox", id="mailbox-plus-tag"),
    pytest.param("staff@agency.example", "a staff address", id="staff-notify"),
    pytest.param("staff+x@agency.example", "a staff address", id="staff-plus-tag"),
])
def test_our_own_addresses_cannot_be_a_clients(engine, desk, address, what):
    with transaction(engine) as session, pytest.raises(MailflowError) as raised:
        clients.add_client(session, desk, name="Acme", emails=["a@acme.example", address])
    message = str(raised.value)
    assert what in message and address.lower() in message and "\n" not in message
    with transaction(engine) as session:
        assert session.exec(select(func.count()).select_from(Client)).one() == 0


@pytest.mark.parametrize("address", ["sales@agency.example", "support@agency.example.net",
                                     "support@other.example", "supports@agency.example"])
def test_other_addresses_like_ours_are_fine(engine, desk, address):
    with transaction(engine) as session:
        clients.add_client(session, desk, name="Acme", emails=[address])
