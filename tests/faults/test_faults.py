"""Faults (DESIGN §4): a backlog flows while the process, the SMTP server, the
IMAP connection or the database goes away; afterwards every message was
processed once and every outgoing message delivered (duplicates only by the
same Message-ID, and only where a kill could cause one)."""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import select

from mailflow.adapters.imap import Mailbox
from mailflow.config import settings_from_mapping
from mailflow.db import create_db_engine, transaction, upgrade_schema
from mailflow.desk import Desk
from mailflow.models import Inbound, Outbox, OutboxStatus, Request
from mailflow.poller import Poller
from mailflow.sender import send_due
from tests.conftest import Clock
from tests.faults.backlog import (
    append_all,
    check_exactly_once,
    delivered_ids,
    inbox_count,
    prepare_backlog,
    unsent_count,
    wait_until,
)
from tests.integration.procs import SUPPORT, ServeProcess, env_for, mailflow, write_config
from tests.requirements import unavailable
from tests.servers.postgres import PostgresError, PrivatePostgres

pytestmark = [pytest.mark.dovecot, pytest.mark.slow]

SERVING = "mailflow serving"
CONNECTED = "connected to IMAP"
PROCESSED = re.compile(r"uid \d+: ")


def serve_config(tmp_path: Path, db_url: str, dovecot, smtp_server, **overrides) -> dict:
    config = write_config(tmp_path / "mailflow.yaml", db_url=db_url, imap_port=dovecot.port,
                          smtp_port=smtp_server.port, policy__autoreply_limit_per_hour=1000,
                          policy__staff_notice_limit_per_hour=None,
                          **overrides)
    return env_for(config, dovecot.password)


def start_serving(env: dict, log: Path, timeout: float = 90) -> ServeProcess:
    """`mailflow serve` at work: serving and connected to the mailbox."""
    process = ServeProcess(env, log, "--no-scheduler")
    try:
        process.wait_for_log(SERVING, timeout=timeout)
        process.wait_for_log(CONNECTED, timeout=timeout)
    except BaseException:
        process.kill()
        raise
    return process


def run_to_completion(env: dict, log: Path, engine, dovecot, *, timeout: float = 150) -> str:
    """Serve until the inbox is empty and the outbox sent, then SIGTERM: exit 0."""
    process = start_serving(env, log)
    try:
        wait_until(lambda: inbox_count(dovecot) == 0 and unsent_count(engine) == 0,
                   timeout=timeout, what="inbox empty and outbox sent",
                   alive=lambda: _alive(process))
        assert process.terminate() == 0, process.text()
    finally:
        process.kill()
    return process.text()


def processed(process: ServeProcess) -> int:
    """Messages this run logged as done (committed and moved)."""
    return len(PROCESSED.findall(process.text()))


def _alive(process: ServeProcess) -> None:
    if process.process.poll() is not None:
        raise AssertionError(f"serve exited {process.process.returncode}:\n{process.text()}")


# -- 1. SIGKILL under a backlog ----------------------------------------------------------

KILLS = 8


def test_serve_killed_at_random_moments_under_a_backlog_processes_everything_once(
        tmp_path, db_url, engine, dovecot, smtp_server):
    backlog = prepare_backlog(engine, new=70, approvals=60, comments=20, auto=20, balance=15,
                              strangers=15)
    assert backlog.total >= 200
    append_all(dovecot, backlog.messages)
    env = serve_config(tmp_path, db_url, dovecot, smtp_server, mailbox__imap__batch_size=10,
                       smtp__claim_timeout_seconds=0)
    rng = random.Random(20261126)
    progress = []
    for kill in range(KILLS):
        process = start_serving(env, tmp_path / f"serve-{kill}.log")
        try:
            # A random moment of the work, not of the start-up (its length
            # varies with the machine's load): after a random number of
            # messages of this run, plus a random fraction of a second.
            at_least = rng.choice((0, 0, 4, 10, 17, 25))
            with contextlib.suppress(AssertionError):
                wait_until(lambda n=at_least, p=process: processed(p) >= n, timeout=20,
                           what="progress", interval=0.01)
            time.sleep(rng.uniform(0.0, 0.8))
            process.process.send_signal(signal.SIGKILL)
            process.process.wait(timeout=30)
        finally:
            process.kill()
        assert process.process.returncode == -signal.SIGKILL
        progress.append(processed(process))
    run_to_completion(env, tmp_path / "serve-final.log", engine, dovecot)

    duplicates = check_exactly_once(engine, backlog, delivered_ids(smtp_server),
                                    max_duplicates=KILLS, dovecot=dovecot)
    print(f"\n{backlog.total} messages; kills after {progress} messages of a run; "
          f"{duplicates} duplicate deliveries (same Message-ID)")
    assert sum(1 for n in progress if n > 0) >= 3  # most kills landed mid-work


# -- 2. SMTP down for a while -------------------------------------------------------------

