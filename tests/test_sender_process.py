"""The outbox sender's child process (`sender.SenderProcess`)."""

from __future__ import annotations

import os

import pytest

from mailflow.db import create_db_engine
from mailflow.sender import SenderProcess


def _open_files(pid: int) -> set[str]:
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            found.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:  # closed meanwhile
            pass
    return found


@pytest.mark.postgres
def test_the_sender_child_keeps_no_socket_of_the_parents_connections(pg_db_url, desk):
    """`poll` checks the schema (a pooled connection), forks the sender, then
    takes its PostgreSQL session lock on a pooled connection.  Had the child
    inherited that socket, the lock would outlive a killed `poll` for as long
    as the child lived, and the next run would find the mailbox "being polled"
    and do nothing (seen as a flaky exactly-once SIGKILL test)."""
    engine = create_db_engine(pg_db_url)
    try:
        with engine.connect() as connection:  # back to the pool, idle, as `poll` leaves it
            socket = os.readlink(f"/proc/self/fd/{connection.connection.dbapi_connection.fileno()}")
        assert socket.startswith("socket:")
        sender = SenderProcess(engine, desk, interval=60).start()
        try:
            assert socket not in _open_files(sender._process.pid)
        finally:
            sender.stop()
    finally:
        engine.dispose()


def test_a_mark_waits_for_the_write_lock_and_the_connection_goes_back_as_it_was(
        tmp_path, sqlite_template):
    """SQLite: the sender's mark asks for the write lock itself (busy_timeout 0
    on its own connection) while another connection holds it, gets it once it
    is free, and gives the connection back to the pool with the usual wait."""
    import shutil
    import threading
    import time

    import sqlalchemy as sa

    from mailflow.db import BUSY_TIMEOUT_MS
    from mailflow.models import Outbox, OutboxStatus
    from mailflow.sender import _Recorder

    shutil.copy(sqlite_template, tmp_path / "lock.db")
    engine = create_db_engine(f"sqlite:///{tmp_path / 'lock.db'}")
    try:
        with engine.begin() as connection:
            row_id = connection.execute(sa.insert(Outbox).values(
                message_id="m@x", template="client/ack", to_addrs="a@b.example",
                subject="s", body_text="b", status=OutboxStatus.SENDING, attempts=1,
                auto=False, next_attempt_at=sa.func.now(),
                created_at=sa.func.now())).inserted_primary_key[0]
        held = threading.Event()

        def hold_the_lock() -> None:  # as the poller holds it for a commit group
            with engine.begin() as connection:  # BEGIN IMMEDIATE
                connection.execute(sa.update(Outbox).where(Outbox.id == row_id)
                                   .values(last_error="held"))
                held.set()
                time.sleep(0.1)

        holder = threading.Thread(target=hold_the_lock)
        holder.start()
        assert held.wait(10)
        recorder = _Recorder(engine)
        recorder.update(row_id, {"status": OutboxStatus.SENT})
        driver = recorder._connection.connection.driver_connection
        recorder.close()
        holder.join()
        assert driver.execute("PRAGMA busy_timeout").fetchone()[0] == BUSY_TIMEOUT_MS
        with engine.connect() as connection:
            status, error = connection.execute(sa.select(Outbox.status, Outbox.last_error)
                                               .where(Outbox.id == row_id)).one()
        assert (status, error) == (OutboxStatus.SENT, "held")  # after the holder's commit
    finally:
        engine.dispose()
