"""Scheduled jobs under a hand-moved clock, on SQLite and PostgreSQL: each period
runs once (a rerun, a restart or a second instance does nothing), a missed
period catches up once, allotments catch up month by month."""

from __future__ import annotations

import json
import threading
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner
from sqlmodel import select

from mailflow import jobs
from mailflow.cli import cli
from mailflow.core.ledger import EntryKind, LotKind
from mailflow.core.states import Status
from mailflow.db import create_db_engine, transaction
from mailflow.desk import Desk
from mailflow.errors import ConfigError
from mailflow.models import Client, Contact, Entry, JobRun, Lot, Outbox, Request
from mailflow.services import clients as client_service
from mailflow.services import credits as ledger
from mailflow.services import requests as request_service
from mailflow.services.outbox import queue_message

TOKYO = ZoneInfo("Asia/Tokyo")


def tokyo(*args) -> datetime:
    return datetime(*args, tzinfo=TOKYO)


def add_client(engine, desk, name, *, plan=None, lang="en", emails=None):
    with transaction(engine) as session:
        client = client_service.add_client(session, desk, name=name, plan=plan, lang=lang,
                                           emails=emails or [f"{name.lower()}@client.example"])
    return client.id


def grant(engine, desk, client_id, credits, *, on=None, kind=LotKind.GRANT):
    with transaction(engine) as session:
        client = session.get(Client, client_id)
        return ledger.add_lot(session, desk, client=client, kind=kind, credits=credits, on=on).id


def new_request(engine, desk, client_id, subject, *, quote=None, due_days=5,
                approve=False) -> int:
    with transaction(engine) as session:
        client = session.get(Client, client_id)
        requester = client_service.client_emails(session, client_id)[0]
        request = request_service.create_request(session, desk, client=client,
                                                 requester=requester, subject=subject)
        if quote:
            terms = request_service.QuoteTerms(quote, desk.today() + timedelta(days=due_days))
            request_service.quote_request(session, desk, request_id=request.id, terms=terms)
        if approve:
            request_service.approve_request(session, desk, request_id=request.id)
        return request.id


def count(engine, model, *where) -> int:
    with transaction(engine) as session:
        return session.exec(select(sa.func.count()).select_from(model).where(*where)).one()


def outbox(engine, template) -> list[Outbox]:
    with transaction(engine) as session:
        return list(session.exec(select(Outbox).where(Outbox.template == template)
                                 .order_by(Outbox.id)))


def plan_lots(engine) -> list[tuple[int, str]]:
    with transaction(engine) as session:
        return sorted(session.exec(select(Lot.client_id, Lot.period)
                                   .where(Lot.kind == LotKind.PLAN)))


# --- cron arithmetic (pure) ---------------------------------------------------

@pytest.mark.parametrize(("expr", "now", "latest", "previous"), [
    pytest.param("0 0 1 * *", tokyo(2026, 12, 1, 0, 0), tokyo(2026, 12, 1), tokyo(2026, 11, 1),
                 id="monthly-exactly-at-fire"),
    pytest.param("0 9 1 * *", tokyo(2026, 12, 1, 8, 59), tokyo(2026, 11, 1, 9),
                 tokyo(2026, 10, 1, 9), id="monthly-just-before"),
    pytest.param("0 * * * *", tokyo(2026, 11, 26, 10, 30), tokyo(2026, 11, 26, 10),
                 tokyo(2026, 11, 26, 9), id="hourly"),
    pytest.param("0 9 * * 1", tokyo(2026, 11, 26, 10), tokyo(2026, 11, 23, 9),
                 tokyo(2026, 11, 16, 9), id="crontab-1-is-monday"),
    pytest.param("0 9 * * 0", tokyo(2026, 11, 26, 10), tokyo(2026, 11, 22, 9),
                 tokyo(2026, 11, 15, 9), id="crontab-0-is-sunday"),
    pytest.param("30 8 * * 1-5", tokyo(2026, 11, 29, 12), tokyo(2026, 11, 27, 8, 30),
                 tokyo(2026, 11, 26, 8, 30), id="weekdays-skip-the-weekend"),
    pytest.param("0 0 29 2 *", tokyo(2026, 11, 26), tokyo(2024, 2, 29), tokyo(2020, 2, 29),
                 id="leap-day-years-back"),
])
def test_latest_fire_is_the_last_at_or_before_now(expr, now, latest, previous):
    trigger = jobs.cron_trigger(expr, TOKYO)
    assert jobs.latest_fire(trigger, now) == latest
    assert jobs.previous_fire(trigger, latest) == previous


