"""Two decisions on one quote processed at the same moment end in one outcome
(DESIGN §3 rule 6, §4): two real processes, many trials, SQLite and PostgreSQL,
and once through `mailflow poll --once` on two folders of a real Dovecot."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest
from sqlmodel import select

from mailflow.db import create_db_engine, transaction
from mailflow.models import Outbox
from tests.integration.procs import env_for, write_config
from tests.integration.racers import (
    CONFIRMATIONS,
    answer,
    check_one_outcome,
    loser_answers,
    quoted_requests,
    race,
)

TRIALS = 20


@pytest.fixture
def db(db_url):
    engine = create_db_engine(db_url)
    yield db_url, engine
    engine.dispose()


@pytest.mark.slow
def test_two_decisions_at_once_end_in_one_outcome(db):
    """Per quote: APPROVE against APPROVE, or APPROVE against REJECT with each
    process holding each word in half the trials."""
    db_url, engine = db
    made = quoted_requests(engine, 2 * TRIALS)
    pairs = [("APPROVE", "APPROVE")] * TRIALS + [("APPROVE", "REJECT"), ("REJECT", "APPROVE")] \
        * (TRIALS // 2)
    outcomes = race(db_url, [answer(made, n, first) for n, (first, _) in enumerate(pairs)],
                    [answer(made, n, second) for n, (_, second) in enumerate(pairs)])
    ends, broken = check_one_outcome(engine, made)
    assert broken == [], f"{len(broken)} of {2 * TRIALS} trials broke: {broken[:5]}"
    print(f"\noutcomes: {dict(ends)}")
    assert ends["approved"] >= TRIALS and ends["rejected"] <= TRIALS
    verdicts = Counter(verdict for verdict, _status, _reason in outcomes)
    # One message of each pair decided; the other found the quote answered.
    assert verdicts["approve"] + verdicts["reject"] == 2 * TRIALS, outcomes
    assert verdicts["duplicate_answer"] == TRIALS, outcomes
    assert verdicts["already_decided"] == TRIALS, outcomes
    # ... and was told what actually happened ("already approved/rejected"), once.
    assert loser_answers(engine, made) == {request: 1 for request in made.requests}


# -- the same through IMAP: two pollers, two folders ------------------------------------

@pytest.mark.dovecot
@pytest.mark.slow
def test_two_pollers_on_two_folders_give_one_outcome_per_quote(tmp_path, db, dovecot,
                                                               smtp_server):
    """APPROVE for every quote in INBOX; a second answer for each in another folder
    (APPROVE or REJECT, in the opposite order); two `mailflow poll --once` at once."""
    db_url, engine = db
    count = 12
    made = quoted_requests(engine, count)
    for n in range(count):
        dovecot.append("support", "INBOX", answer(made, n, "APPROVE"))
    for n in reversed(range(count)):
        dovecot.append("support", "Second", answer(made, n, ("APPROVE", "REJECT")[n % 2]))
    envs = []
    for folder in ("INBOX", "Second"):
        config = write_config(tmp_path / f"{folder}.yaml", db_url=db_url,
                              imap_port=dovecot.port, smtp_port=smtp_server.port,
                              mailbox__imap__folder=folder,
                              policy__autoreply_limit_per_hour=10_000,
                          policy__staff_notice_limit_per_hour=None)
        envs.append(env_for(config, dovecot.password))
    pollers = [subprocess.Popen([sys.executable, "-m", "mailflow", "poll", "--once"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for env in envs]
    outputs = [poller.communicate(timeout=120)[0] for poller in pollers]
    assert [poller.returncode for poller in pollers] == [0, 0], outputs
    ends, broken = check_one_outcome(engine, made)
    assert broken == [], f"{len(broken)} of {count} quotes broke: {broken[:5]}\n{outputs}"
    assert dovecot.list_messages("support", "INBOX") == []
    assert dovecot.list_messages("support", "Second") == []
    with transaction(engine) as session:
        sent = Counter(session.exec(select(Outbox.template).where(
            Outbox.template.in_(CONFIRMATIONS), Outbox.sent_at.is_not(None))))
    assert sum(sent.values()) == count  # each confirmation went out, once
    assert loser_answers(engine, made) == {request: 1 for request in made.requests}