def in_process_desk(dovecot, smtp_server, clock, monkeypatch) -> Desk:
    monkeypatch.setenv("MAILFLOW_IMAP_PASSWORD", dovecot.password)
    settings = settings_from_mapping({
        "mailbox": {"address": SUPPORT, "display_name": "Agency Support",
                    "imap": {"host": dovecot.host, "port": dovecot.port, "username": "support",
                             "password_env": "MAILFLOW_IMAP_PASSWORD", "start": "all"}},
        "smtp": {"host": smtp_server.host, "port": smtp_server.port, "timeout_seconds": 5},
        "staff": {"notify": ["staff@agency.example"]},
        "policy": {"autoreply_limit_per_hour": 1000,
                     "staff_notice_limit_per_hour": None}})
    return Desk(settings, clock=clock)


def outbox_rows(engine, backlog) -> list[Outbox]:
    with transaction(engine) as session:
        return [row for row in session.exec(select(Outbox).order_by(Outbox.id))
                if row.message_id not in backlog.before_ids]


def test_smtp_outage_keeps_every_outgoing_message_and_delivers_each_once_when_back(
        db_url, engine, dovecot, smtp_server, monkeypatch):
    backlog = prepare_backlog(engine, new=15, approvals=10, comments=5, auto=4, balance=4,
                              strangers=4)
    append_all(dovecot, backlog.messages)
    clock = Clock(datetime.now(UTC))
    desk = in_process_desk(dovecot, smtp_server, clock, monkeypatch)
    smtp_server.stop()  # connections refused from now on

    with Mailbox(desk.settings.mailbox.imap) as box:
        report = Poller(engine, desk, box).poll_once()
    assert report.processed + report.failed == backlog.total
    queued = outbox_rows(engine, backlog)
    assert queued and all(row.status == OutboxStatus.PENDING for row in queued)

    # The server refuses connections: nothing is spent, nothing fails, nothing is lost.
    for _ in range(3):
        sent = send_due(engine, desk)
        assert (sent.sent, sent.failed) == (0, 0)
        rows = outbox_rows(engine, backlog)
        assert [(r.status, r.attempts) for r in rows] == [(OutboxStatus.PENDING, 0)] * len(queued)
        assert all(r.next_attempt_at > clock() for r in rows)
        assert send_due(engine, desk).sent == 0  # not due again before its backoff
        clock.advance(seconds=31)

    # The server is back but answers 451 at MAIL: each row spends an attempt and backs off.
    smtp_server.start()
    smtp_server.refuse("MAIL", 451)
    for attempt in (1, 2):
        sent = send_due(engine, desk)
        assert (sent.sent, sent.retrying, sent.failed) == (0, len(queued), 0)
        rows = outbox_rows(engine, backlog)
        assert {(r.status, r.attempts) for r in rows} == {(OutboxStatus.PENDING, attempt)}
        assert "451" in rows[0].last_error
        clock.advance(seconds=30 * 2 ** (attempt - 1) + 1)
    assert smtp_server.messages == []

    smtp_server.accept_all()
    sent = send_due(engine, desk)
    assert (sent.sent, sent.failed) == (len(queued), 0)
    clock.advance(hours=3)
    assert send_due(engine, desk).sent == 0  # nothing is sent twice
    delivered = delivered_ids(smtp_server)
    assert delivered == {row.message_id: 1 for row in queued}
    check_exactly_once(engine, backlog, delivered, max_duplicates=0, dovecot=dovecot)


# -- 3. IMAP connection cut mid-fetch -----------------------------------------------------

@pytest.fixture
def sqlite_url(tmp_path, sqlite_template) -> str:
    path = tmp_path / "mailflow.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def sqlite_engine(sqlite_url):
    engine = create_db_engine(sqlite_url)
    yield engine
    engine.dispose()


def test_imap_server_restarted_mid_backlog_serve_reconnects_and_processes_each_once(
        tmp_path, sqlite_url, sqlite_engine, dovecot, smtp_server):
    engine = sqlite_engine
    backlog = prepare_backlog(engine, new=50, approvals=30, comments=10, auto=10, balance=10,
                              strangers=10)
    # Large enough that a fetch takes a moment: the cut lands inside one.  Blank
    # space, so that it changes nothing a message says.
    padding = ("\n" + " " * 70) * 1600
    backlog.messages[:] = [raw + padding.encode() for raw in backlog.messages]
    append_all(dovecot, backlog.messages)
    env = serve_config(tmp_path, sqlite_url, dovecot, smtp_server, mailbox__imap__batch_size=10)
    process = start_serving(env, tmp_path / "serve.log")
    cuts = 0
    try:
        for threshold in (20, 80):
            wait_until(lambda t=threshold: processed(process) >= t,
                       timeout=90, what=f"{threshold} messages processed", interval=0.02,
                       alive=lambda: _alive(process))
            dovecot.restart()
            cuts += 1
        wait_until(lambda: inbox_count(dovecot) == 0 and unsent_count(engine) == 0,
                   timeout=120, what="inbox empty and outbox sent",
                   alive=lambda: _alive(process))
        assert process.terminate() == 0, process.text()
    finally:
        process.kill()
    text = process.text()
    assert text.count("reconnecting in") >= cuts, text[-3000:]
    check_exactly_once(engine, backlog, delivered_ids(smtp_server), max_duplicates=0,
                       dovecot=dovecot)


