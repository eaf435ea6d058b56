"""Several instances on one PostgreSQL (DESIGN §7): nothing but the database
coordinates them — advisory locks for the poller of a mailbox and for each
scheduled job, `FOR UPDATE SKIP LOCKED` for the outbox, a row lock on the
client for its balance."""

from __future__ import annotations

import re
import threading
from collections import Counter
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlmodel import select

from mailflow import jobs
from mailflow.config import settings_from_mapping
from mailflow.core.ledger import EntryKind, LotKind
from mailflow.core.states import Status
from mailflow.db import create_db_engine, transaction
from mailflow.desk import Desk
from mailflow.models import Entry, Inbound, JobRun, Lot, Outbox, OutboxStatus, Request
from mailflow.services import clients, credits
from mailflow.services import requests as svc
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
from tests.integration.procs import ServeProcess, env_for, write_config
from tests.mails import reply

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

TOKYO = ZoneInfo("Asia/Tokyo")
# Mail that arrives while the other instance holds the mailbox's lock (or while a
# batch is processed) waits for the next poll, not for IDLE: keep that short here.
POLL_SECONDS = 3


@pytest.fixture
def pg_engine(pg_db_url):
    engine = create_db_engine(pg_db_url)
    yield engine
    engine.dispose()


def start_instances(envs: list[dict], tmp_path) -> list[ServeProcess]:
    processes: list[ServeProcess] = []
    try:
        for index, env in enumerate(envs):
            processes.append(ServeProcess(env, tmp_path / f"serve-{index}.log", "--no-scheduler"))
        for process in processes:
            process.wait_for_log("mailflow serving", timeout=90)
            process.wait_for_log("connected to IMAP", timeout=90)
    except BaseException:
        for process in processes:
            process.kill()
        raise
    return processes


def all_alive(processes: list[ServeProcess]) -> None:
    for process in processes:
        if process.process.poll() is not None:
            raise AssertionError(f"serve exited {process.process.returncode}:\n{process.text()}")


# -- two serve processes, one mailbox -----------------------------------------------------

@pytest.mark.dovecot
def test_two_serve_processes_on_one_mailbox_process_and_send_everything_once(
        tmp_path, pg_db_url, pg_engine, dovecot, smtp_server):
    engine = pg_engine
    backlog = prepare_backlog(engine, new=40, approvals=30, comments=10, auto=10, balance=10,
                              strangers=10)
    config = write_config(tmp_path / "mailflow.yaml", db_url=pg_db_url, imap_port=dovecot.port,
                          smtp_port=smtp_server.port, mailbox__imap__batch_size=5,
                          mailbox__imap__poll_seconds=POLL_SECONDS,
                          policy__autoreply_limit_per_hour=1000,
                          policy__staff_notice_limit_per_hour=None)
    env = env_for(config, dovecot.password)  # the default smtp.claim_timeout_seconds (300)
    processes = start_instances([env, env], tmp_path)
    try:
        append_all(dovecot, backlog.messages)  # both are waiting in IDLE: both wake
        wait_until(lambda: inbox_count(dovecot) == 0 and unsent_count(engine) == 0,
                   timeout=150, what="inbox empty and outbox sent",
                   alive=lambda: all_alive(processes))
        codes = [process.terminate() for process in processes]
    finally:
        for process in processes:
            process.kill()
    assert codes == [0, 0], [p.text()[-2000:] for p in processes]
    check_exactly_once(engine, backlog, delivered_ids(smtp_server), max_duplicates=0,
                       dovecot=dovecot)
    handled = [len(re.findall(r"uid \d+: ", p.text())) for p in processes]
    print(f"\nmessages processed per instance: {handled}")


# -- scheduled jobs across two instances -----------------------------------------------------

def tokyo(*args) -> datetime:
    return datetime(*args, tzinfo=TOKYO)