@pytest.mark.parametrize(("field", "names"), [
    ("1-5", "mon,tue,wed,thu,fri"), ("0,7", "sun"), ("*/2", "sun,tue,thu,sat"),
    ("5-0", "sun,fri,sat"), ("mon-fri", "mon-fri"), ("*", "*"), ("6", "sat"),
])
def test_crontab_weekday_numbers_become_names(field, names):
    assert jobs._weekday_field(field) == names


@pytest.mark.parametrize("expr", ["61 * * * *", "0 9 * * 8", "0 9 31 2 x"])
def test_bad_cron_is_a_config_error_naming_the_key(expr):
    with pytest.raises(ConfigError, match=r"^schedule\.digest_cron: "):
        jobs.cron_trigger(expr, TOKYO, key="schedule.digest_cron")


def test_scheduled_jobs_for_serve(settings):
    entries = jobs.scheduled_jobs(settings)
    assert [name for name, _, _ in entries] == ["allotment", "expiry", "quotes", "reminders",
                                                "digest"]
    for _, trigger, func in entries:
        assert str(trigger.timezone) == "Asia/Tokyo" and callable(func)


# --- 1. allotment --------------------------------------------------------------

def test_allotment_grants_once_per_month_even_after_a_restart(engine, desk, clock, db_url,
                                                              settings):
    a = add_client(engine, desk, "Acme", plan=5)
    b = add_client(engine, desk, "Sakura", plan=3, lang="ja")
    add_client(engine, desk, "NoPlan")
    d = add_client(engine, desk, "Gone", plan=4)
    with transaction(engine) as session:
        session.get(Client, d).active = False
    clock.set(tokyo(2026, 12, 1, 0, 1))

    report = jobs.run_allotment(engine, desk)
    assert (report.skipped, report.periods, report.done) == (False, ["2026-12"], {"lots": 2})
    assert plan_lots(engine) == [(a, "2026-12"), (b, "2026-12")]
    with transaction(engine) as session:
        lot = session.exec(select(Lot).where(Lot.client_id == a)).one()
        assert lot.expires_at == tokyo(2027, 3, 1)  # 90 days after the grant day
        assert ledger.balance(session, desk, a).available == 5

    again = jobs.run_allotment(engine, desk)
    assert again.skipped and again.reason == "already done"
    clock.advance(days=20)
    restarted = create_db_engine(db_url)
    try:
        assert jobs.run_allotment(restarted, Desk(settings, clock=clock)).skipped
    finally:
        restarted.dispose()
    assert len(plan_lots(engine)) == 2


def test_first_allotment_ever_grants_only_the_current_month_to_existing_clients(
        engine, desk, clock):
    add_client(engine, desk, "Acme", plan=5)  # created 2026-11-26: after November's run
    report = jobs.run_allotment(engine, desk)
    assert (report.periods, report.done) == (["2026-11"], {"lots": 0})
    assert plan_lots(engine) == []
    clock.set(tokyo(2026, 12, 1, 0, 0))
    assert jobs.run_allotment(engine, desk).periods == ["2026-12"]


def test_missed_allotments_catch_up_month_by_month_while_still_usable(engine, desk, clock):
    a = add_client(engine, desk, "Acme", plan=5)
    clock.set(tokyo(2026, 12, 1, 0, 5))
    jobs.run_allotment(engine, desk)
    clock.set(tokyo(2027, 3, 15, 12))  # down since December
    late = add_client(engine, desk, "Late", plan=2)  # created after March's fire time
    report = jobs.run_allotment(engine, desk)
    assert report.periods == ["2027-01", "2027-02", "2027-03"] and report.done == {"lots": 3}
    with transaction(engine) as session:
        lots = session.exec(select(Lot).where(Lot.client_id == a).order_by(Lot.id)).all()
        # each month as if granted on time: same expiry as an on-time run
        assert [lot.expires_at for lot in lots[1:]] == [
            tokyo(2027, 4, 1), tokyo(2027, 5, 2), tokyo(2027, 5, 30)]
        assert ledger.balance(session, desk, a).available == 15  # December's lot expired
    assert jobs.run_allotment(engine, desk).skipped

    clock.set(tokyo(2027, 9, 10, 12))  # down again: April-June would be expired by now
    report = jobs.run_allotment(engine, desk)
    assert report.periods == ["2027-07", "2027-08", "2027-09"]
    assert [p for c, p in plan_lots(engine) if c == late] == ["2027-07", "2027-08", "2027-09"]


