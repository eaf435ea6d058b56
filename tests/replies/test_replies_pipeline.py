"""The reply table through handle_message on SQLite and PostgreSQL: the request's
state, its ledger and the answers queued match the expected outcome; no reply
is a wrong action; ≥ 97 % of clear decisions are acted on.

SQLite takes the whole table; PostgreSQL every third reply (each layout,
encoding and outcome still appears), to keep CI time reasonable.
"""

from __future__ import annotations

import pytest

from tests.replies.cases import all_cases
from tests.replies.pipeline import run_all

CASES = all_cases()


@pytest.mark.slow
def test_replies_through_the_pipeline(engine, desk, db_url):
    cases = CASES if db_url.startswith("sqlite") else CASES[::3]
    outcomes = run_all(engine, desk, cases)
    wrong = [o.describe() for o in outcomes if o.wrong_action]
    clear = [o for o in outcomes if o.case.clear_decision]
    recall = sum(o.as_expected for o in clear) / len(clear)
    misses = "\n".join(o.describe() for o in outcomes if not o.as_expected)
    print(f"{len(outcomes)} replies; wrong actions {len(wrong)}; recall {recall:.3f}\n{misses}")
    assert wrong == []
    assert recall >= 0.97, misses
    # Not a clear decision: the state and the ledger never change.
    for outcome in outcomes:
        if not outcome.case.clear_decision:
            assert (outcome.status, outcome.debit) == ("quoted", 0), outcome.describe()


def test_one_word_answer_to_the_ask_back_approves(engine, desk):
    """The client asked back answers the ask-back mail with the word: approved once."""
    from sqlmodel import select

    from mailflow.db import transaction
    from mailflow.models import Outbox
    from mailflow.services.inbound import handle_message
    from tests.replies.cases import Case
    from tests.replies.generator import QuoteMail, make_reply
    from tests.replies.pipeline import ADDRESSES, make_clients, run_case

    client_ids = make_clients(engine, desk)
    unclear = run_case(engine, desk, client_ids, Case(
        "ask", "承認できかねます。", "ambiguous", "ja", "gmail-ja", "iso-2022-jp"))
    assert unclear.templates[0] == "client/ambiguous_reply"
    with transaction(engine) as session:
        ask = session.exec(select(Outbox).where(Outbox.template == "client/ambiguous_reply")
                           .order_by(Outbox.id.desc())).first()
        ask_mail = QuoteMail(message_id=f"<{ask.message_id.strip('<>')}>", subject=ask.subject,
                             body=ask.body_text, lang="ja")
        references = ask.references
    raw = make_reply("承認いたします。", ask_mail, layout="gmail-ja", encoding="iso-2022-jp",
                     sender=ADDRESSES["ja"])
    if references:  # a mail program keeps the thread's References and adds the ask-back
        raw = raw.replace(f"References: {ask_mail.message_id}".encode(),
                          ("References: " + " ".join(f"<{r.strip('<>')}>" for r in references.split())
                           + f" {ask_mail.message_id}").encode())
    with transaction(engine) as session:
        outcome = handle_message(session, desk, raw)
    assert outcome.verdict == "approve", (outcome, references)
    with transaction(engine) as session:
        approved = session.exec(select(Outbox).where(Outbox.template == "client/approved")).all()
    assert len(approved) == 1