def test_each_scheduled_job_runs_once_per_period_across_two_instances(pg_db_url, pg_engine):
    settings = settings_from_mapping({"mailbox": {"address": "support@agency.example"},
                                      "staff": {"notify": ["staff@agency.example"]},
                                      "timezone": "Asia/Tokyo"})
    clock = Clock(tokyo(2026, 11, 10, 10, 0))
    desk = Desk(settings, clock=clock)
    plan_clients = 60
    with transaction(pg_engine) as session:
        for n in range(plan_clients):
            client = clients.add_client(session, desk, name=f"Plan {n}", plan=3,
                                        emails=[f"p{n}@plan.example"])
            # Expires 2026-12-09: inside the 14-day warning window on 1 December.
            credits.add_lot(session, desk, client=client, kind=LotKind.GRANT, credits=2,
                            on=date(2026, 9, 10))
        quoted = clients.add_client(session, desk, name="Quoted", emails=["q@quoted.example"])
        for n in range(3):  # valid 14 days from 10 November: expired by December
            request = svc.create_request(session, desk, client=quoted,
                                         requester="q@quoted.example", subject=f"Old {n}")
            svc.quote_request(session, desk, request_id=request.id,
                              terms=svc.QuoteTerms(1, date(2026, 11, 30)))
    engines = [pg_engine, create_db_engine(pg_db_url)]
    times = [tokyo(2026, 12, 1, 9, 30),
             tokyo(2026, 12, 1, 9, 40),   # the same periods again: nothing to do
             tokyo(2027, 1, 1, 9, 30)]    # every job's next period
    step = iter(times)
    # Both instances wait at the barrier; its action moves the shared clock, so
    # they run each round at the same reading, at the same moment.
    barrier = threading.Barrier(2, action=lambda: clock.set(next(step)), timeout=60)
    rounds: dict[int, list] = {n: [] for n in range(len(times))}
    errors: list = []

    def instance(engine) -> None:
        own = Desk(settings, clock=clock)
        try:
            for n in range(len(times)):
                barrier.wait()
                rounds[n].extend(jobs.run_due(engine, own))
        except Exception as error:  # reported below
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=instance, args=(engine,), daemon=True)
               for engine in engines]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in threads)
    finally:
        engines[1].dispose()
    assert errors == []
    names = [name for name, _cron, _run in jobs.job_crons(settings)]
    summary = {n: [(r.job, r.skipped, r.reason, r.error) for r in reports]
               for n, reports in rounds.items()}
    assert [r.error for reports in rounds.values() for r in reports if r.error] == [], summary
    done = {n: Counter(r.job for r in reports if not r.skipped) for n, reports in rounds.items()}
    # Every job ran once in the first round (the digest too: the clients existed
    # before its time), nothing in the second, each once in the third.
    assert done == {0: Counter(names), 1: Counter(), 2: Counter(names)}, summary

    with transaction(pg_engine) as session:
        runs = Counter(session.exec(select(JobRun.job, JobRun.period)
                                    .where(JobRun.job.in_(names))).all())
        assert set(runs.values()) == {1}
        plan = Counter(session.exec(select(Lot.client_id, Lot.period)
                                    .where(Lot.kind == LotKind.PLAN)).all())
        assert sorted(period for _client, period in plan) == \
            ["2026-12"] * plan_clients + ["2027-01"] * plan_clients
        assert set(plan.values()) == {1}
        rows = session.exec(select(Outbox)).all()
        written_off = Counter(session.exec(select(Entry.lot_id)
                                           .where(Entry.kind == EntryKind.EXPIRY)).all())
        overdrawn = session.exec(select(Entry.lot_id).group_by(Entry.lot_id)
                                 .having(sa.func.sum(Entry.delta) < 0)).all()
    assert overdrawn == []
    assert sorted(written_off.values()) == [1] * plan_clients  # each grant lot, once
    by_template = Counter(row.template for row in rows)
    assert by_template["client/credits_expiring"] == plan_clients  # one warning per client
    assert by_template["client/quote_expired"] == 3
    digests = Counter(row.client_id for row in rows if row.template == "client/digest")
    assert sorted(digests.values()) == [2] * (plan_clients + 1)  # December and January