# --- 2. expiry -------------------------------------------------------------------

def test_expiry_warns_once_per_lot_and_sweeps_expired_credits(engine, desk, clock):
    a = add_client(engine, desk, "Acme")
    soon = grant(engine, desk, a, 4, on=date(2026, 9, 1))     # expires 2026-11-30
    later = grant(engine, desk, a, 2)                          # expires 2027-02-24
    grant(engine, desk, a, 3, kind=LotKind.PURCHASE)           # never

    first = jobs.run_expiry(engine, desk)
    assert first.done == {"written_off": 0, "warned_lots": 1, "messages": 1}
    (warning,) = outbox(engine, "client/credits_expiring")
    assert warning.to_addrs == "acme@client.example"
    assert "4 credits will expire soon" in warning.subject
    assert "4 credits, usable through Sun 29 Nov 2026" in warning.body_text  # the last day
    assert jobs.run_expiry(engine, desk).skipped  # same day

    clock.advance(days=1)
    assert jobs.run_expiry(engine, desk).done["warned_lots"] == 0  # lot already warned
    clock.set(tokyo(2026, 12, 1, 0, 10))
    swept = jobs.run_expiry(engine, desk)
    assert swept.done == {"written_off": 4, "warned_lots": 0, "messages": 0}
    assert count(engine, Entry, Entry.kind == EntryKind.EXPIRY, Entry.lot_id == soon) == 1

    clock.set(tokyo(2027, 2, 12, 9))  # the second lot enters the 14-day window
    assert jobs.run_expiry(engine, desk).done["warned_lots"] == 1
    assert count(engine, JobRun, JobRun.job == "expiry-warning") == 2
    second = outbox(engine, "client/credits_expiring")[-1]
    assert "- 2 credits, usable through Tue 23 Feb 2027" in second.body_text
    assert count(engine, Entry, Entry.lot_id == later, Entry.kind == EntryKind.EXPIRY) == 0


# --- 3. quotes ----------------------------------------------------------------------

def test_quote_expiry_sends_quote_expired_once(engine, desk, clock):
    a = add_client(engine, desk, "Acme")
    stale = new_request(engine, desk, a, "Banner", quote=1,   # valid until 2026-12-11 00:00
                        due_days=30)
    clock.set(tokyo(2026, 12, 5))
    fresh = new_request(engine, desk, a, "Plugin", quote=2, due_days=30)
    clock.set(tokyo(2026, 12, 11, 0, 30))

    assert jobs.run_quotes(engine, desk).done == {"expired": 1, "failed": 0}
    assert jobs.run_quotes(engine, desk).skipped
    clock.advance(hours=1)
    assert jobs.run_quotes(engine, desk).done["expired"] == 0
    (mail,) = outbox(engine, "client/quote_expired")
    assert mail.request_id == stale and "Quote expired" in mail.subject
    with transaction(engine) as session:
        assert session.get(Request, stale).status == Status.EXPIRED
        assert session.get(Request, fresh).status == Status.QUOTED


# --- 4. reminders ----------------------------------------------------------------------

