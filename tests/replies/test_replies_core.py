"""The reply table through the pure core: raw MIME → parse_message → trim → read.

Every reply is its own case: an approval, rejection or purchase the client did
not clearly state fails the test outright (a wrong action). A clear decision
read as ambiguous or as nothing is a miss: allowed, but the misses together
must stay under 3 % (the figures and every miss: benchmarks/replies_report.py).
"""

from __future__ import annotations

import pytest

from tests.replies.cases import all_cases
from tests.replies.reading import figures, read_case

CASES = all_cases()


def test_the_table_is_broad():
    assert len(CASES) >= 300
    assert {c.lang for c in CASES} == {"en", "ja", "mixed"}
    assert {c.encoding for c in CASES} >= {"utf-8", "utf-8-qp", "utf-8-base64", "iso-2022-jp",
                                           "shift_jis"}
    assert len({c.layout for c in CASES}) >= 20
    assert {c.expected.split()[0] for c in CASES} == {"approve", "reject", "balance", "buy",
                                                      "ambiguous", "none"}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_no_reply_is_a_wrong_action(case):
    result = read_case(case)
    assert not result.wrong_action, result.describe()


def test_clear_decisions_are_recognised():
    result = figures([read_case(c) for c in CASES])
    misses = "\n".join(r.describe() for r in result["misses"])
    print(f"recall {result['recognised']}/{result['clear_decisions']}; misses:\n{misses}")
    assert result["wrong_actions"] == []
    assert result["recall"] >= 0.97, misses
