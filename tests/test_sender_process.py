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
