"""Invoice numbers stay gapless and unique under concurrency and outages:
two processes ordering at once, a connection killed between taking a number
and committing, a PostgreSQL server stopped at that moment."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from mailflow.config import settings_from_mapping
from mailflow.db import create_db_engine, transaction, upgrade_schema
from mailflow.desk import Desk
from mailflow.models import Invoice, InvoiceSequence
from mailflow.services import billing
from mailflow.services.clients import add_client
from tests.conftest import pg_admin_connection
from tests.requirements import unavailable
from tests.servers.postgres import PostgresError, PrivatePostgres

ROOT = Path(__file__).resolve().parents[2]
CONTACTS = ("hanako@sakura.example", "taro@sakura.example")


def make_desk(clock=None) -> Desk:
    settings = settings_from_mapping({"staff": {"notify": ["staff@agency.example"]}})
    return Desk(settings, clock=clock) if clock else Desk(settings)


def setup_client(engine, desk):
    with transaction(engine) as session:
        return add_client(session, desk, name="Sakura Foods", emails=list(CONTACTS), lang="ja")


def numbers(engine) -> list[str]:
    with transaction(engine) as session:
        return [i.number for i in session.exec(select(Invoice).order_by(Invoice.id))]


def issue(engine, desk, client, message_id: str) -> Invoice:
    with transaction(engine) as session:
        return billing.issue_invoice(session, desk, client=client, credits=1,
                                     requester=CONTACTS[0], source_message_id=message_id)


@pytest.mark.slow
def test_two_processes_ordering_for_one_client_get_distinct_numbers_without_gaps(
        db_url, tmp_path):
    engine = create_db_engine(db_url)
    desk = make_desk()
    setup_client(engine, desk)
    per_process = 12
    go = tmp_path / "go"
    workers = [subprocess.Popen([sys.executable, "-m", "tests.faults.invoice_worker", db_url,
                                 contact, str(per_process), str(go)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for contact in CONTACTS]
    go.touch()
    outputs = []
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        outputs.append(out.split())
    year = desk.today().year
    expected = {f"INV-{year}-{n:04d}" for n in range(1, 2 * per_process + 1)}
    got = outputs[0] + outputs[1]
    assert len(got) == len(set(got)) == 2 * per_process
    assert set(got) == expected == set(numbers(engine))
    with transaction(engine) as session:
        assert session.get(InvoiceSequence, year).last == 2 * per_process
    engine.dispose()


def _backend_waits_for_lock(pid: int) -> bool:
    with pg_admin_connection() as conn:
        row = conn.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                           (pid,)).fetchone()
    return row is not None and row[0] == "Lock"


@pytest.mark.postgres
def test_connection_killed_after_taking_a_number_gives_it_to_the_waiting_order(pg_db_url,
                                                                              clock):
    engine = create_db_engine(pg_db_url)
    desk = make_desk(clock)
    client = setup_client(engine, desk)
    waiting: dict = {}

    def second_order() -> None:
        with transaction(engine) as session:
            waiting["pid"] = session.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            waiting["invoice"] = billing.issue_invoice(session, desk, client=client, credits=2,
                                                       requester=CONTACTS[1],
                                                       source_message_id="second@x")

    first = engine.connect()
    with pytest.raises(sa.exc.OperationalError):
        with Session(bind=first) as session:
            victim = session.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            taken = billing.issue_invoice(session, desk, client=client, credits=1,
                                          requester=CONTACTS[0], source_message_id="first@x")
            assert taken.number == "INV-2026-0001"
            thread = threading.Thread(target=second_order)
            thread.start()
            deadline = time.monotonic() + 30
            while not ("pid" in waiting and _backend_waits_for_lock(waiting["pid"])):
                assert time.monotonic() < deadline, "the second order never waited"
                time.sleep(0.02)
            with pg_admin_connection() as admin:  # the database connection dies here
                admin.execute("SELECT pg_terminate_backend(%s)", (victim,))
            session.commit()
    first.close()
    thread.join(timeout=30)
    assert waiting["invoice"].number == "INV-2026-0001"
    assert issue(engine, desk, client, "third@x").number == "INV-2026-0002"
    assert numbers(engine) == ["INV-2026-0001", "INV-2026-0002"]
    engine.dispose()


@pytest.mark.postgres
@pytest.mark.slow
def test_database_stopped_between_number_and_commit_leaves_no_gap(clock):
    try:
        server = PrivatePostgres()
    except PostgresError as error:
        unavailable(str(error))
    with server:
        url = server.create_database("mailflow")
        upgrade_schema(url)
        engine = create_db_engine(url)
        desk = make_desk(clock)
        client = setup_client(engine, desk)
        assert issue(engine, desk, client, "before@x").number == "INV-2026-0001"
        with pytest.raises(sa.exc.OperationalError):
            with transaction(engine) as session:
                taken = billing.issue_invoice(session, desk, client=client, credits=1,
                                              requester=CONTACTS[0],
                                              source_message_id="during@x")
                assert taken.number == "INV-2026-0002"
                # The server goes away under the open transaction.  (`fast`: the
                # test cluster runs without fsync, so `immediate` could lose
                # commits that a real server keeps.)
                server.stop("fast")
        server.start()
        engine.dispose()  # connections from before the outage are dead
        again = issue(engine, desk, client, "during@x")  # the mail is processed again
        assert again.number == "INV-2026-0002"
        assert issue(engine, desk, client, "after@x").number == "INV-2026-0003"
        assert numbers(engine) == ["INV-2026-0001", "INV-2026-0002", "INV-2026-0003"]
        engine.dispose()