def test_reminder_lists_approved_work_due_within_two_days_or_overdue(engine, desk, clock):
    a = add_client(engine, desk, "Acme")
    grant(engine, desk, a, 20)
    ids = {days: new_request(engine, desk, a, f"Due in {days}", quote=1, due_days=days,
                             approve=True) for days in (1, 4, 5, 6)}
    new_request(engine, desk, a, "Only quoted", quote=1, due_days=3)
    clock.set(tokyo(2026, 11, 29, 9, 30))  # due dates: 27 (overdue), 30, 12-01 | 12-02

    report = jobs.run_reminders(engine, desk)
    assert report.done == {"requests": 3, "messages": 1}
    (mail,) = outbox(engine, "staff/reminder")
    assert mail.to_addrs == "staff@agency.example"
    assert "3 approved requests due soon (1 overdue)" in mail.subject
    for days in (1, 4, 5):
        assert f"[REQ-{ids[days]}] Acme: Due in {days}" in mail.body_text
    assert f"[REQ-{ids[6]}]" not in mail.body_text and "Only quoted" not in mail.body_text
    assert mail.body_text.count("OVERDUE") == 1
    assert jobs.run_reminders(engine, desk).skipped


# --- 5. digest ------------------------------------------------------------------------

@pytest.fixture
def digest_world(engine, desk, clock):
    """Two clients with November activity (en, ja), one without contacts, one inactive."""
    clock.set(tokyo(2026, 10, 20, 10))
    en = add_client(engine, desk, "Acme")
    ja = add_client(engine, desk, "Sakura", lang="ja")
    grant(engine, desk, en, 10, kind=LotKind.PURCHASE)
    grant(engine, desk, ja, 5)
    before = new_request(engine, desk, en, "Approved in October", quote=1, approve=True)
    clock.set(tokyo(2026, 11, 10, 10))
    approved = new_request(engine, desk, en, "New banner", quote=2, due_days=30,
                           approve=True)
    done = new_request(engine, desk, en, "Fix footer", quote=3, approve=True)
    refunded = new_request(engine, desk, en, "Cancelled work", quote=1, approve=True)
    open_ = new_request(engine, desk, en, "Question about SEO")
    with transaction(engine) as session:
        request_service.complete_request(session, desk, request_id=done)
        request_service.complete_request(session, desk, request_id=before)
        request_service.cancel_request(session, desk, request_id=refunded, refund=True)
    ja_request = new_request(engine, desk, ja, "バナー差し替え", quote=2, approve=True)
    silent = add_client(engine, desk, "Silent")
    gone = add_client(engine, desk, "Gone")
    with transaction(engine) as session:
        session.execute(sa.delete(Contact).where(Contact.client_id == silent))
        session.get(Client, gone).active = False
    clock.set(tokyo(2026, 12, 1, 9, 30))
    return {"en": en, "ja": ja, "approved": approved, "done": done, "open": open_,
            "before": before, "ja_request": ja_request}


def test_digest_reports_the_period_in_each_language_once(engine, desk, digest_world):
    w = digest_world
    report = jobs.run_digest(engine, desk)
    assert (report.period, report.done) == ("2026-12-01T09:00", {"queued": 2,
                                                                "already_sent": 0})
    en, ja = outbox(engine, "client/digest")
    assert (en.client_id, en.to_addrs, en.auto) == (w["en"], "acme@client.example", False)
    assert en.subject == "Your support summary: 4 credits available"
    body = en.body_text
    # The first digest covers the time since the client was created.
    assert "from Tue 20 Oct 2026 to Tue 1 Dec 2026" in body
    assert f"[REQ-{w['open']}] Question about SEO - awaiting our quote, received" in body
    assert f"[REQ-{w['approved']}] New banner - in progress: 2 credits, due" in body
    assert f"[REQ-{w['done']}] Fix footer - completed" in body
    assert f"[REQ-{w['before']}] Approved in October - completed" in body
    assert "Cancelled work - cancelled" in body
    assert "Credits used in this period: 6 credits" in body  # 1 + 2 + 3; the refund cancels 1
    assert "Your balance on Tue 1 Dec 2026: 4 credits available" in body  # 10 - 1 - 5
    assert en.body_html and "New banner" in en.body_html
    assert en.body_html.count('src="data:image/png;base64,') == 1  # usage only: no expiring lot

    assert ja.subject == "サポートご利用状況のお知らせ：残高3クレジット"
    assert f"・[REQ-{w['ja_request']}]「バナー差し替え」" in ja.body_text
    assert "期間中のご利用クレジット：2クレジット" in ja.body_text
    assert ja.body_html.count('src="data:image/png;base64,') == 2  # expiry and usage

    again = jobs.run_digest(engine, desk)
    assert again.skipped and again.reason == "already done"
    assert count(engine, Outbox, Outbox.template == "client/digest") == 2


