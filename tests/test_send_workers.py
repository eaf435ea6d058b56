"""`send_due(workers=N)` (the digest's sender): every due row goes out once,
on N connections, and each client's messages still arrive in their order."""

from __future__ import annotations

from sqlmodel import select

from mailflow.db import transaction
from mailflow.desk import Desk
from mailflow.models import Outbox, OutboxStatus
from mailflow.sender import send_due
from mailflow.services import clients
from tests.test_sender import add_row, make_settings


def test_three_workers_send_everything_once_in_each_clients_order(engine, clock, smtp_server,
                                                                   smtp_settings):
    desk = Desk(make_settings(smtp_settings), clock=clock)
    with transaction(engine) as session:
        ids = [clients.add_client(session, desk, name=f"C{i}",
                                  emails=[f"c{i}@client{i}.example"]).id for i in range(4)]
    n = 0
    for _round in range(4):
        for index, client_id in enumerate(ids):
            n += 1
            add_row(engine, desk, n, client_id=client_id, to_addrs=f"c{index}@client{index}.example")
        n += 1
        add_row(engine, desk, n, to_addrs="staff@agency.example", template="staff/new_request")
    report = send_due(engine, desk, workers=3)
    assert report.sent == n and not report.failed
    captured = smtp_server.handler.wait_for(n)
    assert len(captured) == n
    assert 1 < smtp_server.handler.connections <= 3
    with transaction(engine) as session:
        rows = session.exec(select(Outbox).order_by(Outbox.id)).all()
    assert {row.status for row in rows} == {OutboxStatus.SENT}
    for address in {row.to_addrs for row in rows}:
        meant = [row.subject for row in rows if row.to_addrs == address]
        arrived = [c.message()["Subject"] for c in captured if c.recipients == (address,)]
        assert arrived == meant
