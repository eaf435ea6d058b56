"""The loop guard's question, one named sign at a time (core/loopguard.py)."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailflow.core.loopguard import (
    Correspondent,
    Seen,
    looks_automatic,
    may_suppress,
    text_digest,
)

T = datetime(2026, 11, 26, 1, 0, tzinfo=UTC)
A, B = text_digest("I am away until Monday."), text_digest("Please fix the footer.")

CASES = [
    ("person-first-mail", Correspondent(Seen(digest=A)), None),
    ("person-different-texts", Correspondent(Seen(digest=A), [Seen(digest=B)]), None),
    ("same-text-again", Correspondent(Seen(digest=A), [Seen(digest=B), Seen(digest=A)]),
     "the same text again"),
    ("two-empty-mails-prove-nothing", Correspondent(Seen(digest=None), [Seen(digest=None)]),
     None),
    ("list-mail-now", Correspondent(Seen(digest=A, automatic=True)),
     "sent automatic or list mail"),
    ("automatic-mail-earlier", Correspondent(Seen(digest=A), [Seen(automatic=True)]),
     "sent automatic or list mail"),
    ("vacation-subject-now", Correspondent(Seen(digest=A, vacation_subject=True)),
     "vacation subject"),
    ("vacation-subject-earlier", Correspondent(Seen(digest=A), [Seen(vacation_subject=True)]),
     "vacation subject"),
    ("answer-5s-after-ours", Correspondent(Seen(digest=A, written_at=T + timedelta(seconds=5)),
                                           our_last_mail_at=T),
     "answered within 20 seconds of our mail"),
    ("answer-20s-after-ours", Correspondent(Seen(digest=A, written_at=T + timedelta(seconds=20)),
                                            our_last_mail_at=T),
     "answered within 20 seconds of our mail"),
    ("answer-2min-after-ours", Correspondent(Seen(digest=A, written_at=T + timedelta(minutes=2)),
                                             our_last_mail_at=T), None),
    ("clock-skew-before-ours", Correspondent(Seen(digest=A, written_at=T - timedelta(seconds=5)),
                                             our_last_mail_at=T), None),
    ("no-date", Correspondent(Seen(digest=A), our_last_mail_at=T), None),
]


@pytest.mark.parametrize(("correspondent", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_looks_automatic(correspondent, expected):
    assert looks_automatic(correspondent) == expected


@pytest.mark.parametrize(("template", "expected"), [
    ("client/approved", False), ("client/rejected", False), ("client/ack", True),
    ("client/comment_received", True), ("client/insufficient_credits", True),
])
def test_confirmations_are_never_suppressed(template, expected):
    assert may_suppress(template) is expected


def test_text_digest_ignores_white_space_only():
    assert text_digest("a  b\n c") == text_digest("a b c") != text_digest("a b d")
    assert text_digest(" \n ") is None


@settings(max_examples=300, deadline=None, derandomize=True)
@given(texts=st.lists(st.text(min_size=1, max_size=60).filter(str.strip), min_size=1,
                      max_size=12, unique_by=lambda t: " ".join(t.split())),
       delay=st.integers(min_value=21, max_value=86_400))
def test_a_person_writing_different_texts_slowly_never_looks_automatic(texts, delay):
    """No automatic or list mail, no vacation subject, every text different, every
    answer more than 20 seconds after ours: never capped."""
    *earlier, current = texts
    correspondent = Correspondent(
        Seen(digest=text_digest(current), written_at=T + timedelta(seconds=delay)),
        [Seen(digest=text_digest(t)) for t in reversed(earlier)], our_last_mail_at=T)
    assert looks_automatic(correspondent) is None