# -- many approvals racing on one client's balance ---------------------------------------------

@pytest.mark.dovecot
def test_approvals_racing_in_two_serve_processes_never_overdraw_a_balance(
        tmp_path, pg_db_url, pg_engine, dovecot, smtp_server):
    """Two instances, each reading its own mailbox (so they really run at once),
    30 APPROVE replies for 2-credit quotes of one client holding 11 credits."""
    engine = pg_engine
    desk = Desk(settings_from_mapping({"mailbox": {"address": "support@agency.example"},
                                       "staff": {"notify": []}}))
    address = "busy@client.example"
    replies = []
    with transaction(engine) as session:
        client = clients.add_client(session, desk, name="Busy", emails=[address])
        client_id = client.id
        credits.add_lot(session, desk, client=client, kind=LotKind.PURCHASE, credits=11)
        for n in range(30):
            request = svc.create_request(session, desk, client=client, requester=address,
                                         subject=f"Job {n}")
            quote = svc.quote_request(session, desk, request_id=request.id, terms=svc.QuoteTerms(
                2, desk.today() + timedelta(days=7)))
            replies.append(reply(sender=address, original_subject=request.subject,
                                 original_body="Reply APPROVE or REJECT.", answer="APPROVE",
                                 original_id=quote.message_id))
        for row in session.exec(select(Outbox)):
            row.status = OutboxStatus.SENT
            session.add(row)
    envs = []
    for user in ("support", "alice"):  # two mailboxes: two pollers, two advisory locks
        config = write_config(tmp_path / f"{user}.yaml", db_url=pg_db_url,
                              imap_port=dovecot.port, smtp_port=smtp_server.port,
                              mailbox__imap__username=user, mailbox__imap__batch_size=2,
                              mailbox__imap__poll_seconds=POLL_SECONDS,
                              policy__autoreply_limit_per_hour=1000,
                          policy__staff_notice_limit_per_hour=None)
        envs.append(env_for(config, dovecot.password))
    processes = start_instances(envs, tmp_path)
    try:
        feeders = [threading.Thread(target=append_all, args=(dovecot, replies[k::2], user))
                   for k, user in enumerate(("support", "alice"))]
        for feeder in feeders:
            feeder.start()
        for feeder in feeders:
            feeder.join(timeout=60)

        def finished() -> bool:
            return (inbox_count(dovecot, "support") == 0 and inbox_count(dovecot, "alice") == 0
                    and unsent_count(engine) == 0)

        wait_until(finished, timeout=120, what="both inboxes empty and outbox sent",
                   alive=lambda: all_alive(processes))
        codes = [process.terminate() for process in processes]
    finally:
        for process in processes:
            process.kill()
    assert codes == [0, 0]
    logs = [process.text() for process in processes]
    assert all("approve" in text for text in logs)  # both instances took replies

    with transaction(engine) as session:
        assert len(session.exec(select(Inbound)).all()) == 30
        statuses = Counter(r.status for r in session.exec(select(Request)))
        assert statuses == {Status.APPROVED: 5, Status.QUOTED: 25}
        remaining = session.exec(select(Entry.lot_id, sa.func.sum(Entry.delta))
                                 .where(Entry.client_id == client_id)
                                 .group_by(Entry.lot_id)).all()
        assert all(left >= 0 for _lot, left in remaining)
        assert sum(left for _lot, left in remaining) == 1
        assert credits.balance(session, desk, client_id).available == 1
        debits = session.exec(select(Entry).where(Entry.kind == EntryKind.DEBIT)).all()
        assert sorted(-e.delta for e in debits) == [2] * 5
        templates = Counter(row.template for row in session.exec(
            select(Outbox).where(Outbox.client_id == client_id, Outbox.sent_at.is_not(None),
                                 Outbox.template.in_(["client/approved",
                                                      "client/insufficient_credits"]))))
    assert templates == {"client/approved": 5, "client/insufficient_credits": 25}
    delivered = delivered_ids(smtp_server)
    assert set(delivered.values()) == {1}  # each answer sent once