def test_digest_row_is_what_queue_message_would_write(engine, desk, digest_world):
    with transaction(engine) as session:
        period = jobs.digest_period(desk)
        client = session.get(Client, digest_world["en"])
        (message,) = jobs.digest_messages(session, desk, period, [client])
        context = {k: v for k, v in message.context.items() if k not in ("client", "balance")}
        expected = queue_message(session, desk, template="client/digest", to=message.to,
                                 client=client, context=context)
        expected = (expected.subject, expected.body_text, expected.body_html)
        session.rollback()
    jobs.run_digest(engine, desk)
    en = outbox(engine, "client/digest")[0]
    assert (en.subject, en.body_text, en.body_html) == expected


def test_digest_interrupted_half_way_sends_the_rest_once(engine, desk, clock, digest_world):
    clock.set(tokyo(2026, 12, 1, 8, 0))
    for index in range(3):
        add_client(engine, desk, f"Extra{index}")  # created before the fire: gets a digest
    clock.set(tokyo(2026, 12, 1, 9, 30))
    add_client(engine, desk, "Late")  # created after it: waits for the next one

    def crash_after_first_chunk(done, total):
        raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):
        jobs.run_digest(engine, desk, chunk=2, progress=crash_after_first_chunk)
    assert count(engine, Outbox, Outbox.template == "client/digest") == 2
    clock.advance(minutes=5)
    report = jobs.run_digest(engine, desk, chunk=2)
    assert report.done == {"queued": 3, "already_sent": 2}
    rows = outbox(engine, "client/digest")
    assert len(rows) == len({row.client_id for row in rows}) == 5
    assert jobs.run_digest(engine, desk).skipped


def test_next_digest_period_starts_where_the_last_ended(engine, desk, clock, digest_world):
    jobs.run_digest(engine, desk)
    clock.set(tokyo(2027, 1, 1, 9, 0))
    report = jobs.run_digest(engine, desk)
    assert report.period == "2027-01-01T09:00" and report.done["queued"] == 2
    latest = outbox(engine, "client/digest")[-2]
    assert "from Tue 1 Dec 2026 to Fri 1 Jan 2027" in latest.body_text
    assert "Credits used in this period: 0 credits" in latest.body_text
    assert "Fix footer" not in latest.body_text  # completed in November
    assert "New banner - in progress" in latest.body_text  # still open


# --- everything due ----------------------------------------------------------------------

def test_run_due_runs_each_due_job_once(engine, desk, clock):
    add_client(engine, desk, "Acme", plan=5)
    clock.set(tokyo(2026, 12, 1, 9, 0))
    reports = jobs.run_due(engine, desk)
    assert [(r.job, r.period, r.skipped) for r in reports] == [
        ("allotment", "2026-12", False), ("expiry", "2026-12-01T00:05", False),
        ("quotes", "2026-12-01T09:00", False), ("reminders", "2026-12-01T09:00", False),
        ("digest", "2026-12-01T09:00", False)]
    # The same digest as `mailflow digest` would send: since the client's creation.
    (first,) = outbox(engine, "client/digest")
    assert "from Thu 26 Nov 2026 to Tue 1 Dec 2026" in first.body_text
    assert "5 credits available" in first.body_text  # the allotment ran first
    assert all(r.skipped for r in jobs.run_due(engine, desk))
    clock.set(tokyo(2027, 1, 1, 9, 0))
    reports = jobs.run_due(engine, desk)
    assert (reports[-1].job, reports[-1].period, reports[-1].skipped) == \
        ("digest", "2027-01-01T09:00", False)
    digest = outbox(engine, "client/digest")[-1]
    assert "10 credits available" in digest.body_text