# -- 4. PostgreSQL restarted mid-run ------------------------------------------------------

@pytest.fixture
def private_postgres():
    try:
        server = PrivatePostgres().start()
    except PostgresError as error:
        unavailable(f"cannot start a private PostgreSQL: {error}")
    try:
        yield server
    finally:
        server.cleanup()


@pytest.mark.postgres
def test_postgres_restarted_mid_backlog_mail_waits_and_is_processed_once(
        tmp_path, private_postgres, dovecot, smtp_server):
    url = private_postgres.create_database(f"mailflow_{uuid.uuid4().hex[:8]}")
    upgrade_schema(url)
    engine = create_db_engine(url)
    try:
        backlog = prepare_backlog(engine, new=40, approvals=30, comments=10, auto=10,
                                  balance=10, strangers=10)
        append_all(dovecot, backlog.messages)
        env = serve_config(tmp_path, url, dovecot, smtp_server, mailbox__imap__batch_size=5,
                           smtp__claim_timeout_seconds=0)
        process = start_serving(env, tmp_path / "serve.log")
        try:
            wait_until(lambda: processed(process) >= 15, timeout=90,
                       what="15 messages processed", interval=0.02,
                       alive=lambda: _alive(process))
            private_postgres.stop("fast")
            time.sleep(3)  # the service meets the outage: mail waits in the inbox
            during = processed(process)
            waiting = inbox_count(dovecot)
            private_postgres.start()
            engine.dispose()  # our own pooled connections died with the server
            wait_until(lambda: inbox_count(dovecot) == 0 and unsent_count(engine) == 0,
                       timeout=120, what="inbox empty and outbox sent",
                       alive=lambda: _alive(process))
            assert process.terminate() == 0, process.text()
        finally:
            process.kill()
        text = process.text()
        assert waiting > 0 and during < backlog.total
        assert "database unavailable" in text, text[-3000:]
        check_exactly_once(engine, backlog, delivered_ids(smtp_server), max_duplicates=2,
                           dovecot=dovecot)
    finally:
        engine.dispose()


# -- 5. a read-only database ----------------------------------------------------------------

@contextlib.contextmanager
def read_only(*paths: Path):
    """Make PATHS unwritable for real, also for root (the immutable attribute;
    file modes alone do not stop root); restored on exit."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", *map(str, paths)], check=True)
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", *map(str, paths)], check=True)
        return
    modes = {path: path.stat().st_mode for path in paths}
    for path in paths:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        yield
    finally:
        for path, mode in modes.items():
            path.chmod(mode)


def test_read_only_database_poll_fails_in_one_line_and_mail_stays_in_the_inbox(
        tmp_path, sqlite_template, dovecot, smtp_server):
    folder = tmp_path / "db"
    folder.mkdir()
    path = folder / "mailflow.db"
    shutil.copy(sqlite_template, path)
    url = f"sqlite:///{path}"
    engine = create_db_engine(url)
    backlog = prepare_backlog(engine, new=3, approvals=2, comments=1, auto=1, balance=1,
                              strangers=1, clients_count=2)
    engine.dispose()  # no connection left: the -wal and -shm files are gone
    append_all(dovecot, backlog.messages)
    env = serve_config(tmp_path, url, dovecot, smtp_server)
    assert sorted(p.name for p in folder.iterdir()) == ["mailflow.db"]

    with read_only(path, folder):
        done = mailflow("poll", "--once", env=env, check=False, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    error_lines = done.stderr.strip().splitlines()
    assert len(error_lines) == 1, done.stderr
    assert error_lines[0].startswith("Error: database error:"), error_lines[0]
    print(f"\n{error_lines[0]}")
    assert "Traceback" not in done.stdout + done.stderr
    assert inbox_count(dovecot) == backlog.total  # nothing moved ...
    assert dovecot.list_messages("support", "Failed") == []  # ... nor kept aside
    assert dovecot.list_messages("support", "Processed") == []
    assert smtp_server.messages == []

    done = mailflow("poll", "--once", env=env, timeout=120)  # writable again
    assert inbox_count(dovecot) == 0
    engine = create_db_engine(url)
    try:
        with transaction(engine) as session:
            assert len(session.exec(select(Inbound)).all()) == backlog.total
            assert len(session.exec(select(Request)).all()) == backlog.new + backlog.approvals
        check_exactly_once(engine, backlog, delivered_ids(smtp_server), max_duplicates=0,
                           dovecot=dovecot)
    finally:
        engine.dispose()
