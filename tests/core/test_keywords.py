"""The command-only name of the decision reader (mailflow.core.keywords)."""

import pytest

from mailflow.core.keywords import Command, detect_command, strip_subject

CASES = [
    # (id, new_text, subject, expected)
    ("approve-first-word", "APPROVE\n\nThanks!", "Re: [REQ-12] Quote", Command.APPROVE),
    ("approve-lower-case", "approve, go ahead", "Re: [REQ-12] Quote", Command.APPROVE),
    ("full-width", "ＡＰＰＲＯＶＥ", "Re: [REQ-12] Quote", Command.APPROVE),
    ("reject", "Reject - too expensive", "Re: [REQ-12] Quote", Command.REJECT),
    ("balance", "balance?", "Hello", Command.BALANCE),
    ("subject-alone-approve", "", "Re: [REQ-12] APPROVE", Command.APPROVE),
    ("subject-fullwidth-prefix", "", "Ｒｅ：[REQ-3] 承認", Command.APPROVE),
    ("subject-japanese-prefix", "", "返信: [REQ-3] 却下", Command.REJECT),
    ("subject-with-more-words-is-not-command", "", "Re: please approve the banner", None),
    ("deferred-is-asked", "I will approve tomorrow", "Re: [REQ-1] Quote", Command.AMBIGUOUS),
    ("negated-is-asked", "Do not approve yet", "Re: [REQ-1] Quote", Command.AMBIGUOUS),
    ("no-keyword", "Thanks, looks good", "Re: [REQ-1] Quote", None),
    ("empty", "", "", None),
    ("both", "APPROVE or REJECT?", "Re: [REQ-1] Quote", Command.AMBIGUOUS),
    ("text-and-subject-disagree", "REJECT", "Re: [REQ-1] APPROVE", Command.AMBIGUOUS),
    ("text-and-subject-agree", "approve", "Re: [REQ-1] APPROVE", Command.APPROVE),
    ("buy", "BUY 5", "Re: x", Command.BUY),
]


@pytest.mark.parametrize(
    ("new_text", "subject", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_detect_command(new_text, subject, expected):
    assert detect_command(new_text, subject) == expected


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Re: RE: Fwd: [REQ-9] Approve", "approve"),
        ("返信: Ｒｅ： [REQ-9] 承認", "承認"),
        ("AW: [REQ-1042] Quote", "quote"),
        ("Plain subject", "plain subject"),
    ],
    ids=["english-prefixes", "japanese-prefixes", "german-aw", "no-prefix"],
)
def test_strip_subject(subject, expected):
    assert strip_subject(subject) == expected


def test_command_is_str_enum():
    assert Command.APPROVE == "approve"