def test_two_instances_run_each_period_once(db_url, settings, clock):
    engines = [create_db_engine(db_url) for _ in range(2)]
    try:
        desk = Desk(settings, clock=clock)
        for index in range(40):
            add_client(engines[0], desk, f"Client{index}", plan=3)
        clock.set(tokyo(2026, 12, 1, 9, 1))
        barrier = threading.Barrier(2, timeout=20)
        reports: list = []
        errors: list = []

        def instance(engine):
            own = Desk(settings, clock=clock)
            try:
                barrier.wait()
                reports.append(jobs.run_allotment(engine, own))
                barrier.wait()
                reports.append(jobs.run_digest(engine, own, chunk=7))
            except Exception as error:  # reported below
                errors.append(error)

        threads = [threading.Thread(target=instance, args=(e,)) for e in engines]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors and len(reports) == 4
        assert count(engines[0], Lot, Lot.kind == LotKind.PLAN) == 40
        assert count(engines[0], Outbox, Outbox.template == "client/digest") == 40
        assert count(engines[0], JobRun, JobRun.job.in_(["allotment", "digest"])) == 2
        # one instance did the work; the other found it locked or done
        assert sorted(r.job for r in reports if not r.skipped) == ["allotment", "digest"]
    finally:
        for engine in engines:
            engine.dispose()


# --- the command line ---------------------------------------------------------------------

@pytest.fixture
def cli_run(tmp_path, db_url, smtp_server):
    config = tmp_path / "mailflow.yaml"
    config.write_text(yaml.safe_dump({
        "database_url": db_url, "timezone": "Asia/Tokyo",
        "mailbox": {"address": "support@agency.example"},
        "smtp": {"host": smtp_server.host, "port": smtp_server.port, "timeout_seconds": 5}}))
    runner = CliRunner()

    def invoke(*args: str, code: int = 0):
        result = runner.invoke(cli, ["--config", str(config), *args], catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result

    return invoke


def test_digest_command_previews_then_sends_once(cli_run, engine, settings, smtp_server):
    # The command reads the real clock: clients created before the latest fire time.
    desk = Desk(settings, clock=lambda: datetime.now(UTC) - timedelta(days=40))
    add_client(engine, desk, "Acme")
    add_client(engine, desk, "Sakura", lang="ja")
    add_client(engine, Desk(settings), "Newcomer")  # created now: its first digest comes later

    preview = cli_run("digest", "--dry-run")
    assert "To: acme@client.example" in preview.output
    assert "Subject: サポートご利用状況" in preview.output
    assert "2 would be sent (dry run: nothing written)" in preview.output
    assert count(engine, Outbox) == 0 and count(engine, JobRun) == 0

    sent = json.loads(cli_run("digest", "--json").stdout)
    assert sent["done"] == {"queued": 2, "already_sent": 0} and sent["sent"] == 2
    assert {c["client"] for c in sent["clients"]} == {"Acme", "Sakura"}
    assert len(smtp_server.wait_for(2)) == 2
    again = json.loads(cli_run("digest", "--json").stdout)
    assert again["skipped"] and again["reason"] == "already done" and again["sent"] == 0
    assert "nothing due" in cli_run("digest", "--dry-run").output


def test_jobs_run_and_list_commands(cli_run, engine, settings, smtp_server):
    add_client(engine, Desk(settings), "Acme", plan=2)
    first = json.loads(cli_run("jobs", "run", "--json").stdout)
    assert [j["job"] for j in first["jobs"]] == ["allotment", "expiry", "quotes", "reminders",
                                                 "digest"]
    # A client created after the latest digest time waits for the next digest,
    # as `digest` and `digest --dry-run` would have it.
    digest = first["jobs"][-1]
    assert not digest["skipped"] and digest["done"]["queued"] == 0
    assert first["sent"] == 0 and smtp_server.messages == []
    periods = {j["job"]: j["period"] for j in first["jobs"]}
    second = json.loads(cli_run("jobs", "run", "--json").stdout)["jobs"]
    # the real clock may cross an hour between the two runs: then `quotes` runs again
    assert all(j["skipped"] or j["period"] != periods[j["job"]] for j in second)
    listed = {row["job"]: row for row in json.loads(cli_run("jobs", "list", "--json").stdout)}
    assert listed["digest"]["cron"] == "0 9 1 * *"
    assert listed["digest"]["last_period"] == listed["digest"]["due_period"]
    assert not listed["digest"]["pending"]
    assert "allotment" in cli_run("jobs", "list").output
