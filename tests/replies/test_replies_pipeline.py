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
